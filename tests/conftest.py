import os
import shutil
import tempfile
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent / "scripts"))

from harness import REPO, CodexWorld, codex_available  # noqa: E402
from mock_model import MockModelServer, text_reply  # noqa: E402

def _e2e_base() -> Path:
    """Outside the temp dir: there Codex skips its arg0 lock, and users' homes are never there."""
    tmp = Path(tempfile.gettempdir()).resolve()
    if tmp in REPO.parents or REPO == tmp:
        return Path("/var/tmp") / f"codex-session-migration-e2e-{os.getuid()}"
    return REPO / ".e2e-tmp"


E2E_TMP = _e2e_base()


@pytest.fixture(autouse=True)
def _no_real_codex_home(monkeypatch, tmp_path):
    """No test may reach the user's ~/.codex: point HOME and CODEX_HOME elsewhere."""
    monkeypatch.setenv("HOME", str(tmp_path / "fake-user-home"))
    monkeypatch.delenv("CODEX_HOME", raising=False)
    monkeypatch.delenv("CODEX_SQLITE_HOME", raising=False)
    monkeypatch.delenv("CODEX_THREAD_ID", raising=False)


@pytest.fixture(scope="session")
def mock_server():
    with MockModelServer() as srv:
        yield srv


@pytest.fixture
def world(request, mock_server):
    """A real Codex home outside the temp dir (so Codex keeps its arg0 locks, as for a user)."""
    if not codex_available():
        msg = ("the real Codex CLI is not installed: run `make test` (needs node and npm; it runs "
               "`npm install @openai/codex@0.169.0` into .codex-cli/)")
        if os.environ.get("REQUIRE_E2E"):
            pytest.fail(msg)
        pytest.skip(msg)
    base = E2E_TMP / request.node.name[:60]
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    w = CodexWorld(base, mock_server)
    yield w
    w.close()
    mock_server.reply = text_reply()
    if not request.session.testsfailed:
        shutil.rmtree(base, ignore_errors=True)


def pytest_collection_modifyitems(items):
    for item in items:
        if "world" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
