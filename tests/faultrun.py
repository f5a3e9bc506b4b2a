"""Test launcher: run a script with a fault hook installed (the shipped scripts have none active).

    python tests/faultrun.py SCRIPT [ARGS...]   with FAULTRUN=<spec> in the environment

spec: `count:FILE` appends every fault point's label to FILE; `ACTION:N` or `ACTION:LABEL:N` acts at
the Nth point (of that label): kill (SIGKILL), sigint (Ctrl-C), eio (write error), enospc (full disk).
`fsize:BYTES` (with any spec, joined by `+`) sets RLIMIT_FSIZE in this process, SIGXFSZ ignored.
`nofile:N` sets RLIMIT_NOFILE to N, soft and hard, for good: where this process could raise the hard
limit again (root with CAP_SYS_RESOURCE), it re-runs itself under setpriv without that capability.

    python tests/faultrun.py --serve FD   a fork server on the socket FD (see `run` below)

The suite runs scripts thousands of times (each fault walk: a run and a rollback per point), and
a new interpreter spends most of such a run starting and importing. `run` has one server per test
process, started once with every module of scripts/ imported, fork a child per run: the child takes
the caller's stdin, pipes, cwd, umask and environment, and runs the script as `__main__` exactly as
a launch of this file does, exit status and all (`nofile:` drops CAP_SYS_RESOURCE as setpriv would).
Runs that differ at interpreter start (PYTHON*, locale variables) start a process of their own.
"""
import errno
import json
import os
import resource
import runpy
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _hook(spec: str):
    counts = {}
    if spec.startswith("count:"):
        out = spec[len("count:"):]

        def count(label: str) -> None:
            with open(out, "a") as fh:
                fh.write(label + "\n")
        return count
    parts = spec.split(":")
    action, want_label, n = (parts[0], None, int(parts[1])) if len(parts) == 2 else (parts[0], parts[1], int(parts[2]))

    def act(label: str) -> None:
        if want_label is not None and label != want_label:
            return
        counts[0] = counts.get(0, 0) + 1
        if counts[0] != n:
            return
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            raise KeyboardInterrupt  # delivered at once in CPython; raised here for certainty
        if action == "eio":
            raise OSError(errno.EIO, f"Input/output error (test fault at {label})")
        if action == "enospc":
            raise OSError(errno.ENOSPC, f"No space left on device (test fault at {label})")
    return act


_FORKED = False  # in a child of the fork server: no re-run under setpriv (the capability is dropped)


def _drop_sys_resource() -> None:
    """A forked child's setpriv: CAP_SYS_RESOURCE out of its bounding, permitted and effective sets,
    so that it (and what it runs) cannot raise its open-file limit again."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    cap = 24  # CAP_SYS_RESOURCE
    libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (refused without CAP_SETPCAP: then not held anyway)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
    head, data = Header(0x20080522, 0), (Data * 2)()
    if libc.capget(ctypes.byref(head), data) != 0:
        return
    for field in ("effective", "permitted", "inheritable"):
        setattr(data[0], field, getattr(data[0], field) & ~(1 << cap))
    libc.capset(ctypes.byref(head), data)


def _limit_open_files(n: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n + 1))
    except (ValueError, OSError):
        return  # the hard limit holds
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    if _FORKED or os.environ.get("FAULTRUN_NO_RAISE"):
        raise SystemExit("faultrun: cannot keep this process from raising its open-file limit")
    os.environ["FAULTRUN_NO_RAISE"] = "1"
    os.execvp("setpriv", ["setpriv", "--bounding-set=-sys_resource", sys.executable, *sys.argv])


def _start(argv: Sequence[str]) -> Path:
    """This launcher's work before the script runs: sys.argv, sys.path, the fault hook, the limits."""
    for spec in os.environ.get("FAULTRUN", "").split("+"):
        if spec.startswith("nofile:"):
            _limit_open_files(int(spec[len("nofile:"):]))
    script = Path(argv[0])
    sys.argv = [str(script)] + list(argv[1:])
    if str(SCRIPTS) not in sys.path[:1]:
        sys.path.insert(0, str(SCRIPTS))
    sys.dont_write_bytecode = True
    from sessionkit.codexfiles import faults
    for spec in filter(None, os.environ.get("FAULTRUN", "").split("+")):
        if spec.startswith("fsize:"):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            limit = int(spec[len("fsize:"):])
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        elif not spec.startswith("nofile:"):
            faults.install(_hook(spec))
    return script


def main() -> None:
    script = _start(sys.argv[1:])
    runpy.run_path(str(script), run_name="__main__")


# ---- the fork server ---------------------------------------------------------------------------

def _startup_env(env: Dict[str, str]) -> Dict[str, str]:
    """What an interpreter reads as it starts (a forked child cannot take it on later)."""
    return {k: v for k, v in env.items() if k.startswith(("PYTHON", "LC_")) or k in ("LANG", "LANGUAGE")}


def _preload() -> None:
    """Every module of scripts/ imported once, here, for every child to inherit."""
    import importlib
    import pkgutil
    sys.path.insert(0, str(SCRIPTS))
    sys.dont_write_bytecode = True
    import sessionkit
    for mod in pkgutil.walk_packages(sessionkit.__path__, "sessionkit."):
        importlib.import_module(mod.name)
    sys.path.remove(str(SCRIPTS))


def _std_streams() -> None:
    """sys.stdin/stdout/stderr made anew on fds 0-2 (now the caller's), as the interpreter makes
    them at its start: same encoding and errors, buffered, stderr line-buffered."""
    import io
    made = []
    for fd, old in enumerate((sys.__stdin__, sys.__stdout__, sys.__stderr__)):
        raw = io.FileIO(fd, "rb" if fd == 0 else "wb", closefd=False)
        buf = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        made.append(io.TextIOWrapper(buf, encoding=old.encoding, errors=old.errors, newline="\n",
                                     line_buffering=fd == 2 or raw.isatty()))
    sys.stdin, sys.stdout, sys.stderr = made
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = made


def _child(req: dict, fds: List[int]) -> None:
    """In the forked child: become the launched process, run the script, exit as Python would."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    _std_streams()
    os.chdir(req["cwd"])
    os.umask(req["umask"])
    os.environ.clear()
    os.environ.update(req["env"])
    import time
    time.tzset()
    global _FORKED
    _FORKED = True
    if "nofile:" in os.environ.get("FAULTRUN", ""):
        _drop_sys_resource()
    code: object = 0
    interrupted = False
    try:
        script = _start(req["argv"])
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        import traceback
        traceback.print_exc()
        interrupted = True
    except BaseException:  # noqa: B902 - as the interpreter does: the traceback, exit 1
        import traceback
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        import threading
        threading._shutdown()  # type: ignore[attr-defined]
        import atexit
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    finally:
        if interrupted:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code & 0xFF)


def serve(fd: int) -> None:
    """Fork one child per request on the socket `fd`, one at a time; its exit status back."""
    _preload()
    sock = socket.socket(fileno=fd)
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 3)
        except OSError:
            return
        if not msg:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            sock.close()
            _child(json.loads(msg), fds)
        for f in fds:
            os.close(f)
        sock.sendall(json.dumps({"pid": pid}).encode())
        _, status = os.waitpid(pid, 0)
        sock.sendall(json.dumps({"rc": os.waitstatus_to_exitcode(status)}).encode())


class _Server:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.env = dict(os.environ)
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(theirs.fileno())],
                                     pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        theirs.close()
        self.sock = ours
        self.pid = os.getpid()

    def close(self) -> None:
        self.sock.close()  # the server ends at the end of its input
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_SERVER: Optional[_Server] = None
_BUSY = threading.Lock()


def _server() -> _Server:
    global _SERVER
    if _SERVER is None or _SERVER.pid != os.getpid() or _SERVER.proc.poll() is not None:
        _SERVER = _Server()
        import atexit
        atexit.register(_SERVER.close)
    return _SERVER


def run(argv: Sequence[str], env: Dict[str, str]) -> "subprocess.CompletedProcess[str]":
    """`subprocess.run([python, faultrun.py, *argv], capture_output=True, text=True, env=env)`."""
    return script_run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True)


def script_run(cmd: Sequence[str], *, env: Optional[Dict[str, str]] = None, cwd: object = None,
               input: object = None, capture_output: bool = False, text: bool = False,
               timeout: Optional[float] = None, check: bool = False, **other: object) -> subprocess.CompletedProcess:
    """subprocess.run for `[sys.executable, scripts/X.py or this launcher, ...]`, output captured:
    forked from the server (the same process, see the module's docstring), else run as asked."""
    env = dict(os.environ if env is None else env)
    argv = [str(a) for a in cmd[1:]]
    launcher = bool(argv) and Path(argv[0]).resolve() == Path(__file__).resolve()
    ours = bool(argv) and (launcher or Path(argv[0]).resolve().parent == SCRIPTS)
    srv = _server() if ours and capture_output and not other and cmd[0] == sys.executable else None
    if srv is None or _startup_env(env) != _startup_env(srv.env) or not _BUSY.acquire(blocking=False):
        return subprocess.run(list(cmd), env=env, cwd=cwd, input=input, capture_output=capture_output, text=text,
                              timeout=timeout, check=check, **other)  # type: ignore[arg-type]
    try:  # one run at a time on the server's socket (another thread's run meanwhile: a process of its own)
        return _forked(srv, cmd, argv, launcher, env, cwd, input, text, timeout, check)
    finally:
        _BUSY.release()


def _forked(srv: _Server, cmd: Sequence[str], argv: List[str], launcher: bool, env: Dict[str, str], cwd: object,
            input: object, text: bool, timeout: Optional[float], check: bool) -> subprocess.CompletedProcess:
    """One run forked by the server: its pid first, its exit status once it ended."""
    if not launcher:
        env.pop("FAULTRUN", None)  # a plain script run: no fault hook
    umask = os.umask(0o22)
    os.umask(umask)
    in_r = in_w = None
    if input is not None:
        in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    req = {"argv": argv[1:] if launcher else argv, "env": env, "umask": umask,
           "cwd": str(cwd) if cwd is not None else os.getcwd()}
    stdin_fd = in_r if in_r is not None else 0
    try:
        os.fstat(stdin_fd)
    except OSError:  # no stdin here: the child gets /dev/null
        in_r = stdin_fd = os.open(os.devnull, os.O_RDONLY)
    try:
        socket.send_fds(srv.sock, [json.dumps(req).encode()], [stdin_fd, out_w, err_w])
    finally:
        for fd in (out_w, err_w, in_r):
            if fd is not None:
                os.close(fd)
    pid = json.loads(srv.sock.recv(1 << 16))["pid"]
    data = (input.encode() if isinstance(input, str) else input) if input is not None else None
    try:
        out, err = _communicate(out_r, err_r, in_w, data, timeout)
    except subprocess.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        srv.sock.recv(1 << 16)
        raise subprocess.TimeoutExpired(list(cmd), timeout) from None
    answer = srv.sock.recv(1 << 16)
    if not answer:
        raise RuntimeError("the faultrun server is gone")
    rc = json.loads(answer)["rc"]
    res = subprocess.CompletedProcess(list(cmd), rc, _decode(out) if text else out, _decode(err) if text else err)
    if check:
        res.check_returncode()
    return res


def _communicate(out_r: int, err_r: int, in_w: Optional[int], data: Optional[bytes],
                 timeout: Optional[float]) -> "tuple[bytes, bytes]":
    """Both outputs read to their end (and the input written) at once, as Popen.communicate does."""
    import selectors
    import time
    deadline = None if timeout is None else time.monotonic() + timeout
    bufs = {out_r: bytearray(), err_r: bytearray()}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    view = memoryview(data or b"")
    if in_w is not None:
        if view:
            os.set_blocking(in_w, False)
            sel.register(in_w, selectors.EVENT_WRITE)
        else:
            os.close(in_w)
    try:
        while sel.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired([], timeout or 0)
            for key, _ in sel.select(left):
                if key.fd == in_w:
                    try:
                        view = view[os.write(in_w, view[:1 << 16]):]
                    except BrokenPipeError:
                        view = view[:0]
                    if not view:
                        sel.unregister(in_w)
                        os.close(in_w)
                    continue
                chunk = os.read(key.fd, 1 << 16)
                if chunk:
                    bufs[key.fd] += chunk
                else:
                    sel.unregister(key.fd)
    finally:
        for key in list(sel.get_map().values()):
            if key.fd == in_w:
                os.close(in_w)
        sel.close()
        os.close(out_r)
        os.close(err_r)
    return bytes(bufs[out_r]), bytes(bufs[err_r])


def _decode(data: bytes) -> str:
    """As subprocess.run(text=True) decodes (the locale's encoding, universal newlines)."""
    import locale
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
    else:
        main()
