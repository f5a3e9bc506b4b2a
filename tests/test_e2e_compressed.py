"""A home whose cold rollouts Codex 0.171 compressed (`rollout/compress`: `rollout-*.jsonl.zst`,
rows keep the `.jsonl` path): the audit counts them as the threads' files, and the migration, the
moved-home repair and their rollbacks work on them as Codex's own resume does (decompressed first)."""
import json
import os
import sqlite3
import time
from pathlib import Path

from harness import snapshot

COLD = 1_700_000_000  # 2023: the compression pass takes only cold rollouts


def _paths(world):
    return [p for (p,) in world.db("SELECT rollout_path FROM threads ORDER BY id")]


def compress(world) -> list:
    """Codex's own compression pass on every rollout (made cold first): each becomes `.jsonl.zst`."""
    for p in _paths(world):
        os.utime(p, (COLD, COLD))
    with world.app() as app:
        app.request("rollout/compress", {})
        for _ in range(200):
            if all(Path(p + ".zst").is_file() and not Path(p).exists() for p in _paths(world)):
                break
            time.sleep(0.05)
    paths = _paths(world)
    assert all(p.endswith(".jsonl") and Path(p + ".zst").is_file() and not Path(p).exists() for p in paths)
    return paths


def _files(world):
    return {k: v for k, v in snapshot(world.home).items() if k.startswith(("sessions/", "archived_sessions/"))}


def _tables(world):
    """Every row of every table of every DB of the home (the rollback leaves each as before)."""
    out = {}
    for db in sorted(world.home.glob("*.sqlite")):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
                out[(db.name, t)] = conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall()
        finally:
            conn.close()
    return out


def _read_all(world, ids):
    with world.app() as app:
        return {t: json.dumps(app.read_thread(t)["turns"], sort_keys=True) for t in ids}


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_audit_of_a_compressed_home_counts_every_thread(world):
    ids = world.make_threads(3)
    compress(world)
    assert world.listed_ids() == sorted(ids)  # Codex lists them as before
    audit = world.audit()
    integ, vis = audit["integrity"], audit["visibility"]
    assert vis["visible"] == 3 and vis["hidden_total"] == 0 and vis["visible_db_only"] == 3
    assert integ["compressed_rollouts_count"] == 3
    for key in ("missing_rollout_path", "stale_rows", "db_not_on_disk", "missing_active_rows",
                "line1_unreadable", "provider_mismatch"):
        assert integ[f"{key}_count"] == 0, (key, integ[f"{key}_sample"])
    assert audit["surfaces"]["editors"]["visible"] == 3
    assert audit["orphans"]["count"] == 0
    proc = world.script("session_audit.py")
    assert "no session file" not in proc.stdout and "shows 0" not in proc.stdout, proc.stdout
    assert "session_repair.py" not in proc.stdout, proc.stdout  # nothing to repair


def test_migration_of_compressed_threads_and_both_rollbacks(world):
    a = world.make_threads(2, "mockA", prompt="under A")
    b = world.make_threads(1, "mockB", prompt="under B")
    compress(world)
    assert world.listed_ids() == sorted(b)
    turns = _read_all(world, a)
    files, tables = _files(world), _tables(world)

    res = _ok(world.script("provider_migrate.py", "--apply", "--json"))["result"]
    assert (res["updated_rows"], res["line1_rewritten"]) == (2, 2), res
    assert res["decompression"]["decompressed"] == 2 and res["decompression"]["skipped"] == []
    for tid in a:  # written as Codex's resume writes it: the .jsonl back, the .zst gone
        p = world.db("SELECT rollout_path FROM threads WHERE id=?", (tid,))[0][0]
        assert Path(p).is_file() and not Path(p + ".zst").exists()
    assert world.listed_ids() == sorted(a + b)
    assert _read_all(world, a) == turns
    assert world.audit()["visibility"]["hidden"]["other_provider"] == 0

    _ok(world.script("rollback.py", "--manifest", res["run_dir"], "--apply", "--json"))
    _ok(world.script("rollback.py", "--manifest", res["decompression"]["run_dir"], "--apply", "--json"))
    assert _files(world) == files  # the .zst files back byte for byte, mtimes too
    assert _tables(world) == tables
    assert world.listed_ids() == sorted(b)


def test_moved_user_folder_repair_of_a_compressed_home_and_rollback(world):
    ids = world.make_threads(3, cwd=world.user_project("proj"), prompt="work")
    compress(world)
    moved = world.move_user_folder("newuser")
    proj = world.user_project("proj")
    files, tables = _files(world), _tables(world)
    remap = world.audit()["integrity"]["moved_home"]["remap_arg"]
    assert remap == f"--remap-prefix {moved['old_user']}={moved['new_user']}"
    arg = remap.split(" ", 1)[1]
    plan = _ok(world.script("session_repair.py", "--remap-prefix", arg, "--json"))
    assert (plan["remap_rows"], plan["planned_rollout_rewrites"], plan["decompress_first"]) == (3, 3, 3), plan
    res = _ok(world.script("session_repair.py", "--remap-prefix", arg, "--apply", "--json"))["result"]
    assert (res["updated_rows"], res["line1_rewritten"]) == (3, 3), res
    assert res["decompression"]["decompressed"] == 3
    for (cwd, path) in world.db("SELECT cwd, rollout_path FROM threads"):
        assert cwd == str(proj) and path.startswith(str(moved["new_home"]) + "/") and Path(path).is_file()
    assert world.listed_ids(cwd=str(proj)) == sorted(ids)
    assert world.read_turns(*ids) == {t: 1 for t in ids}
    after = world.audit()
    assert after["integrity"]["stale_rows_count"] == 0 and after["integrity"]["moved_home"] is None

    _ok(world.script("rollback.py", "--manifest", res["run_dir"], "--apply", "--json"))
    _ok(world.script("rollback.py", "--manifest", res["decompression"]["run_dir"], "--apply", "--json"))
    assert _files(world) == files
    assert _tables(world) == tables


def test_import_of_a_compressed_old_home_and_rollback(world):
    old_proj = world.base / "user" / "proj"
    old_proj.mkdir(parents=True)
    old_home = world.home
    with world.app(old_proj) as app:
        ids = [app.start_thread(old_proj, f"old machine task {i}") for i in range(2)]
        app.request("thread/name/set", {"threadId": ids[0], "name": "Parser rewrite"})
    compress(world)
    src_before = snapshot(old_home)
    new_home = world.base / "newuser" / ".codex"
    new_home.mkdir(parents=True)
    world.home = new_home
    world.homes.append(new_home)
    world.set_provider("mockA")
    new_proj = world.base / "newuser" / "proj"
    new_proj.mkdir()
    own = world.make_threads(1, cwd=new_proj, prompt="new machine task")
    files, tables = _files(world), _tables(world)
    args = ("session_import.py", "--from", str(old_home), "--remap-prefix",
            f"{world.base / 'user'}={world.base / 'newuser'}", "--json")
    plan = _ok(world.script(*args))
    assert (plan["to_import"], plan["skipped"]) == (2, 0), plan
    res = _ok(world.script(*args, "--apply"))["result"]
    assert res["imported_threads"] == 2 and res["files_created"] == 2
    assert snapshot(old_home) == src_before  # the compressed source is never written
    listed = {t["id"]: t for t in world.listing()}
    assert sorted(listed) == sorted(own + ids)
    assert listed[ids[0]]["name"] == "Parser rewrite"
    assert world.listed_ids(cwd=str(new_proj)) == sorted(own + ids)
    assert world.read_turns(*ids) == {t: 1 for t in ids}
    _ok(world.script("rollback.py", "--latest", "--apply", "--json"))
    assert _files(world) == files
    assert _tables(world) == tables
