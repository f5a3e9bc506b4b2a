"""A real Codex home driven by the real Codex CLI, for the end-to-end tests.

The `world` fixture (tests/conftest.py) hands each test a CodexWorld on the Codex release
`codex_version` (0.171.0; a test marked `@pytest.mark.compat` runs on 0.169.0 as well).
Surfaces a user looks at: world.listing()/listed_ids() (app-server thread/list),
world.read_turns(), world.resume_and_turn(), world.picker() and world.tui() (the real TUI through
tmux), and world.surfaces(cwd) for all of them at once. Teardown stops every process of the home
(the TUI's managed daemon and its pid-update-loop included) and fails the test if one is left."""
from __future__ import annotations

import json
import os
import shutil
import stat
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

import faultrun  # script runs forked (tests/faultrun.py)
from codex_client import (CODEX_VERSION, AppServer, CodexError, active_version, codex_bin,
                          doctor_parity, run_codex, run_exec)
from mock_model import MockModelServer
from tui import Picker, Tui

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"


def provider_config(current: str, base_url: str, providers: List[str],
                    extra: str = "") -> str:
    lines = [f'model_provider = "{current}"', 'model = "gpt-5"', extra]
    for p in providers:
        lines += [f"[model_providers.{p}]", f'name = "{p}"', f'base_url = "{base_url}"',
                  'wire_api = "responses"', 'env_key = "MOCK_API_KEY"', ""]
    return "\n".join(lines)


_READABLE: Dict[str, Path] = {}


def readable_scripts() -> Path:
    """A copy of scripts/ that any user can read, for tests that run a script as another user
    (`nobody`): a clone in a private folder (mode 0700, as many home folders are) is closed to
    them. One copy per test process under /var/tmp, removed when the process ends."""
    if "scripts" not in _READABLE:
        import atexit
        import tempfile
        base = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="csm-scripts-"))
        atexit.register(shutil.rmtree, str(base), True)
        dest = base / "scripts"
        shutil.copytree(SCRIPTS, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for dirpath, _dirs, files in os.walk(base):
            os.chmod(dirpath, 0o755)
            for f in files:
                os.chmod(os.path.join(dirpath, f), 0o644)
        _READABLE["scripts"] = dest
    return _READABLE["scripts"]


def clean_env(**extra: str) -> Dict[str, str]:
    """This process's environment without a Codex home or our own settings (CODEX_*,
    SESSION_MIGRATION*): a script run from a test finds only the home it is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "SESSION_MIGRATION"))}
    env.update(extra)
    return env


def fake_codex_exe(folder: Path, source: str) -> Path:
    """An executable `codex` in `folder` (made) running the Python `source`: a stand-in for the CLI."""
    exe = folder / "codex"
    folder.mkdir(parents=True, exist_ok=True)
    exe.write_text(source)
    exe.chmod(0o755)
    return exe


def run_on_home(script: str, home: Path, *args: str, env: Optional[Dict[str, str]] = None,
                **kwargs: Any) -> subprocess.CompletedProcess:
    """`python3 scripts/SCRIPT --codex-dir HOME ARGS` in a clean environment (clean_env plus `env`),
    its output as text; kwargs go to subprocess.run (a timeout, an errors= for odd bytes)."""
    return faultrun.script_run([sys.executable, str(SCRIPTS / script), "--codex-dir", str(home), *args],
                               capture_output=True, text=True, env=clean_env(**(env or {})), check=False,
                               **kwargs)


def run_script(name: str, *args: str, env: Optional[Dict[str, str]] = None,
               cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run one of our scripts as a user would: `python3 scripts/X.py ...`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    full_env.update(env or {})
    return faultrun.script_run([sys.executable, str(SCRIPTS / name), *args], env=full_env,
                               cwd=str(cwd or REPO), capture_output=True, text=True, timeout=300,
                               check=False)


class CodexWorld:
    """One temporary Codex home, its projects, the mock model, and the real client."""

    PROVIDERS = ["mockA", "mockB", "mockLongerProviderName"]

    def __init__(self, base: Path, server: MockModelServer, version: Optional[str] = None) -> None:
        self.base = base
        self.server = server
        self.version = version or active_version()
        self.home = base / "user" / ".codex"
        self.home.mkdir(parents=True)
        self.projects = base / "projects"
        self.projects.mkdir()
        self.apps: List[AppServer] = []
        self.tuis: List[Tui] = []
        self.homes = [self.home]  # every path this home had: its processes are ours to stop
        # The test's own git repository: Codex sees it as the project root, not the checkout
        # the tests run in (world.tui(trusted=True) trusts it for one TUI run).
        if shutil.which("git"):
            subprocess.run(["git", "init", "-q", str(base)], check=False, capture_output=True)
        self.set_provider("mockA")

    def project(self, name: str = "proj") -> Path:
        p = self.projects / name
        p.mkdir(exist_ok=True)
        return p

    def set_provider(self, provider: str) -> None:
        (self.home / "config.toml").write_text(
            provider_config(provider, self.server.base_url, self.PROVIDERS), encoding="utf-8")

    @contextmanager
    def trusted(self) -> Iterator[None]:
        """The test's repository trusted in config.toml for the duration (the TUI asks no "Trust
        this folder?" question); taken out again after, so every other run keeps the default
        sandbox of an untrusted folder (read-only for exec). `-c projects...` does not do it."""
        cfg = self.home / "config.toml"
        block = f'\n[projects."{self.base}"]\ntrust_level = "trusted"\n'
        cfg.write_text(cfg.read_text(encoding="utf-8") + block, encoding="utf-8")
        try:
            yield
        finally:
            if cfg.exists():
                cfg.write_text(cfg.read_text(encoding="utf-8").replace(block, ""), encoding="utf-8")

    # --- making sessions ----------------------------------------------------------------
    @contextmanager
    def app(self, cwd: Optional[Path] = None, on_request=None,
            sqlite_home: Optional[Path] = None) -> Iterator[AppServer]:
        """A `codex app-server` of this home (an editor); sqlite_home: its state DBs' folder
        (CODEX_SQLITE_HOME), e.g. <home>/sqlite as the desktop app keeps it."""
        env = {"CODEX_SQLITE_HOME": str(sqlite_home)} if sqlite_home else None
        app = AppServer(self.home, cwd=cwd or self.project(), on_request=on_request,
                        version=self.version, env_extra=env)
        self.apps.append(app)
        try:
            yield app
        finally:
            app.close()

    def make_threads(self, n: int, provider: Optional[str] = None, cwd: Optional[Path] = None,
                     prompt: str = "hello") -> List[str]:
        """n interactive (vscode) threads, each with one completed turn."""
        if provider:
            self.set_provider(provider)
        cwd = cwd or self.project()
        with self.app(cwd) as app:
            return [app.start_thread(cwd, f"{prompt} {i}") for i in range(n)]

    def make_exec(self, prompt: str = "exec hi", provider: Optional[str] = None) -> str:
        if provider:
            self.set_provider(provider)
        proc = run_exec(self.home, prompt, cwd=self.project(), version=self.version)
        assert proc.returncode == 0, proc.stderr[-2000:]
        for line in proc.stderr.splitlines():
            if line.startswith("session id:"):
                return line.split(":", 1)[1].strip()
        raise AssertionError("codex exec printed no session id")

    def archive(self, *thread_ids: str) -> None:
        with self.app() as app:
            for tid in thread_ids:
                app.request("thread/archive", {"threadId": tid})

    def unarchive(self, *thread_ids: str) -> None:
        with self.app() as app:
            for tid in thread_ids:
                app.request("thread/unarchive", {"threadId": tid})

    def move_home(self, new_user: str = "newuser") -> Path:
        """Move the whole home to another user's folder, as after a copy to a new machine."""
        target = self.base / new_user / ".codex"
        target.parent.mkdir(parents=True)
        shutil.move(str(self.home), str(target))
        self.home = target
        self.homes.append(target)
        return target

    @property
    def user_dir(self) -> Path:
        """The user folder that holds the home (`~`): <base>/user at first."""
        return self.home.parent

    def user_project(self, name: str = "proj") -> Path:
        """A project folder inside the user folder (~/projects/<name>): it moves with the user."""
        p = self.user_dir / "projects" / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def move_user_folder(self, new_user: str = "newuser") -> Dict[str, Path]:
        """`mv ~ /home/<new_user>`: the home and every user_project() move together, as after a
        new user name or a copy to a new machine. Stops this home's processes first (a user
        quits Codex before moving). Returns {'old_user', 'new_user', 'old_home', 'new_home'}."""
        self.stop_home_processes()
        old_user, old_home = self.user_dir, self.home
        target = self.base / new_user
        shutil.move(str(old_user), str(target))
        self.home = target / old_home.name
        self.homes.append(self.home)
        return {"old_user": old_user, "new_user": target, "old_home": old_home,
                "new_home": self.home}

    # --- what Codex says ----------------------------------------------------------------
    def listing(self, **params: object) -> List[dict]:
        with self.app() as app:
            return app.list_threads(**params)

    def listed_ids(self, **params: object) -> List[str]:
        return sorted(t["id"] for t in self.listing(**params))

    def doctor(self) -> Dict[str, str]:
        return doctor_parity(self.home, version=self.version)

    def codex(self, *args: str, cwd: Optional[Path] = None, timeout: float = 120
              ) -> subprocess.CompletedProcess:
        """Any `codex ...` command of this world's version with this home."""
        return run_codex(self.home, *args, cwd=cwd or self.project(), timeout=timeout,
                         version=self.version)

    def read_turns(self, *thread_ids: str) -> Dict[str, Union[int, str]]:
        """thread/read with includeTurns: the turn count per thread, or the error text."""
        out: Dict[str, Union[int, str]] = {}
        with self.app() as app:
            for tid in thread_ids:
                try:
                    out[tid] = len(app.read_thread(tid)["turns"])
                except CodexError as exc:
                    out[tid] = str(exc)
        return out

    def resume_and_turn(self, thread_id: str, prompt: str = "one more turn",
                        cwd: Optional[Path] = None) -> "Resumed":
        """thread/resume, one new turn, read back: as a user continues a session in an editor."""
        with self.app(cwd) as app:
            try:
                before = len(app.read_thread(thread_id)["turns"])
                app.request("thread/resume", {"threadId": thread_id})
                done = app.turn(thread_id, prompt, timeout=120)
                after = len(app.read_thread(thread_id)["turns"])
            except CodexError as exc:
                return Resumed(thread_id, error=str(exc))
        return Resumed(thread_id, before, after, done["turn"]["status"])

    # --- the TUI ----------------------------------------------------------------------
    @contextmanager
    def tui(self, cwd: Optional[Path] = None, *args: str, keep_daemon: bool = False,
            height: int = 50, trusted: bool = True) -> Iterator[Tui]:
        """`codex <args>` (default `resume`) in a pseudo-terminal in cwd. On exit the TUI quits
        and, unless keep_daemon, the daemon it started is stopped (so the home is idle again).
        trusted: the test's folder is trusted for this run (else Codex asks before a session)."""
        with (self.trusted() if trusted else _nothing()):
            tui = Tui(self.home, cwd or self.project(), list(args) or ["resume"], self.version,
                      height=height)
            self.tuis.append(tui)
            try:
                yield tui
            finally:
                tui.close()
                if not keep_daemon:
                    self.stop_home_processes()

    def picker(self, cwd: Optional[Path] = None, all: bool = False, archived: bool = False,
               with_ids: bool = True) -> Picker:
        """What `codex resume [--all]` lists in cwd (its Archived tab when archived=True)."""
        with self.tui(cwd, *(["resume", "--all"] if all else ["resume"])) as tui:
            pick = tui.picker(with_ids=with_ids)
            if archived:
                pick = tui.choose("Status", "Archived")
            return pick

    def surfaces(self, cwd: Optional[Path] = None, read: Optional[List[str]] = None,
                 tui: bool = True) -> "Surfaces":
        """Every surface a user looks at for one project folder: the TUI picker there and with
        --all, the editors' thread/list (current provider; and with cwd), and thread/read of
        every thread listed anywhere (plus `read`) with its turn count."""
        cwd = cwd or self.project()
        picker = self.picker(cwd) if tui else None
        picker_all = self.picker(cwd, all=True) if tui else None
        with self.app(cwd) as app:
            editors = sorted(t["id"] for t in app.list_threads())
            editors_cwd = sorted(t["id"] for t in app.list_threads(cwd=str(cwd)))
        ids = set(editors) | set(editors_cwd) | set(read or ())
        for pick in (picker, picker_all):
            ids |= set(pick.ids) if pick else set()
        return Surfaces(cwd=str(cwd), picker=picker, picker_all=picker_all, editors=editors,
                        editors_cwd=editors_cwd, turns=self.read_turns(*sorted(ids)))

    # --- processes of this home ---------------------------------------------------------
    def home_processes(self, include_open_apps: bool = False) -> List["CodexProcess"]:
        """Every live process of this home under any of its paths; without the app-servers this
        world still holds open (world.app(), world.apps) unless include_open_apps."""
        procs = home_processes(self.homes)
        if include_open_apps:
            return procs
        keep = {a.proc.pid for a in self.apps if a.proc.poll() is None}
        parents = {p.pid: p.ppid for p in procs}
        def ours(pid: int) -> bool:
            seen = 0
            while pid and seen < 50:
                if pid in keep:
                    return True
                pid = parents.get(pid) or _ppid(pid)
                seen += 1
            return False
        return [p for p in procs if not ours(p.pid)]

    def stop_daemon(self) -> subprocess.CompletedProcess:
        """`codex app-server daemon stop`, as a user is told to run it."""
        return self.codex("app-server", "daemon", "stop", timeout=60)

    def stop_home_processes(self) -> None:
        """Stop the managed daemon the documented way, then end whatever of this home is left
        (the pid-update-loop survives `daemon stop`)."""
        procs = self.home_processes()
        if not procs:
            return
        if any(p.kind == "managed-daemon" for p in procs) and self.home.is_dir():
            self.stop_daemon()
        kill_processes(self.home_processes())

    # --- what our scripts say -----------------------------------------------------------
    def script(self, name: str, *args: str, env: Optional[Dict[str, str]] = None
               ) -> subprocess.CompletedProcess:
        return run_script(name, "--codex-dir", str(self.home), *args, env=env)

    def audit(self, *args: str) -> dict:
        proc = self.script("session_audit.py", "--json", *args)
        assert proc.returncode in (0, 1), proc.stderr
        return json.loads(proc.stdout)

    def db(self, sql: str, params: tuple = ()) -> list:
        import sqlite3
        conn = sqlite3.connect(str(self.home / "state_5.sqlite"))
        try:
            with conn:
                return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def install_skill(self) -> Path:
        """Copy the bundle where Codex loads user skills from, as a user would."""
        dest = self.home / "skills" / "codex-session-migration"
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
            ".git", ".codex-cli", ".e2e-tmp", "__pycache__", "tests", "bench", ".pytest_cache"))
        return dest

    def close(self) -> None:
        for tui in self.tuis:
            tui.close()
        for app in self.apps:
            app.close()
        self.stop_home_processes()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@dataclass
class Resumed:
    """What resume_and_turn saw: turns before and after one new turn, or the error."""
    thread_id: str
    turns_before: int = -1
    turns_after: int = -1
    status: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.status == "completed" and \
            self.turns_after == self.turns_before + 1


@dataclass
class Surfaces:
    """One project folder as every Codex surface shows it (thread ids sorted)."""
    cwd: str
    picker: Optional[Picker]
    picker_all: Optional[Picker]
    editors: List[str]
    editors_cwd: List[str]
    turns: Dict[str, Union[int, str]] = field(default_factory=dict)

    @property
    def picker_ids(self) -> List[str]:
        return self.picker.ids if self.picker else []

    @property
    def picker_all_ids(self) -> List[str]:
        return self.picker_all.ids if self.picker_all else []

    def shown_everywhere(self, ids: List[str]) -> Dict[str, List[str]]:
        """For each surface, the given ids it does NOT show (empty lists = all shown), and
        the ids whose thread/read failed."""
        want = set(ids)
        out = {"editors": sorted(want - set(self.editors)),
               "editors_cwd": sorted(want - set(self.editors_cwd)),
               "read": sorted(t for t in want if not isinstance(self.turns.get(t), int))}
        if self.picker is not None:
            out["picker"] = sorted(want - set(self.picker_ids))
        if self.picker_all is not None:
            out["picker_all"] = sorted(want - set(self.picker_all_ids))
        return out


@dataclass
class CodexProcess:
    """A live process of a test home: pid, parent, argv, /proc exe, its CODEX_HOME."""
    pid: int
    ppid: int
    argv: List[str]
    exe: str
    home: str

    @property
    def kind(self) -> str:
        """'managed-daemon', 'pid-update-loop', 'codex <subcommand>', 'launcher' (the npm node
        wrapper), else the executable's name (tmux, sh, sleep of a TUI's pane)."""
        args = " ".join(self.argv[1:])
        if "pid-update-loop" in args:
            return "pid-update-loop"
        if "--managed-daemon" in args:
            return "managed-daemon"
        exe = os.path.basename(self.exe)
        if exe.startswith("codex"):
            sub = next((a for a in self.argv[1:] if not a.startswith("-")), "")
            return f"codex {sub}".strip()
        if exe.startswith("node"):
            return "launcher"
        return exe or "?"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def home_processes(homes: List[Path]) -> List[CodexProcess]:
    """Processes of ours whose CODEX_HOME, executable or arguments name one of these homes."""
    names = [str(h) for h in homes]
    out = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        env = _read(f"/proc/{entry}/environ").split(b"\0")
        home = next((e[len(b"CODEX_HOME="):].decode(errors="replace") for e in env
                     if e.startswith(b"CODEX_HOME=")), "")
        argv = [a.decode(errors="replace") for a in _read(f"/proc/{entry}/cmdline").split(b"\0") if a]
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
        except OSError:
            exe = ""
        hit = home in names or any(exe.startswith(n + "/") for n in names) or \
            any(n + "/" in a for a in argv for n in names)
        if hit and argv:
            out.append(CodexProcess(int(entry), _ppid(int(entry)), argv, exe, home))
    return out


def _ppid(pid: int) -> int:
    stat = _read(f"/proc/{pid}/stat")
    try:
        return int(stat.rsplit(b")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return 0


def kill_processes(procs: List[CodexProcess], grace: float = 5.0) -> None:
    """SIGTERM each by pid, wait, SIGKILL what is left."""
    for p in procs:
        try:
            os.kill(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    left = list(procs)
    while left and time.monotonic() < deadline:
        left = [p for p in left if _alive(p.pid)]
        time.sleep(0.05)
    for p in left:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] != b"Z"


def snapshot(root: Path) -> Dict[str, tuple]:
    """Every file under a folder: bytes digest, mtime_ns, mode; for 'nothing changed' checks."""
    import hashlib
    out: Dict[str, tuple] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            try:
                st = p.lstat()
                if p.is_symlink():
                    out[str(p.relative_to(root))] = ("link", os.readlink(p))
                    continue
                if not stat.S_ISREG(st.st_mode):  # a FIFO or socket: reading it would block
                    out[str(p.relative_to(root))] = ("special", stat.S_IFMT(st.st_mode), st.st_mtime_ns)
                    continue
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            except FileNotFoundError:  # a running Codex's own temporary file (.tmp/git-*), gone meanwhile
                continue
            out[str(p.relative_to(root))] = (digest, st.st_mtime_ns, st.st_mode)
    return out


def settled(read: Callable[[], Any], quiet_s: float = 0.5, limit_s: float = 15.0) -> Any:
    """`read()` once it gives the same answer twice `quiet_s` apart: a Codex just started or just
    given a turn finishes its own writes (its WAL, its index) before a test takes its 'before'."""
    import time as _time
    last, deadline = read(), _time.monotonic() + limit_s
    while _time.monotonic() < deadline:
        _time.sleep(quiet_s)
        now = read()
        if now == last:
            return now
        last = now
    return last


def codex_available(version: Optional[str] = None) -> bool:
    return codex_bin(version or CODEX_VERSION).exists()
