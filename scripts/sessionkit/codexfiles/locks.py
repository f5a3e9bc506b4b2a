"""Is Codex running against this home, and who is it? Read from the locks Codex holds, its processes
(/proc on Linux, `ps` on macOS, `tasklist` on Windows: see host.py) and the managed daemon's control
socket (Codex 0.171). `CodexActivity.running_codex()` says it whole: which process, what it holds,
the one thing that stops it."""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from sessionkit import Lines
from sessionkit.codexfiles import host
from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.record import Record
from sessionkit.codexfiles.versions import ARG0_LOCK_GLOB, CONTROL_SOCKET, DAEMON_LOCK_DIR, DAEMON_SERVER_ARGS, DAEMON_STATE_DIR, \
    DAEMON_STOP, UPDATE_LOOP_ARGS, WRITER_LOCK_DIR


class LockHolder(Record):
    __slots__ = ("kind", "path", "thread_id", "pid", "own", "writes_sessions", "held_by", "stop", "command")
    kind: str  # "codex process" (arg0 lock), "thread writer", "app-server daemon", ...
    path: Path
    thread_id: Optional[str]
    pid: Optional[int]
    own: bool  # the agent that runs this script (CODEX_THREAD_ID) holds it
    writes_sessions: bool  # False: named, never a reason to refuse (the daemon's updater loop)
    held_by: Optional[str]  # the holding process, named (e.g. "codex app-server --managed-daemon")
    stop: Optional[str]  # the command that stops it
    command: Optional[str]  # how the holding process was started, when known ("codex resume")

    def __init__(self, kind: str, path: Path, thread_id: Optional[str] = None, pid: Optional[int] = None,
                 own: bool = False, writes_sessions: bool = True, held_by: Optional[str] = None,
                 stop: Optional[str] = None, command: Optional[str] = None) -> None:
        self.kind, self.path, self.thread_id, self.pid, self.own = kind, path, thread_id, pid, own
        self.writes_sessions, self.held_by, self.stop, self.command = writes_sessions, held_by, stop, command

    @property
    def role(self) -> str:
        """daemon, cli, app-server, unseen (Windows codex.exe) or unknown: what stops it."""
        if self.stop or self.kind in (DAEMON_KIND, "app-server daemon"):
            return "daemon"
        if self.kind == UNSEEN_KIND:
            return "unseen"
        cmd = self.command or self.held_by or ""
        if cmd.startswith("codex app-server"):
            return "app-server"
        return "cli" if cmd else "unknown"

    def describe(self) -> str:
        who = f" (pid {self.pid})" if self.pid else ""
        by = f" [{self.held_by}]" if self.held_by else ""
        what = f"{self.kind} {self.thread_id}" if self.thread_id else self.kind
        stop = f"; stop it with: {self.stop}" if self.stop else ""
        return f"{what}{who}{by}: {self.path}{stop}"


DAEMON_WHAT = "the Codex daemon the TUI leaves running"
CLI_WHAT = "a Codex CLI"
APP_SERVER_WHAT = "a Codex app-server (an editor extension or the Codex app)"
UNSEEN_WHAT = "codex.exe processes, whose home Windows does not show"
UNKNOWN_WHAT = "Codex (its processes cannot be told apart here)"
PID_WHAT = "a codex process"
STOP_CLI = "quit it in its terminal (/quit or Ctrl-C)"
STOP_APP_SERVER = "close the editor or the Codex app that started it"
STOP_UNSEEN = "close the Codex app and end every codex.exe (Task Manager)"
STOP_UNKNOWN = "close every Codex CLI, editor and app using this home"


class RunningCodex(Record):
    """One Codex process that can write this home, said whole: what it is, what it holds open and
    the one thing that stops it (a command to run when `stop_is_command`, else what to do)."""
    __slots__ = ("what", "pid", "command", "threads", "stop", "stop_is_command", "pids")
    what: str
    pid: Optional[int]
    command: Optional[str]  # how it was started ("codex app-server --managed-daemon"), when known
    threads: List[str]  # the sessions it holds open (their writer locks)
    stop: str
    stop_is_command: bool
    pids: List[int]  # every process of this entry (Windows: all codex.exe)

    def __init__(self, what: str, pid: Optional[int], command: Optional[str], threads: List[str], stop: str,
                 stop_is_command: bool, pids: Optional[List[int]] = None) -> None:
        self.what, self.pid, self.command, self.threads = what, pid, command, threads
        self.stop, self.stop_is_command, self.pids = stop, stop_is_command, [] if pids is None else pids

    def lines(self) -> List[str]:
        """Three short lines: the process, what it holds, how to stop it."""
        ids = f"pids {', '.join(map(str, self.pids))}" if len(self.pids) > 1 else f"pid {self.pid}" if self.pid else ""
        who = ", ".join(x for x in (ids, self.command or "") if x)
        n = len(self.threads)
        holds = f"holds {n} session{'s' if n != 1 else ''} open" if n else "holds no session open now"
        return [f"- {self.what}" + (f" ({who})" if who else ""), f"  {holds}", f"  stop it: {self.stop}"]


class CodexActivity(Record):
    __slots__ = ("holders", "agent_thread_id", "missing")
    holders: List[LockHolder]
    agent_thread_id: Optional[str]
    missing: List[str]  # guarantees this host cannot keep (host.py)

    def __init__(self, holders: Optional[List[LockHolder]] = None, agent_thread_id: Optional[str] = None,
                 missing: Optional[List[str]] = None) -> None:
        self.holders = [] if holders is None else holders
        self.agent_thread_id = agent_thread_id
        self.missing = [] if missing is None else missing

    def running_codex(self) -> List[RunningCodex]:
        """Every Codex that can write this home, once each: lock holders grouped by process."""
        groups: Dict[object, List[LockHolder]] = {}
        unseen = any(h.role == "unseen" for h in self.others)  # Windows: locks held by one of those
        for h in self.others:
            role = "unseen" if unseen and h.role == "unknown" and h.pid is None else h.role
            key: object = role if role == "unseen" else h.pid if h.pid is not None else ("daemon" if h.stop else role)
            groups.setdefault(key, []).append(h)
        return [_running(hs) for hs in groups.values()]

    def running_report(self) -> List[Dict[str, object]]:
        """running_codex() for --json: what, pid, pids, command, threads, stop, stop_is_command."""
        return [r.as_dict() for r in self.running_codex()]

    def running_lines(self) -> List[str]:
        """What runs, in full, on a few short lines (empty when nothing does)."""
        found = self.running_codex()
        if not found:
            return []
        return ["Codex is running on this home:"] + [line for r in found for line in r.lines()]

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
            if h.kind == "thread writer" and h.thread_id and h.thread_id == norm_id(thread_id):
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
        return {h.thread_id for h in self.holders if h.kind == "thread writer" and h.thread_id}  # normalised


def is_held(path: Path) -> bool:
    """A non-blocking shared lock (flock; LockFileEx on Windows) on a read-only fd fails while
    someone holds the lock. Where the host has no lock call, nothing can be seen (host.missing)."""
    locker = host.current().locker
    if locker is None:
        return False
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        if locker.try_lock(fd, False):
            locker.unlock(fd)
            return False
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _lock_pids() -> Dict[int, int]:
    """inode -> pid of flock holders, from /proc/locks (Linux); empty elsewhere."""
    out: Dict[int, int] = {}
    if host.current().processes != host.PROC:
        return out
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
    """This process and its parents (from /proc; elsewhere no lock's pid is seen to compare with)."""
    pids: Set[int] = set()
    pid = os.getpid()
    if host.current().processes != host.PROC:
        return {pid, os.getppid()}
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


UNSEEN_KIND = "codex.exe process (its home cannot be seen on Windows)"
DAEMON_KIND = "codex process (codex app-server --managed-daemon: the daemon the TUI leaves running)"
UPDATE_LOOP_KIND = ("codex process (codex app-server daemon pid-update-loop: fetches Codex updates into "
                    "packages/, never writes sessions)")


class CodexProcess(Record):
    __slots__ = ("pid", "argv", "exe", "home")
    pid: int
    argv: List[str]
    exe: Optional[str]  # absolute path of its binary, when known
    home: Optional[str]  # its CODEX_HOME (or ~/.codex), when known

    def __init__(self, pid: int, argv: List[str], exe: Optional[str], home: Optional[str]) -> None:
        self.pid, self.argv, self.exe, self.home = pid, argv, exe, home

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


def _ps_processes() -> Optional[List[CodexProcess]]:
    """Codex processes from `ps` (macOS) or `tasklist` (Windows): names and pids, home unknown;
    None when the list cannot be had."""
    rows = _rows()
    if rows is None:
        return None
    return [CodexProcess(r.pid, r.argv, r.exe, None) for r in rows if r.argv and host.is_codex_image(r.argv[0])]


def _rows() -> Optional[List[host.ProcessRow]]:
    """The host's process list where there is no /proc (cached for one scan by scan_activity)."""
    return host.list_processes()


def codex_processes(home_root: Path) -> Tuple[Optional[List[CodexProcess]], bool]:
    """(Codex processes of this home, homes known). Without /proc the home of a process is unknown;
    None: the host's process list could not be had."""
    procs = _proc_processes() if host.current().processes == host.PROC else None
    if procs is None:
        return (_ps_processes() if host.current().processes else None), False
    target = os.path.realpath(str(home_root))
    return [p for p in procs if p.home is not None and host.same_path(os.path.realpath(p.home), target)], True


def _answers(path: Path) -> Optional[bool]:
    """Does a unix socket accept a connection? None: no socket there."""
    try:
        if not path.is_socket():  # follows the home's symlink into the temp dir
            return None
    except OSError:
        return None
    import socket  # only when a socket file is there to ask
    if not hasattr(socket, "AF_UNIX"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(0.5)
    try:
        # through the link's target: a socket path is limited to about 108 bytes, and a home's own
        # path may be longer than that while Codex's link points into a short temp dir
        sock.connect(os.path.realpath(str(path)))
        return True
    except OSError:
        return False  # a stale socket left by a daemon that is gone
    finally:
        sock.close()


def control_socket_answers(home_root: Path) -> Optional[bool]:
    """Does the managed daemon's control socket accept a connection? None: no socket file. The
    home's `app-server-control.sock` is a symlink to `$TMPDIR/codex-daemon-<uid>/<sha256 of its
    own path>` (0.171); that name is tried too, in case the link is gone."""
    if not host.current().unix_sockets:
        return None
    link = home_root / str(CONTROL_SOCKET.value)
    found = _answers(link)
    if found:
        return True
    folder = daemon_lock_dir()
    if not folder.is_dir():
        return found  # no daemon ever ran here: no socket by that name either
    target = folder / _sha256_hex(str(link).encode("utf-8", "surrogateescape"))
    other = _answers(target)
    return other if other is not None else found


def _sha256_hex(data: bytes) -> str:
    """SHA-256 by CPython's built-in module where it has one (a read-only run then loads no OpenSSL
    for one digest: hashlib's import costs more than the rest of the lock scan), else hashlib's."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # CPython 3.9 to 3.11
    except ImportError:
        from hashlib import sha256  # type: ignore[assignment]
    return sha256(data).hexdigest()


def daemon_lock_dir() -> Path:
    """`$TMPDIR/codex-daemon-<uid>`, where Codex 0.171 keeps the managed daemon's locks (not the home)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(os.environ.get("TMPDIR") or "/tmp") / str(DAEMON_LOCK_DIR.value).format(uid=uid)


def scan_activity(home_root: Path, environ: Optional[Dict[str, str]] = None) -> CodexActivity:
    """Every held Codex lock under the home and every Codex process of it, each marked as the calling
    agent's own or not, and as able to write sessions or not; and what this host cannot see."""
    env = os.environ if environ is None else environ
    agent = norm_id(env["CODEX_THREAD_ID"]) if env.get("CODEX_THREAD_ID") else None
    facts = host.current()
    activity = CodexActivity(agent_thread_id=agent, missing=facts.missing())
    inode_pid: Dict[int, int] = {}
    lock_pids_read = False
    listed, homes_known = codex_processes(home_root)
    procs = listed or []
    mine = _ancestors()
    by_pid = {p.pid: p for p in procs}

    def pid_of(path: Path) -> Optional[int]:
        """The holder of a held lock; /proc/locks is read once, at the first (most homes hold none)."""
        nonlocal inode_pid, lock_pids_read
        if not lock_pids_read:
            inode_pid, lock_pids_read = _lock_pids(), True
        try:
            return inode_pid.get(os.stat(path).st_ino)
        except OSError:
            return None

    def named(h: LockHolder) -> LockHolder:
        p = by_pid.get(h.pid) if h.pid is not None else None
        if p is not None:
            h.held_by = h.command = p.label
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
                                                   own=p.pid in mine, writes_sessions=False, command=p.label))
            elif p.is_managed_daemon:
                activity.holders.append(LockHolder(DAEMON_KIND, Path(f"/proc/{p.pid}"), pid=p.pid, own=p.pid in mine,
                                                   stop=stop_command(p.exe, home_root), command=p.label))
            else:
                activity.holders.append(LockHolder(f"codex process ({p.label})", Path(f"/proc/{p.pid}"), pid=p.pid,
                                                   own=p.pid in mine, command=p.label))
    elif facts.processes == host.TASKLIST or not facts.unix_sockets:
        _unseen_homes(activity, listed, mine, agent)

    writers = home_root / str(WRITER_LOCK_DIR.value)
    if writers.is_dir():
        for lock in sorted(writers.glob("*.lock")):
            if lock.name.startswith("."):
                continue
            if is_held(lock):
                tid = norm_id(lock.name[:-len(".lock")])
                activity.holders.append(named(LockHolder("thread writer", lock, thread_id=tid, pid=pid_of(lock),
                                                         own=bool(agent) and tid == agent)))
    daemon = home_root / str(DAEMON_STATE_DIR.value) / "daemon.lock"
    if daemon.is_file() and is_held(daemon):
        pid = pid_of(daemon)
        activity.holders.append(named(LockHolder("app-server daemon", daemon, pid=pid,
                                                 own=pid is not None and pid in mine)))
    _managed_daemon_signs(activity, home_root, procs)
    return activity


def _unseen_homes(activity: CodexActivity, procs: Optional[List[CodexProcess]], mine: Set[int],
                  agent: Optional[str]) -> None:
    """Windows: `tasklist` names codex.exe processes but not their homes, and Codex's daemon has no
    socket to ask: every one may write this home. Under an agent, one is taken as the agent's own."""
    if procs is None:
        if host.current().processes is not None:  # else host.missing() said so already
            activity.missing.append(host.NO_PROCESSES.format(why="the process list could not be read"))
        return
    own_left = bool(agent)
    for p in sorted(procs, key=lambda x: x.pid):
        own = p.pid in mine or own_left
        own_left = own_left and not own
        activity.holders.append(LockHolder(UNSEEN_KIND, Path(p.argv[0] if p.argv else "codex.exe"), pid=p.pid,
                                           own=own, command=p.argv[0] if p.argv else None))


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


def _running(holders: List[LockHolder]) -> RunningCodex:
    roles = [h.role for h in holders]
    role = next((r for r in ("daemon", "unseen", "app-server", "cli") if r in roles), "unknown")
    pids = sorted({h.pid for h in holders if h.pid is not None})
    pid = next((h.pid for h in holders if h.pid is not None), None)
    commands = list(dict.fromkeys(h.command or h.held_by for h in holders if h.command or h.held_by))
    command = None if role == "unseen" else (commands[0] if commands else None)
    threads = sorted({h.thread_id for h in holders if h.kind == "thread writer" and h.thread_id})
    if role == "daemon":
        stop = next((h.stop for h in holders if h.stop), None)
        return RunningCodex(DAEMON_WHAT, pid, command or "codex app-server --managed-daemon", threads,
                            stop or STOP_APP_SERVER, stop is not None, pids)
    what, how = {"unseen": (UNSEEN_WHAT, STOP_UNSEEN), "app-server": (APP_SERVER_WHAT, STOP_APP_SERVER),
                 "cli": (CLI_WHAT, STOP_CLI)}.get(role, (PID_WHAT if pid else UNKNOWN_WHAT, STOP_UNKNOWN))
    return RunningCodex(what, pid, command, threads, how, False, pids)


def process_names() -> str:
    """The Codex processes to close on this host, by name."""
    if host.current().name == host.WINDOWS:
        return "the Codex app and every codex.exe process"
    return "every `codex` process (CLI, editor, the Codex app) and the Codex daemon"


def refusal(activity: CodexActivity) -> Optional[str]:
    """Why an --apply does not start here, in a few short lines naming each stop command once;
    None when nothing stands in the way."""
    lines: List[str] = []
    if activity.missing:
        import textwrap  # only for a host that cannot keep a guarantee
        lines.append("This host cannot keep a guarantee an --apply relies on; nothing was changed:")
        for m in activity.missing:
            lines += textwrap.wrap(m, 96, initial_indent="- ", subsequent_indent="  ", break_long_words=False,
                                   break_on_hyphens=False)
        lines.append(f"Close {process_names()} (stop the daemon with: codex app-server daemon stop),")
        lines.append("then run again with --force.")
    if activity.running:
        lines += activity.running_lines()
        them = "them" if len(activity.running_codex()) > 1 else "it"
        lines.append(f"Nothing was changed. Stop {them}, then run again; or pass --force (sessions Codex")
        lines.append("holds open stay untouched; a Codex older than 0.146 takes no writer locks).")
    return Lines(lines) if lines else None  # its lines stay lines; each is escaped at the edge


def explain_live(reason: str, activity: CodexActivity, thread_id: str) -> str:
    """A plan's "live thread (its writer lock is held)" reason, followed by the process that holds it."""
    if "its writer lock is held" not in reason:
        return reason
    who = activity.why_live(thread_id)
    return f"{reason}; {who}" if who else reason
