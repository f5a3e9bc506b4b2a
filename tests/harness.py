"""A real Codex home driven by the real Codex CLI, for the end-to-end tests."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from codex_client import CODEX_BIN, AppServer, doctor_parity, run_exec
from mock_model import MockModelServer

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"


def provider_config(current: str, base_url: str, providers: List[str],
                    extra: str = "") -> str:
    lines = [f'model_provider = "{current}"', 'model = "gpt-5"', extra]
    for p in providers:
        lines += [f"[model_providers.{p}]", f'name = "{p}"', f'base_url = "{base_url}"',
                  'wire_api = "responses"', 'env_key = "MOCK_API_KEY"', ""]
    return "\n".join(lines)


def run_script(name: str, *args: str, env: Optional[Dict[str, str]] = None,
               cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run one of our scripts as a user would: `python3 scripts/X.py ...`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], env=full_env,
                          cwd=str(cwd or REPO), capture_output=True, text=True, timeout=300,
                          check=False)


class CodexWorld:
    """One temporary Codex home, its projects, the mock model, and the real client."""

    PROVIDERS = ["mockA", "mockB", "mockLongerProviderName"]

    def __init__(self, base: Path, server: MockModelServer) -> None:
        self.base = base
        self.server = server
        self.home = base / "user" / ".codex"
        self.home.mkdir(parents=True)
        self.projects = base / "projects"
        self.projects.mkdir()
        self.apps: List[AppServer] = []
        self.set_provider("mockA")

    def project(self, name: str = "proj") -> Path:
        p = self.projects / name
        p.mkdir(exist_ok=True)
        return p

    def set_provider(self, provider: str) -> None:
        (self.home / "config.toml").write_text(
            provider_config(provider, self.server.base_url, self.PROVIDERS), encoding="utf-8")

    # --- making sessions ----------------------------------------------------------------
    @contextmanager
    def app(self, cwd: Optional[Path] = None, on_request=None) -> Iterator[AppServer]:
        app = AppServer(self.home, cwd=cwd or self.project(), on_request=on_request)
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
        proc = run_exec(self.home, prompt, cwd=self.project())
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
        return target

    # --- what Codex says ----------------------------------------------------------------
    def listing(self, **params: object) -> List[dict]:
        with self.app() as app:
            return app.list_threads(**params)

    def listed_ids(self, **params: object) -> List[str]:
        return sorted(t["id"] for t in self.listing(**params))

    def doctor(self) -> Dict[str, str]:
        return doctor_parity(self.home)

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
        for app in self.apps:
            app.close()


def snapshot(root: Path) -> Dict[str, tuple]:
    """Every file under a folder: bytes digest, mtime_ns, mode; for 'nothing changed' checks."""
    import hashlib
    out: Dict[str, tuple] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            st = p.lstat()
            if p.is_symlink():
                out[str(p.relative_to(root))] = ("link", os.readlink(p))
                continue
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = (digest, st.st_mtime_ns, st.st_mode)
    return out


def codex_available() -> bool:
    return CODEX_BIN.exists()
