"""Have the user's own Codex rebuild reset histories: one `codex app-server`, one
`thread/resume {excludeTurns: true}` per thread (Codex rebuilds the rows from byte 0), then unsubscribe."""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sessionkit.codexfiles.reasons import INTERRUPTED  # noqa: F401
from sessionkit.codexfiles.paths import user_path
from sessionkit import UserError
from sessionkit.codexfiles.locks import scan_activity

REQUEST_TIMEOUT_S = 120.0
CLOSE_GRACE_S = 30.0  # a finished rebuild: Codex exits at end of input, after what it was writing
INTERRUPT_GRACE_S = 5.0  # after a Ctrl-C forwarded to it: the user asked to stop, so not 30 s more
# INTERRUPTED: codexfiles/reasons.py


def find_codex(codex_bin: Optional[str]) -> str:
    """`--codex-bin`, else `codex` on PATH; a clear refusal when neither is there."""
    if codex_bin:
        path = user_path(codex_bin)
        if not (path.is_file() and os.access(str(path), os.X_OK)):
            raise UserError(f"--codex-bin {codex_bin}: not an executable file")
        return str(path)
    found = shutil.which("codex")
    if not found:
        raise UserError("--rebuild-history needs the Codex CLI, and `codex` is not on PATH: "
                        "pass --codex-bin PATH, or run without --rebuild-history (each thread's history "
                        "then comes back the first time it is opened)")
    return found


def codex_env(home: Path, sqlite_home: Optional[Path]) -> Dict[str, str]:
    """The user's environment for their Codex, pointed at this home; never an agent's own thread id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    env["CODEX_HOME"] = str(home)
    if sqlite_home is not None:
        env["CODEX_SQLITE_HOME"] = str(sqlite_home)
    return env


class _AppServer:
    """Newline-delimited JSON-RPC over stdio with `codex app-server`."""

    def __init__(self, codex: str, env: Dict[str, str], cwd: Path) -> None:
        try:
            self.proc = subprocess.Popen([codex, "app-server"], env=env, cwd=str(cwd), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        except OSError as exc:
            raise UserError(f"cannot start {codex} app-server: {exc.strerror or exc}") from None
        self.answers: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.next_id = 0
        self.exited = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and "id" in msg and "method" in msg:  # a request to us: decline it
                self._send({"id": msg["id"], "error": {"code": -32601, "message": "not supported"}})
            elif isinstance(msg, dict) and "id" in msg:
                self.answers.put(msg)
        self.answers.put({"id": None, "error": {"message": "codex app-server exited"}})

    def _send(self, msg: Dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: Dict[str, Any]) -> Any:
        rid = self.next_id
        self.next_id += 1
        try:
            self._send({"id": rid, "method": method, "params": params})
        except (OSError, ValueError):
            self.exited = True
            raise RuntimeError("codex app-server exited") from None
        while True:
            try:
                msg = self.answers.get(timeout=REQUEST_TIMEOUT_S)
            except queue.Empty:
                raise RuntimeError(f"{method}: no answer in {int(REQUEST_TIMEOUT_S)} s") from None
            if msg.get("id") is None:  # the app-server is gone: every later request fails at once too
                self.answers.put(msg)
                self.exited = True
                raise RuntimeError(str(msg["error"].get("message")))
            if msg.get("id") != rid:
                continue
            if "error" in msg:
                err = msg["error"]
                raise RuntimeError(str(err.get("message", err) if isinstance(err, dict) else err))
            return msg.get("result")

    def close(self, interrupted: bool = False) -> None:
        """End of input, then SIGTERM, then SIGKILL. After a Ctrl-C that reached only us, Codex gets
        one too (as a terminal's would): busy rebuilding, it may not read its input for a long time."""
        try:
            if interrupted and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            if self.proc.stdin:
                self.proc.stdin.close()  # app-server exits at end of input
            self.proc.wait(timeout=INTERRUPT_GRACE_S if interrupted else CLOSE_GRACE_S)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def rebuild_histories(home: Path, thread_ids: Sequence[str], codex: str,
                      sqlite_home: Optional[Path] = None,
                      keys: Optional[Dict[str, str]] = None) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(rebuilt thread ids, [(thread id, why not)]). A thread another Codex holds is not resumed.
    `keys`: a row's stored id -> its normalised id (an id not in it is normalised already)."""
    if not thread_ids:
        return [], []
    keys = keys or {}
    held = set(scan_activity(home).live_threads)
    todo = [t for t in thread_ids if keys.get(t, t) not in held]
    failed: List[Tuple[str, str]] = [(t, "another Codex holds this thread (its writer lock is held): "
                                         "its history comes back when that Codex opens it")
                                     for t in thread_ids if keys.get(t, t) in held]
    done: List[str] = []
    if not todo:
        return done, failed
    from sessionkit.runlog.writerun import CtrlCHeld
    held = CtrlCHeld(reraise=False)
    interrupted = False
    with held:  # started and known (then closed below), or not started: never a Codex left running
        app = _AppServer(codex, codex_env(home, sqlite_home), home)
    try:
        if held.got:
            raise KeyboardInterrupt
        app.request("initialize", {"clientInfo": {"name": "codex-session-migration", "title": None, "version": "1"},
                                   "capabilities": {"experimentalApi": True}})
        app._send({"method": "initialized"})
        for tid in todo:
            try:
                app.request("thread/resume", {"threadId": tid, "excludeTurns": True})
            except RuntimeError as exc:
                if app.exited:
                    raise
                failed.append((tid, f"thread/resume failed: {exc}; its history comes back the first time it is opened"))
                continue
            try:
                app.request("thread/unsubscribe", {"threadId": tid})
            except RuntimeError:
                pass  # the rows are rebuilt by the resume; closing the app-server unloads it anyway
            done.append(tid)
    except RuntimeError as exc:
        left = [t for t in todo if t not in done and all(t != f for f, _ in failed)]
        failed += [(t, f"codex app-server failed ({exc}); its history comes back the first time it is opened")
                   for t in left]
    except KeyboardInterrupt:  # the repair is applied already: say what was done, never "interrupted" alone
        interrupted = True
        failed += [(t, INTERRUPTED) for t in todo if t not in done and all(t != f for f, _ in failed)]
    finally:
        _close_held(app, interrupted)
    return done, failed


def _close_held(app: "_AppServer", interrupted: bool = False) -> None:
    """Stop the app-server with Ctrl-C held off (a second Ctrl-C would leave it running)."""
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        app.close(interrupted)
        return
    try:
        app.close(interrupted)
    finally:
        signal.signal(signal.SIGINT, old)
