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


def _after(text, start):
    """The line after the first one starting with `start`: the session a screen names first."""
    lines = text.splitlines()
    return next(lines[i + 1] for i, line in enumerate(lines) if line.startswith(start))


@pytest.mark.parametrize("kind", ["named, on another provider", "not indexed"])
def test_one_session_has_one_label_across_recovery_and_rollback(tmp_path, kind):
    """The recovery's result, the rollback's preview and its result name the session alike (name as the
    picker shows it, else title; date; folder), so a user follows one session across the screens:
    the name lives in session_index.jsonl once the rollback has taken threads.name back, and a row
    the recovery made is gone once rolled back."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    if kind == "not indexed":
        t = hb.add(provider="newco", preview="fix the login bug", cwd="/work/app", write_row=False)
        want = '  "fix the login bug (turn 0)", 2025-03-01 09:37, /work/app'
    else:
        t = hb.add(provider="oldco", preview="fix the login bug", cwd="/work/app")
        (hb.root / "session_index.jsonl").write_text(json.dumps(
            {"id": t.id, "thread_name": "Login bug hunt", "updated_at": "2025-03-01T00:00:00Z"}) + "\n")
        want = '  "Login bug hunt", 2025-03-01 09:37, /work/app'
    hb.add(provider="newco", preview="another session")
    recovered = run_on_home("session_recover.py", hb.root, "--apply")
    preview = run_on_home("rollback.py", hb.root, "--latest")
    undone = run_on_home("rollback.py", hb.root, "--latest", "--apply")
    assert [recovered.returncode, preview.returncode, undone.returncode] == [0, 0, 0], undone.stderr
    labels = [_after(recovered.stdout, "Done: 1 session recovered"), _after(preview.stdout, "Would undo"),
              _after(undone.stdout, "Done: the recovery run")]
    assert labels == [want] * 3


def test_dry_runs_with_work_and_nothing_skipped_exit_0_alike(tmp_path):
    """The three writers' dry-runs share one exit rule: 1 only when something is skipped (a finding
    the run cannot fix), 0 when they would change something and skip nothing; a dry-run's work is
    not itself a finding (`Exit codes: 0 clean, 1 findings or partial`)."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    hb.add(provider="oldco", preview="made before the switch")
    moved = hb.add(provider="newco", preview="its file moved")
    dest = hb.root / "sessions" / "2025" / "03" / "02" / moved.path.name
    dest.parent.mkdir(parents=True)
    moved.path.rename(dest)
    runs = {s: run_on_home(s, hb.root, "--json") for s in ("session_repair.py", "session_recover.py",
                                                              "provider_migrate.py")}
    plans = {s: json.loads(p.stdout) for s, p in runs.items()}
    assert plans["session_repair.py"]["nothing_to_do"] is False and not plans["session_repair.py"]["skipped"]
    assert plans["session_recover.py"]["sessions"] == 2 and not plans["session_recover.py"]["skipped"]
    assert plans["provider_migrate.py"]["candidates"] == 1 and plans["provider_migrate.py"]["skipped"] == 0
    assert [p.returncode for p in runs.values()] == [0, 0, 0]
