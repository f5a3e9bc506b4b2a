"""Drive the real Codex CLI: `codex exec`, `codex doctor --json` and `codex app-server` over stdio."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
# The pinned release the whole end-to-end suite runs on, and the older ones the `compat` subset
# runs on too; OLD_VERSIONS only make the homes that tests/test_e2e_old_homes.py then opens with
# the pinned one. The Makefile installs each into .codex-cli/<version>/ (tests/test_e2e_tui.py and
# tests/test_e2e_old_homes.py check that the lists agree).
CODEX_VERSION = "0.171.0"
COMPAT_VERSIONS = ("0.169.0",)
ALL_VERSIONS = (CODEX_VERSION,) + COMPAT_VERSIONS
OLD_VERSIONS = ("0.130.0", "0.148.0", "0.160.0")
CLI_ROOT = REPO / ".codex-cli"
# Every Codex process goes through this dead proxy except for loopback: the mock model server is
# the only thing a test may reach (no update check, no analytics, no daemon updater download).
BLACKHOLE_PROXY = "http://127.0.0.1:9"

_active = {"version": CODEX_VERSION}


def codex_bin(version: Optional[str] = None) -> Path:
    """The npm launcher of one installed version (default: the version the current test runs)."""
    return CLI_ROOT / (version or _active["version"]) / "node_modules" / ".bin" / "codex"


def use_version(version: str) -> None:
    """Make every helper here default to this version (the `world` fixture sets it per test)."""
    _active["version"] = version


def active_version() -> str:
    return _active["version"]


def installed_version(version: str) -> Optional[str]:
    """The version npm really installed under .codex-cli/<version>/ (None when absent)."""
    pkg = CLI_ROOT / version / "node_modules" / "@openai" / "codex" / "package.json"
    try:
        return json.loads(pkg.read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        return None


CODEX_BIN = codex_bin(CODEX_VERSION)  # the pinned release (kept for older callers)


def codex_env(home: Path, **extra: str) -> Dict[str, str]:
    """Environment for one Codex process: its own home, a mock key, no inherited agent variables,
    and no way out but loopback."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CODEX_") and k not in ("OPENAI_API_KEY", "TMUX", "TMUX_PANE")
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update(CODEX_HOME=str(home), MOCK_API_KEY="mock-key", NO_COLOR="1",
               HTTP_PROXY=BLACKHOLE_PROXY, HTTPS_PROXY=BLACKHOLE_PROXY, ALL_PROXY=BLACKHOLE_PROXY,
               NO_PROXY="127.0.0.1,localhost")
    env.update(extra)
    return env


def run_exec(home: Path, prompt: str = "hi", cwd: Optional[Path] = None,
             extra_args: Optional[List[str]] = None, timeout: float = 120,
             env_extra: Optional[Dict[str, str]] = None,
             version: Optional[str] = None) -> subprocess.CompletedProcess:
    """One `codex exec` session (source `exec`)."""
    cmd = [str(codex_bin(version)), "exec", "--skip-git-repo-check", *(extra_args or []), prompt]
    return subprocess.run(cmd, env=codex_env(home, **(env_extra or {})),
                          cwd=str(cwd or home.parent), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


def run_codex(home: Path, *args: str, cwd: Optional[Path] = None, timeout: float = 120,
              version: Optional[str] = None,
              env_extra: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Any `codex ...` command with this home, stdin closed, output captured."""
    return subprocess.run([str(codex_bin(version)), *args], env=codex_env(home, **(env_extra or {})),
                          cwd=str(cwd or home.parent), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


def doctor_parity(home: Path, version: Optional[str] = None) -> Dict[str, str]:
    """Codex's own rollout/DB inventory, from `codex doctor --json`."""
    proc = run_codex(home, "doctor", "--json", version=version)
    data = json.loads(proc.stdout)
    return data["checks"]["state.rollout_db_parity"]["details"]


class CodexError(RuntimeError):
    pass


class AppServer:
    """A `codex app-server` child speaking newline-delimited JSON-RPC; stopped by PID on close."""

    def __init__(self, home: Path, cwd: Optional[Path] = None,
                 on_request: Optional[Callable[[dict], Any]] = None,
                 extra_args: Optional[List[str]] = None, version: Optional[str] = None,
                 env_extra: Optional[Dict[str, str]] = None) -> None:
        self.home = home
        self.on_request = on_request
        self.version = version or active_version()
        self.proc = subprocess.Popen(
            [str(codex_bin(self.version)), "app-server", *(extra_args or [])],
            env=codex_env(home, **(env_extra or {})),
            cwd=str(cwd or home.parent), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1, start_new_session=True)
        self._next_id = 0
        self._responses: Dict[int, "queue.Queue[dict]"] = {}
        self._lock = threading.Lock()
        self.notifications: List[dict] = []
        self._notified = threading.Condition()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self.request("initialize", {"clientInfo": {"name": "tests", "title": None, "version": "0"},
                                    "capabilities": {"experimentalApi": True}})
        self._send({"method": "initialized"})

    def _send(self, msg: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def _read_loop(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "id" in msg and "method" in msg:  # a request from the server (approvals)
                result = self.on_request(msg) if self.on_request else None
                self._send({"id": msg["id"], "result": result if result is not None else {}})
            elif "id" in msg:
                with self._lock:
                    box = self._responses.get(msg["id"])
                if box is not None:
                    box.put(msg)
            else:
                with self._notified:
                    self.notifications.append(msg)
                    self._notified.notify_all()

    def request(self, method: str, params: Optional[dict] = None, timeout: float = 60) -> Any:
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            box: "queue.Queue[dict]" = queue.Queue()
            self._responses[rid] = box
        self._send({"id": rid, "method": method, "params": params or {}})
        try:
            msg = box.get(timeout=timeout)
        except queue.Empty:
            raise CodexError(f"{method}: no answer in {timeout}s") from None
        if "error" in msg:
            raise CodexError(f"{method}: {msg['error']}")
        return msg.get("result")

    def wait_notification(self, method: str, match: Callable[[dict], bool] = lambda _p: True,
                          timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._notified:
            while True:
                for note in self.notifications[seen:]:
                    if note.get("method") == method and match(note.get("params") or {}):
                        return note["params"]
                seen = len(self.notifications)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CodexError(f"no {method} notification in {timeout}s")
                self._notified.wait(left)

    # --- the calls the tests use -------------------------------------------------------
    def start_thread(self, cwd: Path, prompt: str = "hi", **params: Any) -> str:
        """A new interactive thread with one completed turn; returns its id."""
        thread = self.request("thread/start", {"cwd": str(cwd), **params})["thread"]
        tid = thread["id"]
        self.turn(tid, prompt)
        return tid

    def turn(self, thread_id: str, prompt: str = "hi", timeout: float = 60) -> dict:
        turn = self.request("turn/start", {"threadId": thread_id, "input": [
            {"type": "text", "text": prompt, "text_elements": []}]})["turn"]
        return self.wait_notification(
            "turn/completed", lambda p: p.get("turn", {}).get("id") == turn["id"], timeout)

    def list_threads(self, **params: Any) -> List[dict]:
        """Every page of `thread/list`; params are passed as given (omitted = the defaults)."""
        out: List[dict] = []
        cursor = None
        while True:
            page = self.request("thread/list", {**params, "cursor": cursor, "limit": 100})
            out.extend(page["data"])
            cursor = page.get("nextCursor")
            if not cursor:
                return out

    def read_thread(self, thread_id: str) -> dict:
        return self.request("thread/read", {"threadId": thread_id, "includeTurns": True})["thread"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass

    def __enter__(self) -> "AppServer":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()
