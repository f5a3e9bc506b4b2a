"""What a new user compares across screens: `make install | head -1` ends quietly, the migration says
what its numbers count, and one session has one label on the recovery, the rollback's preview and
its result."""
import json
import os
import subprocess
import sys

import pytest

from harness import REPO, run_on_home
from homebuilder import HomeBuilder


@pytest.mark.parametrize("lines_read", [1, 0], ids=["head -1", "closed at once"])
def test_make_install_cut_short_by_its_reader_ends_quietly(tmp_path, lines_read):
    """`make install | head -1`: the install is done, the hint after it is cut without a traceback
    (no PYTHONUNBUFFERED, as a user runs it: the hint's last line is written as Python exits)."""
    dest = tmp_path / "skill"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "PYTHONUNBUFFERED"))}
    proc = subprocess.Popen(["make", "-s", "-C", str(REPO), "install", f"INSTALL_DIR={dest}", f"PYTHON={sys.executable}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = [proc.stdout.readline().decode() for _ in range(lines_read)]
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert (proc.wait(), err) == (0, "")
    assert first == [f"installed the skill into {dest}; audit your Codex home with:\n"][:lines_read]
    assert (dest / "scripts" / "session_audit.py").is_file()


def test_the_migration_says_its_counts_leave_archived_sessions_out(tmp_path):
    """The audit counts archived sessions per provider, the migration (by default) does not: its plan
    says so, with the flag that brings them in; its result counts them and says that too."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    for i in range(3):
        hb.add(provider="oldco", preview=f"old {i}")
    for i in range(2):
        hb.add(provider="newco", preview=f"new {i}")
    for i in range(2):
        hb.add(provider="oldco", archived=True, preview=f"archived old {i}")
    audit = run_on_home("session_audit.py", hb.root).stdout.splitlines()
    assert "  model_provider: oldco 5, newco 2" in audit
    plan = run_on_home("provider_migrate.py", hb.root).stdout.splitlines()
    i = plan.index("sessions per provider now: oldco 3, newco 2")
    assert plan[i + 1] == "    (not counting 2 archived: oldco 2; add --include-archived to count and move them too)"
    wide = run_on_home("provider_migrate.py", hb.root, "--include-archived").stdout.splitlines()
    i = wide.index("sessions per provider now, archived included: oldco 5, newco 2")
    assert wide[i + 1].startswith('  "')  # the sessions to move follow: no note
    done = run_on_home("provider_migrate.py", hb.root, "--apply").stdout.splitlines()
    assert "Done: 3 sessions moved to newco (sessions per provider now, archived included: newco 5, oldco 2):" in done
    assert json.loads(run_on_home("provider_migrate.py", hb.root, "--json").stdout)[
        "provider_distribution_before"] == {"newco": 5}  # the report's fields are unchanged
