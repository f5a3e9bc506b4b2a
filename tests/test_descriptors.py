"""Every writer lock is an open file held for the whole run: a run larger than the open-file
limit must raise the limit or refuse before writing, never stop halfway or skip sessions."""
import json
import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import SCRIPTS, snapshot
from homebuilder import HomeBuilder
from test_odd_input import _nobody_python

SESSIONS = 300


def _home_owned_by_nobody() -> tuple:
    base = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="descriptors-"))
    os.chmod(base, 0o755)
    hb = HomeBuilder(base / ".codex", provider="newco", providers=["newco", "oldco"])
    ids = [hb.add(provider="oldco", preview=f"old {i}").id for i in range(SESSIONS)]
    for dirpath, _dirs, files in os.walk(base):
        os.chown(dirpath, 65534, 65534)
        for f in files:
            os.chown(os.path.join(dirpath, f), 65534, 65534)
    return base, hb, ids


def _migrate_as_nobody(py: str, home: Path, soft: int, hard: int) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", py,
                           str(SCRIPTS / "provider_migrate.py"), "--codex-dir", str(home), "--apply", "--json"],
                          capture_output=True, text=True, check=False, preexec_fn=limit,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": str(home.parent)})


@pytest.fixture
def nobody_py():
    py = _nobody_python()
    if py is None:
        pytest.skip("needs root, setpriv and a python3 that user nobody can run")
    return py


def test_a_run_beyond_the_hard_open_file_limit_is_refused_before_anything_is_written(nobody_py):
    base, hb, _ids = _home_owned_by_nobody()
    try:
        before = snapshot(hb.root)
        proc = _migrate_as_nobody(nobody_py, hb.root, soft=200, hard=200)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert f"this run holds {SESSIONS} writer locks at once" in line and "nothing was changed" in line
        assert snapshot(hb.root) == before
        assert hb.sql("SELECT model_provider, count(*) FROM threads GROUP BY 1") == [("oldco", SESSIONS)]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_low_soft_open_file_limit_is_raised_and_every_session_migrated(nobody_py):
    base, hb, ids = _home_owned_by_nobody()
    try:
        proc = _migrate_as_nobody(nobody_py, hb.root, soft=200, hard=4096)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)["result"]
        assert result["line1_rewritten"] == SESSIONS and result["updated_rows"] == SESSIONS
        assert hb.sql("SELECT model_provider, count(*) FROM threads GROUP BY 1") == [("newco", SESSIONS)]
    finally:
        shutil.rmtree(base, ignore_errors=True)
