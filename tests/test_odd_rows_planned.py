"""A row value Codex never writes (archived=5, which the planners read as 1) is skipped already at
planning time with the reason the apply's compare-and-set check gives: the dry-run shows the same
skipped session as the apply, and neither shows a change for it (issue: dry-run "1 -> 0", apply skip)."""
import json

import pytest

from homebuilder import build_broken_home
from test_migrate_rollback import home_state, run

REASON = ("its threads row holds archived=5 where the plan read archived=1 (a value Codex does not write, "
          "or changed since the plan): left alone")


def _home(tmp_path):
    hb = build_broken_home(tmp_path / ".codex")
    hb.sql("UPDATE threads SET archived=5 WHERE preview='healthy session 3'")
    return hb, hb.sql("SELECT id FROM threads WHERE preview='healthy session 3'")[0][0]


def _named(obj, tid, path=""):
    """Where a report names `tid`, outside its skipped list (a planned change names it)."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() if k != "skipped_sample" for p in _named(v, tid, f"{path}.{k}")]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _named(v, tid, f"{path}[{i}]")]
    return [path] if isinstance(obj, str) and tid in obj else []


def _skips(report, tid):
    return [{k: s[k] for k in ("thread_id", "reason")} for s in report["skipped_sample"] if s["thread_id"] == tid]


@pytest.mark.parametrize("script", ["session_repair.py", "session_recover.py"])
def test_an_odd_archived_value_is_skipped_in_the_dry_run_as_in_the_apply(tmp_path, script):
    hb, tid = _home(tmp_path)
    row = hb.sql("SELECT * FROM threads WHERE id=?", (tid,))
    dry = json.loads(run(script, hb.root, "--json").stdout)
    assert _skips(dry, tid) == [{"thread_id": tid, "reason": REASON}]
    assert _named(dry, tid) == []  # no "archived 1 -> 0" (before the fix: rows_sample named it)
    text = run(script, hb.root).stdout
    assert REASON.split(" (")[0] in text and "healthy session 3" in text
    before = home_state(hb.root)
    proc = run(script, hb.root, "--apply", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # findings: the skipped session
    applied = json.loads(proc.stdout)
    assert _skips(applied, tid) == _skips(dry, tid)
    assert _named(applied, tid) == []  # not skipped at apply time: known before
    assert hb.sql("SELECT * FROM threads WHERE id=?", (tid,)) == row  # left exactly as it was
    assert home_state(hb.root) != before  # the others were repaired
