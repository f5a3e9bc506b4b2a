"""session_recover.py: every fix the audit recommends in one plan (grouped by cause, each session
once) and one run: a home with a provider switch, a moved home and user folder, a file moved
inside the home and unindexed files at once becomes wholly visible, and one rollback restores it
exactly; a fault at every counted point of the run leaves the home as before."""
import json
import os
import shutil

import pytest

from harness import run_script, snapshot
from homebuilder import HomeBuilder
from test_faults import _walk
from test_migrate_rollback import home_state

from sessionkit.fixes.recover import SKIP_MOVED_AND_EDITED, SKIP_UNARCHIVE_LATER  # noqa: F401
from sessionkit.fixes.repair import UNARCHIVE_NEXT_RUN


def recover(home, *args, expect=(0, 1)):
    proc = run_script("session_recover.py", "--codex-dir", str(home), *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in expect, proc.stdout + proc.stderr
    return proc


def tangled_home(tmp_path):
    """newco is the provider now. 2 sessions fine; 2 on oldco; 2 rows from the old machine
    (/home/olduser/.codex, their folder /home/olduser/proj, one of them on oldco); 2 whose file was
    moved to another day folder (one on oldco too); 3 files no row indexes (one on oldco, one written
    in the old user folder)."""
    hb = HomeBuilder(tmp_path / "newuser" / ".codex", provider="newco", providers=["newco", "oldco"])
    (tmp_path / "newuser" / "proj").mkdir()
    t = {}
    t["fine"] = [hb.add(provider="newco", preview=f"fine {i}") for i in range(2)]
    t["old"] = [hb.add(provider="oldco", preview=f"old provider {i}") for i in range(2)]
    t["moved_home"] = [hb.add(provider=p, cwd="/home/olduser/proj", preview=f"old machine {p}")
                       for p in ("newco", "oldco")]
    for th in t["moved_home"]:
        old = "/home/olduser/.codex/" + str(th.path.relative_to(hb.root))
        hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", (old, th.id))
    t["moved_files"] = []
    for p in ("oldco", "newco"):
        moved = hb.add(provider=p, preview=f"file moved by hand {p}")
        elsewhere = moved.path.parent.parent / "02" / moved.path.name
        elsewhere.parent.mkdir(exist_ok=True)
        st = moved.path.stat()
        shutil.move(str(moved.path), str(elsewhere))
        os.utime(elsewhere, ns=(st.st_atime_ns, st.st_mtime_ns))
        t["moved_files"].append((moved, elsewhere))
    t["orphans"] = [hb.add(provider=p, write_row=False, preview=f"unindexed {p}") for p in ("newco", "oldco")]
    t["orphans"].append(hb.add(provider="newco", write_row=False, cwd="/home/olduser/proj",
                               preview="unindexed, written in the old folder"))
    hb.t = t
    return hb


def all_visible(home):
    """The audit's own counts: every session listed by the editors, nothing hidden or unindexed."""
    proc = run_script("session_audit.py", "--codex-dir", str(home), "--json")
    report = json.loads(proc.stdout)
    vis = report["visibility"]
    return vis, report


def test_dry_run_groups_by_cause_names_each_session_once_and_changes_nothing(tmp_path):
    hb = tangled_home(tmp_path)
    t = hb.t
    before = snapshot(hb.root)
    r = json.loads(recover(hb.root, "--json").stdout)
    assert snapshot(hb.root) == before
    new_user = str(tmp_path / "newuser")
    assert r["remap"] == [f"/home/olduser={new_user}"] and r["remap_from"].startswith("the audit")
    assert r["by_cause"] == {"moved home": 2, "files that moved": 2, "another provider": 2, "unindexed files": 3}
    assert r["sessions"] == 9
    listed = [s["thread_id"] for items in r["causes_sample"].values() for s in items]
    assert len(listed) == len(set(listed)) == 9  # each session once
    both = {s["thread_id"]: s for s in r["causes_sample"]["moved home"]}[t["moved_home"][1].id]
    assert both["causes"] == ["moved home", "another provider"]
    # the file moved by hand and on oldco is rewritten where it lies (its row points there); the
    # other one is moved back: a file is moved or rewritten in one run, never both
    assert r["planned_line1_rewrites"] == 5 and r["planned_row_inserts"] == 3 and r["planned_moves"] == 1
    assert r["apply_command"].endswith(f"--remap-prefix /home/olduser={new_user} --apply")
    text = recover(hb.root).stdout
    assert "moved home (2):" in text and "another provider (2):" in text and "unindexed files (3):" in text
    assert "To make them all as one run (one undo), run:" in text


def test_apply_makes_every_session_visible_and_one_rollback_restores_exactly(tmp_path):
    hb = tangled_home(tmp_path)
    t = hb.t
    vis, _ = all_visible(hb.root)
    assert vis["hidden_total"] > 0
    before = home_state(hb.root)
    r = json.loads(recover(hb.root, "--apply", "--json", expect=(0,)).stdout)
    res = r["result"]
    assert res["provider_distribution_after"] == {"newco": 11}
    runs = [p for p in (hb.root / ".tmp" / "session-migration").iterdir() if p.is_dir()]
    assert len(runs) == 1 and runs[0].name.startswith("session_recover_")  # one run, one journal
    vis, report = all_visible(hb.root)
    assert vis["hidden_total"] == 0 and vis["visible"] == 11 and vis["visible_db_only"] == 11, vis
    assert sum(vis["db_only_hidden"].values()) == 0 and vis["rollout_not_indexed"] == 0, vis
    integ = report["integrity"]
    assert (integ["missing_rollout_path_count"], integ["disk_not_in_db_count"], integ["stale_rows_count"],
            integ["rollout_path_outside_home_count"]) == (0, 0, 0, 0), integ
    assert integ["moved_home"] is None and report["next_steps"] == []
    rows = dict(hb.sql("SELECT id, cwd FROM threads"))
    new_proj = str(tmp_path / "newuser" / "proj")
    assert rows[t["moved_home"][1].id] == rows[t["orphans"][2].id] == new_proj  # the indexed file is remapped too
    assert f'"cwd":"{new_proj}"' in t["orphans"][2].path.read_text(encoding="utf-8").split("\n", 1)[0]
    (edited, lies), (back, _) = t["moved_files"]
    assert back.path.is_file() and lies.is_file() and not edited.path.exists()
    assert rows and dict(hb.sql("SELECT id, rollout_path FROM threads"))[edited.id] == str(lies)
    first = t["moved_home"][1].path.read_text(encoding="utf-8").split("\n", 1)[0]
    assert '"model_provider":"newco"' in first and str(tmp_path / "newuser" / "proj") in first
    again = json.loads(recover(hb.root, "--json", expect=(0,)).stdout)
    assert again["sessions"] == 0 and again["apply_command"] is None
    rb = run_script("rollback.py", "--codex-dir", str(hb.root), "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert home_state(hb.root) == before  # bytes, mtimes, modes and every row


def test_archived_stay_archived_unless_asked(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    hb.add(provider="newco", archived=True, preview="kept archived")
    hb.add(provider="oldco", archived=True, preview="archived on oldco")
    r = json.loads(recover(hb.root, "--json", expect=(0,)).stdout)
    assert r["sessions"] == 0
    r = json.loads(recover(hb.root, "--json", "--include-archived").stdout)
    assert r["by_cause"] == {"another provider": 1}
    # unarchived (moved) in this run: its provider waits for the next run, which says so
    r = json.loads(recover(hb.root, "--json", "--unarchive", "--apply", expect=(1,)).stdout)
    assert r["by_cause"] == {"archived (--unarchive)": 2} and r["planned_provider_row_updates"] == 0
    assert [s["reason"] for s in r["skipped_sample"]] == [SKIP_MOVED_AND_EDITED]
    assert hb.sql("SELECT count(*) FROM threads WHERE archived = 0") == [(2,)]
    r = json.loads(recover(hb.root, "--json", "--apply", expect=(0,)).stdout)
    assert r["by_cause"] == {"another provider": 1}
    assert r["result"]["provider_distribution_after"] == {"newco": 2}


@pytest.mark.parametrize("args, words", [
    (("--remap-prefix", "relative=/x"), "--remap-prefix"),
    (("--remap-prefix", "/a=/b", "--no-remap"), "contradict"),
    (("--thread-id", "nope"), "is not a thread id"),
    (("--target-provider", "a\tb"), "control character"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, words):
    hb = tangled_home(tmp_path)
    before = snapshot(hb.root)
    proc = recover(hb.root, *args, expect=(2,))
    assert words in proc.stderr and proc.stderr.count("\n") == 1
    assert snapshot(hb.root) == before


# a kill (then rollback) and an error (the run's own undo) at every point; Ctrl-C and a full disk take
# the error's undo (walked point by point in test_faults' migration and repair walks)
@pytest.mark.parametrize("action,rc", [("kill", None), ("eio", 2)])
def test_recover_fault_at_every_point(tmp_path, action, rc):
    hb = tangled_home(tmp_path)
    labels = _walk(tmp_path, hb, "session_recover.py", ["--apply"], action, rc)
    assert labels.count("commit") == 1 and labels.count("file") >= 6


def test_hostile_titles_and_folders_are_escaped(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    hb.add(provider="oldco", cwd="/work/\x1b]0;pwned\x07", preview="\x1b[31mred title")
    out = recover(hb.root, expect=(0,)).stdout
    assert "another provider (1):" in out and not any(c in out for c in "\x1b\x07")
    assert "\\e[31mred title" in out and "/work/\\e]0;pwned\\x07" in out


def _history_rows(root):
    import sqlite3
    conn = sqlite3.connect(str(root / "thread_history_1.sqlite"))
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
                for t in ("thread_turns", "thread_items", "thread_history_projection_state")}
    finally:
        conn.close()


def test_histories_names_and_a_growing_provider_in_one_run(tmp_path):
    """A thread whose stored history is damaged (reset: its offsets are not shifted), one whose
    line 1 grows with the longer provider id (its offsets shift), a lost name: one run, one undo."""
    from test_import import make_history
    target = "a-much-longer-provider"
    hb = HomeBuilder(tmp_path / ".codex", provider=target, providers=[target, "oldco"])
    damaged, whole = hb.add(provider="oldco", preview="damaged"), hb.add(provider="oldco", preview="whole")
    named = hb.add(provider=target, preview="lost its name")
    make_history(hb, hb.threads)
    hist = tmp_path / ".codex" / "thread_history_1.sqlite"
    import sqlite3
    conn = sqlite3.connect(str(hist))
    conn.execute("UPDATE thread_history_projection_state SET next_rollout_byte_offset = ? WHERE thread_id = ?",
                 (damaged.path.stat().st_size + 100, damaged.id))  # cursor past the end: reset
    conn.commit()
    conn.close()
    (hb.root / "session_index.jsonl").write_text(
        json.dumps({"id": named.id, "thread_name": "Parser rewrite", "updated_at": "2025-03-01T10:00:00Z"}) + "\n")
    def state():  # the history DB by its rows (a rollback puts rows back, not the file's pages)
        out = home_state(hb.root)
        out["files"] = {k: v for k, v in out["files"].items() if not k.startswith("thread_history_1.sqlite")}
        return out
    before, hist_before = state(), _history_rows(hb.root)
    r = json.loads(recover(hb.root, "--json").stdout)
    assert r["by_cause"] == {"another provider": 2, "lost names": 1}
    assert {s["thread_id"]: s["causes"] for s in r["causes_sample"]["another provider"]}[damaged.id] == \
        ["another provider", "incomplete histories"]
    r = json.loads(recover(hb.root, "--apply", "--json", expect=(0,)).stdout)
    growth = len(target) - len("oldco")
    after = _history_rows(hb.root)
    assert [row for row in after["thread_turns"] if row[0] == damaged.id] == []
    assert [row for row in after["thread_history_projection_state"] if row[0] == damaged.id] == []
    old_end = {row[0]: row[1] for row in hist_before["thread_history_projection_state"]}
    new_end = {row[0]: row[1] for row in after["thread_history_projection_state"]}
    assert new_end[whole.id] == old_end[whole.id] + growth == whole.path.stat().st_size
    assert hb.sql("SELECT name FROM threads WHERE id = ?", (named.id,)) == [("Parser rewrite",)]
    rb = run_script("rollback.py", "--codex-dir", str(hb.root), "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert state() == before and _history_rows(hb.root) == hist_before


def test_a_remapped_file_to_unarchive_stays_archived_this_run_and_rolls_back(tmp_path):
    """Remapping a file's folders and moving it out of the archive in one run could not be undone
    as one (the rollback judges the rewrite where the file no longer is): it stays archived, with
    its reason, and comes back on the next run."""
    hb = HomeBuilder(tmp_path / "newuser" / ".codex")
    (tmp_path / "newuser" / "proj").mkdir()
    t = hb.add(cwd="/home/olduser/proj", archived=True, preview="old archived")
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?",
           ("/home/olduser/.codex/" + str(t.path.relative_to(hb.root)), t.id))
    before = home_state(hb.root)
    r = json.loads(recover(hb.root, "--unarchive", "--apply", "--json", expect=(1,)).stdout)
    assert [s["reason"] for s in r["skipped_sample"]] == [UNARCHIVE_NEXT_RUN]  # the repair's own rule
    assert hb.sql("SELECT archived, rollout_path, cwd FROM threads") == \
        [(1, str(t.path), str(tmp_path / "newuser" / "proj"))]
    rb = run_script("rollback.py", "--codex-dir", str(hb.root), "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert home_state(hb.root) == before
    recover(hb.root, "--apply", expect=(0,))
    r = json.loads(recover(hb.root, "--unarchive", "--apply", "--json", expect=(0,)).stdout)
    assert hb.sql("SELECT archived FROM threads") == [(0,)]
