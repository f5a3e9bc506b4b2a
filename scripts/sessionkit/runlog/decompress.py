"""Decompress a compressed rollout the way Codex's own resume does (write the `.jsonl`, remove the
`.zst`): the Decompress journal operation, and the run of them a migration, remap or repair makes
first (its ops read the `.jsonl` when they are prepared)."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from sessionkit.codexfiles.reasons import ZST_CHANGED, ZST_NOT_REGULAR
from sessionkit import UserError
from sessionkit.codexfiles import host
from sessionkit.codexfiles.faults import point
from sessionkit.runlog.ops import CHANGED, NEW, OLD, TORN, Op, RecordError, _fsync_dir, strict
from sessionkit.codexfiles.paths import open_regular
from sessionkit.codexfiles.zstd import ZST, ZSTD_MISSING, digest_stream, jsonl_name, missing_reason, open_zst


def _file_digest(path: str) -> Tuple[int, str]:
    with open_regular(path) as fh:
        return digest_stream(fh)


def _copy_new(src: str, dst: str, mode: int, mtime_ns: Optional[int], decompress: bool) -> Tuple[int, str]:
    """A new file (O_EXCL, 0600 until done), fsynced: src's bytes, or its decompressed bytes."""
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | host.BINARY, 0o600)
    try:
        if decompress:
            with open_zst(src) as fh:
                got = digest_stream(fh, fd)
        else:
            with open_regular(src) as fh:
                got = digest_stream(fh, fd)
        os.fchmod(fd, mode & 0o7777)
        os.fsync(fd)
    finally:
        os.close(fd)
    if mtime_ns is not None:
        os.utime(dst, ns=(mtime_ns, mtime_ns))
    return got



def _unlink_quiet(path: str) -> None:
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


class Decompress(Op):
    """Replace `src` (`rollout-*.jsonl.zst`) with its decompressed `dst` (`.jsonl`), as a Codex resume
    does; the `.zst` is kept byte for byte in the run folder, and undo puts it back while the
    `.jsonl` is still as written (a thread Codex appended to since keeps its `.jsonl`)."""
    KIND: ClassVar[str] = "decompress"
    DB_OP: ClassVar[bool] = False

    _INIT: ClassVar[Tuple[str, ...]] = ("thread_id", "src", "dst", "backup", "zst_size", "zst_sha", "size", "sha256",
                                        "mode", "mtime_ns")

    def __init__(self, thread_id: Optional[str], src: str, dst: str, backup: str = "", zst_size: int = -1,
                 zst_sha: str = "", size: int = -1, sha256: str = "", mode: int = 0o600, mtime_ns: int = 0) -> None:
        self.thread_id = thread_id
        self.src = src
        self.dst = dst
        self.backup = backup
        self.zst_size = zst_size
        self.zst_sha = zst_sha
        self.size = size
        self.sha256 = sha256
        self.mode = mode
        self.mtime_ns = mtime_ns

    @property
    def tmp(self) -> str:
        return os.path.join(os.path.dirname(self.dst), "." + os.path.basename(self.dst) + ".sessionkit-tmp")

    @property
    def tmp_src(self) -> str:
        return os.path.join(os.path.dirname(self.src), "." + os.path.basename(self.src) + ".sessionkit-tmp")

    def to_record(self) -> Dict[str, Any]:
        return {"op": self.KIND, "thread_id": self.thread_id, "src": self.src, "dst": self.dst,
                "backup": self.backup, "zst_size": self.zst_size, "zst_sha": self.zst_sha, "size": self.size,
                "sha256": self.sha256, "mode": self.mode, "mtime_ns": self.mtime_ns}

    @classmethod
    def from_record(cls, rec: Dict[str, Any]) -> "Decompress":
        f = strict(rec, {"thread_id": "str?", "src": "str", "dst": "str", "backup": "str", "zst_size": "int",
                         "zst_sha": "str", "size": "int", "sha256": "str", "mode": "int", "mtime_ns": "int"}, {})
        if not f["src"].endswith(ZST) or jsonl_name(f["src"]) != f["dst"] or not f["backup"]:
            raise RecordError("journal record 'decompress': src, dst and backup do not belong together")
        return cls(**f)

    def paths(self) -> List[str]:
        return [self.src, self.dst, self.tmp, self.tmp_src] + ([self.backup] if self.backup else [])

    def prepare(self, run_dir: Path) -> Optional[str]:
        """Under the writer lock: the `.zst` is a lone regular file; kept in the run folder (checked);
        its decompressed size and digest recorded (a damaged file skips the thread)."""
        try:
            st = os.lstat(self.src)
        except OSError as exc:
            return f"{self.src}: {exc.strerror}"
        if not stat.S_ISREG(st.st_mode):
            return ZST_NOT_REGULAR
        if st.st_nlink > 1:
            return f"the compressed rollout has {st.st_nlink} hard links: left alone"
        for p in (self.dst, self.tmp, self.tmp_src):
            if os.path.lexists(p):
                return f"{p} already exists: left alone"
        if missing_reason():
            return ZSTD_MISSING
        import hashlib  # the --apply's only (issue 24)
        name = f"{self.thread_id or hashlib.sha256(self.src.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"
        dest = run_dir / f"{name}.rollout.jsonl.zst.bak"
        got = _copy_new(self.src, str(dest), 0o600, None, False)
        if _file_digest(self.src) != got:
            return ZST_CHANGED
        try:
            with open_zst(str(dest)) as fh:
                self.size, self.sha256 = digest_stream(fh)
        except OSError as exc:
            return f"the compressed rollout does not decompress ({exc.strerror or exc}): left alone"
        self.backup, (self.zst_size, self.zst_sha) = str(dest), got
        self.mode, self.mtime_ns = st.st_mode & 0o7777, st.st_mtime_ns
        return None

    def apply(self) -> None:
        if os.path.lexists(self.dst):
            raise UserError(f"{self.dst} appeared while writing")
        got = _copy_new(self.backup, self.tmp, self.mode, self.mtime_ns, True)
        if got != (self.size, self.sha256):
            raise OSError(5, f"{self.tmp}: the decompressed copy differs from the plan")
        os.rename(self.tmp, self.dst)
        _fsync_dir(Path(os.path.dirname(self.dst)))
        point("file")
        os.unlink(self.src)
        _fsync_dir(Path(os.path.dirname(self.src)))

    def _dst_as_written(self) -> bool:
        return os.path.isfile(self.dst) and not os.path.islink(self.dst) and \
            _file_digest(self.dst) == (self.size, self.sha256)

    def _src_as_before(self) -> bool:
        return os.path.isfile(self.src) and not os.path.islink(self.src) and \
            _file_digest(self.src) == (self.zst_size, self.zst_sha)

    def state(self) -> str:
        dst, src = os.path.lexists(self.dst), os.path.lexists(self.src)
        if not dst:
            return OLD if src and self._src_as_before() else CHANGED
        if not self._dst_as_written():
            return CHANGED  # Codex appended to the .jsonl since: it is the thread now
        if not src:
            return NEW
        return TORN if self._src_as_before() else CHANGED

    def leftover(self) -> bool:
        return os.path.lexists(self.tmp) or os.path.lexists(self.tmp_src)

    def clean(self) -> None:
        _unlink_quiet(self.tmp)
        _unlink_quiet(self.tmp_src)

    def undo(self) -> None:
        """The `.zst` back from the kept copy (its mtime too), then the `.jsonl` written by the run removed."""
        self.clean()
        if not self._src_as_before():
            if os.path.lexists(self.src):
                raise UserError(f"{self.src} exists and differs: not writing over it")
            got = _copy_new(self.backup, self.tmp_src, self.mode, self.mtime_ns, False)
            if got != (self.zst_size, self.zst_sha):
                _unlink_quiet(self.tmp_src)
                raise OSError(5, f"the kept copy {self.backup} differs from the compressed rollout")
            os.rename(self.tmp_src, self.src)
            _fsync_dir(Path(os.path.dirname(self.src)))
        if self._dst_as_written():
            os.unlink(self.dst)
            _fsync_dir(Path(os.path.dirname(self.dst)))


def decompressions(ops: List[Op]) -> List[Decompress]:
    """A Decompress for every rollout the planned ops would write or move whose file is still
    compressed (the plan names the `.jsonl`, as the row does); ops that move such a file are
    pointed at the `.jsonl` the decompression writes."""
    out: Dict[str, Decompress] = {}
    for op in ops:
        for p in op.paths():
            if p.endswith(".jsonl") and not os.path.lexists(p) and os.path.isfile(p + ZST) and p not in out:
                out[p] = Decompress(op.thread_id, p + ZST, p)
    for op in ops:  # a Move planned on the `.zst` (an unarchive) moves the `.jsonl` once decompressed
        src = getattr(op, "src", None)
        if isinstance(src, str) and src.endswith(ZST) and src[:-len(ZST)] in out:
            op.src, op.dst = src[:-len(ZST)], jsonl_name(op.dst)  # type: ignore[attr-defined]
    return list(out.values())
