"""rollback.py --list says what each run changed, where it stands and its size; --prune removes
the artifacts of runs no longer needed, never the newest applied one unless asked, never an
incomplete one."""
import json
import os
import sys
from pathlib import Path

import pytest

from harness import SCRIPTS
from harness import run_on_home as run
from homebuilder import build_broken_home


def size(path):
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs)


@pytest.fixture
def history(tmp_path):
    """A repair, a migration rolled back, the migration again: three runs."""
    hb = build_broken_home(tmp_path / ".codex")
    root = hb.root
    assert run("session_repair.py", root, "--remap-prefix", f"/home/olduser/.codex={root}", "--unarchive", "--apply").returncode == 1
    assert run("provider_migrate.py", root, "--apply").returncode == 0
    assert run("rollback.py", root, "--latest", "--apply").returncode == 0
    assert run("provider_migrate.py", root, "--apply").returncode == 0
    return hb


def test_list_says_what_each_run_changed(history):
    runs = json.loads(run("rollback.py", history.root, "--list", "--json").stdout)["runs"]
    got = [(r["kind"], r["state"], r["applied"], r["threads"], r["files"], r["moves"], r["line1_rewrites"],
            r["row_updates"], r["row_inserts"], r["providers"]) for r in runs]
    assert got == [
        ("session_repair", "applied", True, 3, 2, 2, 0, 3, 0, {}),
        ("provider_migration", "rolled back", False, 4, 4, 0, 4, 3, 0, {"oldprov -> openai": 3}),
        ("provider_migration", "applied (newest)", True, 4, 4, 0, 4, 3, 0, {"oldprov -> openai": 3}),
    ]
    for r in runs:
        assert r["size_bytes"] == size(r["run_dir"]) > 0
    text = run("rollback.py", history.root, "--list").stdout.splitlines()
    assert text[0].startswith(f"runs recorded under {history.root}/.tmp/session-migration: 3, ")
    assert text[2] == "      3 sessions, 2 files moved, 3 index entries updated"
    assert text[5] == ("      4 sessions, 4 first lines rewritten, 3 index entries updated, "
                       "provider oldprov -> openai: 3")
    assert " provider_migration  rolled back  " in text[4] and " provider_migration  applied (newest)  " in text[7]


def test_prune_keeps_the_newest_applied_and_incomplete_runs(history):
    root = history.root
    runs = json.loads(run("rollback.py", root, "--list", "--json").stdout)["runs"]
    before = {p: size(p) for p in (r["run_dir"] for r in runs)}
    dry = run("rollback.py", root, "--prune")
    assert dry.returncode == 0 and all(os.path.isdir(p) for p in before)  # a dry-run removes nothing
    sys.path.insert(0, str(SCRIPTS))
    from sessionkit.runlog.runs import readable_size
    two = before[runs[0]["run_dir"]] + before[runs[1]["run_dir"]]
    assert dry.stdout.splitlines()[0] == f"would remove 2 run folder(s), {readable_size(two)}:"
    assert readable_size(2048) == "2.0 KB" and readable_size(5) == "5 B"
    done = json.loads(run("rollback.py", root, "--prune", "--apply", "--json").stdout)
    assert [d["run_dir"] for d in done["prune"]] == [runs[0]["run_dir"], runs[1]["run_dir"]]
    assert done["freed_bytes"] == before[runs[0]["run_dir"]] + before[runs[1]["run_dir"]]
    assert [os.path.isdir(r["run_dir"]) for r in runs] == [False, False, True]
    # the newest applied run still rolls back
    assert run("rollback.py", root, "--latest", "--apply").returncode == 0
    # an incomplete run (its journal has no end) is kept even with --force; a rolled back one goes
    journal = Path(runs[2]["run_dir"]) / "journal.jsonl"
    assert json.loads(run("rollback.py", root, "--prune", "--force", "--apply", "--json").stdout)["prune"][0][
        "state"] == "rolled back"
    assert not journal.exists()
    assert run("provider_migrate.py", root, "--apply").returncode == 0
    newest = json.loads(run("rollback.py", root, "--list", "--json").stdout)["runs"][-1]["run_dir"]
    j = Path(newest) / "journal.jsonl"
    lines = j.read_text().splitlines(keepends=True)
    j.write_text("".join(l for l in lines if '"op": "end"' not in l and '"op":"end"' not in l))
    state = json.loads(run("rollback.py", root, "--list", "--json").stdout)["runs"][-1]["state"]
    assert state.startswith("incomplete")
    out = json.loads(run("rollback.py", root, "--prune", "--force", "--apply", "--json").stdout)
    assert out["prune"] == [] and os.path.isdir(newest)


@pytest.mark.parametrize("journal_bytes", [b"", b'{"v":2,"ts":"2026-11-27T20:55:31","op":"begin","kind":"provi'])
def test_a_run_killed_before_its_begin_record_is_passed_over(history, journal_bytes):
    """SIGKILL between creating journal.jsonl and its begin record being whole: no change was made
    (every change waits for that record), so --latest undoes the run before it, --list says so,
    and rolling back the stopped run itself is 'nothing to undo', never a dead end."""
    root = history.root
    stopped = root / ".tmp" / "session-migration" / "session_repair_20991231_235959"
    stopped.mkdir(mode=0o700)
    (stopped / "journal.jsonl").write_bytes(journal_bytes)
    runs = json.loads(run("rollback.py", root, "--list", "--json").stdout)["runs"]
    assert [(r["kind"], r["state"], r["applied"], r["threads"]) for r in runs][-1] == \
        ("session_repair", "stopped before any change (nothing to undo)", False, 0)
    own = run("rollback.py", root, "--manifest", str(stopped), "--apply", "--json")
    assert own.returncode == 0, own.stderr
    assert json.loads(own.stdout)["result"] is None and (stopped / "journal.jsonl").read_bytes() == journal_bytes
    latest = json.loads(run("rollback.py", root, "--latest", "--json").stdout)
    assert latest["run_dir"] != str(stopped) and latest["kind"] == "provider_migration"
    assert latest["rows_to_revert"] == 3 and latest["line1_to_restore"] == 4
    assert run("rollback.py", root, "--latest", "--apply").returncode == 0
    runs = json.loads(run("rollback.py", root, "--list", "--json").stdout)["runs"]
    assert [r["state"] for r in runs] == ["applied (newest)", "rolled back", "rolled back",
                                          "stopped before any change (nothing to undo)"]


def test_a_run_whose_line_ends_were_converted_is_kept_never_pruned(history):
    """A real run's journal with every `\\n` turned into `\\r` (a line-ending converter) has no whole
    record, but its folder holds backups and a manifest: it is unreadable and kept, never taken for
    a run stopped before any change, and --prune --apply leaves it (and its DB backup) alone."""
    root = history.root
    runs = json.loads(run("rollback.py", root, "--list", "--json").stdout)["runs"]
    newest = Path(runs[-1]["run_dir"])
    journal = newest / "journal.jsonl"
    journal.write_bytes(journal.read_bytes().replace(b"\n", b"\r"))
    before = sorted(p.name for p in newest.iterdir())
    listed = json.loads(run("rollback.py", root, "--list", "--json").stdout)["runs"]
    assert [r["state"] for r in listed if r["run_dir"] == str(newest)] == ["unreadable"]
    pruned = run("rollback.py", root, "--prune", "--force", "--apply", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert str(newest) not in [d["run_dir"] for d in json.loads(pruned.stdout)["prune"]]
    assert sorted(p.name for p in newest.iterdir()) == before and len(before) > 1


def test_list_counts_what_each_operation_says_it_is(tmp_path):
    """A repair that rewrote rollouts (remap) and moved one (unarchive): each operation says what it
    counts as and which files it changed (before: `files: 0, line1_rewrites: 0`)."""
    from homebuilder import HomeBuilder
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(cwd="/home/olduser/proj", preview="active")
    hb.add(cwd="/home/olduser/proj", preview="active 2")
    hb.add(cwd="/srv/elsewhere", archived=True, preview="archived")  # nothing to remap: moved in this run
    proc = run("session_repair.py", hb.root, "--remap-prefix", "/home/olduser/proj=/home/newer/proj",
               "--unarchive", "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [r] = json.loads(run("rollback.py", hb.root, "--list", "--json").stdout)["runs"]
    assert (r["threads"], r["files"], r["moves"], r["line1_rewrites"], r["row_updates"], r["row_inserts"]) == \
        (3, 3, 1, 2, 3, 0)
    assert r["other_changes"] == {}
    text = run("rollback.py", hb.root, "--list").stdout.splitlines()
    assert text[2] == "      3 sessions, 1 file moved, 2 first lines rewritten, 3 index entries updated"
