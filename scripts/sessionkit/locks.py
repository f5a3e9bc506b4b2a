"""Is Codex running against this home, and who is it? Read from the locks Codex holds, its processes
(/proc on Linux, `ps` elsewhere) and the managed daemon's control socket (Codex 0.171)."""
from __future__ import annotations

import errno
import hashlib
import os
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from .versions import ARG0_LOCK_GLOB, CONTROL_SOCKET, DAEMON_LOCK_DIR, DAEMON_SERVER_ARGS, DAEMON_STATE_DIR, \
    DAEMON_STOP, UPDATE_LOOP_ARGS, WRITER_LOCK_DIR

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@dataclass
class LockHolder:
    kind: str  # "codex process" (arg0 lock), "thread writer", "app-server daemon", ...
    path: Path
    thread_id: Optional[str] = None
    pid: Optional[int] = None
    own: bool = False  # the agent that runs this script (CODEX_THREAD_ID) holds it
    writes_sessions: bool = True  # False: named, never a reason to refuse (the daemon's updater loop)
    held_by: Optional[str] = None  # the holding process, named (e.g. "codex app-server --managed-daemon")
    stop: Optional[str] = None  # the command that stops it

    def describe(self) -> str:
        who = f" (pid {self.pid})" if self.pid else ""
        by = f" [{self.held_by}]" if self.held_by else ""
        what = f"{self.kind} {self.thread_id}" if self.thread_id else self.kind
        stop = f"; stop it with: {self.stop}" if self.stop else ""
        return f"{what}{who}{by}: {self.path}{stop}"


@dataclass
class CodexActivity:
    holders: List[LockHolder] = field(default_factory=list)
    agent_thread_id: Optional[str] = None

    @property
    def others(self) -> List[LockHolder]:
        """Codex processes other than the agent that runs us which can write this home's sessions."""
        return [h for h in self.holders if not h.own and h.writes_sessions]

    @property
    def bystanders(self) -> List[LockHolder]:
        """Codex processes named for the user that never write sessions (no reason to refuse)."""
        return [h for h in self.holders if not h.own and not h.writes_sessions]

    @property
    def running(self) -> bool:
        """Some Codex other than the agent that runs us can write this home's sessions."""
        return bool(self.others)

    @property
    def daemon_stop(self) -> Optional[str]:
        """The command that stops this home's managed app-server daemon, when one runs."""
        return next((h.stop for h in self.others if h.stop), None)

    def why_live(self, thread_id: str) -> Optional[str]:
        """Who holds a live thread's writer lock, named, when it is not the agent running us."""
        for h in self.holders:
            if h.kind == "thread writer" and h.thread_id and h.thread_id.lower() == thread_id.lower():
                if h.own:
                    return None
                who = f"pid {h.pid}" if h.pid else "a process not visible from here"
                if h.held_by:
                    who += f", {h.held_by}"
                return f"held by {who}" + (f"; stop it with: {h.stop}" if h.stop else "")
        return None

    @property
    def live_threads(self) -> Set[str]:
        """Threads whose writer lock is held, the agent's own included: never touch these."""
        return {h.thread_id for h in self.holders if h.kind == "thread writer" and h.thread_id}


def is_held(path: Path) -> bool:
    """A non-blocking shared flock on a read-only fd fails while someone holds the lock."""
    if fcntl is None:
        return False
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _lock_pids() -> Dict[int, int]:
    """inode -> pid of flock holders, from /proc/locks (Linux); empty elsewhere."""
    out: Dict[int, int] = {}
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 6 and parts[1] == "FLOCK" and parts[4].isdigit():
                    ino = parts[5].rsplit(":", 1)[-1]
                    if ino.isdigit():
                        out[int(ino)] = int(parts[4])
    except OSError:
        pass
    return out


def _ancestors() -> Set[int]:
    pids: Set[int] = set()
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            if pid == os.getpid():
                pid = os.getppid()
                continue
            break
    return pids


DAEMON_KIND = "codex process (codex app-server --managed-daemon: the daemon the TUI leaves running)"
UPDATE_LOOP_KIND = ("codex process (codex app-server daemon pid-update-loop: fetches Codex updates into "
                    "packages/, never writes sessions)")


@dataclass
class CodexProcess:
    pid: int
    argv: List[str]
    exe: Optional[str]  # absolute path of its binary, when known
    home: Optional[str]  # its CODEX_HOME (or ~/.codex), when known

    @property
    def label(self) -> str:
        """`codex app-server --managed-daemon`, `codex app-server daemon pid-update-loop`, `codex exec`..."""
        if self.is_managed_daemon:
            return "codex app-server --managed-daemon"
        if self.is_update_loop:
            return "codex " + " ".join(UPDATE_LOOP_ARGS.value)  # type: ignore[arg-type]
        return " ".join(["codex"] + [a for a in self.argv[1:2] if a])

    @property
    def is_managed_daemon(self) -> bool:
        first, flag = DAEMON_SERVER_ARGS.value  # type: ignore[misc]
        return first in self.argv[1:2] and flag in self.argv

    @property
    def is_update_loop(self) -> bool:
        return tuple(self.argv[1:4]) == tuple(UPDATE_LOOP_ARGS.value)  # type: ignore[arg-type]


def stop_command(exe: Optional[str], home_root: Path) -> str:
    """`CODEX_HOME=<home> <codex> app-server daemon stop`, with the daemon's own binary when known."""
    binary = exe if exe and os.path.isabs(exe) and os.path.exists(exe) else "codex"
    words = [binary, *DAEMON_STOP.value]  # type: ignore[misc]
    return f"CODEX_HOME={shlex.quote(str(home_root))} " + " ".join(shlex.quote(w) for w in words)


def _proc_processes() -> Optional[List[CodexProcess]]:
    """Native Codex processes from /proc (Linux); None when there is no /proc."""
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return None
    out: List[CodexProcess] = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            if not argv or os.path.basename(argv[0]) != b"codex":
                continue
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = dict(kv.split(b"=", 1) for kv in fh.read().split(b"\0") if b"=" in kv)
        except (OSError, ValueError):
            continue
        home = env.get(b"CODEX_HOME")
        if home is None and env.get(b"HOME"):
            home = env[b"HOME"] + b"/.codex"
        try:
            exe: Optional[str] = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = None
        if exe and exe.endswith(" (deleted)"):
            exe = None
        first = os.fsdecode(argv[0])
        named = first if os.path.isabs(first) and os.path.exists(first) else None  # as it was started
        out.append(CodexProcess(pid, [os.fsdecode(a) for a in argv if a], named or exe,
                                os.fsdecode(home) if home is not None else None))
    return out


def _ps_processes() -> List[CodexProcess]:
    """Codex processes from `ps` where there is no /proc (macOS): names and pids, home unknown."""
    import subprocess  # only without /proc
    try:
        proc = subprocess.run(["ps", "-axww", "-o", "pid=,command="], capture_output=True, text=True,
                              timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    out: List[CodexProcess] = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit() or os.path.basename(parts[1]) != "codex":
            continue
        out.append(CodexProcess(int(parts[0]), parts[1:], parts[1] if parts[1].startswith("/") else None, None))
    return out


def codex_processes(home_root: Path) -> Tuple[List[CodexProcess], bool]:
    """(Codex processes of this home, homes known). Without /proc the home of a process is unknown."""
    procs = _proc_processes()
    if procs is None:
        return _ps_processes(), False
    target = os.path.realpath(str(home_root))
    return [p for p in procs if p.home is not None and os.path.realpath(p.home) == target], True


def _answers(path: Path) -> Optional[bool]:
    """Does a unix socket accept a connection? None: no socket there."""
    try:
        if not path.is_socket():  # follows the home's symlink into the temp dir
            return None
    except OSError:
        return None
    if not hasattr(socket, "AF_UNIX"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(0.5)
    try:
        sock.connect(str(path))
        return True
    except OSError:
        return False  # a stale socket left by a daemon that is gone
    finally:
        sock.close()


def control_socket_answers(home_root: Path) -> Optional[bool]:
    """Does the managed daemon's control socket accept a connection? None: no socket file. The
    home's `app-server-control.sock` is a symlink to `$TMPDIR/codex-daemon-<uid>/<sha256 of its
    own path>` (0.171); that name is tried too, in case the link is gone."""
    link = home_root / str(CONTROL_SOCKET.value)
    found = _answers(link)
    if found:
        return True
    target = daemon_lock_dir() / hashlib.sha256(str(link).encode("utf-8", "surrogateescape")).hexdigest()
    other = _answers(target)
    return other if other is not None else found


def daemon_lock_dir() -> Path:
    """`$TMPDIR/codex-daemon-<uid>`, where Codex 0.171 keeps the managed daemon's locks (not the home)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(os.environ.get("TMPDIR") or "/tmp") / str(DAEMON_LOCK_DIR.value).format(uid=uid)


def scan_activity(home_root: Path, environ: Optional[Dict[str, str]] = None) -> CodexActivity:
    """Every held Codex lock under the home and every Codex process of it, each marked as the calling
    agent's own or not, and as able to write sessions or not."""
    env = os.environ if environ is None else environ
    agent = env.get("CODEX_THREAD_ID") or None
    activity = CodexActivity(agent_thread_id=agent)
    inode_pid = _lock_pids()
    mine = _ancestors()
    procs, homes_known = codex_processes(home_root)
    by_pid = {p.pid: p for p in procs}

    def pid_of(path: Path) -> Optional[int]:
        try:
            return inode_pid.get(os.stat(path).st_ino)
        except OSError:
            return None

    def named(h: LockHolder) -> LockHolder:
        p = by_pid.get(h.pid) if h.pid is not None else None
        if p is not None:
            h.held_by = p.label
            h.writes_sessions = not p.is_update_loop
            if h.kind == "codex process" and (p.is_update_loop or p.is_managed_daemon):
                h.kind, h.held_by = (UPDATE_LOOP_KIND if p.is_update_loop else DAEMON_KIND), None
            if p.is_managed_daemon:
                h.stop = stop_command(p.exe, home_root)
        return h

    arg0: List[LockHolder] = []
    tmp = home_root / "tmp"
    if tmp.is_dir():
        for lock in sorted(tmp.glob(str(ARG0_LOCK_GLOB.value)[len("tmp/"):])):
            if is_held(lock):
                arg0.append(named(LockHolder("codex process", lock, pid=pid_of(lock))))
    if agent and arg0:
        known = [h for h in arg0 if h.pid is not None and h.pid in mine]
        for h in known:
            h.own = True
        if not known:  # inside Codex's sandbox the holder's pid may not be visible: the first is ours
            unseen = [h for h in arg0 if h.pid is None or not os.path.exists(f"/proc/{h.pid}")]
            if unseen:
                unseen[0].own = True
    activity.holders.extend(arg0)
    seen = {h.pid for h in arg0 if h.pid is not None}
    if homes_known:
        for p in procs:
            if p.pid in seen:
                continue
            if p.is_update_loop:
                activity.holders.append(LockHolder(UPDATE_LOOP_KIND, Path(f"/proc/{p.pid}"), pid=p.pid,
                                                   own=p.pid in mine, writes_sessions=False))
            elif p.is_managed_daemon:
                activity.holders.append(LockHolder(DAEMON_KIND, Path(f"/proc/{p.pid}"), pid=p.pid,
                                                   own=p.pid in mine, stop=stop_command(p.exe, home_root)))
            else:
                activity.holders.append(LockHolder(f"codex process ({p.label})", Path(f"/proc/{p.pid}"), pid=p.pid,
                                                   own=p.pid in mine))

    writers = home_root / str(WRITER_LOCK_DIR.value)
    if writers.is_dir():
        for lock in sorted(writers.glob("*.lock")):
            if lock.name.startswith("."):
                continue
            if is_held(lock):
                tid = lock.name[:-len(".lock")]
                activity.holders.append(named(LockHolder("thread writer", lock, thread_id=tid, pid=pid_of(lock),
                                                         own=bool(agent) and tid == agent)))
    daemon = home_root / str(DAEMON_STATE_DIR.value) / "daemon.lock"
    if daemon.is_file() and is_held(daemon):
        pid = pid_of(daemon)
        activity.holders.append(named(LockHolder("app-server daemon", daemon, pid=pid,
                                                 own=pid is not None and pid in mine)))
    _managed_daemon_signs(activity, home_root, procs)
    return activity


def _managed_daemon_signs(activity: CodexActivity, home_root: Path, procs: List[CodexProcess]) -> None:
    """Where processes cannot be tied to this home (no /proc), the control socket is the sign (the
    `.lock` files beside it are open but not flock-held while idle: no sign of life, measured)."""
    if any(h.stop for h in activity.holders):
        return  # the daemon of this home was found and named already
    answers = control_socket_answers(home_root)
    if answers:
        daemons = [p for p in procs if p.is_managed_daemon]
        exe = daemons[0].exe if len(daemons) == 1 else None
        pid = daemons[0].pid if len(daemons) == 1 else None
        activity.holders.append(LockHolder(
            "app-server daemon (its control socket answers)", home_root / str(CONTROL_SOCKET.value), pid=pid,
            held_by="codex app-server --managed-daemon", stop=stop_command(exe, home_root)))


def explain_live(reason: str, activity: CodexActivity, thread_id: str) -> str:
    """A plan's "live thread (its writer lock is held)" reason, followed by the process that holds it."""
    if "its writer lock is held" not in reason:
        return reason
    who = activity.why_live(thread_id)
    return f"{reason}; {who}" if who else reason
