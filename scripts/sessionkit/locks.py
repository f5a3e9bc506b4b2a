"""Is Codex running against this home, and who is it? Read from the locks Codex holds."""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@dataclass
class LockHolder:
    kind: str  # "codex process" (arg0 lock), "thread writer", "app-server daemon"
    path: Path
    thread_id: Optional[str] = None
    pid: Optional[int] = None
    own: bool = False  # the agent that runs this script (CODEX_THREAD_ID) holds it

    def describe(self) -> str:
        who = f" (pid {self.pid})" if self.pid else ""
        what = f"{self.kind} {self.thread_id}" if self.thread_id else self.kind
        return f"{what}{who}: {self.path}"


@dataclass
class CodexActivity:
    holders: List[LockHolder] = field(default_factory=list)
    agent_thread_id: Optional[str] = None

    @property
    def others(self) -> List[LockHolder]:
        return [h for h in self.holders if not h.own]

    @property
    def running(self) -> bool:
        """Some Codex other than the agent that runs us holds a lock on this home."""
        return bool(self.others)

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


def _codex_processes(home_root: Path, environ: Dict[str, str]) -> List[Tuple[int, str]]:
    """(pid, command) of native Codex processes whose home is this one, from /proc (Linux)."""
    out: List[Tuple[int, str]] = []
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return out
    target = os.path.realpath(str(home_root))
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
        if home is None or os.path.realpath(os.fsdecode(home)) != target:
            continue
        words = [os.path.basename(os.fsdecode(argv[0]))] + [os.fsdecode(a) for a in argv[1:2] if a]
        out.append((pid, " ".join(words)))  # e.g. "codex app-server"
    return out


def scan_activity(home_root: Path, environ: Optional[Dict[str, str]] = None) -> CodexActivity:
    """Every held Codex lock under the home, each marked as the calling agent's own or not."""
    env = os.environ if environ is None else environ
    agent = env.get("CODEX_THREAD_ID") or None
    activity = CodexActivity(agent_thread_id=agent)
    inode_pid = _lock_pids()
    mine = _ancestors()

    def pid_of(path: Path) -> Optional[int]:
        try:
            return inode_pid.get(os.stat(path).st_ino)
        except OSError:
            return None

    arg0: List[LockHolder] = []
    tmp = home_root / "tmp"
    if tmp.is_dir():
        for lock in sorted(tmp.glob("arg0*/codex-arg0*/.lock")):
            if is_held(lock):
                arg0.append(LockHolder("codex process", lock, pid=pid_of(lock)))
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
    for pid, cmd in _codex_processes(home_root, env):
        if pid in seen:
            continue
        activity.holders.append(LockHolder(f"codex process ({cmd})", Path(f"/proc/{pid}"), pid=pid,
                                           own=pid in mine))

    writers = home_root / "thread-writer-locks"
    if writers.is_dir():
        for lock in sorted(writers.glob("*.lock")):
            if lock.name.startswith("."):
                continue
            if is_held(lock):
                tid = lock.name[:-len(".lock")]
                activity.holders.append(LockHolder("thread writer", lock, thread_id=tid,
                                                   pid=pid_of(lock), own=bool(agent) and tid == agent))
    daemon = home_root / "app-server-daemon" / "daemon.lock"
    if daemon.is_file() and is_held(daemon):
        pid = pid_of(daemon)
        activity.holders.append(LockHolder("app-server daemon", daemon, pid=pid,
                                           own=pid is not None and pid in mine))
    return activity
