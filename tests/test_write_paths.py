"""Every write path checks its own folder: rollback, restore and prune refuse a `.tmp`,
`.tmp/session-migration/` or run folder that a symlink leads out of the home, as the forward runs
do; the import never extracts through one; nothing is written or utime'd through a hard link."""
import json
import os
import shutil

import pytest

from homebuilder import HomeBuilder
from test_migrate_rollback import home_state, run


def _outside_contents(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


@pytest.fixture
def migrated(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    for i in range(2):
        hb.add(provider="oldco", preview=f"old {i}")
    assert run("provider_migrate.py", hb.root, "--apply").returncode == 0
    return hb


def _move_out(hb, tmp_path, which):
    """Move `.tmp` or `.tmp/session-migration` (or the one run folder) out of the home and leave a
    symlink to it where it was."""
    art = hb.root / ".tmp" / "session-migration"
    src = {"tmp": hb.root / ".tmp", "artifacts": art, "run": next(p for p in art.iterdir() if p.is_dir())}[which]
    out = tmp_path / f"outside-{which}"
    shutil.move(str(src), str(out))
    src.symlink_to(out)
    return out


@pytest.mark.parametrize("which", ["tmp", "artifacts", "run"])
@pytest.mark.parametrize("action", [["--latest", "--apply"], ["--prune", "--force", "--apply"], ["--restore-db"]])
def test_rollback_restore_and_prune_refuse_a_folder_that_leads_out(migrated, tmp_path, which, action):
    hb = migrated
    out = _move_out(hb, tmp_path, which)
    if action == ["--restore-db"]:
        backup = next(out.rglob("state_5.sqlite.pre_provider_migration.bak"))
        action = ["--restore-db", str(backup), "--apply"]
    before, outside = home_state(hb.root), _outside_contents(out)
    proc = run("rollback.py", hb.root, *action)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "leads outside the Codex home" in proc.stderr, proc.stderr
    assert home_state(hb.root) == before
    assert _outside_contents(out) == outside  # nothing written, nothing removed out there


def test_the_import_never_extracts_into_a_symlinked_artifacts_folder(tmp_path):
    src = HomeBuilder(tmp_path / "src" / ".codex")
    src.add(preview="from the old machine")
    hb = HomeBuilder(tmp_path / "dest" / ".codex")
    hb.add(preview="mine")
    out = tmp_path / "outside"
    out.mkdir()
    (hb.root / ".tmp").mkdir()
    (hb.root / ".tmp" / "session-migration").symlink_to(out)
    before = home_state(hb.root)
    proc = run("session_import.py", hb.root, "--from", str(src.root), "--apply")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "leads elsewhere" in proc.stderr or "leads outside" in proc.stderr, proc.stderr
    assert list(out.iterdir()) == []
    assert home_state(hb.root) == before


def test_a_move_that_sets_an_mtime_refuses_a_hard_linked_file(tmp_path):
    from sessionkit.runlog.ops import Move
    f = tmp_path / "a.jsonl"
    f.write_text("x\n")
    os.link(str(f), str(tmp_path / "backup.jsonl"))
    why = Move("t", str(f), str(tmp_path / "b.jsonl"), new_mtime_ns=1).prepare(tmp_path)
    assert why == ("the rollout has 2 hard links (a backup made with cp -al or rsnapshot?): setting its mtime "
                   "would change the other copies too; skipped")
    assert Move("t", str(f), str(tmp_path / "b.jsonl")).prepare(tmp_path) is None  # a rename alone changes no copy


def test_the_unarchive_never_sets_the_mtime_of_a_hard_linked_rollout(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(preview="active")
    arch = hb.add(archived=True, preview="archived")
    backup = tmp_path / "backup.jsonl"
    os.link(str(arch.path), str(backup))
    st = os.stat(str(backup))
    before = home_state(hb.root)
    proc = run("session_repair.py", hb.root, "--unarchive", "--apply", "--json")
    out = json.loads(proc.stdout)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    skipped = out["skipped_sample"] + ((out.get("result") or {}).get("skipped_at_apply") or [])
    assert [s["thread_id"] for s in skipped] == [arch.id]  # skipped in the plan, or at apply when linked since
    assert "hard-linked (2 names for one file" in skipped[0]["reason"] or "2 hard links" in skipped[0]["reason"]
    assert os.stat(str(backup)).st_mtime_ns == st.st_mtime_ns and arch.path.exists()
    assert home_state(hb.root) == before


def test_an_undo_in_place_is_never_written_through_a_hard_link_made_since(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    a, b = hb.add(provider="oldco", preview="a"), hb.add(provider="oldco", preview="b")
    assert run("provider_migrate.py", hb.root, "--apply").returncode == 0
    backup = tmp_path / "backup.jsonl"
    os.link(str(a.path), str(backup))  # the user's cp -al backup, made after the run
    data, st = backup.read_bytes(), os.stat(str(backup))
    rb = run("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 1, rb.stdout + rb.stderr
    assert f"left alone: {a.id}: {a.path} has 2 hard links" in rb.stdout
    assert backup.read_bytes() == data and os.stat(str(backup)).st_mtime_ns == st.st_mtime_ns
    assert hb.sql("SELECT id, model_provider FROM threads ORDER BY id") == sorted([(a.id, "newco"), (b.id, "oldco")])
