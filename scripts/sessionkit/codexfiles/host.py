"""What differs by host (Linux, macOS, Windows): taking and probing Codex's file locks, listing
processes, replacing a file, case in paths, the default home and the open-file limit. Tests stand in
for another host with `install` (in-process, as faults.py does); nothing else changes the facts."""
from __future__ import annotations

import errno
import io
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from sessionkit.codexfiles.record import FrozenRecord, Record

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

LINUX, MACOS, WINDOWS = "linux", "macos", "windows"
FLOCK, LOCKFILEEX = "flock", "LockFileEx"  # the calls Codex's locks are taken with (Rust std try_lock)
PROC, PS, TASKLIST = "/proc", "ps", "tasklist"

BINARY = getattr(os, "O_BINARY", 0)  # Windows: os.open is text mode (CRLF, Ctrl-Z as end) unless this is set
OPEN_MAX = 10240  # macOS: the soft limit may not exceed this while the hard one is unlimited
WINDOWS_FDS = 8192  # Windows: the C runtime's descriptor table (fixed; no rlimit to raise)

# Guarantees a host may lack; each names what is missing and what the user does about it.
NO_LOCKS = ("Codex's writer locks cannot be taken here ({why}): a session open in Codex could be "
            "overwritten under it")
NO_PROCESSES = ("running Codex processes cannot be seen here ({why}): a Codex daemon that holds no lock "
                "in the home would go unnoticed")
UNSEEN_HOMES = "Windows does not show which home a codex.exe process uses: every one counts"


class Locker(FrozenRecord):
    """Whole-file locks as Codex takes them: try(fd, exclusive) -> taken (False: held elsewhere)."""
    __slots__ = ("api", "try_lock", "wait_lock", "unlock")
    api: str
    try_lock: Callable[[int, bool], bool]
    wait_lock: Callable[[int], None]  # exclusive, blocking (the coordination lock)
    unlock: Callable[[int], None]

    def __init__(self, api: str, try_lock: Callable[[int, bool], bool], wait_lock: Callable[[int], None],
                 unlock: Callable[[int], None]) -> None:
        self.api, self.try_lock, self.wait_lock, self.unlock = api, try_lock, wait_lock, unlock


class Host(FrozenRecord):
    """The facts about this host the scripts decide by; `current()` gives the one in force."""
    __slots__ = ("name", "locker", "lock_missing", "processes", "folds_case", "rename_replaces_open", "unix_sockets",
                 "run", "rename")
    name: str
    locker: Optional[Locker]  # None: Codex's locks can be neither taken nor probed
    lock_missing: str  # why not, when locker is None
    processes: Optional[str]  # PROC, PS, TASKLIST, or None: no way to list processes
    folds_case: bool  # file names compare case-insensitively (macOS default, Windows)
    rename_replaces_open: bool  # a file held open may be renamed over or deleted (POSIX; not Windows)
    unix_sockets: bool  # the managed daemon's control socket can be asked
    run: Callable[[Sequence[str]], Optional[str]]  # stdout of a listing command (ps, tasklist), None: failed
    rename: Callable[[str, str], None]  # where rename_replaces_open is False (tests stand in); os.replace

    def __init__(self, name: str, locker: Optional[Locker], lock_missing: str, processes: Optional[str],
                 folds_case: bool, rename_replaces_open: bool, unix_sockets: bool,
                 run: Callable[[Sequence[str]], Optional[str]], rename: Callable[[str, str], None] = os.replace) -> None:
        self.name, self.locker, self.lock_missing, self.processes = name, locker, lock_missing, processes
        self.folds_case, self.rename_replaces_open, self.unix_sockets = folds_case, rename_replaces_open, unix_sockets
        self.run, self.rename = run, rename

    def missing(self) -> List[str]:
        """Guarantees an --apply cannot keep here (empty on Linux and macOS with Python's fcntl)."""
        out = []
        if self.locker is None:
            out.append(NO_LOCKS.format(why=self.lock_missing))
        if self.processes is None and not self.unix_sockets:
            out.append(NO_PROCESSES.format(why="no /proc, no ps, no tasklist"))
        return out


def _run(argv: Sequence[str]) -> Optional[str]:
    import subprocess  # only where processes are listed by a program (not /proc): a run's start stays light
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _flock_try(fd: int, exclusive: bool) -> bool:
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


FLOCK_LOCKER = Locker(FLOCK, _flock_try, lambda fd: fcntl.flock(fd, fcntl.LOCK_EX),
                      lambda fd: fcntl.flock(fd, fcntl.LOCK_UN)) if fcntl is not None else None


def _lockfileex_locker() -> Optional[Locker]:  # pragma: no cover - Windows only
    """LockFileEx over the whole file (offset 0, length 2**64-1): what Rust's File::try_lock takes
    on Windows, so Codex's lock and ours exclude each other."""
    try:
        import ctypes
        import msvcrt
        from ctypes import wintypes
    except ImportError:
        return None
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)

    class Overlapped(ctypes.Structure):
        _fields_ = [("Internal", ctypes.c_void_p), ("InternalHigh", ctypes.c_void_p),
                    ("Offset", wintypes.DWORD), ("OffsetHigh", wintypes.DWORD), ("hEvent", wintypes.HANDLE)]

    exclusive_flag, fail_now, all_bits = 0x2, 0x1, 0xFFFFFFFF
    lock_violation = (33,)  # ERROR_LOCK_VIOLATION: held elsewhere (Rust's try_lock reads it as WouldBlock)

    def call(fd: int, flags: int) -> bool:
        ov = Overlapped()
        ok = kernel32.LockFileEx(wintypes.HANDLE(msvcrt.get_osfhandle(fd)), flags, 0, all_bits, all_bits,
                                 ctypes.byref(ov))
        if ok:
            return True
        err = ctypes.get_last_error()
        if err in lock_violation:
            return False
        raise OSError(errno.EIO, ctypes.FormatError(err))

    def try_lock(fd: int, exclusive: bool) -> bool:
        return call(fd, (exclusive_flag if exclusive else 0) | fail_now)

    def wait_lock(fd: int) -> None:
        call(fd, exclusive_flag)

    def unlock(fd: int) -> None:
        ov = Overlapped()
        kernel32.UnlockFileEx(wintypes.HANDLE(msvcrt.get_osfhandle(fd)), 0, all_bits, all_bits, ctypes.byref(ov))

    return Locker(LOCKFILEEX, try_lock, wait_lock, unlock)


def _detect() -> Host:
    """The real host's facts."""
    plat = sys.platform
    posix_on_windows = plat in ("cygwin", "msys")
    name = WINDOWS if plat == "win32" or posix_on_windows else MACOS if plat == "darwin" else LINUX
    if posix_on_windows:  # its flock is its own: native Codex's LockFileEx locks are not seen by it
        locker, why = None, "Cygwin/MSYS Python: its flock does not see native Codex's LockFileEx locks"
    elif name == WINDOWS and FLOCK_LOCKER is None:
        locker, why = _lockfileex_locker(), "no fcntl, and no ctypes to call LockFileEx"
    else:
        locker, why = FLOCK_LOCKER, "this Python has no fcntl"
    if os.path.isdir("/proc/self") and not posix_on_windows:
        procs: Optional[str] = PROC
    elif name == WINDOWS:
        procs = TASKLIST
    else:
        procs = PS
    return Host(name=name, locker=locker, lock_missing=why, processes=procs, folds_case=name in (MACOS, WINDOWS),
                rename_replaces_open=name != WINDOWS, unix_sockets=name != WINDOWS, run=_run)


_REAL = _detect()
_INSTALLED: Optional[Host] = None


def current() -> Host:
    """The facts in force: the real host's unless a test installed others."""
    return _INSTALLED if _INSTALLED is not None else _REAL


def real() -> Host:
    return _REAL


def install(facts: Optional[Host]) -> None:
    """Tests only: decide as on another host from now on (None: the real host again)."""
    global _INSTALLED
    _INSTALLED = facts


def simulated(name: str, **changes: object) -> Host:
    """Another host's facts for tests on Linux: its lock API (backed by flock, the decisions are
    what is tested), its process list (from `run`, a fixture), its case and rename rules."""
    base = {
        LINUX: dict(locker=FLOCK_LOCKER, processes=PROC, folds_case=False, rename_replaces_open=True,
                    unix_sockets=True),
        MACOS: dict(locker=FLOCK_LOCKER, processes=PS, folds_case=True, rename_replaces_open=True,
                    unix_sockets=True),
        WINDOWS: dict(locker=FLOCK_LOCKER.replaced(api=LOCKFILEEX) if FLOCK_LOCKER else None, processes=TASKLIST,
                      folds_case=True, rename_replaces_open=False, unix_sockets=False),
    }[name]
    facts = Host(name=name, lock_missing="no fcntl, and no ctypes to call LockFileEx", run=lambda argv: None,
                 **base)  # type: ignore[arg-type]
    return facts.replaced(**changes)


# ---- the default home ------------------------------------------------------------------------

def default_home(environ: Optional[Mapping[str, str]] = None) -> Path:
    """`$CODEX_HOME` (non-empty), else `%USERPROFILE%\\.codex` on Windows, else `~/.codex`."""
    env = os.environ if environ is None else environ
    if env.get("CODEX_HOME"):
        return Path(env["CODEX_HOME"])
    if current().name == WINDOWS and env.get("USERPROFILE"):
        return Path(env["USERPROFILE"]) / ".codex"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".codex"
    return Path.home() / ".codex"


# ---- paths -----------------------------------------------------------------------------------

def path_key(path: str) -> str:
    """A path as the file system compares it: case-folded where names fold (macOS, Windows)."""
    return path.casefold() if current().folds_case else path


def same_path(a: str, b: str) -> bool:
    """Two resolved paths name the same file (by name: the file may not exist)."""
    return path_key(a) == path_key(b)


# ---- replacing a file ------------------------------------------------------------------------

REPLACE_REFUSED = ("Windows cannot replace {path} while another program holds it open (Codex, its daemon "
                   "or an editor); close them all and run again")


def replace_file(src: str, dst: str) -> None:
    """Put `src` in place of `dst` in one step. POSIX: a rename, even over a file held open. Windows:
    a rename fails while another program holds the file open: that is an error naming the cause."""
    h = current()
    if h.rename_replaces_open:
        os.rename(src, dst)
        return
    try:
        h.rename(src, dst)
    except PermissionError as exc:
        raise OSError(errno.EACCES, REPLACE_REFUSED.format(path=dst)) from exc


# ---- processes -------------------------------------------------------------------------------

class ProcessRow(Record):
    """One process as the host lists it; what cannot be seen here is None."""
    __slots__ = ("pid", "argv", "exe", "home", "ppid")
    pid: int
    argv: List[str]
    exe: Optional[str]
    home: Optional[str]  # its CODEX_HOME (or ~/.codex), when the host shows environments
    ppid: Optional[int]

    def __init__(self, pid: int, argv: List[str], exe: Optional[str] = None, home: Optional[str] = None,
                 ppid: Optional[int] = None) -> None:
        self.pid, self.argv, self.exe, self.home, self.ppid = pid, argv, exe, home, ppid


def parse_ps(text: str) -> List[ProcessRow]:
    """`ps -axww -o pid=,ppid=,command=` (macOS, BSD): pid, parent and the command line."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        exe = parts[2] if parts[2].startswith("/") else None
        out.append(ProcessRow(int(parts[0]), parts[2:], exe, None, int(parts[1])))
    return out


def parse_tasklist(text: str) -> List[ProcessRow]:
    """`tasklist /FO CSV /NH` (Windows): image name and pid; no command line, no home."""
    import csv  # Windows only
    out = []
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[1].strip().isdigit():
            out.append(ProcessRow(int(row[1]), [row[0].strip()]))
    return out


def list_processes() -> Optional[List[ProcessRow]]:
    """Every process the host shows (homes only from /proc); None: the list cannot be had."""
    h = current()
    if h.processes == PROC:
        return None  # read by locks._proc_processes, which needs /proc's environ per pid
    if h.processes == PS:
        text = h.run(["ps", "-axww", "-o", "pid=,ppid=,command="])
        return parse_ps(text) if text is not None else None
    if h.processes == TASKLIST:
        text = h.run(["tasklist", "/FO", "CSV", "/NH"])
        return parse_tasklist(text) if text is not None else None
    return None


def is_codex_image(first: str) -> bool:
    """`codex` (POSIX) or `codex.exe` (Windows, any case): the Codex binary."""
    base = first.replace("\\", "/").rsplit("/", 1)[-1]
    return base == "codex" or base.casefold() == "codex.exe"


# ---- the open-file limit ---------------------------------------------------------------------

def descriptors_in_use() -> int:
    for d in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(d))
        except OSError:
            continue
    return 64


def open_file_room(need: int) -> Optional[Dict[str, int]]:
    """Make room for `need` open files if the host allows (raising the soft limit, the hard one
    where permitted; macOS caps an unlimited hard at OPEN_MAX; Windows' table is fixed).
    None: room for all; else {"room": files that fit, "soft": .., "hard": ..}."""
    h = current()
    if h.name == WINDOWS or resource is None:
        return None if need <= WINDOWS_FDS else {"room": WINDOWS_FDS, "soft": WINDOWS_FDS, "hard": WINDOWS_FDS}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    if _raise_soft(need, (hard,) if hard == resource.RLIM_INFINITY or hard >= need else (need, hard)):
        return None
    top = hard if hard != resource.RLIM_INFINITY else OPEN_MAX
    if top > soft and _raise_soft(top, (hard,)):
        soft = top
    return {"room": soft, "soft": soft, "hard": hard}


def _raise_soft(soft: int, hards: tuple) -> bool:
    for hard in hards:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            return True
        except (ValueError, OSError):
            continue
    return False
