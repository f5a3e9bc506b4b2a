"""macOS and Windows stood in for on Linux: the host module's decisions with each host's facts
injected (host.install, in-process, inert otherwise), and the whole write path run with them: an
--apply takes Codex's locks and re-checks under them, or refuses, naming what is missing, with
nothing written (bytes, mtimes, rows compared)."""
import errno
import io
import json
import os
import runpy
import socket
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from harness import SCRIPTS
from homebuilder import HomeBuilder
from test_migrate_rollback import home_state
from sessionkit.codexfiles import faults
from sessionkit.codexfiles import host
from sessionkit.codexfiles import locks
from sessionkit.codexfiles import paths
from sessionkit.codexfiles.home import resolve_home_dir
from sessionkit.codexfiles.writerlock import WriterLocks, locks_per_batch

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

pytestmark = pytest.mark.skipif(fcntl is None or not os.path.isdir("/proc/self"),
                                reason="stands in for other hosts on Linux")

PS_MACOS = """\
    1     0 /sbin/launchd
  501     1 /Applications/Codex.app/Contents/MacOS/Codex
  612     1 /opt/homebrew/bin/codex app-server --listen unix:// --managed-daemon
  700   650 /opt/homebrew/bin/codex resume
  701   700 /usr/bin/python3 /x/session_repair.py
  abc   def garbage line
"""

TASKLIST_CODEX = '''\
"System Idle Process","0","Services","0","8 K"
"explorer.exe","4120","Console","1","120,344 K"
"Codex.exe","5012","Console","1","210,000 K"
"codex.exe","6120","Console","1","80,100 K"
"python.exe","7000","Console","1","20,000 K"
'''
TASKLIST_NONE = '''\
"System Idle Process","0","Services","0","8 K"
"explorer.exe","4120","Console","1","120,344 K"
"python.exe","7000","Console","1","20,000 K"
'''


def _runner(ps: str = "", tasklist: str = ""):
    def run(argv):
        return {"ps": ps, "tasklist": tasklist}.get(argv[0]) or None
    return run


@pytest.fixture
def as_host():
    """Install a host's facts for one test; the real host's again afterwards."""
    yield host.install
    host.install(None)
    faults.install(None)


def windows(**kw):
    kw.setdefault("run", _runner(tasklist=kw.pop("tasklist", TASKLIST_NONE)))
    return host.simulated(host.WINDOWS, **kw)


def macos(**kw):
    kw.setdefault("run", _runner(ps=kw.pop("ps", PS_MACOS)))
    return host.simulated(host.MACOS, **kw)


# ---- the host module's decisions ---------------------------------------------------------------

def test_the_real_host_here_is_linux_with_flock_and_proc():
    h = host.real()
    assert (h.name, h.locker.api, h.processes, h.folds_case, h.rename_replaces_open) == \
        ("linux", "flock", "/proc", False, True)
    assert h.missing() == [] and host.current() is h


def test_what_each_host_cannot_guarantee(as_host):
    assert host.simulated(host.MACOS).missing() == []
    assert host.simulated(host.WINDOWS).missing() == []  # LockFileEx through ctypes, tasklist
    no_ctypes = host.simulated(host.WINDOWS, locker=None)
    assert no_ctypes.missing() == ["Codex's writer locks cannot be taken here (no fcntl, and no ctypes to call "
                                   "LockFileEx): a session open in Codex could be overwritten under it"]
    blind = host.simulated(host.WINDOWS, processes=None)
    assert [m.split(" (")[0] for m in blind.missing()] == ["running Codex processes cannot be seen here"]
    assert host.simulated(host.MACOS, processes=None).missing() == []  # the daemon's socket is still asked


def test_ps_and_tasklist_are_parsed_and_codex_is_found_by_image(as_host):
    rows = host.parse_ps(PS_MACOS)
    assert [(r.pid, r.ppid, r.argv[0], r.home) for r in rows] == [
        (1, 0, "/sbin/launchd", None), (501, 1, "/Applications/Codex.app/Contents/MacOS/Codex", None),
        (612, 1, "/opt/homebrew/bin/codex", None), (700, 650, "/opt/homebrew/bin/codex", None),
        (701, 700, "/usr/bin/python3", None)]
    assert [r.pid for r in rows if host.is_codex_image(r.argv[0])] == [612, 700]
    win = host.parse_tasklist(TASKLIST_CODEX)
    assert [(r.pid, r.argv) for r in win if host.is_codex_image(r.argv[0])] == [(5012, ["Codex.exe"]),
                                                                                 (6120, ["codex.exe"])]
    as_host(macos())
    procs, homes_known = locks.codex_processes(Path("/nowhere"))
    assert [(p.pid, p.label, p.is_managed_daemon) for p in procs] == [
        (612, "codex app-server --managed-daemon", True), (700, "codex resume", False)]
    assert homes_known is False
    as_host(windows(tasklist=TASKLIST_CODEX))
    assert [p.pid for p in locks.codex_processes(Path("/nowhere"))[0]] == [5012, 6120]
    as_host(windows(run=lambda argv: None))
    assert locks.codex_processes(Path("/nowhere")) == (None, False)


def test_paths_fold_case_where_the_file_system_does(as_host):
    inside = "/Users/Me/.Codex/sessions/2025/01/01/rollout.jsonl"
    assert not paths.is_inside(inside, "/users/me/.codex")
    assert not host.same_path("/Users/Me/.codex", "/users/me/.codex")
    as_host(macos())
    assert paths.is_inside(inside, "/users/me/.codex")
    assert host.same_path("/Users/Me/.codex", "/users/me/.codex")
    assert not paths.is_inside("/Users/Me/.codex-old/x", "/users/me/.codex")  # still on a boundary
    as_host(windows())
    assert paths.is_inside(inside, "/USERS/ME/.CODEX")


def test_the_default_home_per_host(as_host, tmp_path):
    env = {"HOME": "/home/u", "USERPROFILE": r"C:\Users\U"}
    assert host.default_home(env) == Path("/home/u/.codex")
    assert host.default_home({**env, "CODEX_HOME": "/elsewhere"}) == Path("/elsewhere")
    assert host.default_home({**env, "CODEX_HOME": ""}) == Path("/home/u/.codex")  # empty: unset, as for Codex
    as_host(windows())
    assert host.default_home(env) == Path(r"C:\Users\U") / ".codex"
    assert host.default_home({**env, "CODEX_HOME": r"D:\codex"}) == Path(r"D:\codex")
    profile = tmp_path / "profile"
    (profile / ".codex").mkdir(parents=True)
    assert resolve_home_dir(None, {"USERPROFILE": str(profile)}) == (profile / ".codex").resolve()


def test_replacing_a_file_held_open(as_host, tmp_path):
    dst, src = tmp_path / "rollout.jsonl", tmp_path / ".rollout.tmp"
    dst.write_bytes(b"old\n")
    src.write_bytes(b"new\n")
    with open(dst, "rb"):  # POSIX: a rename replaces a file another program holds open
        host.replace_file(str(src), str(dst))
    assert dst.read_bytes() == b"new\n"
    src.write_bytes(b"newer\n")

    def held(a, b):
        raise PermissionError(errno.EACCES, "Access is denied", b)
    as_host(windows(rename=held))
    with pytest.raises(OSError) as err:
        host.replace_file(str(src), str(dst))
    assert err.value.errno == errno.EACCES and str(dst) in str(err.value)
    assert "Windows cannot replace" in str(err.value) and dst.read_bytes() == b"new\n"
    as_host(windows())  # nobody holds it: Windows replaces it too (os.replace)
    host.replace_file(str(src), str(dst))
    assert dst.read_bytes() == b"newer\n" and not src.exists()


def test_the_open_file_rule_per_host(as_host):
    as_host(windows())
    assert host.open_file_room(100) is None
    assert host.open_file_room(9000) == {"room": 8192, "soft": 8192, "hard": 8192}
    assert locks_per_batch(20000) == 8192 - host.descriptors_in_use() - 128
    as_host(windows(locker=None))
    assert locks_per_batch(20000) == 20000  # no locks are taken: nothing to fit


def test_without_a_lock_call_nothing_is_probed_or_taken(as_host, tmp_path):
    lock = tmp_path / "thread-writer-locks" / "t1.lock"
    lock.parent.mkdir()
    fd = os.open(str(lock), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert locks.is_held(lock)
        as_host(windows())  # LockFileEx (stood in for by flock): seen, and refused to a second writer
        assert locks.is_held(lock)
        assert WriterLocks(tmp_path).take("t1").startswith("live thread")
        as_host(windows(locker=None))
        assert not locks.is_held(lock)
        assert WriterLocks(tmp_path).take("t1") is None  # nothing taken: the apply refused before (missing)
    finally:
        os.close(fd)


# ---- what runs, said whole -----------------------------------------------------------------------

def test_one_process_holding_many_locks_is_named_once_with_its_stop_command():
    stop = "CODEX_HOME=/h /opt/codex app-server daemon stop"
    act = locks.CodexActivity(holders=[
        locks.LockHolder(locks.DAEMON_KIND, Path("/h/tmp/arg0/a/.lock"), pid=612, stop=stop),
        locks.LockHolder("thread writer", Path("/h/thread-writer-locks/t1.lock"), thread_id="t1", pid=612,
                         held_by="codex app-server --managed-daemon", stop=stop),
        locks.LockHolder("thread writer", Path("/h/thread-writer-locks/t2.lock"), thread_id="t2", pid=612,
                         held_by="codex app-server --managed-daemon", stop=stop),
        locks.LockHolder("codex process", Path("/h/tmp/arg0/b/.lock"), pid=700, command="codex resume"),
        locks.LockHolder("codex process", Path("/h/tmp/arg0/c/.lock"), pid=800, command="codex app-server"),
        locks.LockHolder(locks.UPDATE_LOOP_KIND, Path("/proc/9"), pid=9, writes_sessions=False),
    ])
    found = act.running_codex()
    assert [(r.what, r.pid, r.threads, r.stop, r.stop_is_command) for r in found] == [
        (locks.DAEMON_WHAT, 612, ["t1", "t2"], stop, True),
        (locks.CLI_WHAT, 700, [], locks.STOP_CLI, False),
        (locks.APP_SERVER_WHAT, 800, [], locks.STOP_APP_SERVER, False)]
    assert act.running_lines() == [
        "Codex is running on this home:",
        "- the Codex daemon the TUI leaves running (pid 612, codex app-server --managed-daemon)",
        "  holds 2 sessions open", f"  stop it: {stop}",
        "- a Codex CLI (pid 700, codex resume)", "  holds no session open now",
        "  stop it: quit it in its terminal (/quit or Ctrl-C)",
        "- a Codex app-server (an editor extension or the Codex app) (pid 800, codex app-server)",
        "  holds no session open now", "  stop it: close the editor or the Codex app that started it"]
    assert act.running_report()[0] == {"what": locks.DAEMON_WHAT, "pid": 612, "pids": [612], "threads": ["t1", "t2"],
                                       "command": "codex app-server --managed-daemon", "stop": stop,
                                       "stop_is_command": True}
    text = locks.refusal(act)
    assert text.count(stop) == 1 and text.count("\n") == 11 and "Nothing was changed" in text
    assert max(len(x) for x in text.splitlines() if stop not in x) <= 100
    assert locks.refusal(locks.CodexActivity()) is None


# ---- Windows: tasklist, LockFileEx, no socket --------------------------------------------------

def test_windows_counts_every_codex_exe_and_says_what_to_close(as_host, tmp_path):
    as_host(windows(tasklist=TASKLIST_CODEX))
    act = locks.scan_activity(tmp_path, environ={})
    assert [(h.pid, h.role) for h in act.others] == [(5012, "unseen"), (6120, "unseen")]
    text = locks.refusal(act)
    assert text.count(locks.STOP_UNSEEN) == 1 and act.missing == []
    (lock := tmp_path / "thread-writer-locks" / "t1.lock").parent.mkdir()
    fd = os.open(str(lock), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:  # no pid is seen for a held lock on Windows: it belongs to one of the codex.exe
        (found,) = locks.scan_activity(tmp_path, environ={}).running_codex()
        assert (found.what, found.pids, found.threads) == (locks.UNSEEN_WHAT, [5012, 6120], ["t1"])
    finally:
        os.close(fd)
        lock.unlink()
    # under an agent (CODEX_THREAD_ID) one codex.exe is its own: a second one still runs
    act = locks.scan_activity(tmp_path, environ={"CODEX_THREAD_ID": "t"})
    assert [h.pid for h in act.holders if h.own] == [5012] and [h.pid for h in act.others] == [6120]
    as_host(windows(tasklist='"codex.exe","6120","Console","1","80,100 K"\n'))
    assert not locks.scan_activity(tmp_path, environ={"CODEX_THREAD_ID": "t"}).running
    as_host(windows(run=lambda argv: None))  # tasklist failed: blind, and said so
    act = locks.scan_activity(tmp_path, environ={})
    assert not act.running and [m.split(" (")[0] for m in act.missing] == \
        ["running Codex processes cannot be seen here"]
    assert "the Codex app and every codex.exe process" in locks.refusal(act)
    as_host(windows(processes=None))  # no tasklist at all: said once
    assert len(locks.scan_activity(tmp_path, environ={}).missing) == 1


def test_windows_never_asks_a_unix_socket(as_host, tmp_path):
    sock = Path("/tmp") / f"cx-{os.getpid()}.sock"
    home = tmp_path / "h"
    (home / "app-server-control").mkdir(parents=True)
    os.symlink(sock, home / "app-server-control" / "app-server-control.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock))
    server.listen(1)
    try:
        assert locks.control_socket_answers(home) is True
        as_host(windows())
        assert locks.control_socket_answers(home) is None
        as_host(macos(ps=""))
        assert locks.scan_activity(home, environ={}).running  # macOS: the socket finds the daemon
    finally:
        server.close()
        sock.unlink()


def test_the_daemon_socket_answers_through_a_home_path_longer_than_a_socket_path_may_be(tmp_path):
    """A socket path is limited to about 108 bytes; a home's link to Codex's socket may be longer
    (a deep home): the daemon is still found, not called stale."""
    sock = Path("/tmp") / f"cx-long-{os.getpid()}.sock"
    home = tmp_path / ("deep-" * 12) / "h"
    (home / "app-server-control").mkdir(parents=True)
    link = home / "app-server-control" / "app-server-control.sock"
    os.symlink(sock, link)
    assert len(str(link).encode()) > 108
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock))
    server.listen(1)
    try:
        assert locks.control_socket_answers(home) is True
    finally:
        server.close()
        sock.unlink()


# ---- the whole write path, in-process, per host ------------------------------------------------

def _script(name: str, *args: str) -> tuple:
    """Run a shipped script in this process (so the installed host facts apply): (code, out, err)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = [str(SCRIPTS / name), *args]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                runpy.run_path(str(SCRIPTS / name), run_name="__main__")
                code = 0
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


def _moved(root: Path):
    """A home copied from /home/olduser/.codex whose sessions' folders moved: rows repointed and
    rollouts rewritten longer (the Windows rename path)."""
    hb = HomeBuilder(root)
    threads = [hb.add(cwd="/home/olduser/proj", preview=f"t{i}") for i in range(3)]
    for t in threads:
        hb.sql("UPDATE threads SET rollout_path=? WHERE id=?",
               ("/home/olduser/.codex/" + str(t.path.relative_to(hb.root)), t.id))
    args = ["--codex-dir", str(hb.root), "--remap-prefix", f"/home/olduser/.codex={hb.root}",
            "--remap-prefix", "/home/olduser/proj=/home/newuser/longer/proj", "--no-unarchive", "--apply", "--json"]
    return hb, threads, args


def _split(root: Path):
    hb = HomeBuilder(root, provider="newco", providers=["newco", "oldco"])
    threads = [hb.add(provider="oldco", preview=f"old {i}") for i in range(3)]
    return hb, threads, ["--codex-dir", str(hb.root), "--apply", "--json"]


WRITERS = [("session_repair.py", _moved), ("provider_migrate.py", _split)]


def _refused(script, make, tmp_path, facts, *extra):
    hb, threads, args = make(tmp_path / ".codex")
    before = home_state(hb.root)
    host.install(facts)
    code, out, err = _script(script, *args, *extra)
    assert code == 2 and out == "", (out, err)
    assert home_state(hb.root) == before  # bytes, mtimes, modes, every row
    assert not (hb.root / ".tmp" / "session-migration").exists() or \
        not any((hb.root / ".tmp" / "session-migration").glob("*/journal.jsonl"))
    return hb, threads, args, err


@pytest.mark.parametrize("script,make", WRITERS)
def test_windows_apply_refuses_while_a_codex_exe_runs(as_host, tmp_path, script, make):
    _, _, _, err = _refused(script, make, tmp_path, windows(tasklist=TASKLIST_CODEX))
    assert "Codex is running on this home:\n- codex.exe processes, whose home Windows does not show (pids 5012, " \
        "6120)\n  holds no session open now\n  stop it: close the Codex app and end every codex.exe (Task Manager)" \
        "\nNothing was changed. Stop it, then run again" in err


@pytest.mark.parametrize("script,make", WRITERS)
def test_windows_without_lockfileex_refuses_and_says_what_is_missing(as_host, tmp_path, script, make):
    hb, threads, args, err = _refused(script, make, tmp_path, windows(locker=None))
    assert "Codex's writer locks cannot be taken here (no fcntl, and no ctypes to call LockFileEx)" in err
    assert "Close the Codex app and every codex.exe process" in err and "--force" in err
    code, out, err = _script(script, *args, "--force")  # the user closed Codex and said so
    assert code == 0, err
    assert json.loads(out)["result"]["updated_rows"] == 3


def _locks_held_at_every_change(hb, threads):
    """A fault hook: at each change, every changed thread's writer lock is held (by the run)."""
    seen = []

    def check(label):
        if label == "file":
            probe = {t.id: locks.is_held(hb.root / "thread-writer-locks" / f"{t.id}.lock") for t in threads}
            seen.append(probe)
    faults.install(check)
    return seen


@pytest.mark.parametrize("name", ["windows", "macos", "linux"])
@pytest.mark.parametrize("script,make", WRITERS)
def test_the_apply_locks_and_writes_per_host(as_host, tmp_path, script, make, name):
    hb, threads, args = make(tmp_path / ".codex")
    facts = {"windows": windows(), "macos": macos(), "linux": host.real()}[name]
    host.install(facts)
    seen = _locks_held_at_every_change(hb, threads)
    code, out, err = _script(script, *args)
    assert code == 0, err
    assert json.loads(out)["result"]["updated_rows"] == 3
    assert seen and all(all(p.values()) for p in seen), seen
    assert not any((hb.root / "thread-writer-locks").glob("*-*.lock"))  # ours removed after
    # Windows cannot delete a locked file: the coordination lock is left, as Codex leaves it
    assert (hb.root / "thread-writer-locks" / ".coordination.lock").exists() == (name == "windows")


@pytest.mark.parametrize("name", ["windows", "macos"])
def test_a_session_open_in_codex_refuses_the_apply_then_stays_untouched_under_force(as_host, tmp_path, name):
    hb, threads, args = _split(tmp_path / ".codex")
    lock = hb.root / "thread-writer-locks" / f"{threads[0].id}.lock"
    lock.parent.mkdir()
    fd = os.open(str(lock), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # Codex's lock, as LockFileEx would be on Windows
    try:
        _, _, _, err = _refused("provider_migrate.py", _split_again(hb, threads, args), tmp_path,
                                windows() if name == "windows" else macos(ps=""))
        assert "Codex (its processes cannot be told apart here)" in err and "holds 1 session open" in err
        rollout = threads[0].path.read_bytes()
        code, out, err = _script("provider_migrate.py", *args, "--force")
        assert code in (0, 1), err
        assert json.loads(out)["result"]["updated_rows"] == 2
        assert threads[0].path.read_bytes() == rollout
    finally:
        os.close(fd)


def _split_again(hb, threads, args):
    return lambda _root: (hb, threads, args)


@pytest.mark.parametrize("name", ["macos", "linux"])
def test_a_running_codex_cli_refuses_the_apply(as_host, tmp_path, name):
    """Its arg0 lock in the home (every Codex CLI holds one) is what is seen where /proc is not."""
    hb, threads, args = _split(tmp_path / ".codex")
    lock = hb.root / "tmp" / "arg0" / "codex-arg0x" / ".lock"
    lock.parent.mkdir(parents=True)
    fd = os.open(str(lock), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        _, _, _, err = _refused("provider_migrate.py", _split_again(hb, threads, args), tmp_path,
                                macos() if name == "macos" else host.real())
        assert "Codex is running on this home:" in err
        want = "Codex (its processes cannot be told apart here)" if name == "macos" else \
            f"a codex process (pid {os.getpid()})"
        assert want in err
    finally:
        os.close(fd)


def test_windows_cannot_replace_a_rollout_held_open_so_the_run_undoes_itself(as_host, tmp_path):
    hb, threads, args = _moved(tmp_path / ".codex")
    before = home_state(hb.root)
    held = {str(threads[1].path)}

    def rename(src, dst):
        if dst in held:
            raise PermissionError(errno.EACCES, "The process cannot access the file", dst)
        os.replace(src, dst)
    host.install(windows(rename=rename))
    code, out, err = _script("session_repair.py", *args)
    assert code == 2, (out, err)
    assert "Windows cannot replace" in err and str(threads[1].path) in err and "undone" in err
    after = home_state(hb.root)
    left = after["files"].pop("thread-writer-locks/.coordination.lock")  # Windows: left, as Codex leaves it
    assert left[0] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # empty
    assert after == before
    assert not list(hb.root.rglob(".*.session-migration.tmp"))


# Where content is read or written through os.open, Windows would translate CRLF and stop at
# Ctrl-Z unless O_BINARY is set: every such call carries host.BINARY. Lock files, folders and
# /dev/null hold no content.
NO_CONTENT = {("writerlock.py", "_coordination"), ("writerlock.py", "take_many"),
              ("writerlock.py", "remove_unused_lock_dir"), ("writerlock.py", "remove_stale_locks"),
              ("safety.py", "__enter__"), ("locks.py", "is_held"), ("ops.py", "_fsync_dir"), ("cli.py", "_stdout_gone"),
              ("artifacts.py", "_fsync_path"),  # fsync only, no content
              ("lockbatch.py", "locks_beside_home_lock")}  # /dev/null, held as a stand-in descriptor


def test_every_os_open_of_content_is_binary_for_windows():
    import ast
    found, bare = [], []
    for path in sorted((SCRIPTS / "sessionkit").rglob("*.py")) + sorted(SCRIPTS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for call in ast.walk(fn):
                if isinstance(call, ast.Call) and ast.unparse(call.func) == "os.open":
                    flags = ast.unparse(call.args[1])
                    if flags == "flags":  # named first, in the same function
                        flags = " ".join(ast.unparse(n.value) for n in ast.walk(fn) if isinstance(n, ast.Assign)
                                         and [ast.unparse(t) for t in n.targets] == ["flags"])
                    key = (path.name, fn.name)
                    found.append(key)
                    if "host.BINARY" not in flags and key not in NO_CONTENT:
                        bare.append(key)
    assert len(found) >= 15 and bare == [], bare


class _MacLimits:
    """macOS's open-file rule, stood in for: the hard limit is unlimited, and a soft limit above
    OPEN_MAX (10240) is refused (EINVAL) by setrlimit."""
    RLIMIT_NOFILE, RLIM_INFINITY = 8, -1

    def __init__(self, soft):
        self.soft, self.calls = soft, []

    def getrlimit(self, which):
        return self.soft, self.RLIM_INFINITY

    def setrlimit(self, which, limits):
        self.calls.append(limits)
        if limits[0] > host.OPEN_MAX or limits[1] != self.RLIM_INFINITY:
            raise ValueError("not allowed to raise maximum limit")
        self.soft = limits[0]


def test_macos_raises_the_soft_limit_to_open_max_and_batches_beyond_it(as_host, monkeypatch):
    as_host(macos())
    in_use = host.descriptors_in_use()
    mac = _MacLimits(256)  # macOS's default soft limit
    monkeypatch.setattr(host, "resource", mac)
    assert locks_per_batch(1000) == 1000 and mac.soft == 1000 + in_use + 128  # raised: all at once
    mac = _MacLimits(256)
    monkeypatch.setattr(host, "resource", mac)
    assert locks_per_batch(50000) == host.OPEN_MAX - in_use - 128  # capped at OPEN_MAX: batches
    assert mac.soft == host.OPEN_MAX and mac.calls[-1] == (host.OPEN_MAX, mac.RLIM_INFINITY)


def test_the_host_is_told_from_the_platform(monkeypatch):
    monkeypatch.setattr(sys, "platform", "cygwin")  # native Codex's LockFileEx locks are not seen there
    h = host._detect()
    assert (h.name, h.locker, h.processes, h.rename_replaces_open) == ("windows", None, "tasklist", False)
    assert "Cygwin/MSYS Python" in h.missing()[0]
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(host, "FLOCK_LOCKER", None)  # no fcntl; here no msvcrt either, as without ctypes
    h = host._detect()
    assert (h.name, h.locker, h.folds_case, h.unix_sockets) == ("windows", None, True, False)
    assert "no fcntl, and no ctypes to call LockFileEx" in h.missing()[0]
    monkeypatch.setattr(sys, "platform", "darwin")
    assert (host._detect().name, host._detect().folds_case) == ("macos", True)
