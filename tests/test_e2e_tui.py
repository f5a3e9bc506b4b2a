"""The real TUI (`codex resume`) read through a pseudo-terminal, and the harness that drives it."""
import re

import pytest

from codex_client import ALL_VERSIONS, CODEX_VERSION, COMPAT_VERSIONS
from harness import REPO

pytestmark = pytest.mark.tui


def test_makefile_installs_the_versions_the_tests_run():
    """One list of versions: the Makefile installs exactly what the fixtures parametrize."""
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    pinned = re.search(r"^CODEX_VERSION\s*:?=\s*(\S+)", text, re.M).group(1)
    compat = re.search(r"^CODEX_COMPAT_VERSIONS\s*:?=\s*(.*)$", text, re.M).group(1).split()
    assert (pinned, tuple(compat)) == (CODEX_VERSION, COMPAT_VERSIONS)
    assert ALL_VERSIONS[0] == CODEX_VERSION


def test_picker_lists_the_folders_sessions_with_their_ids(world):
    here = world.make_threads(2, cwd=world.project("here"), prompt="here")
    there = world.make_threads(1, cwd=world.project("there"), prompt="there")
    with world.tui(world.project("here")) as tui:
        pick = tui.picker()
        assert tui.alive()
    assert pick.total == 2 and pick.filter == "Cwd" and pick.status_tab == "Active"
    assert sorted(pick.titles) == ["here 0", "here 1"]
    assert pick.ids == sorted(here)
    assert {r.directory for r in pick.rows} == {str(world.project("here"))}
    pick_all = world.picker(world.project("here"), all=True)
    assert pick_all.filter == "All"
    assert pick_all.ids == sorted(here + there)
    assert world.home_processes() == []  # the daemon the TUI started is gone
