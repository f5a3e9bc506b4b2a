"""The run journal (`journal.jsonl`): versioned JSON lines, each batch complete and durable
(short writes looped, fsynced, read back) before the changes it names; read back strictly."""
from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple

from sessionkit import UserError
from sessionkit.codexfiles import host
from sessionkit.codexfiles.faults import point
from sessionkit.codexfiles.paths import write_all

FORMAT = 2  # the "v" of every record this code writes; see docs/journal-format.md
PRIVATE = 0o600


def read_exact(fd: int, offset: int, size: int) -> bytes:
    out = b""
    while len(out) < size:
        os.lseek(fd, offset + len(out), os.SEEK_SET)
        chunk = os.read(fd, size - len(out))
        if not chunk:
            break
        out += chunk
    return out


def encode(record: Dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "surrogateescape")


class Journal:
    """Append-only, 0600; `write_batch` returns only once the batch is on disk and read back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | host.BINARY,
                          PRIVATE)
        self.ended = False  # the end record is on disk: the run is finished whatever happens next

    def write(self, record: Dict[str, Any]) -> None:
        self.write_batch([record])

    def write_batch(self, records: Iterable[Dict[str, Any]]) -> None:
        ts = datetime.now().isoformat(timespec="seconds")
        records = list(records)
        data = b"".join(encode({"v": FORMAT, "ts": ts, **r}) for r in records)
        if not data:
            return
        start = os.fstat(self.fd).st_size
        if start == 0:
            point("journal-empty")  # a stop here leaves an empty journal: a run that changed nothing
        try:
            write_all(self.fd, data)
            os.fsync(self.fd)
        except BaseException:
            cut_back(self.fd, start)  # a torn record is never followed by the next one (an abort, an undone)
            raise
        if read_exact(self.fd, start, len(data)) != data:
            raise OSError(5, f"journal {self.path}: the record read back differs from what was written")
        self.ended = self.ended or any(r.get("op") == "end" for r in records)
        point("journal")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def cut_back(fd: int, size: int) -> None:
    """The journal back to `size` bytes after a failed write (a full disk): the next record then
    starts on a line of its own; if this fails too, the torn line stays last only until then."""
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


def begin_record(kind: str, codex_dir: Path, roots: List[str], dbs: List[str], changes: int) -> Dict[str, Any]:
    return {"op": "begin", "kind": kind, "codex_dir": str(codex_dir), "roots": roots, "dbs": dbs,
            "changes": changes, "started_ns": time.time_ns()}


# path -> (the bytes of its whole lines read last, their records): a journal read again in the same
# process (the state after an undo) parses only what was appended since, when what was read before
# is still its exact prefix (compared byte for byte); anything else is read whole again.
_READ: Dict[str, Tuple[bytes, List[Dict[str, Any]]]] = {}


def read_records(path: Path) -> List[Dict[str, Any]]:
    """Every record; only a last line without its newline (a write cut by a kill) is dropped, because
    no change follows a record before it is complete. Anything else malformed is an error."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read journal {path}: {exc.strerror}") from None
    whole = data[:data.rfind(b"\n") + 1]  # the torn tail (b"" when the file ends with a newline) left out
    seen, out = _READ.get(str(path), (b"", []))
    if not (seen and whole.startswith(seen)):
        seen, out = b"", []
    out = out + _parse(path, whole[len(seen):], len(out))
    _READ[str(path)] = (whole, out)
    return list(out)


_DECODER = json.JSONDecoder()


def _parse(path: Path, data: bytes, before: int) -> List[Dict[str, Any]]:
    """The records of whole lines `data` (line numbers counted after `before` lines)."""
    out: List[Dict[str, Any]] = []
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    lines.pop()  # "": data ends with a newline (or is empty)
    decode = _DECODER.raw_decode
    for n, line in enumerate(lines, before + 1):
        try:
            try:
                rec, end = decode(line)  # a record as the journal writes it: no space around it
            except ValueError:
                end = -1
            if end != len(line):
                rec = json.loads(line)  # as json.loads reads it (spaces around it), or its error
        except ValueError:
            raise UserError(f"{path}: line {n} is not a journal record (edited or damaged); "
                            f"nothing was changed") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("op"), str):
            raise UserError(f"{path}: line {n} is not a journal record; nothing was changed")
        if rec.get("v") != FORMAT:
            raise UserError(f"{path}: line {n} has journal format {rec.get('v', 1)!r}; this rollback reads "
                            f"format {FORMAT} only (use --restore-db with the run's DB backup instead)")
        out.append(rec)
    return out
