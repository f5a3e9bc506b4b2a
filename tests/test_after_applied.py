"""Whatever stops a script after its run was applied (Ctrl-C while it prints, a closed pipe, an
error of a later step), the run stands: the script says so with the undo command and exits 1,
never 2 ("nothing changed")."""
import shlex
import subprocess
import sys

import pytest

import provider_migrate
from homebuilder import HomeBuilder
from test_migrate_rollback import home_state
from sessionkit.ui import cli


def _home(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    ts = [hb.add(provider="oldco", preview=f"s{i}") for i in range(2)]
    return hb, ts


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError, RuntimeError])
def test_a_stop_after_the_run_was_applied_says_it_stands_and_prints_its_undo(tmp_path, monkeypatch, capsys, stop):
    hb, ts = _home(tmp_path)
    before = home_state(hb.root)

    def stopped(*_a, **_k):
        raise stop("stopped while printing")
    monkeypatch.setattr(provider_migrate, "render", stopped)  # the run is applied; its result not yet said
    code = cli.run(provider_migrate.main, ["--codex-dir", str(hb.root), "--apply"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert home_state(hb.root) != before  # applied, and it stays
    assert "a run was applied before that and stay" in err and "applied; undo it with:" in err, err
    undo = [line.strip() for line in err.splitlines() if "rollback.py" in line]
    assert len(undo) == 1 and undo[0].endswith("--apply"), err
    words = shlex.split(undo[0])
    assert words[1].endswith("rollback.py") and "--manifest" in words
    proc = subprocess.run(words, capture_output=True, text=True, check=False, cwd="/")  # pasted anywhere
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert home_state(hb.root) == before


def test_a_stop_before_any_run_is_applied_is_still_exit_2_and_nothing_changed(tmp_path, monkeypatch, capsys):
    hb, _ts = _home(tmp_path)
    before = home_state(hb.root)

    def stopped(*_a, **_k):
        raise KeyboardInterrupt
    monkeypatch.setattr(provider_migrate, "apply_migration", stopped)
    code = cli.run(provider_migrate.main, ["--codex-dir", str(hb.root), "--apply"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().endswith("interrupted") and "rollback.py" not in err, err
    assert home_state(hb.root) == before
    code = cli.run(provider_migrate.main, ["--codex-dir", str(hb.root)])  # a later run in the same process
    assert code == 0 and cli.APPLIED_RUNS == []
