"""zstd-compressed rollouts (`rollout-*.jsonl.zst`, Codex 0.171 `rollout/compress`): read them as
Codex does (rows keep the `.jsonl` path). Writing one is decompress.py's job.

The reader is the system's `zstd` program: the scripts use only what the standard library of every
supported Python has (a zstd module arrived only in Python 3.14). Without the program a
compressed thread is reported with ZSTD_MISSING and never changed.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Tuple

from sessionkit.codexfiles.faults import point
from sessionkit.codexfiles.paths import write_all
from sessionkit.codexfiles.paths import open_regular

ZST = ".zst"
CHUNK = 1024 * 1024
ZSTD_MISSING = ("zstd-compressed rollout and no zstd program here to read it: install the zstd program "
                "(apt install zstd, brew install zstd); left alone")
_TEST_PROGRAM: List[Optional[str]] = []  # tests: the zstd program's path ([None]: none)


def jsonl_name(zst_path: str) -> str:
    """The `.jsonl` path a compressed rollout's row keeps (and its resume writes)."""
    return zst_path[:-len(ZST)] if zst_path.endswith(ZST) else zst_path


def _program() -> Optional[str]:
    if _TEST_PROGRAM:
        return _TEST_PROGRAM[0]
    import shutil  # loaded only when a compressed rollout is met: a run's start stays light
    return shutil.which("zstd")


def reader() -> Optional[str]:
    """The zstd program this run reads with, None when there is none."""
    return _program()


def missing_reason() -> Optional[str]:
    """Why compressed rollouts cannot be read here (what to install), or None."""
    return None if reader() is not None else ZSTD_MISSING


@contextlib.contextmanager
def open_zst(path: str, whole: bool = True) -> Iterator[BinaryIO]:
    """The decompressed bytes of a regular `.zst` file as a stream (never follows a FIFO or device).
    `whole`: the caller reads to the end, and a damaged file raises OSError; else it may stop early."""
    raw = open_regular(path)
    try:
        prog = _program()
        if prog is None:
            raise OSError(2, ZSTD_MISSING)
        import subprocess
        proc = subprocess.Popen([prog, "-q", "-d", "-c"], stdin=raw, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        at_end = False
        try:
            yield proc.stdout
            at_end = not proc.stdout.read(1)  # the caller read it all: then a damaged file is an error
        finally:
            if not at_end:
                proc.kill()
            proc.stdout.close()
            err = proc.stderr.read()
            proc.stderr.close()
            code = proc.wait()
        if (whole or at_end) and code != 0:
            raise OSError(5, damaged(err.decode("utf-8", "replace")))
    finally:
        raw.close()


def damaged(detail: str) -> str:
    """Why a `.zst` cannot be read, in words that fit an audit line: cut short (a copy or a kill
    stopped early) or otherwise damaged; the reader's own words are not shown."""
    low = detail.lower()
    cut = any(w in low for w in ("premature end", "end of stream", "truncated", "unexpected end",
                                 "compressed file ended"))
    return "the .zst is cut short" if cut else "the .zst is damaged"


def _read_until_line(fh: BinaryIO, limit: int) -> Tuple[bytes, bool]:
    buf = b""
    while b"\n" not in buf and len(buf) <= limit:
        chunk = fh.read(64 * 1024)
        if not chunk:
            return buf, True
        buf += chunk
    return buf, False


def read_head(path: str, limit: int) -> Tuple[Optional[bytes], Optional[str], bool]:
    """(line 1, error, only line 1 in the file) of a compressed rollout; reads past line 1 only until
    something that is not blank shows up."""
    try:
        with open_zst(path, whole=False) as fh:
            buf, ended = _read_until_line(fh, limit)
            cut = buf.find(b"\n")
            if cut < 0:
                if len(buf) > limit:
                    return None, f"line 1 longer than {limit} bytes", False
                return (buf, None, True) if buf else (None, "empty file", False)
            rest = buf[cut + 1:]
            while not rest.strip() and not ended:
                more = fh.read(64 * 1024)
                if not more:
                    break
                rest = more
            return buf[:cut], None, not rest.strip()
    except OSError as exc:
        return None, exc.strerror or str(exc), False


def digest_stream(fh: BinaryIO, out_fd: Optional[int] = None) -> Tuple[int, str]:
    """(size, sha256) of a stream, copied to out_fd when given."""
    import hashlib  # only where a digest is made (the dry-runs load none)
    h, size = hashlib.sha256(), 0
    for chunk in iter(lambda: fh.read(CHUNK), b""):
        h.update(chunk)
        size += len(chunk)
        if out_fd is not None:
            write_all(out_fd, chunk)
            point("chunk")
    return size, h.hexdigest()


def line1_of(path: str) -> Tuple[Optional[bytes], Optional[str]]:
    """Line 1 of a rollout, plain or compressed (read decompressed)."""
    from sessionkit.codexfiles.line1 import LINE1_LIMIT, read_line1
    if path.endswith(".jsonl" + ZST):
        line, err, _only = read_head(path, LINE1_LIMIT)
        return line, err
    return read_line1(Path(path))


def line1_payload(path: str) -> Optional[Dict[str, Any]]:
    """session_meta.payload of a rollout (plain or compressed), or None."""
    import json
    line, _err = line1_of(path)
    if line is None:
        return None
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    payload = obj.get("payload") if isinstance(obj, dict) else None
    return payload if isinstance(payload, dict) else None


def compressed_count(paths: Any) -> int:
    """How many of these planned `.jsonl` paths are still compressed (a run decompresses them first)."""
    return sum(1 for p in paths if p is not None and not os.path.lexists(str(p)) and os.path.isfile(str(p) + ZST))
