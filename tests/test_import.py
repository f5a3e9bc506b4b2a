"""session_import.py on hand-built homes: the plan, hostile archives, conflicts, a source read
without a byte changed, and history offsets that stay valid when line 1 changes length."""
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from harness import run_script, snapshot
from homebuilder import HomeBuilder

# thread_history_1.sqlite as the real Codex 0.171.0 creates it (the tables an import copies)
HISTORY_SCHEMA = """
CREATE TABLE thread_turns (thread_id TEXT NOT NULL, turn_id TEXT NOT NULL, rollout_ordinal INTEGER NOT NULL,
    status TEXT NOT NULL, error_json TEXT, started_at INTEGER, completed_at INTEGER, duration_ms INTEGER,
    first_user_item_id TEXT, final_agent_item_id TEXT, rollout_byte_offset INTEGER, rollout_end_ordinal INTEGER,
    rollout_end_byte_offset INTEGER, root_turn_id TEXT, PRIMARY KEY (thread_id, turn_id));
CREATE UNIQUE INDEX idx_thread_turns_page ON thread_turns(thread_id, rollout_ordinal);
CREATE TABLE thread_items (thread_id TEXT NOT NULL, turn_id TEXT NOT NULL, item_id TEXT NOT NULL,
    rollout_ordinal INTEGER NOT NULL, created_at_ms INTEGER NOT NULL, item_json TEXT NOT NULL,
    item_type TEXT NOT NULL DEFAULT '', updated_at_ordinal INTEGER NOT NULL DEFAULT 0, started_at_ms INTEGER,
    completed_at_ms INTEGER, PRIMARY KEY (thread_id, turn_id, item_id));
CREATE TABLE thread_history_projection_state (thread_id TEXT PRIMARY KEY,
    next_rollout_byte_offset INTEGER NOT NULL, next_rollout_ordinal INTEGER NOT NULL);
CREATE TABLE thread_realtime_items (thread_id TEXT NOT NULL, item_id TEXT NOT NULL,
    rollout_ordinal INTEGER NOT NULL, created_at_ms INTEGER NOT NULL, item_type TEXT NOT NULL,
    item_json TEXT NOT NULL, PRIMARY KEY (thread_id, item_id));
"""


def make_history(hb: HomeBuilder, threads, key_of=None) -> Path:
    """History rows as Codex keeps them: one turn from line 2 to the end, the cursor at the end."""
    db = hb.root / "thread_history_1.sqlite"
    conn = sqlite3.connect(str(db))
    conn.executescript(HISTORY_SCHEMA)
    for t in threads:
        data = t.path.read_bytes()
        key = key_of(t) if key_of else t.id
        start, end = data.index(b"\n") + 1, len(data)
        conn.execute("INSERT INTO thread_turns VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (key, f"turn-{key[-4:]}", 1, "completed", None, 1, 2, 3, "u1", "a1", start, 4, end, None))
        conn.execute("INSERT INTO thread_items VALUES (?,?,?,?,?,?,?,?,?,?)",
                     (key, f"turn-{key[-4:]}", "item1", 2, 5, '{"type":"userMessage"}', "userMessage", 2, None, None))
        conn.execute("INSERT INTO thread_history_projection_state VALUES (?,?,?)", (key, end, 5))
    conn.commit()
    conn.close()
    return db


def imp(dest: Path, *args, env=None, expect=(0, 1)):
    proc = run_script("session_import.py", "--codex-dir", str(dest), *args, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in expect, proc.stdout + proc.stderr
    return proc


def plan_json(dest: Path, *args, env=None):
    return json.loads(imp(dest, "--json", *args, env=env).stdout)


@pytest.fixture
def homes(tmp_path):
    """An old home (user `olduser`: three sessions in ~/proj, one named, one archived) and a new
    home (user `newuser2`: two of its own in ~/proj), both as the 0.169 schema writes them."""
    src = HomeBuilder(tmp_path / "old" / "olduser" / ".codex", provider="openai")
    old_cwd = "/home/olduser/proj"
    made = [src.add(cwd=old_cwd, preview="fix the parser"),
            src.add(cwd=old_cwd, preview="write the docs"),
            src.add(cwd=old_cwd, preview="old archived work", archived=True)]
    for t in made:  # the rows say where the old home was on the old machine
        src.sql("UPDATE threads SET rollout_path=? WHERE id=?",
                ("/home/olduser/.codex/" + str(t.path.relative_to(src.root)), t.id))
    src.sql("UPDATE threads SET name='Parser rewrite' WHERE id=?", (made[0].id,))
    (src.root / "session_index.jsonl").write_text(json.dumps(
        {"id": made[1].id, "thread_name": "Docs (from the index)", "updated_at": "2025-03-01T10:00:00Z"}) + "\n")
    make_history(src, made)
    dst = HomeBuilder(tmp_path / "new" / "newuser2" / ".codex", provider="openai")
    dst.n = 100  # other ids
    own = [dst.add(cwd=str(dst.root.parent / "proj"), preview=f"new machine {i}") for i in range(2)]
    make_history(dst, own)
    return src, made, dst, own


def test_dry_run_shows_titles_names_dates_and_suggests_the_user_home_remap(homes):
    src, made, dst, own = homes
    before_src, before_dst = snapshot(src.root), snapshot(dst.root)
    plan = plan_json(dst.root, "--from", str(src.root))
    assert plan["dry_run"] is True and plan["result"] is None
    assert (plan["threads_in_source"], plan["to_import"], plan["to_import_archived"]) == (3, 3, 1)
    assert (plan["skipped"], plan["conflicts"], plan["files_to_copy"], plan["history_turns_to_copy"]) == (0, 0, 3, 3)
    assert plan["suggested_remap"] == f"--remap-prefix /home/olduser={dst.root.parent}"
    assert plan["provider_hint"] is None
    by_id = {t["thread_id"]: t for t in plan["imports_sample"]}
    assert by_id[made[0].id]["name"] == "Parser rewrite"
    assert by_id[made[1].id]["name"] == "Docs (from the index)"
    assert by_id[made[2].id]["archived"] is True
    assert by_id[made[2].id]["files"] == ["archived_sessions/" + made[2].path.name]
    assert by_id[made[0].id]["title"] == "fix the parser" and by_id[made[0].id]["created"] == "2025-03-01 09:37"
    assert by_id[made[0].id]["folder"] == "/home/olduser/proj"
    text = imp(dst.root, "--from", str(src.root)).stdout
    assert '  import "Parser rewrite", 2025-03-01 09:37, /home/olduser/proj  (openai)' in text.splitlines()
    assert f" --remap-prefix /home/olduser={dst.root.parent}" in text  # the suggested import, a whole command
    assert snapshot(src.root) == before_src and snapshot(dst.root) == before_dst


def test_remap_rewrites_cwd_and_shifts_history_offsets_by_the_growth(homes):
    from sessionkit.fixes.archive_src import open_source
    from sessionkit.codexfiles.home import open_home
    from sessionkit.fixes.importer import history_rows, plan_import, read_dest, read_source
    src, made, dst, own = homes
    remap = [("/home/olduser", "/home/newuser2")]  # 1 byte longer, in cwd
    with open_source(str(src.root)) as source:
        s, d = read_source(source), read_dest(open_home(str(dst.root)))
        plan = plan_import(s, d, remap)
        rows = history_rows(plan, d.history_columns)
        built = {t.thread_id: t.row for t in plan.imports}  # whole rows: read from SRC (open) at --apply
    assert [t.cwd_after for t in plan.imports] == ["/home/newuser2/proj"] * 3
    for t in plan.imports:
        fc = t.files[0]
        old = fc.src.read_bytes()
        line1 = old[:old.index(b"\n")]
        assert fc.new_line1() == line1.replace(b'"cwd":"/home/olduser/proj"', b'"cwd":"/home/newuser2/proj"')
        assert fc.delta == 1 and built[t.thread_id]["cwd"] == "/home/newuser2/proj"
        assert built[t.thread_id]["rollout_path"] == str(dst.root / fc.rel)
        # every turn_context's cwd too (real Codex resumes in the last one's): one more byte each
        new = b"".join(plan.remapper.stream(fc.src))
        assert new == old.replace(b'"cwd":"/home/olduser/proj"', b'"cwd":"/home/newuser2/proj"')
        assert old.count(b'"cwd":"/home/olduser/proj"') == 2 and len(new) == len(old) + 2
        turn = rows[t.thread_id]["thread_turns"][0]
        assert (turn["rollout_byte_offset"], turn["rollout_end_byte_offset"]) == (len(line1) + 1 + 1, len(new))
        assert rows[t.thread_id]["thread_history_projection_state"][0]["next_rollout_byte_offset"] == len(new)
        assert rows[t.thread_id]["thread_items"][0]["item_json"] == '{"type":"userMessage"}'


def test_source_with_rows_only_in_its_wal_is_read_through_a_private_copy(tmp_path):
    """A copied home whose schema and rows live only in -wal: read them, change no byte, make no -shm."""
    live = HomeBuilder(tmp_path / "live" / ".codex", provider="openai", wal=True)
    t = live.add(cwd="/home/olduser/proj", preview="only in the wal")
    writer = sqlite3.connect(str(live.db_path))
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE threads SET title='renamed in the wal', name='WAL name' WHERE id=?", (t.id,))
    writer.commit()
    src = tmp_path / "copy" / ".codex"
    shutil.copytree(live.root, src)  # copied while Codex had it open: DB, -wal, -shm
    writer.close()
    (src / "state_5.sqlite-shm").unlink()
    assert (src / "state_5.sqlite-wal").stat().st_size > 0
    dst = HomeBuilder(tmp_path / "new" / ".codex")
    before = snapshot(src)
    plan = plan_json(dst.root, "--from", str(src))
    assert [(t["name"], t["title"]) for t in plan["imports_sample"]] == [("WAL name", "renamed in the wal")]
    assert snapshot(src) == before
    assert not (src / "state_5.sqlite-shm").exists()


def test_conflict_when_dest_has_the_id_with_other_content(homes):
    src, made, dst, own = homes
    day = dst.root / made[0].path.relative_to(src.root).parent
    day.mkdir(parents=True, exist_ok=True)
    clash = day / made[0].path.name
    clash.write_bytes(made[0].path.read_bytes().replace(b"fix the parser", b"something else"))
    dst.insert_row(made[0].id, str(clash), made[0].created, "openai", "/x", "cli", False, "something else")
    proc = imp(dst.root, "--from", str(src.root), "--json", expect=(1,))
    plan = json.loads(proc.stdout)
    assert plan["to_import"] == 2 and plan["conflicts"] == 1
    assert plan["conflicts_sample"][0]["thread_id"] == made[0].id
    assert "different thread" in plan["conflicts_sample"][0]["reason"]


def test_same_thread_in_dest_is_skipped_not_a_conflict(homes):
    src, made, dst, own = homes
    copy = dst.root / made[1].path.relative_to(src.root)
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(made[1].path.read_bytes() + b'{"type":"event_msg","payload":{}}\n')  # a turn added since
    dst.insert_row(made[1].id, str(copy), made[1].created, "openai", "/home/olduser/proj", "cli", False, "x")
    plan = plan_json(dst.root, "--from", str(src.root))
    assert (plan["to_import"], plan["already_present"], plan["conflicts"]) == (2, 1, 0)


def test_row_from_the_rollout_when_the_source_has_no_row_and_only_dest_columns(homes):
    from sessionkit.fixes.archive_src import open_source
    from sessionkit.codexfiles.home import open_home
    from sessionkit.fixes.importer import plan_import, read_dest, read_source
    src, made, dst, own = homes
    orphan = src.add(cwd="/home/olduser/other", preview="no row for me", write_row=False)
    src.sql("ALTER TABLE threads ADD COLUMN from_the_future TEXT DEFAULT 'x'")
    with open_source(str(src.root)) as source:
        plan = plan_import(read_source(source), read_dest(open_home(str(dst.root))))
        rows = {t.thread_id: t.row for t in plan.imports}  # whole rows: read from SRC (open) at --apply
    by_id = {t.thread_id: t for t in plan.imports}
    assert by_id[orphan.id].row_from == "rollout" and by_id[made[0].id].row_from == "source row"
    assert rows[orphan.id]["cwd"] == "/home/olduser/other"
    assert rows[orphan.id]["rollout_path"] == str(dst.root / orphan.path.relative_to(src.root))
    assert "from_the_future" not in rows[made[0].id]
    assert rows[made[0].id]["name"] == "Parser rewrite"


def test_fork_parent_comes_along_and_its_growth_moves_the_childs_history_base(tmp_path):
    from sessionkit.fixes.archive_src import open_source
    from sessionkit.codexfiles.home import open_home
    from sessionkit.fixes.importer import plan_import, read_dest, read_source
    src = HomeBuilder(tmp_path / "old" / ".codex")
    parent = src.add(cwd="/home/olduser/proj", preview="parent")
    child = src.add(cwd="/home/olduser/proj", preview="child")
    pdata = parent.path.read_bytes()
    data = child.path.read_bytes()
    line1, rest = data.split(b"\n", 1)
    meta = json.loads(line1)
    payload = meta["payload"]  # Codex writes forked_from_id right after id, history_base near the end
    meta["payload"] = dict(list(payload.items())[:2] + [("forked_from_id", parent.id)] + list(payload.items())[2:])
    meta["payload"]["history_base"] = {"thread_id": parent.id, "end_ordinal_exclusive": 5,
                                       "end_byte_offset": len(pdata)}
    child.path.write_bytes(json.dumps(meta, separators=(",", ":")).encode() + b"\n" + rest)
    dst = HomeBuilder(tmp_path / "new" / ".codex")
    with open_source(str(src.root)) as source:
        plan = plan_import(read_source(source), read_dest(open_home(str(dst.root))),
                           [("/home/olduser", "/home/someoneelse")], [child.id])
    assert sorted((t.thread_id, t.why) for t in plan.imports) == sorted(
        [(child.id, "chosen"), (parent.id, f"parent of fork {child.id}")])
    growth = len("/home/someoneelse") - len("/home/olduser")
    new_child = json.loads(next(t for t in plan.imports if t.thread_id == child.id).files[0].new_line1())
    assert new_child["payload"]["history_base"]["end_byte_offset"] == len(pdata) + growth
    assert new_child["payload"]["cwd"] == "/home/someoneelse/proj"


def test_provider_hint_when_the_threads_are_on_another_provider(tmp_path):
    src = HomeBuilder(tmp_path / "old" / ".codex", provider="oldco")
    src.add(provider="oldco", cwd="/p")
    dst = HomeBuilder(tmp_path / "new" / ".codex", provider="newco", providers=["newco"])
    plan = plan_json(dst.root, "--from", str(src.root))
    assert plan["provider_hint"].endswith(
        "provider_migrate.py --target-provider newco --from-provider oldco --include-archived")


def test_unknown_thread_id_and_missing_source_are_one_line_errors(homes, tmp_path):
    src, made, dst, own = homes
    for args, words in ((("--from", str(src.root), "--thread-id", "0199a213-81c0-7800-8aa1-bbab2a035a53"),
                         "no such thread"),
                        (("--from", str(src.root), "--thread-id", "nope"), "is not a thread id"),
                        (("--from", str(tmp_path / "absent")), "no such file or folder"),
                        (("--from", str(dst.root)), "same home"),
                        (("--from", str(tmp_path / "x.rar")), "no such file")):
        proc = imp(dst.root, *args, expect=(2,))
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --- archives ------------------------------------------------------------------------------

def _tar(path: Path, home: Path, arcroot: str, extra=None, mode="w:gz"):
    with tarfile.open(str(path), mode) as tf:
        tf.add(str(home), arcname=arcroot)
        for info, data in extra or []:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_tar_gz_finds_the_home_inside_and_plans_the_same_as_the_folder(homes, tmp_path):
    src, made, dst, own = homes
    link = src.root / "packages" / "app-server-daemon"
    link.mkdir(parents=True)
    (link / "current").symlink_to("/home/olduser/.codex/packages/app-server-daemon/releases/x")  # as 0.171 leaves it
    archive = _tar(tmp_path / "old-home.tar.gz", src.root, "backup/home/olduser/.codex")
    scratch_parent = tmp_path / "tmpdir"
    scratch_parent.mkdir()
    from_folder = plan_json(dst.root, "--from", str(src.root))
    from_archive = plan_json(dst.root, "--from", str(archive), env={"TMPDIR": str(scratch_parent)})
    assert from_archive["source_kind"] == "tar"
    for key in ("to_import", "files_to_copy", "history_turns_to_copy", "suggested_remap", "imports_sample"):
        assert from_archive[key] == from_folder[key], key
    assert list(scratch_parent.iterdir()) == []  # the scratch folder is gone


def _member(name, kind=tarfile.REGTYPE, data=b"x", linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink_out", "hardlink_out", "symlink_dir"])
def test_hostile_tar_members_refuse_the_archive_and_write_nothing_outside(homes, tmp_path, case):
    src, made, dst, own = homes
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep")
    members = {
        "dotdot": [_member(".codex/sessions/../../../outside/evil")],
        "absolute": [_member(str(outside / "evil"))],
        "symlink_out": [_member(".codex/sessions/2025/03/01/rollout-2025-03-01T00-00-00-"
                                "0195ffff-0000-7000-8000-000000000001.jsonl", tarfile.SYMTYPE,
                                linkname=str(outside / "secret"))],
        "hardlink_out": [_member(".codex/archived_sessions/rollout-2025-03-01T00-00-00-"
                                 "0195ffff-0000-7000-8000-000000000002.jsonl", tarfile.LNKTYPE,
                                 linkname=str(outside / "secret"))],
        "symlink_dir": [_member(".codex/sessions/2026", tarfile.SYMTYPE, linkname=str(outside))],
    }[case]
    archive = _tar(tmp_path / "evil.tar", src.root, ".codex", members, mode="w")
    scratch_parent = tmp_path / "tmpdir"
    scratch_parent.mkdir()
    before_out, before_dst = snapshot(outside), snapshot(dst.root)
    proc = imp(dst.root, "--from", str(archive), env={"TMPDIR": str(scratch_parent)}, expect=(2,))
    assert "refusing the archive" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert snapshot(outside) == before_out and snapshot(dst.root) == before_dst
    assert not (outside / "evil").exists() and not (tmp_path / "evil").exists()
    assert list(scratch_parent.iterdir()) == []


def test_zip_bomb_is_refused_by_its_size_and_a_plain_zip_works(homes, tmp_path):
    src, made, dst, own = homes
    good = tmp_path / "old.zip"
    with zipfile.ZipFile(str(good), "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.root.rglob("*")):
            if p.is_file():
                zf.write(str(p), "olduser/.codex/" + str(p.relative_to(src.root)))
    plan = plan_json(dst.root, "--from", str(good))
    assert (plan["source_kind"], plan["to_import"], plan["history_turns_to_copy"]) == ("zip", 3, 3)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(str(bomb), "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(".codex/state_5.sqlite", b"\0" * (64 * 1024 * 1024))
    assert bomb.stat().st_size < 1024 * 1024
    scratch_parent = tmp_path / "tmpdir"
    scratch_parent.mkdir()
    proc = imp(dst.root, "--from", str(bomb), expect=(2,),
               env={"SESSION_IMPORT_MAX_BYTES": str(16 * 1024 * 1024), "TMPDIR": str(scratch_parent)})
    assert "more than 16777216 bytes" in proc.stderr
    assert list(scratch_parent.iterdir()) == []


def test_zip_member_larger_than_it_declares_is_refused(homes, tmp_path):
    src, made, dst, own = homes
    bomb = tmp_path / "liar.zip"
    with zipfile.ZipFile(str(bomb), "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(".codex/state_5.sqlite", b"{}\n" * 1000)
    data = bytearray(bomb.read_bytes())
    # the declared size in the central directory (offset 24 of the entry) says 3 bytes
    cd = data.rindex(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (3).to_bytes(4, "little")
    bomb.write_bytes(bytes(data))
    (tmp_path / "d").mkdir()
    proc = imp(dst.root, "--from", str(bomb), expect=(2,), env={"TMPDIR": str(tmp_path / "d")})
    assert "refusing the archive" in proc.stderr
    assert list((tmp_path / "d").iterdir()) == []


def test_archive_with_two_homes_or_none_is_refused(homes, tmp_path):
    src, made, dst, own = homes
    two = tmp_path / "two.tar"
    with tarfile.open(str(two), "w") as tf:
        tf.add(str(src.root), arcname="a/.codex")
        tf.add(str(src.root), arcname="b/.codex")
    assert "more than one Codex home" in imp(dst.root, "--from", str(two), expect=(2,)).stderr
    none = tmp_path / "none.tar"
    with tarfile.open(str(none), "w") as tf:
        info, data = _member("notes/readme.txt")
        tf.addfile(info, io.BytesIO(data))
    assert "holds no Codex home" in imp(dst.root, "--from", str(none), expect=(2,)).stderr


# --- apply, second import, rollback -------------------------------------------------------

def _db_rows(db: Path, table: str):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
    finally:
        conn.close()


def _dest_state(hb: HomeBuilder):
    files = {k: v for k, v in snapshot(hb.root).items() if k.startswith(("sessions/", "archived_sessions/"))}
    dirs = sorted(str(p.relative_to(hb.root)) for p in hb.root.rglob("*") if p.is_dir() and ".tmp" not in p.parts)
    hist = hb.root / "thread_history_1.sqlite"
    return files, dirs, _db_rows(hb.db_path, "threads"), [_db_rows(hist, t) for t in (
        "thread_turns", "thread_items", "thread_history_projection_state")]


def test_apply_imports_exactly_then_nothing_twice_and_rollback_restores_dest(homes):
    src, made, dst, own = homes
    src_before, dest_before = snapshot(src.root), _dest_state(dst)
    remap = f"/home/olduser={dst.root.parent}"
    out = plan_json(dst.root, "--from", str(src.root), "--remap-prefix", remap, "--apply")
    r = out["result"]
    assert (r["imported_threads"], r["files_created"], r["rows_inserted"], r["history_rows_inserted"]) == (3, 3, 3, 9)
    for t in made:
        rel = t.path.relative_to(src.root)
        copy = dst.root / rel
        old = t.path.read_bytes()
        new_cwd = str(dst.root.parent / "proj")
        # line 1 and the turn_context line: both cwds
        assert copy.read_bytes() == old.replace(b'"cwd":"/home/olduser/proj"', f'"cwd":"{new_cwd}"'.encode())
        assert copy.stat().st_mtime_ns == t.path.stat().st_mtime_ns
        assert (copy.stat().st_mode & 0o777) == 0o600
        growth = len(new_cwd) - len("/home/olduser/proj")
        (row,) = dst.sql("SELECT rollout_path, cwd, archived, name FROM threads WHERE id=?", (t.id,))
        assert row[:3] == (str(copy), new_cwd, int(t.archived))
        hist = sqlite3.connect(str(dst.root / "thread_history_1.sqlite"))
        turn = hist.execute("SELECT rollout_byte_offset, rollout_end_byte_offset FROM thread_turns "
                            "WHERE thread_id=?", (t.id,)).fetchall()
        proj = hist.execute("SELECT next_rollout_byte_offset FROM thread_history_projection_state "
                            "WHERE thread_id=?", (t.id,)).fetchall()
        hist.close()
        data = copy.read_bytes()
        assert turn == [(data.index(b"\n") + 1, len(data))] and proj == [(len(data),)]
        assert turn[0][0] == old.index(b"\n") + 1 + growth
    assert dst.sql("SELECT name FROM threads WHERE id IN (?,?) ORDER BY id", (made[0].id, made[1].id)) == [
        ("Parser rewrite",), ("Docs (from the index)",)]
    assert snapshot(src.root) == src_before
    again = plan_json(dst.root, "--from", str(src.root), "--remap-prefix", remap, "--apply")
    assert (again["to_import"], again["already_present"], again["conflicts"], again["result"]) == (0, 3, 0, None)
    without_remap = plan_json(dst.root, "--from", str(src.root))
    assert (without_remap["to_import"], without_remap["conflicts"], without_remap["already_present"]) == (0, 0, 3)
    assert "its folders or provider differ" in without_remap["skipped_sample"][0]["reason"]
    rb = run_script("rollback.py", "--codex-dir", str(dst.root), "--latest", "--apply", "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _dest_state(dst) == dest_before
    assert snapshot(src.root) == src_before


def test_apply_with_a_conflict_imports_the_rest_and_leaves_the_clash_alone(homes):
    src, made, dst, own = homes
    day = dst.root / made[0].path.relative_to(src.root).parent
    day.mkdir(parents=True, exist_ok=True)
    clash = day / made[0].path.name
    clash.write_bytes(b"not the same thread\n")
    dst.insert_row(made[0].id, str(clash), made[0].created, "openai", "/x", "cli", False, "mine")
    before = clash.read_bytes(), clash.stat().st_mtime_ns, dst.sql("SELECT * FROM threads WHERE id=?", (made[0].id,))
    proc = imp(dst.root, "--from", str(src.root), "--apply", "--json", expect=(1,))
    out = json.loads(proc.stdout)
    assert out["conflicts"] == 1 and out["result"]["imported_threads"] == 2
    assert (clash.read_bytes(), clash.stat().st_mtime_ns,
            dst.sql("SELECT * FROM threads WHERE id=?", (made[0].id,))) == before


def test_apply_refuses_a_source_codex_is_running_on(homes):
    import fcntl
    src, made, dst, own = homes
    lockdir = src.root / "tmp" / "arg0-linux" / "codex-arg0abc"
    lockdir.mkdir(parents=True)
    fd = os.open(str(lockdir / ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        before = _dest_state(dst)
        proc = imp(dst.root, "--from", str(src.root), "--apply", expect=(2,))
        assert "running against the source home" in proc.stderr
        assert _dest_state(dst) == before
        assert plan_json(dst.root, "--from", str(src.root))["to_import"] == 3  # a dry-run still reads it
    finally:
        os.close(fd)


def test_reverted_thread_brings_every_segment_and_its_history_by_segment_key(tmp_path):
    src = HomeBuilder(tmp_path / "old" / ".codex")
    t = src.add(cwd="/p", preview="reverted")
    seg_id = "0195eeee-0000-7000-8000-00000000abcd"
    seg = t.path.with_name(t.path.name[:-len(".jsonl")] + f"_{seg_id}.jsonl")
    seg.write_bytes(t.path.read_bytes())
    src.sql("UPDATE threads SET rollout_path=? WHERE id=?", (str(seg), t.id))

    class Seg:
        id, path = seg_id, seg
    make_history(src, [t, Seg])
    dst = HomeBuilder(tmp_path / "new" / ".codex")
    make_history(dst, [])
    out = plan_json(dst.root, "--from", str(src.root), "--apply")
    assert out["imports_sample"][0]["files"] == sorted(str(p.relative_to(src.root)) for p in (t.path, seg))
    assert out["result"]["history_rows_inserted"] == 6
    assert dst.sql("SELECT rollout_path FROM threads") == [(str(dst.root / seg.relative_to(src.root)),)]
    hist = sqlite3.connect(str(dst.root / "thread_history_1.sqlite"))
    assert sorted(k for (k,) in hist.execute("SELECT thread_id FROM thread_turns")) == sorted([t.id, seg_id])
    hist.close()


def _make_legacy(hb, t):
    """A thread as Codex before paginated history wrote it: no history_mode in line 1 or its row."""
    data = t.path.read_bytes()
    head, rest = data.split(b"\n", 1)
    t.path.write_bytes(head.replace(b',"history_mode":"paginated"', b"", 1) + b"\n" + rest)
    hb.sql("UPDATE threads SET history_mode='legacy' WHERE id=?", (t.id,))


def test_a_dest_before_paginated_history_gets_the_legacy_threads_and_skips_the_paginated_with_why(homes, tmp_path):
    """A 0.130 home (threads without history_mode, no thread_history_1.sqlite): real 0.130 lists no
    paginated thread and reads its turns empty (tests/test_e2e_old_homes.py), so those are skipped
    with that reason; the legacy ones arrive with their names in session_index.jsonl, which that
    Codex reads. (Before: every thread was imported, and 0.130 hid the paginated ones.)"""
    from sessionkit.fixes.importer import UNREADABLE_PAGINATED
    src, made, dst, own = homes
    for t in made[1:]:
        _make_legacy(src, t)
    old = HomeBuilder(tmp_path / "old130" / ".codex", old_schema=True)
    old.n = 200  # other ids
    old.add(cwd="/home/x/proj", preview="its own")
    assert not (old.root / "thread_history_1.sqlite").exists()
    before = _dest_state_no_history(old)
    plan = plan_json(old.root, "--from", str(src.root))
    assert plan["to_import"] == 2
    assert [(s["thread_id"], s["reason"]) for s in plan["skipped_sample"]] == [(made[0].id, UNREADABLE_PAGINATED)]
    out = plan_json(old.root, "--from", str(src.root), "--apply")
    r = out["result"]
    assert (r["imported_threads"], r["files_created"], r["rows_inserted"], r["history_rows_inserted"]) == (2, 2, 2, 0)
    assert not (old.root / "thread_history_1.sqlite").exists()
    assert not (old.root / made[0].path.relative_to(src.root)).exists()
    for t in made[1:]:
        assert (old.root / t.path.relative_to(src.root)).read_bytes() == t.path.read_bytes()
    names = [json.loads(x) for x in (old.root / "session_index.jsonl").read_text().splitlines()]
    assert [(n["id"], n["thread_name"]) for n in names] == [(made[1].id, "Docs (from the index)")]
    rb = run_script("rollback.py", "--codex-dir", str(old.root), "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _dest_state_no_history(old)[1] == before[1]
    assert {k: v for k, v in _dest_state_no_history(old)[0].items() if not k.startswith((".tmp/", "state_5"))} == \
        {k: v for k, v in before[0].items() if not k.startswith((".tmp/", "state_5"))}


def test_a_dest_with_paginated_schema_but_no_history_db_yet_gets_every_thread(homes, tmp_path):
    """A newer Codex makes thread_history_1.sqlite only with its first paginated thread: such a home
    gets the paginated threads too, without history rows, and the plan says so."""
    src, made, dst, own = homes
    new = HomeBuilder(tmp_path / "new148" / ".codex")
    new.n = 300
    new.add(cwd="/home/x/proj", preview="its own")
    out = plan_json(new.root, "--from", str(src.root), "--apply")
    assert (out["result"]["imported_threads"], out["result"]["history_rows_inserted"]) == (3, 0)
    assert any("has no thread_history_1.sqlite yet" in n for n in out["notes"]), out["notes"]
    assert not (new.root / "thread_history_1.sqlite").exists()


def _dest_state_no_history(hb):
    return snapshot(hb.root), _db_rows(hb.db_path, "threads")


def test_symlinked_rollouts_in_a_source_folder_are_skipped_not_followed(homes, tmp_path):
    src, made, dst, own = homes
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(made[1].path.read_bytes().replace(made[1].id.encode(), b"0195ffff-0000-7000-8000-000000000009"))
    link = made[1].path.parent / "rollout-2025-03-01T10-00-00-0195ffff-0000-7000-8000-000000000009.jsonl"
    link.symlink_to(outside)
    plan = plan_json(dst.root, "--from", str(src.root))
    assert plan["to_import"] == 3
    assert [s["reason"] for s in plan["skipped_sample"]] == ["a rollout file is a symlink (never followed)"]


def test_old_schema_source_rows_get_preview_and_history_mode_from_the_rollout(tmp_path):
    src = HomeBuilder(tmp_path / "old" / ".codex", old_schema=True)
    t = src.add(cwd="/p", preview="from 2025")
    dst = HomeBuilder(tmp_path / "new" / ".codex")
    from sessionkit.fixes.archive_src import open_source
    from sessionkit.codexfiles.home import open_home
    from sessionkit.fixes.importer import plan_import, read_dest, read_source
    with open_source(str(src.root)) as source:
        plan = plan_import(read_source(source), read_dest(open_home(str(dst.root))))
        (imp_,) = plan.imports
        row = imp_.row  # the whole row: read from SRC (open) at --apply
    assert imp_.row_from == "source row (older schema, filled from the rollout)"
    assert (row["title"], row["preview"], row["history_mode"]) == ("from 2025", "from 2025 (turn 0)", "paginated")
    assert row["tokens_used"] == 15 and row["sandbox_policy"] == '{"type":"read-only"}'  # the source row's


def test_unreadable_source_db_falls_back_to_the_rollouts(homes):
    src, made, dst, own = homes
    src.db_path.write_bytes(b"this is not a database" * 100)
    (src.root / "thread_history_1.sqlite").write_bytes(b"nor this" * 100)
    before = snapshot(src.root)
    plan = plan_json(dst.root, "--from", str(src.root))
    assert plan["to_import"] == 3 and plan["history_turns_to_copy"] == 0
    assert {t["row_from"] for t in plan["imports_sample"]} == {"rollout"}
    assert any("state_5.sqlite is unreadable" in n for n in plan["notes"])
    assert any("thread_history_1.sqlite is unreadable" in n for n in plan["notes"])
    assert snapshot(src.root) == before


def test_a_fault_at_any_point_of_an_import_leaves_dest_as_before(homes, tmp_path):
    """Killed (then rollback --latest) or a full disk (the run undoes itself; after its end record
    the run is complete and rollback --latest undoes it) at every fault point."""
    from test_faults import Pristine, frun
    src, made, dst, own = homes
    remap = f"/home/olduser={dst.root.parent}"
    args = ("--from", str(src.root), "--remap-prefix", remap, "--apply", "--json")
    base, src_before = _dest_state(dst), snapshot(src.root)
    pristine = Pristine(dst.root)
    counted = tmp_path / "points.txt"
    assert frun("session_import.py", dst.root, *args, fault=f"count:{counted}").returncode == 0
    labels = counted.read_text().split()
    assert {"file", "commit"} <= set(labels)
    for n in range(1, len(labels) + 1):
        for action in ("kill", "enospc"):
            pristine.restore()
            proc = frun("session_import.py", dst.root, *args, fault=f"{action}:{n}")
            if action == "kill":
                assert proc.returncode == -9, proc.stderr
            else:
                assert proc.returncode == 2 and "No space left" in proc.stderr, (n, proc.stderr)
            if action == "kill" or n == len(labels):  # killed, or failed after the run's end record
                rb = run_script("rollback.py", "--codex-dir", str(dst.root), "--latest", "--apply")
                assert rb.returncode == 0, (n, rb.stdout + rb.stderr)
            assert _dest_state(dst) == base, (action, n, labels[n - 1])
    assert snapshot(src.root) == src_before


def test_an_import_in_batches_of_writer_locks_imports_exactly_and_rolls_back(homes):
    """Past the open-file limit (two writer locks at a time): two batches, each committing both
    DBs; the folder the archived thread needs is made in the first, its file lands in the second;
    the rollback, in batches too, leaves dest as before."""
    from test_faults import IN_BATCHES, frun
    src, made, dst, own = homes
    base, src_before = _dest_state(dst), snapshot(src.root)
    assert not (dst.root / "archived_sessions").exists() and made[2].archived
    args = ("--from", str(src.root), "--remap-prefix", f"/home/olduser={dst.root.parent}", "--apply", "--json")
    proc = frun("session_import.py", dst.root, *args, fault=IN_BATCHES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(proc.stdout)["result"]
    assert (r["imported_threads"], r["files_created"], r["folders_created"], r["rows_inserted"],
            r["history_rows_inserted"]) == (3, 3, 1, 3, 9)
    recs = [json.loads(line) for line in Path(r["journal"]).read_text().splitlines()]
    steps = [(x["op"], x.get("n") or x.get("thread_id") or x.get("path")) for x in recs
             if x["op"] in ("batch", "mkdir", "file_create")]
    assert steps == [("batch", 1), ("mkdir", str(dst.root / "archived_sessions")), ("file_create", made[0].id),
                     ("file_create", made[1].id), ("batch", 2), ("file_create", made[2].id)]
    hist = str(dst.root / "thread_history_1.sqlite")
    assert [(x["db"], x["rows"]) for x in recs if x["op"] == "commit"] == [
        (str(dst.db_path), 2), (hist, 6), (str(dst.db_path), 1), (hist, 3)]
    rb = frun("rollback.py", dst.root, "--latest", "--apply", "--json", fault=IN_BATCHES)
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert json.loads(rb.stdout)["result"]["rows_reverted"] == 3 + 9
    assert _dest_state(dst) == base
    assert snapshot(src.root) == src_before


def test_each_unimportable_thread_is_skipped_with_its_reason_and_the_rest_imported(homes):
    src, made, dst, own = homes
    gone = src.add(cwd="/home/olduser/proj", preview="file deleted")
    gone.path.unlink()
    dup = src.add(cwd="/home/olduser/proj", preview="in both folders")
    (src.root / "archived_sessions" / dup.path.name).write_bytes(dup.path.read_bytes())
    zst = src.root / "sessions" / "2025" / "03" / "01" / \
        "rollout-2025-03-01T08-00-00-0195aaaa-0000-7000-8000-000000000001.jsonl.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd")
    bad = src.add(cwd="/home/olduser/proj", preview="line 1 of another thread")
    bad.path.write_bytes(made[0].path.read_bytes())
    plan = plan_json(dst.root, "--from", str(src.root), "--sample", "50")
    reasons = {s["thread_id"]: s["reason"] for s in plan["skipped_sample"]}
    # only a zstd magic number: read (zstd program here) and found damaged
    assert reasons.pop("0195aaaa-0000-7000-8000-000000000001").startswith(
        "the zstd-compressed rollout does not decompress (")
    assert reasons == {
        gone.id: "its rollout file is not in the source (a row alone cannot be read or resumed)",
        dup.id: "ambiguous: 2 rollout files carry this thread id in the source",
        bad.id: "line 1 belongs to another thread (session_meta.id differs)",
    }
    assert plan["to_import"] == 3 and plan["threads_in_source"] == 7
    assert imp(dst.root, "--from", str(src.root), "--json").returncode == 1
    one = plan_json(dst.root, "--from", str(src.root), "--thread-id", made[1].id.upper())
    assert [t["thread_id"] for t in one["imports_sample"]] == [made[1].id] and one["skipped"] == 0


@pytest.mark.parametrize("column", ["title", "sandbox_policy"])  # a column the plan reads, and one it does not
def test_a_source_row_with_invalid_utf8_is_rebuilt_from_its_rollout_and_the_others_kept(homes, column):
    src, made, dst, own = homes
    src.sql(f"UPDATE threads SET {column}=CAST(X'66ff6f' AS TEXT) WHERE id=?", (made[1].id,))
    plan = plan_json(dst.root, "--from", str(src.root), "--apply")
    by_id = {t["thread_id"]: t for t in plan["imports_sample"]}
    assert by_id[made[1].id]["row_from"] == "rollout" and by_id[made[0].id]["row_from"] == "source row"
    assert by_id[made[1].id]["notes"] == [
        "its source row holds text that is not UTF-8: the row is rebuilt from the rollout"]
    assert by_id[made[1].id]["name"] == "Docs (from the index)"
    assert plan["result"]["imported_threads"] == 3
    assert dst.sql("SELECT title, name FROM threads WHERE id=?", (made[1].id,)) == [
        ("write the docs (turn 0)", "Docs (from the index)")]


def test_a_rollout_under_a_non_utf8_folder_name_is_skipped(homes):
    src, made, dst, own = homes
    odd = src.root / "sessions" / "2025" / os.fsdecode(b"\xff\xfe")
    odd.mkdir()
    t = src.add(cwd="/p", preview="odd folder", write_row=False)
    t.path.rename(odd / t.path.name)
    plan = plan_json(dst.root, "--from", str(src.root), "--apply")
    assert plan["skipped_sample"][0]["reason"].endswith("a folder name that is not UTF-8 (no DB row can name it)")
    assert plan["result"]["imported_threads"] == 3


def test_a_device_or_fifo_member_is_left_packed_and_named(homes, tmp_path):
    src, made, dst, own = homes
    archive = _tar(tmp_path / "odd.tar", src.root, ".codex", [_member(".codex/sessions/pipe", tarfile.FIFOTYPE)], mode="w")
    plan = plan_json(dst.root, "--from", str(archive))
    assert plan["to_import"] == 3
    assert "archive member not extracted: .codex/sessions/pipe: not a regular file" in plan["notes"]


def test_a_whole_user_folder_archive_picks_the_codex_home_not_a_projects_sessions_folder(homes, tmp_path):
    src, made, dst, own = homes
    archive = tmp_path / "user.tgz"
    with tarfile.open(str(archive), "w:gz") as tf:
        tf.add(str(src.root), arcname="olduser/.codex")
        info, data = _member("olduser/webapp/sessions/login.py", data=b"print('x')\n")
        tf.addfile(info, io.BytesIO(data))
        info, data = _member("olduser/webapp/state_5.sqlite.txt")
        tf.addfile(info, io.BytesIO(data))
    plan = plan_json(dst.root, "--from", str(archive))
    assert (plan["to_import"], plan["history_turns_to_copy"]) == (3, 3)


def test_the_printed_next_commands_paste_and_run_from_another_folder(homes, tmp_path):
    src, made, dst, own = homes
    first = plan_json(dst.root, "--from", str(src.root))
    (remap_cmd,) = first["next_commands"]
    assert remap_cmd.endswith(f"--from {src.root} --remap-prefix /home/olduser={dst.root.parent}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    run = lambda cmd: subprocess.run(["bash", "-c", cmd + " --json"], cwd=str(elsewhere), env=env,  # noqa: E731
                                     capture_output=True, text=True, check=False)
    second = json.loads(run(remap_cmd).stdout)
    assert second["remapped_threads"] == 3 and second["dry_run"] is True
    (apply_cmd,) = second["next_commands"]
    assert apply_cmd == remap_cmd + " --apply"
    done = json.loads(run(apply_cmd).stdout)
    assert done["result"]["imported_threads"] == 3 and done["next_commands"] == []


def test_apply_writes_its_scratch_inside_the_home_only(homes, tmp_path):
    """--apply stages archive members and remapped files in DEST's artifacts folder, never in the
    system temp dir (a run writes nothing outside the home), and removes them afterwards."""
    src, made, dst, own = homes
    outside = tmp_path / "system-tmp"
    outside.mkdir()
    archive = tmp_path / "old.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(str(src.root), arcname=".codex")
    proc = run_script("session_import.py", "--codex-dir", str(dst.root), "--from", str(archive),
                      "--remap-prefix", f"/home/olduser={dst.root.parent}", "--apply", "--json",
                      env={"TMPDIR": str(outside)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["result"]["imported_threads"] == 3
    assert list(outside.iterdir()) == []
    artifacts = dst.root / ".tmp" / "session-migration"
    assert [p.name for p in artifacts.iterdir() if p.name.startswith("codex-session-import-")] == []
    (journal,) = list(artifacts.glob("session_import_*/journal.jsonl"))
    sources = [r["source"] for r in map(json.loads, journal.read_text().splitlines())
               if r.get("op") == "file_create" and r.get("source")]
    assert len(sources) == 3  # each file came from the archive through the scratch folder
    assert all(s.startswith(str(artifacts) + "/codex-session-import-") for s in sources), sources


def test_a_second_import_after_the_suggested_migration_is_the_same_thread_not_a_conflict(tmp_path):
    """Import, then the provider migration the import suggests, then the same import again: the
    migrated copies are the same threads (only line 1's provider differs, a field this tool writes),
    so nothing is imported and nothing is called a conflict (issue 19)."""
    src = HomeBuilder(tmp_path / "old" / ".codex", provider="oldco", providers=["oldco"])
    for i in range(2):
        src.add(provider="oldco", preview=f"work {i}")
    dst = HomeBuilder(tmp_path / "new" / ".codex", provider="newco", providers=["newco", "oldco"])
    dst.n = 100  # other ids
    dst.add(provider="newco", preview="the new machine's own")
    imp(dst.root, "--from", str(src.root), "--apply")
    mig = run_script("provider_migrate.py", "--codex-dir", str(dst.root), "--apply")
    assert mig.returncode == 0, mig.stdout + mig.stderr
    assert dst.sql("SELECT count(*) FROM threads WHERE model_provider='oldco'") == [(0,)]
    before = snapshot(dst.root)
    plan = plan_json(dst.root, "--from", str(src.root))
    assert (plan["to_import"], plan["conflicts"], plan["skipped"]) == (0, 0, 2), plan
    assert all("already in DEST (the same thread" in s["reason"] for s in plan["skipped_sample"]), plan
    assert snapshot(dst.root) == before
