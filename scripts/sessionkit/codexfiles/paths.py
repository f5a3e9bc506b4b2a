"""Path questions asked of DB values: inside the home? same path? which old prefix?"""
from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from collections import Counter
from typing import BinaryIO, Callable, Iterable, Optional, Tuple, Union

from sessionkit.codexfiles import host

_WIN_LONG = re.compile(r"^\\\\\?\\")
_WIN_DRIVE = re.compile(r"^([A-Za-z]):[\\/]")
_WSL_DRIVE = re.compile(r"^/mnt/([A-Za-z])(/|$)")


def file_sig(st: os.stat_result) -> Tuple[int, int, int, int, int]:
    """What changes whenever a file's bytes do (ctime moves on every write and utime, and no one can
    set it back): a file read at one signature holds the same bytes while its signature is the same."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def normalize_for_match(path: str) -> str:
    r"""One spelling for comparing paths: `\\?\C:\x`, `c:\x`, `C:/x` and `/mnt/c/x` all become `c:/x`."""
    if path[:1] == "/" and not path.startswith("/mnt/"):  # a POSIX path (thousands a plan): none of the forms below
        return path.rstrip("/") or "/"
    p = _WIN_LONG.sub("", path)
    m = _WIN_DRIVE.match(p)
    if m:
        p = m.group(1).lower() + ":/" + p[3:].replace("\\", "/")
    else:
        w = _WSL_DRIVE.match(p)
        if w:
            p = w.group(1).lower() + ":/" + p[len(w.group(0)):]
    return p.rstrip("/") or "/"


def is_windows_absolute(path: str) -> bool:
    r"""`C:\x`, `C:/x` or `\\?\C:\x`: absolute on Windows (rows of a home copied from there)."""
    return bool(_WIN_LONG.match(path) or _WIN_DRIVE.match(path))


def has_prefix(path: str, prefix: str) -> bool:
    """True when `prefix` is `path` or a parent of it: `/a/proj` is not a prefix of `/a/proj-2`."""
    p, q = normalize_for_match(path), normalize_for_match(prefix)
    if q == "/":
        return p.startswith("/")
    return p == q or p.startswith(q + "/")


def replace_prefix(path: str, old: str, new: str) -> Optional[str]:
    """`path` with `old` swapped for `new` on a path boundary, or None when it does not start with it."""
    if not has_prefix(path, old):
        return None
    p = _WIN_LONG.sub("", path)
    q = normalize_for_match(old)
    rest = normalize_for_match(p)[len(q):] if q != "/" else normalize_for_match(p)[1:]
    rest = rest.lstrip("/")
    sep = "\\" if "\\" in new and "/" not in new else "/"
    if not rest:
        return new
    return new.rstrip("/\\") + sep + (rest.replace("/", sep))


def _normal(p: str) -> str:
    """normpath, skipped for the common case of a path with no `.`/`..` segment or doubled slash."""
    if os.sep == "/" and "//" not in p and "/./" not in p and "/../" not in p \
            and not p.endswith(("/.", "/..", "/")):
        return p
    return os.path.normpath(p)


def is_inside(path: Union[str, Path], root: Union[str, Path]) -> bool:
    """Lexically inside `root` (after folding `..`, and case where the host's file system folds it);
    relative paths never are. Symlinks: resolves_inside."""
    p = str(path)
    if "\x00" in p or not os.path.isabs(p):
        return False
    p, r = _normal(p), _normal(str(root))
    if host.current().folds_case:  # macOS, Windows: `/Users/Me/.codex` is `/users/me/.Codex`
        p, r = host.path_key(p), host.path_key(r)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def inside_test(root: Union[str, Path]) -> Callable[[str], bool]:
    """is_inside(path, root) for many paths under one root: the plain case (under the root, no
    `.`/`..` segment or doubled slash after it) is one startswith; anything else asks is_inside."""
    r = _normal(str(root))
    prefix = r.rstrip(os.sep) + os.sep
    cut = len(prefix) - 1

    def test(path: str) -> bool:
        if path.startswith(prefix) and "\x00" not in path:
            rest = path[cut:]
            if "/." not in rest and "//" not in rest:
                return True
        elif path[:1] == "/" and os.sep == "/" and "\x00" not in path and _normal(path) is path \
                and not host.current().folds_case:
            return path == r  # a plain absolute path as is_inside compares it: not under the root
        return is_inside(path, r)
    return test


def home_prefix_counts(paths: Iterable[str], root: Union[str, Path]) -> "Counter[str]":
    """For rollout paths of another home, how many sit under each old home (`.../.codex`).
    Invalid paths (NUL, newline) and this home itself name no old home."""
    counts: Counter = Counter()
    for p in paths:
        split = split_home_prefix(p) if "\x00" not in p and "\n" not in p else None
        if split and _normal(split[0]) != _normal(str(root)):
            counts[split[0]] += 1
    return counts


def resolves_inside(path: Path, root: Path) -> bool:
    """Inside `root` even after following every symlink on the way."""
    try:
        real = os.path.realpath(str(path))
    except (OSError, ValueError):
        return False
    return is_inside(Path(real), Path(os.path.realpath(str(root))))


def split_home_prefix(rollout_path: str) -> Optional[Tuple[str, str]]:
    """`/old/home/.codex/sessions/2025/...` -> (`/old/home/.codex`, `sessions/2025/...`)."""
    norm = rollout_path.replace("\\", "/")
    for marker in ("/sessions/", "/archived_sessions/"):
        at = norm.rfind(marker)
        if at > 0:
            return rollout_path[:at], norm[at + 1:]
    return None


def safe_str(path: object) -> str:
    """A path for display even when its name is not valid UTF-8."""
    text = str(path)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")




def open_regular(path: Union[str, Path], buffering: int = -1) -> BinaryIO:
    """Open a file for reading only if it is a regular file: a FIFO, socket or device named like
    a rollout would block a plain open() or read forever (non-blocking open, then fstat)."""
    fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | host.BINARY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def user_path(text: str) -> Path:
    """A path as typed, `~` and `~user` expanded where they name someone (an unknown `~user` stays as
    typed, as a shell leaves it: pathlib's expanduser raises there, which became an internal error)."""
    return Path(os.path.expanduser(text))


def read_regular(path: str, n: int) -> Tuple[bytes, int]:
    """The first n bytes of a regular file and its size, in one open, fstat and read (the audit's
    hot path: no file object); a FIFO, socket or device raises OSError, never blocks."""
    data, st = read_regular_stat(path, n)
    return data, st.st_size


def read_regular_stat(path: str, n: int, whole_below: int = 0) -> Tuple[bytes, os.stat_result]:
    """read_regular with the whole fstat (its mtime too); a file smaller than `whole_below` is read
    whole (to its end, whatever n says): still one open and fstat."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | host.BINARY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if st.st_size < whole_below:
            n = st.st_size + 1  # to the end and a byte more: a file that grew since the fstat shows it
        data = os.read(fd, n)
        if 0 < len(data) < min(n, st.st_size):  # a short read: the rest in plain reads
            parts = [data]
            got = len(data)
            while got < n:
                more = os.read(fd, n - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data, st
    finally:
        os.close(fd)


def is_absolute_file(path: str) -> bool:
    """An absolute path to an existing file (Codex writes absolute rollout paths only); odd values
    (empty, relative, NUL) are not files, never an error."""
    if not path or "\x00" in path or not os.path.isabs(path):
        return False
    try:
        return os.path.isfile(path)
    except (OSError, ValueError):
        return False


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written: a short write (full disk, ulimit -f) is an error."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(28, "No space left on device (short write)")
        view = view[n:]
