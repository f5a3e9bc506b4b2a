"""Open another Codex home to import from, without changing a byte of it: a folder, or a .tar,
.tar.gz/.tgz or .zip holding one (extracted, only what an import reads, into a private scratch
folder; members that would land outside it, links included, refuse the archive)."""
from __future__ import annotations

import os
import re
import stat
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, IO, List, Optional, Tuple

from sessionkit import UserError
from sessionkit.codexfiles import host
from sessionkit.codexfiles.paths import is_inside, user_path
from sessionkit.codexfiles.record import Record
from sessionkit.codexfiles.rollout_index import ROLLOUT_NAME

STATE_DB = "state_5.sqlite"
HISTORY_DB = "thread_history_1.sqlite"
# What an import reads from a home: everything else (the 420 MB daemon package, logs) stays packed.
WANTED_TOP = ("sessions", "archived_sessions")
EXTRA_DBS = ("goals_1.sqlite", "queue_1.sqlite")  # 0.171: a thread's goal and queued input
WANTED_FILES = (STATE_DB, HISTORY_DB, "session_index.jsonl", "config.toml") + EXTRA_DBS
DB_SUFFIXES = ("", "-wal")
MAX_BYTES_ENV = "SESSION_IMPORT_MAX_BYTES"
DEFAULT_MAX_BYTES = 64 * 1024 ** 3
_CHUNK = 1024 * 1024


class SourceHome(Record):
    """The home to import from: `root` is SRC itself (a folder) or its copy in `scratch`."""
    __slots__ = ("origin", "kind", "root", "scratch", "skipped_members")
    origin: str
    kind: str  # "folder", "tar", "zip"
    root: Path
    scratch: Path
    skipped_members: List[str]

    def __init__(self, origin: str, kind: str, root: Path, scratch: Path,
                 skipped_members: Optional[List[str]] = None) -> None:
        self.origin, self.kind, self.root, self.scratch = origin, kind, root, scratch
        self.skipped_members = [] if skipped_members is None else skipped_members

    def close(self) -> None:
        import shutil  # only when a scratch copy is removed
        shutil.rmtree(str(self.scratch), ignore_errors=True)

    def __enter__(self) -> "SourceHome":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _looks_like_home(folder: Path) -> bool:
    return any((folder / n).exists() for n in (STATE_DB, "sessions", "archived_sessions",
                                                 os.path.join("sqlite", STATE_DB)))


def _archive_kind(path: Path) -> Optional[str]:
    name = path.name.lower()
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    if name.endswith(".zip"):
        return "zip"
    return None


def max_bytes() -> int:
    raw = os.environ.get(MAX_BYTES_ENV, "")
    return int(raw) if raw.isdigit() else DEFAULT_MAX_BYTES


def make_scratch(parent: Optional[Path] = None) -> Path:
    if parent is not None and (os.path.islink(str(parent)) or os.path.realpath(str(parent)) != os.path.join(
            os.path.realpath(str(parent.parent)), parent.name)):  # .tmp/session-migration symlinked out
        from sessionkit.codexfiles.paths import safe_str
        raise UserError(f"refusing: {safe_str(parent)} leads elsewhere (to {safe_str(os.path.realpath(str(parent)))}), where the "
                        f"source would be extracted; make it a plain folder. Nothing was changed")
    try:
        import tempfile
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(tempfile.mkdtemp(prefix="codex-session-import-", dir=str(parent) if parent else None))
    except (OSError, FileNotFoundError) as exc:  # inside Codex's read-only sandbox there is no temp dir
        raise UserError(f"cannot create a private scratch folder to read SRC through ({exc}); "
                        f"nothing was changed") from None


def open_source(src: str, scratch_parent: Optional[Path] = None) -> SourceHome:
    """SRC as a readable home. The caller closes it (the scratch folder is removed)."""
    if not src or "\x00" in src:
        raise UserError("--from wants a Codex home folder or a .tar/.tar.gz/.tgz/.zip holding one")
    path = user_path(src)
    if not path.exists():
        raise UserError(f"--from {src}: no such file or folder")
    if path.is_dir():
        root = path.resolve()
        if not _looks_like_home(root):
            inner = root / ".codex"
            if inner.is_dir() and _looks_like_home(inner):
                root = inner
            else:
                raise UserError(f"--from {src}: no Codex home there (no state_5.sqlite, sessions/ "
                                f"or archived_sessions/)")
        return SourceHome(origin=str(path), kind="folder", root=root, scratch=make_scratch(scratch_parent))
    kind = _archive_kind(path)
    if kind is None:
        raise UserError(f"--from {src}: not a folder, .tar, .tar.gz, .tgz or .zip")
    _probe(path, kind)  # an unreadable archive is said before anything is created
    scratch = make_scratch(scratch_parent)
    try:
        root, skipped = _extract(path, kind, scratch / "home")
    except BaseException:
        import shutil
        shutil.rmtree(str(scratch), ignore_errors=True)
        raise
    return SourceHome(origin=str(path), kind=kind, root=root, scratch=scratch, skipped_members=skipped)


class _Member:
    """One archive member in the terms the checks need, whatever the archive format."""

    __slots__ = ("name", "parts", "kind", "size", "mtime", "opener")

    def __init__(self, name: str, kind: str, size: int, mtime: float, opener: Callable[[], IO[bytes]]) -> None:
        self.name = name
        self.parts = _safe_parts(name)
        self.kind = kind  # "file", "dir", "link", "other"
        self.size = size
        self.mtime = mtime
        self.opener = opener


def _safe_parts(name: str) -> Tuple[str, ...]:
    """The member's path segments; an absolute name, a `..` segment or a drive letter escapes."""
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":") or "\x00" in text:
        raise UserError(f"refusing the archive: member {name!r} has an absolute name; nothing was extracted")
    parts = tuple(p for p in PurePosixPath(text).parts if p not in ("", "."))
    if ".." in parts:
        raise UserError(f"refusing the archive: member {name!r} climbs out with '..'; nothing was extracted")
    return parts


def _tar_members(path: Path) -> Tuple[object, List[_Member]]:
    import tarfile  # only for an archive: a folder's import loads none of it
    try:
        tf = tarfile.open(str(path), "r:*")
        infos = tf.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"--from {path}: not a readable tar archive ({_tar_error(path, exc)})") from None
    out = []
    for info in infos:
        kind = "file" if info.isreg() else "dir" if info.isdir() else \
            "link" if (info.issym() or info.islnk()) else "other"
        out.append(_Member(info.name, kind, int(info.size), float(info.mtime),
                           (lambda i=info: tf.extractfile(i))))  # type: ignore[misc]
    return tf, out


def _probe(path: Path, kind: str) -> None:
    """Open the archive (its first header only): not one, in one line."""
    if kind == "zip":
        _zip_members(path)[0].close()  # type: ignore[attr-defined]
        return
    import tarfile
    try:
        tarfile.open(str(path), "r:*").close()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"--from {path}: not a readable tar archive ({_tar_error(path, exc)})") from None


def _tar_error(path: Path, exc: BaseException) -> str:
    """tarfile's reason in one line: of its one line per compression tried, the one the name says."""
    text = str(exc)
    method = "gz" if path.name.lower().endswith("gz") else "tar"
    for line in text.split("\n"):
        m = re.match(r"- method (\w+): \w+\((['\"])(.*)\2\)$", line.strip())
        if m and m.group(1) == method:
            return m.group(3)
    return " ".join(text.split())


def _zip_members(path: Path) -> Tuple[object, List[_Member]]:
    import zipfile
    try:
        zf = zipfile.ZipFile(str(path))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"--from {path}: not a readable zip archive ({exc})") from None
    out = []
    for info in infos:
        mode = (info.external_attr >> 16) & 0o170000
        kind = "dir" if info.is_dir() else "link" if mode == stat.S_IFLNK else \
            "file" if mode in (0, stat.S_IFREG) else "other"
        try:
            mtime = datetime(*info.date_time).timestamp()
        except (ValueError, OverflowError):
            mtime = 0.0
        out.append(_Member(info.filename, kind, int(info.file_size), mtime,
                           (lambda i=info: zf.open(i))))  # type: ignore[misc]
    return zf, out


def _find_home(members: List[_Member]) -> Tuple[str, ...]:
    """The folder that is a Codex home: one with a state DB, or rollout files under sessions/ or
    archived_sessions/ (a project's own `sessions/` folder does not count). The best-scored one
    (a DB, rollouts, named .codex), shallowest first; a tie between two is refused."""
    score: Dict[Tuple[str, ...], int] = {}
    for m in members:
        if m.kind != "file":
            continue
        parts = m.parts
        if parts[-1] == STATE_DB:
            home = parts[:-2] if len(parts) > 1 and parts[-2] == "sqlite" else parts[:-1]
            score[home] = score.get(home, 0) | 4
        elif ROLLOUT_NAME.match(parts[-1]):
            for n, part in enumerate(parts[:-1]):
                if part in WANTED_TOP:
                    score[parts[:n]] = score.get(parts[:n], 0) | 2
                    break
    if not score:
        raise UserError("the archive holds no Codex home (no state_5.sqlite, no rollout under sessions/ "
                        "or archived_sessions/)")
    for home in score:
        if home and home[-1] == ".codex":
            score[home] |= 1
    best = max(score.values())
    top = sorted((len(h), h) for h, v in score.items() if v == best)
    if len(top) > 1 and top[0][0] == top[1][0]:
        raise UserError("the archive holds more than one Codex home (" +
                        ", ".join("/".join(h) or "." for _n, h in top) + "); extract the one you mean and pass its folder")
    return top[0][1]


def _wanted(rel: Tuple[str, ...]) -> bool:
    if not rel:
        return False
    if rel[0] in WANTED_TOP:
        return True
    if len(rel) == 1:
        return rel[0] in WANTED_FILES or any(rel[0] == db + s for db in (STATE_DB, HISTORY_DB) + EXTRA_DBS
                                             for s in DB_SUFFIXES)
    return len(rel) == 2 and rel[0] == "sqlite" and rel[1] in tuple(
        db + s for db in (STATE_DB, HISTORY_DB) + EXTRA_DBS for s in DB_SUFFIXES)


def _extract(path: Path, kind: str, dest: Path) -> Tuple[Path, List[str]]:
    handle, members = _tar_members(path) if kind == "tar" else _zip_members(path)
    try:
        home = _find_home(members)
        plan = []
        skipped = []
        total = 0
        limit = max_bytes()
        for m in members:
            if m.parts[:len(home)] != home:
                continue
            rel = m.parts[len(home):]
            if not _wanted(rel):
                continue
            if m.kind == "link":
                raise UserError(f"refusing the archive: member {m.name!r} is a link inside the part an import "
                                f"reads (links are never extracted); nothing was extracted")
            if m.kind != "file":
                if m.kind == "other":
                    skipped.append(f"{m.name}: not a regular file")
                continue
            total += max(0, m.size)
            if total > limit:
                raise UserError(f"refusing the archive: its session files unpack to more than {limit} bytes "
                                f"(set {MAX_BYTES_ENV} to allow more); nothing was kept")
            plan.append((m, rel))
        _check_space(dest.parent, total)
        dest.mkdir(mode=0o700)
        seen: Dict[Tuple[str, ...], str] = {}
        written = [0]
        for m, rel in plan:
            if rel in seen:
                raise UserError(f"refusing the archive: {m.name!r} appears twice; nothing was kept")
            seen[rel] = m.name
            _write_member(m, dest, rel, limit, written)
        return dest, skipped
    finally:
        handle.close()  # type: ignore[attr-defined]


def _check_space(folder: Path, need: int) -> None:
    try:
        st = os.statvfs(str(folder))
    except (OSError, AttributeError):
        return
    free = st.f_bavail * st.f_frsize
    if need + 64 * 1024 * 1024 > free:
        raise UserError(f"not enough space in {folder} to unpack the archive's session files "
                        f"({need} bytes needed, {free} free); nothing was kept")


def _write_member(m: _Member, dest: Path, rel: Tuple[str, ...], limit: int, written: List[int]) -> None:
    """One regular file, created new (never through a link) inside `dest`; its size as declared."""
    import tarfile  # noqa: F401 (their errors are caught below)
    import zipfile
    target = dest.joinpath(*rel)
    if not is_inside(target, dest):
        raise UserError(f"refusing the archive: member {m.name!r} lands outside the scratch folder")
    parent = dest
    for part in rel[:-1]:
        parent = parent / part
        if parent.is_symlink():
            raise UserError(f"refusing the archive: {parent} is a link")
        parent.mkdir(mode=0o700, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | host.BINARY
    fd = os.open(str(target), flags, 0o600)
    got = 0
    try:
        src = m.opener()
        if src is None:
            raise UserError(f"refusing the archive: member {m.name!r} cannot be read")
        with src:
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                got += len(chunk)
                written[0] += len(chunk)
                if got > m.size or written[0] > limit:
                    raise UserError(f"refusing the archive: member {m.name!r} unpacks to more than it "
                                    f"declares or past {limit} bytes in all; nothing was kept")
                os.write(fd, chunk)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise UserError(f"refusing the archive: member {m.name!r} is damaged ({exc}); nothing was kept") from None
    finally:
        os.close(fd)
    if got != m.size:
        raise UserError(f"refusing the archive: member {m.name!r} is shorter than it declares; nothing was kept")
    os.utime(str(target), (m.mtime, m.mtime))


def private_db_copy(db: Path, scratch: Path) -> Optional[Path]:
    """A copy of a DB and its WAL in the scratch folder, to open there: reading SRC's own file
    through SQLite would create or change its -shm. None when SRC has no such DB."""
    if not db.is_file():
        return None
    dest_dir = scratch / "db"
    dest_dir.mkdir(mode=0o700, exist_ok=True)
    out = dest_dir / db.name
    for suffix in DB_SUFFIXES:
        src = Path(str(db) + suffix)
        if not src.is_file():
            continue
        _copy_bytes(src, Path(str(out) + suffix))
    return out


def _copy_bytes(src: Path, dst: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | host.BINARY
    fd = os.open(str(dst), flags, 0o600)
    try:
        with open(src, "rb") as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                os.write(fd, chunk)
    finally:
        os.close(fd)
