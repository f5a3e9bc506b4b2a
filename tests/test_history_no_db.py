"""Paginated threads in a home with no thread_history_1.sqlite (an import into a home no paginated
Codex wrote, an older Codex's exec): real 0.171 lists them and reads 0 turns until a resume builds
the rows (tests/test_e2e_old_homes.py). The audit says so in plain words, never as a loss, and the
repair plans a rebuild for them, never a reset of rows that do not exist."""
import json

from harness import run_script
from test_history import PaginatedHome, findings_of

NO_HISTORY_DB = "no_history_db"  # the report's kind (history_check.NO_HISTORY_DB)


def _home(tmp_path):
    ph = PaginatedHome(tmp_path / ".codex")
    a, b = ph.add(rows=False), ph.add(turns=2, rows=False)
    empty = ph.add(turns=0, rows=False)  # no turn in its file: 0 turns is all it has
    legacy = ph.add(rows=False)
    ph.hb.sql("UPDATE threads SET history_mode='legacy' WHERE id=?", (legacy.id,))
    ph.hist.unlink()
    return ph, a, b, empty, legacy


def test_audit_says_paginated_threads_without_a_history_db_read_0_turns_until_opened(tmp_path):
    """Old code: no history DB, no finding at all (the check returned before looking)."""
    ph, a, b, _empty, _legacy = _home(tmp_path)
    assert findings_of(ph.root) == {a.id: NO_HISTORY_DB, b.id: NO_HISTORY_DB}
    proc = run_script("session_audit.py", "--codex-dir", str(ph.root), "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rep = json.loads(proc.stdout)
    integ = rep["integrity"]
    assert {k: n for k, n in integ["history_incomplete_by_kind"].items() if n} == {NO_HISTORY_DB: 2}
    assert (integ["history_db_exists"], integ["history_checked"]) == (False, 3)
    said = [f for f in rep["findings"] if "history" in f]
    assert said == ["2 paginated thread(s) have no stored history yet (this home has no thread_history_1.sqlite, "
                    "e.g. after an import or an older Codex's exec): Codex lists them but shows 0 turns until each "
                    "is opened once, which builds it from its session file (that file holds every turn); "
                    "session_repair.py --apply --rebuild-history has Codex do that now"]
    assert not [f for f in rep["findings"] if any(w in f for w in ("lost", "missing", "incomplete"))], rep["findings"]
    assert not ph.hist.exists()  # the audit made none
    plan = json.loads(run_script("session_repair.py", "--codex-dir", str(ph.root), "--json",
                                 "--rebuild-history").stdout)
    assert (plan["planned_history_resets"], plan["planned_history_rebuilds"]) == (0, 2), plan


def test_the_first_screen_says_it_in_plain_words(tmp_path):
    """The text audit's first screen (not only --json): how many read 0 turns, what makes them
    readable, and that the files hold every turn."""
    ph, *_ = _home(tmp_path)
    proc = run_script("session_audit.py", "--codex-dir", str(ph.root))
    lines = proc.stdout.splitlines()
    at = next(n for n, line in enumerate(lines) if line.startswith("  2 sessions show"))
    assert lines[at:at + 2] == [
        "  2 sessions show 0 turns until opened once in Codex (no stored history here yet; the session file",
        "      holds every turn)"], proc.stdout
    assert not [line for line in lines if "lost" in line or "missing" in line], proc.stdout


def test_a_live_thread_without_a_history_db_is_left_out(tmp_path):
    """A Codex writing the thread now makes the DB itself: the thread is counted as live, not said."""
    import fcntl
    import os
    from test_history import inputs_of
    from sessionkit.diagnose.history_check import check_history
    ph, a, b, _empty, _legacy = _home(tmp_path)
    locks = ph.root / "thread-writer-locks"
    locks.mkdir()
    fd = os.open(str(locks / f"{a.id}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        check = check_history(inputs_of(ph.root))
    finally:
        os.close(fd)
    assert ([f.thread_id for f in check.findings], check.skipped_live, check.checked) == ([b.id], [a.id], 2)
