"""session_repair.py on hand-built homes: plans, applies, round trips, and never leaves the home."""
import json
import os
import signal

import pytest

from harness import snapshot
from homebuilder import HomeBuilder
from test_migrate_rollback import home_state, run
from sessionkit.codexfiles.paths import has_prefix, normalize_for_match, replace_prefix


def repair(home, *args, env=None):
    proc = run("session_repair.py", home, "--json", *args, env=env)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def moved(tmp_path):
    """A home copied from /home/olduser/.codex: every row points into the old home."""
    hb = HomeBuilder(tmp_path / ".codex")
    threads = [hb.add(cwd="/home/olduser/proj", preview=f"t{i}") for i in range(3)]
    threads.append(hb.add(cwd="/home/olduser/proj-2", archived=True, preview="archived"))
    for t in threads:
        old = "/home/olduser/.codex/" + str(t.path.relative_to(hb.root))
        hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", (old, t.id))
    return hb, threads


def test_moved_home_plan_suggests_and_repoints(moved):
    hb, threads = moved
    before = snapshot(hb.root)
    plan = repair(hb.root, "--no-unarchive")
    assert plan["suggested_remap"] == f"--remap-prefix /home/olduser/.codex={hb.root}"
    assert plan["repoint_rows"] == 4 and plan["planned_path_moves"] == 0
    assert snapshot(hb.root) == before


def test_remap_prefix_rewrites_paths_and_cwd_on_a_boundary(moved):
    hb, threads = moved
    out = repair(hb.root, "--remap-prefix", f"/home/olduser/.codex={hb.root}",
                 "--remap-prefix", "/home/olduser/proj=/home/new/proj", "--no-unarchive", "--apply")
    assert out["result"]["updated_rows"] == 4 and out["result"]["moved"] == 0
    rows = dict(hb.sql("SELECT id, cwd FROM threads"))
    assert [rows[t.id] for t in threads] == ["/home/new/proj"] * 3 + ["/home/olduser/proj-2"]
    paths = dict(hb.sql("SELECT id, rollout_path FROM threads"))
    assert all(paths[t.id] == str(t.path) for t in threads)
    audit = json.loads(run("session_audit.py", hb.root, "--json").stdout)
    assert audit["integrity"]["missing_rollout_path_count"] == 0
    assert audit["integrity"]["rollout_path_outside_home_count"] == 0


def test_unarchive_moves_to_dated_folder_and_rolls_back(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    keep = hb.add()
    arch = [hb.add(archived=True, preview=f"a{i}") for i in range(2)]
    before = home_state(hb.root)
    out = repair(hb.root, "--unarchive", "--apply")
    assert out["planned_unarchive_moves"] == 2 and out["unarchive_rows"] == 2
    assert (out["archived_before"], out["path_fix_enabled"], out["unarchive_enabled"]) == (2, True, True)
    assert out["result"]["unarchived_rows"] == 2 and out["result"]["archived_after"] == 0
    assert out["result"]["path_moves_applied"] == 0
    for t in arch:
        dst = hb.root / "sessions" / "2025" / "03" / "01" / t.path.name
        assert dst.is_file() and not t.path.exists()
        row = hb.sql("SELECT archived, archived_at, rollout_path FROM threads WHERE id=?", (t.id,))[0]
        assert row == (0, None, str(dst))
    assert hb.sql("SELECT count(*) FROM threads WHERE archived=0") == [(3,)]
    rb = run("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout
    assert home_state(hb.root) == before
    assert keep.path.exists()


def test_only_selected_threads_are_unarchived(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    arch = [hb.add(archived=True) for _ in range(3)]
    out = repair(hb.root, "--unarchive", arch[1].id)
    assert out["planned_unarchive_moves"] == 1
    assert out["moves_sample"][0].startswith(arch[1].id)


def test_stale_path_inside_home_moves_the_file_back(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add()
    elsewhere = hb.root / "sessions" / "2025" / "04" / "09" / t.path.name
    elsewhere.parent.mkdir(parents=True)
    mtime = t.path.stat().st_mtime_ns
    os.rename(t.path, elsewhere)
    out = repair(hb.root, "--apply")
    assert out["planned_path_moves"] == 1
    assert t.path.is_file() and not elsewhere.exists() and t.path.stat().st_mtime_ns == mtime


def test_ambiguous_and_mismatched_ids_are_listed_not_touched(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add()
    (hb.root / "archived_sessions").mkdir()
    dup = hb.root / "archived_sessions" / t.path.name
    dup.write_bytes(t.path.read_bytes())
    hb.sql("UPDATE threads SET rollout_path='/gone/x.jsonl' WHERE id=?", (t.id,))
    u = hb.add()
    other = hb.add()
    u_path = u.path
    u.path.write_bytes(other.path.read_bytes().split(b"\n", 1)[0] + b"\n")  # line 1 of another thread
    hb.sql("UPDATE threads SET rollout_path='/gone/y.jsonl' WHERE id=?", (u.id,))
    before = snapshot(hb.root)
    out = repair(hb.root, "--apply")
    reasons = {s["thread_id"]: s["reason"] for s in out["skipped_sample"]}
    assert reasons[t.id].startswith("ambiguous: 2 rollout files")
    assert "another thread" in reasons[u.id]
    assert out["result"] is None
    assert snapshot(hb.root) == before and u_path.exists()


@pytest.mark.parametrize("bad", ["../../outside/{name}", "{outside}/{name}", "{home}/sessions/link/{name}",
                                 "{home}/sessions/2025/03/01/x\n{name}", "relative/{name}"])
def test_rows_pointing_outside_are_never_followed(tmp_path, bad):
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add()
    outside = tmp_path / "outside"
    outside.mkdir()
    (hb.root / "sessions" / "link").symlink_to(outside)
    target = bad.format(name=t.path.name, outside=outside, home=hb.root)
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", (target, t.id))
    before_outside = snapshot(outside)
    out = repair(hb.root, "--apply")
    assert snapshot(outside) == before_outside == {}
    # the row is pointed at the real file instead; nothing was created anywhere else
    assert hb.sql("SELECT rollout_path FROM threads WHERE id=?", (t.id,)) == [(str(t.path),)]
    assert out["planned_path_moves"] == 0
    assert not any(p.name.endswith(".jsonl") for p in tmp_path.rglob("*") if hb.root not in p.parents)


def test_import_orphans_builds_rows_and_skips_active_ones(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add()
    orphan = hb.add(write_row=False, provider="openai", cwd="/work/orphaned", preview="lost session")
    fresh = hb.add(write_row=False, preview="being written")
    os.utime(fresh.path, None)
    out = repair(hb.root, "--import-orphans", "--apply")
    assert out["planned_row_inserts"] == 1
    assert any(s["thread_id"] == fresh.id and s["reason"].startswith("ACTIVE_ORPHAN") for s in out["skipped_sample"])
    row = hb.sql("SELECT model_provider, cwd, preview, source, archived, rollout_path FROM threads WHERE id=?",
                 (orphan.id,))
    assert row == [("openai", "/work/orphaned", "lost session (turn 0)", "cli", 0, str(orphan.path))]
    assert hb.sql("SELECT count(*) FROM threads WHERE id=?", (fresh.id,)) == [(0,)]
    assert run("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    assert hb.sql("SELECT count(*) FROM threads WHERE id=?", (orphan.id,)) == [(0,)]


def test_path_prefix_helpers():
    assert has_prefix("/a/proj/x", "/a/proj") and not has_prefix("/a/proj-2/x", "/a/proj")
    assert replace_prefix("/a/proj-2/x", "/a/proj", "/b") is None
    assert replace_prefix("/a/proj/x/y", "/a/proj/", "/b/q") == "/b/q/x/y"
    assert normalize_for_match(r"\\?\C:\Users\me\.codex") == "c:/Users/me/.codex"
    assert normalize_for_match("/mnt/c/Users/me/.codex") == "c:/Users/me/.codex"
    assert has_prefix(r"C:\Users\me\.codex\sessions\a.jsonl", "c:/Users/me/.codex")
    assert replace_prefix(r"\\?\C:\Users\me\.codex\sessions\a.jsonl", "/mnt/c/Users/me/.codex",
                          "/home/me/.codex") == "/home/me/.codex/sessions/a.jsonl"
    assert replace_prefix("/mnt/c/Users/me/p", r"C:\Users\me", r"D:\me") == r"D:\me\p"
