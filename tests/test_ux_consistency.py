"""What a new user compares across screens: `make install | head -1` ends quietly, the migration says
what its numbers count, and one session has one label on the recovery, the rollback's preview and
its result."""
import os
import subprocess
import sys

import pytest

from harness import REPO


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
