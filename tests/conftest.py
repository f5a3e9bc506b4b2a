import hashlib
import os
import shutil
import tempfile
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent / "scripts"))

import codex_client  # noqa: E402
from codex_client import ALL_VERSIONS, CODEX_VERSION, installed_version  # noqa: E402
from harness import REPO, CodexWorld, codex_available  # noqa: E402
from mock_model import MockModelServer, text_reply  # noqa: E402
from tui import tmux_available  # noqa: E402

def _e2e_base() -> Path:
    """Outside the temp dir: there Codex skips its arg0 lock, and users' homes are never there."""
    tmp = Path(tempfile.gettempdir()).resolve()
    if tmp in REPO.parents or REPO == tmp:
        # one folder per checkout: two clones under /tmp never share (and wipe) a test's home
        tag = hashlib.sha1(str(REPO).encode()).hexdigest()[:8]
        return Path("/var/tmp") / f"codex-session-migration-e2e-{os.getuid()}-{tag}"
    return REPO / ".e2e-tmp"


E2E_TMP = _e2e_base()


def pytest_configure(config):
    """The scripts never write bytecode (dont_write_bytecode): compiled here once, each of the
    thousands of script runs of the suite loads its modules instead of compiling them (as after
    `make install`)."""
    import compileall
    compileall.compile_dir(str(TESTS.parent / "scripts"), quiet=2)


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


def _cannot_run(msg: str) -> None:
    """CI (REQUIRE_E2E=1) fails where a developer's machine skips."""
    if os.environ.get("REQUIRE_E2E"):
        pytest.fail(msg)
    pytest.skip(msg)


def pytest_generate_tests(metafunc):
    """Every test on the pinned Codex; a `compat` test on the older versions as well."""
    if "codex_version" in metafunc.fixturenames:
        compat = metafunc.definition.get_closest_marker("compat") is not None
        metafunc.parametrize("codex_version", list(ALL_VERSIONS) if compat else [CODEX_VERSION])


@pytest.fixture
def codex_version(request):
    """The Codex release this test drives (parametrized by pytest_generate_tests)."""
    return getattr(request, "param", CODEX_VERSION)


@pytest.fixture
def world(request, mock_server, codex_version):
    """A real Codex home outside the temp dir (so Codex keeps its arg0 locks, as for a user),
    driven by the Codex release `codex_version`."""
    got = installed_version(codex_version)
    if not codex_available(codex_version) or got != codex_version:
        _cannot_run(f"the real Codex CLI {codex_version} is not installed (found {got}): run "
                    f"`make test` (needs node and npm; it installs @openai/codex@{codex_version} "
                    f"into .codex-cli/{codex_version}/)")
    if request.node.get_closest_marker("tui") and not tmux_available():
        _cannot_run("tmux is not installed: the TUI tests drive `codex resume` through it "
                    "(apt-get install tmux)")
    codex_client.use_version(codex_version)
    name = request.node.name
    safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name[:44])
    base = E2E_TMP / (safe + "-" + hashlib.sha1(name.encode()).hexdigest()[:8])
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    w = CodexWorld(base, mock_server, version=codex_version)
    try:
        yield w
    finally:
        w.close()
        codex_client.use_version(CODEX_VERSION)
        mock_server.reply = text_reply()
    leaked = w.home_processes(include_open_apps=True)
    assert not leaked, f"processes of this test's home outlived it: {leaked}"
    if not request.session.testsfailed:
        shutil.rmtree(base, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (`make test` runs in parallel)
def pytest_collection_modifyitems(items):
    """Tests that drive a real Codex are `e2e`; the TUI tests run one at a time on one worker
    (`xdist_group("tui")` under --dist loadgroup), beside the other tests, so that a loaded
    machine never has two terminals racing their screens' timeouts."""
    for item in items:
        if "world" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("tui"):
            item.add_marker(pytest.mark.xdist_group("tui"))
