"""session_repair.py judged by the real Codex CLI: moved homes, archives, orphans, hostile rows."""
import json
import os

import pytest

from codex_client import CodexError
from harness import snapshot


def _read_all(world, ids):
    out = {}
    with world.app() as app:
        for t in ids:
            try:
                out[t] = len(app.read_thread(t)["turns"])
            except CodexError as exc:
                out[t] = str(exc)
    return out


@pytest.mark.compat
def test_moved_home_is_listed_and_readable_after_repair(world):
    ids = world.make_threads(3, prompt="before the move")
    old_home = world.home
    new_home = world.move_home("newuser")
    before = _read_all(world, ids)
    assert all("missing source rollout" in str(v) for v in before.values()), before
    audit = world.audit()
    assert audit["integrity"]["moved_home"]["old_prefix"] == str(old_home)
    proc = world.script("session_repair.py", "--remap-prefix", f"{old_home}={new_home}", "--apply", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = world.listing()
    assert sorted(t["id"] for t in listed) == sorted(ids)
    assert all(t["path"].startswith(str(new_home)) and os.path.exists(t["path"]) for t in listed)
    assert _read_all(world, ids) == {t: 1 for t in ids}
    after = world.audit()
    for key in ("missing_rollout_path_count", "stale_rows_count", "rollout_path_outside_home_count",
                "db_not_on_disk_count", "disk_not_in_db_count"):
        assert after["integrity"][key] == 0, key
    # Codex keeps the remapped rows: a second default listing does not revert them
    world.listed_ids()
    assert all(p.startswith(str(new_home)) for (p,) in world.db("SELECT rollout_path FROM threads"))


def test_archived_threads_come_back_and_rollback_rearchives_exactly(world):
    ids = world.make_threads(3)
    world.archive(ids[0], ids[1])
    assert world.listed_ids() == [ids[2]]
    files_before = {k: v for k, v in snapshot(world.home).items() if k.startswith(("sessions/", "archived_sessions/"))}
    rows_before = world.db("SELECT * FROM threads ORDER BY id")
    assert world.script("session_repair.py", "--unarchive", "--apply").returncode == 0
    listed = world.listing()
    assert sorted(t["id"] for t in listed) == sorted(ids)
    for t in listed:
        name = os.path.basename(t["path"])
        date = name[len("rollout-"):len("rollout-") + 10].split("-")
        assert t["path"] == str(world.home / "sessions" / date[0] / date[1] / date[2] / name)
    assert world.listed_ids(archived=True) == []
    rb = world.script("rollback.py", "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    files_after = {k: v for k, v in snapshot(world.home).items() if k.startswith(("sessions/", "archived_sessions/"))}
    assert files_after == files_before
    assert world.db("SELECT * FROM threads ORDER BY id") == rows_before
    assert world.listed_ids() == [ids[2]]
    assert world.listed_ids(archived=True) == sorted(ids[:2])


def test_imported_orphan_is_in_a_db_only_listing(world):
    world.make_threads(2, prompt="kept")
    orphan = world.make_threads(1, "mockB", cwd=world.project("elsewhere"), prompt="orphaned work")[0]
    world.set_provider("mockA")
    codex_row = world.db("SELECT source, model_provider, cwd, title, first_user_message, preview, created_at, "
                         "cli_version, model, history_mode, archived, approval_mode, sandbox_policy, git_sha "
                         "FROM threads WHERE id=?", (orphan,))
    world.db("DELETE FROM threads WHERE id=?", (orphan,))
    path = next(world.home.glob(f"sessions/*/*/*/*{orphan}.jsonl"))
    old = path.stat().st_mtime - 3600
    os.utime(path, (old, old))
    assert orphan not in world.listed_ids(useStateDbOnly=True, modelProviders=[])
    proc = world.script("session_repair.py", "--import-orphans", "--apply", "--json")
    assert json.loads(proc.stdout)["result"]["inserted_rows"] == 1
    listed = {t["id"]: t for t in world.listing(useStateDbOnly=True, modelProviders=[])}
    assert orphan in listed
    t = listed[orphan]
    assert (t["modelProvider"], t["cwd"], t["preview"]) == ("mockB", str(world.project("elsewhere")), "orphaned work 0")
    ours = world.db("SELECT source, model_provider, cwd, title, first_user_message, preview, created_at, "
                    "cli_version, model, history_mode, archived, approval_mode, sandbox_policy, git_sha "
                    "FROM threads WHERE id=?", (orphan,))
    # the same values Codex itself had written; created_at as Codex's backfill takes it, from
    # session_meta's timestamp, which the live row (written as the thread started) may precede across
    # a second boundary: within one second
    (mine,), (theirs,) = ours, codex_row
    assert mine[:6] + mine[7:] == theirs[:6] + theirs[7:]
    assert abs(mine[6] - theirs[6]) <= 1
    with world.app() as app:
        assert len(app.read_thread(orphan)["turns"]) == 1


@pytest.mark.parametrize("kind", ["dotdot", "foreign", "symlink"])
def test_rows_pointing_outside_the_home_are_refused(world, kind):
    ids = world.make_threads(1)
    outside = world.base / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not yours")
    real = world.db("SELECT rollout_path FROM threads WHERE id=?", (ids[0],))[0][0]
    name = os.path.basename(real)
    if kind == "dotdot":
        bad = str(world.home / "sessions" / ".." / ".." / ".." / "outside" / name)
    elif kind == "foreign":
        bad = str(outside / "sessions" / "2025" / "01" / "01" / name)
    else:
        (world.home / "sessions" / "out").symlink_to(outside)
        bad = str(world.home / "sessions" / "out" / name)
    world.db("UPDATE threads SET rollout_path=? WHERE id=?", (bad, ids[0]))
    before = snapshot(outside)
    proc = world.script("session_repair.py", "--apply", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["planned_path_moves"] == 0 and out["repoint_rows"] == 1
    assert snapshot(outside) == before
    assert world.db("SELECT rollout_path FROM threads WHERE id=?", (ids[0],)) == [(real,)]
    with world.app() as app:
        assert len(app.read_thread(ids[0])["turns"]) == 1
