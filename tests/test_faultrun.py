"""The forked script runs of the suite (tests/faultrun.py) are the runs a new process gives: the same
exit status, the same bytes on stdout and stderr, faults and Ctrl-C included."""
import os
import re
import signal
import subprocess
import sys

import pytest

import faultrun
from harness import SCRIPTS
from homebuilder import HomeBuilder


def _both(cmd, **kw):
    """(forked, a process of its own) for one command."""
    forked = faultrun.script_run(cmd, capture_output=True, **kw)
    real = subprocess.run(cmd, capture_output=True, check=False, **kw)
    return forked, real


@pytest.mark.parametrize("args", [
    ("rollback.py", "--help"),
    ("rollback.py", "--no-such-flag"),
    ("session_audit.py", "--codex-dir", "/nonexistent/h\udcffome", "--json"),
], ids=["help", "bad-flag", "odd-bytes-home"])
def test_a_forked_run_prints_and_exits_as_a_process_does(args):
    forked, real = _both([sys.executable, str(SCRIPTS / args[0]), *args[1:]])
    assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr)
    assert forked.stdout or forked.stderr


def test_a_forked_faulted_run_ends_as_the_launched_one(tmp_path):
    """kill: SIGKILL (-9); sigint: the script's own Ctrl-C handling, the same exit and words."""
    homes = [HomeBuilder(tmp_path / name / ".codex", provider="newco", providers=["newco", "oldco"])
             for name in ("a", "b")]
    for hb in homes:
        hb.add(provider="oldco", preview="old")
    launcher = str(faultrun.__file__)
    for fault, rc in (("sigint:1", 2), ("kill:1", -signal.SIGKILL)):
        env = dict(os.environ, FAULTRUN=fault)
        got = []
        for hb, run in zip(homes, (faultrun.script_run, subprocess.run)):
            proc = run([sys.executable, launcher, str(SCRIPTS / "provider_migrate.py"), "--codex-dir",
                        str(hb.root), "--apply"], capture_output=True, text=True, env=env)
            # a run folder is named by the second it began: two runs may straddle one (CI saw it)
            got.append((proc.returncode, re.sub(r"_\d{8}_\d{6}(_\d+)?/", "_TIME/",
                                                proc.stderr.replace(str(hb.root), "HOME"))))
        assert got[0] == got[1] and got[0][0] == rc, (fault, got)


def test_stdin_input_and_a_timeout_are_honoured(tmp_path):
    proc = faultrun.script_run([sys.executable, str(SCRIPTS / "rollback.py"), "--help"], capture_output=True,
                               text=True, input="ignored\n", timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: rollback.py")
    with pytest.raises(subprocess.TimeoutExpired):
        faultrun.script_run([sys.executable, str(SCRIPTS / "session_audit.py"), "--codex-dir", str(tmp_path)],
                            capture_output=True, timeout=0.000001)
