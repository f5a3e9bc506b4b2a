"""session_export.py on hand-built homes: the selection, the archive's exact members and manifest,
a source read without a byte, mtime, -wal or -shm changed, refusals, and a round trip through
session_import.py --from into another home."""
import hashlib
import json
import os
import sqlite3
import tarfile
import zipfile
from pathlib import Path

import pytest

from harness import run_script, snapshot
from homebuilder import HomeBuilder, compact
from test_import import make_history

from sessionkit.fixes.export import MANIFEST, read_manifest, verify_archive
from sessionkit import UserError

PROJ = "/work/proj"


def export(home: Path, *args, expect=(0,)):
    proc = run_script("session_export.py", "--codex-dir", str(home), *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in expect, proc.stdout + proc.stderr
    return proc


def plan(home: Path, *args, expect=(0,)):
    return json.loads(export(home, "--json", *args, expect=expect).stdout)


def add_fork(hb: HomeBuilder, parent, cwd: str = PROJ, preview: str = "a fork"):
    """A thread whose line 1 names `parent` as forked_from_id (as `thread/fork` writes it)."""
    t = hb.add(cwd=cwd, preview=preview)
    lines = t.path.read_text(encoding="utf-8").split("\n")
    first = json.loads(lines[0])
    first["payload"]["forked_from_id"] = parent.id
    first["payload"]["history_base"] = {"thread_id": parent.id, "end_byte_offset": 10}
    lines[0] = compact(first)
    st = t.path.stat()
    t.path.write_text("\n".join(lines), encoding="utf-8")
    os.utime(t.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return t


def extra_dbs(hb: HomeBuilder, rows):
    """goals_1 and queue_1 with one row per (db, thread), plus logs_2 (never exported)."""
    for name, ddl, table in (("goals_1.sqlite", "CREATE TABLE thread_goals (thread_id TEXT PRIMARY KEY, objective TEXT)",
                              "thread_goals"),
                             ("queue_1.sqlite", "CREATE TABLE queued_items (id INTEGER PRIMARY KEY, thread_id TEXT, "
                              "body TEXT)", "queued_items"),
                             ("logs_2.sqlite", "CREATE TABLE logs (id INTEGER PRIMARY KEY, thread_id TEXT, msg TEXT)",
                              "logs")):
        conn = sqlite3.connect(str(hb.root / name))
        conn.execute(ddl)
        conn.execute("CREATE TABLE _sqlx_migrations (version INTEGER PRIMARY KEY, description TEXT)")
        conn.execute("INSERT INTO _sqlx_migrations VALUES (1, 'init')")
        for t in rows:
            if table == "thread_goals":
                conn.execute("INSERT INTO thread_goals VALUES (?, ?)", (t.id, f"goal of {t.id[-4:]}"))
            else:
                conn.execute(f"INSERT INTO {table} (thread_id, {'body' if table == 'queued_items' else 'msg'}) "
                             f"VALUES (?, ?)", (t.id, "x"))
        conn.commit()
        conn.close()


@pytest.fixture
def home(tmp_path):
    """Project /work/proj: a named thread, an archived one, a fork of a thread in /work/elsewhere, a
    parent with a sub-agent (its child runs in /work/agent), and one in /work/proj-2 (not under it);
    plus auth.json, logs, a project, a section, goals, queued input and history rows."""
    hb = HomeBuilder(tmp_path / ".codex", provider="openai", wal=True)
    named = hb.add(cwd=PROJ, preview="named thread")
    archived = hb.add(cwd=PROJ + "/sub", preview="archived work", archived=True)
    elsewhere = hb.add(cwd="/work/elsewhere", preview="fork source")
    fork = add_fork(hb, elsewhere)
    parent = hb.add(cwd=PROJ, preview="spawns a helper")
    child = hb.add(cwd="/work/agent", preview="the helper", source='{"subagent":"review"}')
    other = hb.add(cwd="/work/proj-2", preview="not this project")
    hb.sql("UPDATE threads SET name = 'My named one' WHERE id = ?", (named.id,))
    hb.sql("INSERT INTO thread_spawn_edges VALUES (?, ?, 'completed')", (parent.id, child.id))
    hb.sql("INSERT INTO projects (id, name, metadata, position, created_at_ms, updated_at_ms) "
           "VALUES ('p1', 'Proj', '{}', 0, 1, 1), ('p2', 'Other', '{}', 1, 1, 1)")
    hb.sql("INSERT INTO project_roots VALUES ('p1', 0, ?), ('p2', 0, '/work/proj-2')", (PROJ,))
    hb.sql("UPDATE threads SET project_id = 'p1' WHERE id = ?", (named.id,))
    hb.sql("UPDATE threads SET project_id = 'p2' WHERE id = ?", (other.id,))
    hb.sql("INSERT INTO thread_sections (id, name, appearance) VALUES ('s1', 'Pinned', '{}'), ('s2', 'No', '{}')")
    hb.sql("UPDATE threads SET thread_section_id = 's1' WHERE id = ?", (parent.id,))
    (hb.root / "session_index.jsonl").write_text(
        json.dumps({"id": named.id, "thread_name": "My named one", "updated_at": "2025-03-01T10:00:00Z"}) + "\n"
        + json.dumps({"id": other.id, "thread_name": "Other name", "updated_at": "2025-03-01T10:00:00Z"}) + "\n",
        encoding="utf-8")
    make_history(hb, hb.threads)
    extra_dbs(hb, hb.threads)
    (hb.root / "auth.json").write_text('{"OPENAI_API_KEY": "sk-secret"}', encoding="utf-8")
    (hb.root / "log").mkdir()
    (hb.root / "log" / "codex-tui.log").write_text("secret log", encoding="utf-8")
    with open(hb.root / "config.toml", "a", encoding="utf-8") as fh:
        fh.write('\n[mcp_servers.x]\ncommand = "x"\nenv = { TOKEN = "sk-config-secret" }\n')
    hb.t = dict(named=named, archived=archived, elsewhere=elsewhere, fork=fork, parent=parent, child=child,
                other=other)
    return hb


def ids(*threads):
    return sorted(t.id for t in threads)


def test_folder_selects_at_or_under_and_brings_fork_parents_and_subagents(home):
    t = home.t
    p = plan(home.root, "--folder", PROJ)
    # archived excluded by default; /work/proj-2 is not under /work/proj; the fork's parent and the
    # sub-agent come along although their folders are elsewhere
    assert sorted(p["thread_ids"]) == ids(t["named"], t["fork"], t["elsewhere"], t["parent"], t["child"])
    assert p["threads_chosen"] == 3 and p["threads_along"] == 2
    why = {s["thread_id"]: s["why"] for s in p["sample"]}
    assert why[t["elsewhere"].id] == f"fork parent of {t['fork'].id}"
    assert why[t["child"].id] == f"sub-agent of {t['parent'].id}"
    assert {s["thread_id"]: s["name"] for s in p["sample"]}[t["named"].id] == "My named one"
    assert plan(home.root, "--folder", PROJ, "--archived", "include")["threads"] == 6
    assert sorted(plan(home.root, "--folder", PROJ, "--archived", "only")["thread_ids"]) == ids(t["archived"])
    assert plan(home.root, "--all")["threads"] == 6
    assert plan(home.root, "--all", "--archived", "include")["threads"] == 7


def test_thread_by_id_or_name_and_time(home):
    t = home.t
    assert plan(home.root, "--thread", "My named one")["thread_ids"] == [t["named"].id]
    assert plan(home.root, "--thread", "Other name")["thread_ids"] == [t["other"].id]  # session_index name
    # a named thread comes even when archived
    assert plan(home.root, "--thread", t["archived"].id.upper())["thread_ids"] == [t["archived"].id]
    created = [th.created for th in home.threads]
    since = created[4].strftime("%Y-%m-%dT%H:%M")
    got = plan(home.root, "--all", "--since", since)["thread_ids"]
    assert sorted(got) == ids(t["parent"], t["child"], t["other"])  # updated_at = created + 60 s
    until = created[1].strftime("%Y-%m-%dT%H:%M")
    assert plan(home.root, "--all", "--until", until)["thread_ids"] == [t["named"].id]
    assert plan(home.root, "--all", "--until", "2000-01-01", expect=(1,))["threads"] == 0


@pytest.mark.parametrize("args, words", [
    ((), "choose threads"),
    (("--thread", "no such name"), "no thread has that id or name"),
    (("--thread", "01950000-0000-7000-8000-00000000ffff"), "no thread with that id"),
    (("--all", "--apply"), "--apply needs --to"),
    (("--all", "--to", "x.tar"), "name it .tar.gz, .tgz or .zip"),
    (("--all", "--since", "yesterday"), "is not a date"),
    (("--folder", "work/proj"), "not an absolute path"),
])
def test_bad_input_is_one_line_exit_2(home, args, words):
    before = snapshot(home.root)
    proc = export(home.root, *args, expect=(2,))
    assert words in proc.stderr and proc.stderr.count("\n") == 1 and proc.stdout == ""
    assert snapshot(home.root) == before


def test_ambiguous_name_refused(home):
    home.sql("UPDATE threads SET name = 'My named one' WHERE id = ?", (home.t["parent"].id,))
    proc = export(home.root, "--thread", "My named one", expect=(2,))
    assert "2 threads have that name" in proc.stderr


def test_to_inside_the_home_refused(home):
    proc = export(home.root, "--all", "--to", str(home.root / "x.tar.gz"), "--apply", expect=(2,))
    assert "inside the Codex home" in proc.stderr
    assert not (home.root / "x.tar.gz").exists()


def test_existing_to_is_refused_and_kept(home, tmp_path):
    target = tmp_path / "out.tar.gz"
    target.write_bytes(b"precious")
    os.chmod(target, 0o644)
    proc = export(home.root, "--all", "--to", str(target), "--apply", expect=(2,))
    assert "exists; refusing to overwrite" in proc.stderr
    assert target.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == [".codex", "out.tar.gz"]  # no scratch left beside it


def _members(path: Path):
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            return {i.filename: zf.read(i) for i in zf.infolist()}
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers()}


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_archive_members_manifest_and_rows(home, tmp_path, suffix):
    t = home.t
    target = tmp_path / f"proj{suffix}"
    export(home.root, "--folder", PROJ, "--to", str(target), "--apply")
    assert (os.stat(target).st_mode & 0o777) == 0o600
    members = _members(target)
    picked = [t["named"], t["elsewhere"], t["fork"], t["parent"], t["child"]]
    rel = sorted(str(th.path.relative_to(home.root)) for th in picked)
    assert sorted(members) == sorted(["state_5.sqlite", "thread_history_1.sqlite", "goals_1.sqlite", "queue_1.sqlite",
                                      "session_index.jsonl", "config.toml", MANIFEST] + rel)
    assert not any("auth" in m or "log" in m for m in members)
    assert members["config.toml"] == b'model_provider = "openai"\n'  # no other setting, no secret
    for th in picked:  # rollouts byte for byte
        assert members[str(th.path.relative_to(home.root))] == th.path.read_bytes()
    man = read_manifest(members[MANIFEST])
    assert man["format_version"] == 1 and man["source_codex_version"] == "0.169.0"
    assert sorted(x["id"] for x in man["threads"]) == ids(*picked)
    assert {m["name"]: m["sha256"] for m in man["members"]} == {
        n: hashlib.sha256(b).hexdigest() for n, b in members.items() if n != MANIFEST}
    assert verify_archive(target)["threads"] == man["threads"]
    assert members["session_index.jsonl"].count(b"\n") == 1 and t["named"].id.encode() in members["session_index.jsonl"]
    # the DB subsets: only the picked threads' rows, their project and section, their edges
    out = tmp_path / "x"
    out.mkdir()
    for name in ("state_5.sqlite", "thread_history_1.sqlite", "goals_1.sqlite", "queue_1.sqlite"):
        (out / name).write_bytes(members[name])
    st = sqlite3.connect(str(out / "state_5.sqlite"))
    assert sorted(r[0] for r in st.execute("SELECT id FROM threads")) == ids(*picked)
    assert st.execute("SELECT * FROM projects").fetchall() == [("p1", "Proj", "{}", 0, 1, 1)]
    assert st.execute("SELECT * FROM project_roots").fetchall() == [("p1", 0, PROJ)]
    assert st.execute("SELECT id FROM thread_sections").fetchall() == [("s1",)]
    assert st.execute("SELECT parent_thread_id, child_thread_id FROM thread_spawn_edges").fetchall() == \
        [(t["parent"].id, t["child"].id)]
    assert st.execute("SELECT count(*) FROM backfill_state").fetchone() == (0,)
    assert st.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    src_names = [r[1] for r in sqlite3.connect(str(home.db_path)).execute(
        "SELECT type, name FROM sqlite_master ORDER BY name")]
    assert [r[1] for r in st.execute("SELECT type, name FROM sqlite_master ORDER BY name")] == src_names
    hist = sqlite3.connect(str(out / "thread_history_1.sqlite"))
    assert sorted(r[0] for r in hist.execute("SELECT thread_id FROM thread_turns")) == ids(*picked)
    goals = sqlite3.connect(str(out / "goals_1.sqlite"))
    assert sorted(r[0] for r in goals.execute("SELECT thread_id FROM thread_goals")) == ids(*picked)
    assert goals.execute("SELECT * FROM _sqlx_migrations").fetchall() == [(1, "init")]
    queue = sqlite3.connect(str(out / "queue_1.sqlite"))
    assert sorted(r[0] for r in queue.execute("SELECT thread_id FROM queued_items")) == ids(*picked)


def test_source_unchanged_byte_for_byte_with_live_wal(home, tmp_path):
    """A writer holds the DB open with committed pages only in the -wal (and its -shm): the export
    sees them (the row added there is exported) and changes no byte or mtime of any file."""
    conn = sqlite3.connect(str(home.db_path))
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("SELECT count(*) FROM threads").fetchone()  # holds the WAL open: no checkpoint on close
    late = home.add(cwd=PROJ, preview="only in the wal")
    try:
        assert os.path.getsize(str(home.db_path) + "-wal") > 0 and os.path.exists(str(home.db_path) + "-shm")
        before = snapshot(home.root)
        export(home.root, "--folder", PROJ)
        target = tmp_path / "w.tar.gz"
        export(home.root, "--folder", PROJ, "--to", str(target), "--apply")
        assert snapshot(home.root) == before
        assert late.id in [x["id"] for x in verify_archive(target)["threads"]]
    finally:
        conn.close()


def test_source_without_wal_gets_none(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(cwd=PROJ)
    before = snapshot(hb.root)
    export(hb.root, "--all", "--to", str(tmp_path / "a.zip"), "--apply")
    assert snapshot(hb.root) == before
    assert not os.path.exists(str(hb.db_path) + "-wal") and not os.path.exists(str(hb.db_path) + "-shm")


def test_thread_being_written_exported_to_last_complete_line(home, tmp_path):
    t = home.t["named"]
    whole = t.path.read_bytes()
    with open(t.path, "ab") as fh:
        fh.write(b'{"timestamp":"2025-03-01T10:00:00.000Z","type":"response_item","payl')
    target = tmp_path / "p.tar.gz"
    proc = export(home.root, "--thread", t.id, "--to", str(target), "--apply")
    assert "being written: exported up to its last complete line" in proc.stdout
    assert _members(target)[str(t.path.relative_to(home.root))] == whole
    notes = {x["id"]: x["notes"] for x in verify_archive(target)["threads"]}
    assert notes[t.id] and "being written" in notes[t.id][0]


def test_missing_file_is_skipped_with_reason(home, tmp_path):
    home.t["named"].path.unlink()
    p = plan(home.root, "--folder", PROJ, expect=(1,))
    assert [s["thread_id"] for s in p["skipped_sample"]] == [home.t["named"].id]
    assert p["skipped_sample"][0]["reason"] == "its rollout file is missing"


def test_segments_of_a_reverted_thread_come_along(home, tmp_path):
    t = home.t["named"]
    seg = t.path.with_name(t.path.name.replace(".jsonl", "_0195aaaa-0000-7000-8000-000000000001.jsonl"))
    seg.write_bytes(t.path.read_bytes())
    target = tmp_path / "s.tar.gz"
    export(home.root, "--thread", t.id, "--to", str(target), "--apply")
    assert str(seg.relative_to(home.root)) in _members(target)


def test_manifest_read_strictly():
    good = {"format": "codex-session-export", "format_version": 1, "threads": [], "members": []}
    assert read_manifest(json.dumps(good).encode())["format_version"] == 1
    for bad in ({**good, "format_version": 2}, {**good, "format": "x"}, {**good, "members": [{"name": "a"}]},
                {**good, "threads": [{"files": []}]}):
        with pytest.raises(UserError):
            read_manifest(json.dumps(bad).encode())
    with pytest.raises(UserError):
        read_manifest(b"not json")


def test_tampered_member_fails_verification(home, tmp_path):
    target = tmp_path / "t.zip"
    export(home.root, "--all", "--to", str(target), "--apply")
    members = _members(target)
    name = next(n for n in members if n.startswith("sessions/"))
    members[name] += b"x"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(UserError, match="members differ"):
        verify_archive(bad)


def test_round_trip_into_another_home(home, tmp_path):
    """Export a project, import it into a home with its own sessions: rows, files, names, history
    as in the source; the other home's own sessions untouched."""
    t = home.t
    target = tmp_path / "proj.tar.gz"
    export(home.root, "--folder", PROJ, "--archived", "include", "--to", str(target), "--apply")
    dest = HomeBuilder(tmp_path / "dest" / ".codex")
    dest.n = 500  # ids of its own
    mine = dest.add(cwd="/work/mine", preview="my own")
    make_history(dest, dest.threads)
    proc = run_script("session_import.py", "--codex-dir", str(dest.root), "--from", str(target), "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    picked = [t["named"], t["archived"], t["elsewhere"], t["fork"], t["parent"], t["child"]]
    conn = sqlite3.connect(str(dest.db_path))
    rows = {r[0]: r[1:] for r in conn.execute("SELECT id, name, archived, cwd, rollout_path FROM threads")}
    assert sorted(rows) == sorted(ids(*picked) + [mine.id])
    assert rows[t["named"].id][0] == "My named one" and rows[t["archived"].id][1] == 1
    for th in picked:
        got = Path(rows[th.id][3])
        assert got == dest.root / th.path.relative_to(home.root)
        assert got.read_bytes() == th.path.read_bytes()
        assert got.stat().st_mtime_ns == th.path.stat().st_mtime_ns
    hist = sqlite3.connect(str(dest.root / "thread_history_1.sqlite"))
    assert sorted(r[0] for r in hist.execute("SELECT thread_id FROM thread_turns")) == sorted(ids(*picked) + [mine.id])


def test_hostile_titles_names_and_folders_are_escaped(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add(cwd="/work/proj/\x1b[2Jx\nrm -rf ~", preview="\x1b[31mred\x07 title")
    hb.sql("UPDATE threads SET name = ? WHERE id = ?", ("bell\x07\x9bname", t.id))
    out = export(hb.root, "--all", "--to", str(tmp_path / "h $(x).zip"), "--apply").stdout
    assert not any(c in out for c in "\x1b\x07\x9b") and "\\e[2Jx\\nrm -rf ~" in out
    assert "bell\\x07\\x9bname" in out
    assert [x["name"] for x in verify_archive(tmp_path / "h $(x).zip")["threads"]] == ["bell\x07\x9bname"]
