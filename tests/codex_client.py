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
CODEX_VERSION = "0.169.0"
CODEX_BIN = REPO / ".codex-cli" / "node_modules" / ".bin" / "codex"


def codex_env(home: Path, **extra: str) -> Dict[str, str]:
    """Environment for one Codex process: its own home, a mock key, no inherited agent variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CODEX_") and k not in ("OPENAI_API_KEY",)}
    env.update(CODEX_HOME=str(home), MOCK_API_KEY="mock-key", NO_COLOR="1")
    env.update(extra)
    return env


def run_exec(home: Path, prompt: str = "hi", cwd: Optional[Path] = None,
             extra_args: Optional[List[str]] = None, timeout: float = 120,
             env_extra: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """One `codex exec` session (source `exec`)."""
    cmd = [str(CODEX_BIN), "exec", "--skip-git-repo-check", *(extra_args or []), prompt]
    return subprocess.run(cmd, env=codex_env(home, **(env_extra or {})),
                          cwd=str(cwd or home.parent), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


def doctor_parity(home: Path) -> Dict[str, str]:
    """Codex's own rollout/DB inventory, from `codex doctor --json`."""
    proc = subprocess.run([str(CODEX_BIN), "doctor", "--json"], env=codex_env(home),
                          cwd=str(home.parent), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, check=False)
    data = json.loads(proc.stdout)
    return data["checks"]["state.rollout_db_parity"]["details"]


class CodexError(RuntimeError):
    pass


class AppServer:
    """A `codex app-server` child speaking newline-delimited JSON-RPC; stopped by PID on close."""

    def __init__(self, home: Path, cwd: Optional[Path] = None,
                 on_request: Optional[Callable[[dict], Any]] = None,
                 extra_args: Optional[List[str]] = None) -> None:
        self.home = home
        self.on_request = on_request
        self.proc = subprocess.Popen(
            [str(CODEX_BIN), "app-server", *(extra_args or [])], env=codex_env(home),
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
