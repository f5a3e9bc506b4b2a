"""Compressed rollouts (`rollout-*.jsonl.zst`): read with the system's `zstd` program (the scripts
use the standard library alone), the skip without it, and the journaled decompression (apply, kill
halfway, undo, a thread Codex wrote to since)."""
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from harness import run_on_home as run, snapshot
from homebuilder import HomeBuilder
from sessionkit.runlog import decompress
from sessionkit.codexfiles import zstd
from sessionkit.codexfiles.home import open_home
from sessionkit.fixes.migrate import plan_migration
from sessionkit.runlog.ops import CHANGED, NEW, OLD, TORN, RecordError
from sessionkit.runlog.registry import op_from_record
from sessionkit.diagnose.snapshot import gather

ZSTD = shutil.which("zstd")
needs_zstd = pytest.mark.skipif(ZSTD is None, reason="the zstd program is not installed")


@pytest.fixture
def readers():
    """The zstd program as the reader; a test that takes it away gets it back afterwards."""
    yield zstd
    zstd._TEST_PROGRAM[:] = []


def compress(path: Path) -> Path:
    """What Codex's `rollout/compress` leaves: `<name>.jsonl.zst` with the same mtime, no `.jsonl`."""
    st = path.stat()
    subprocess.run([ZSTD, "-q", "-19", "--rm", str(path)], check=True)
    out = Path(str(path) + ".zst")
    os.utime(out, ns=(st.st_mtime_ns, st.st_mtime_ns))
    return out


@pytest.fixture
def home(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    ts = [hb.add(provider="oldco", preview=f"old {i}") for i in range(2)]
    return hb, ts


@needs_zstd
def test_the_program_reads_line1_and_the_whole_file(home, readers):
    hb, ts = home
    plain = ts[0].path.read_bytes()
    zst = compress(ts[0].path)
    assert zstd.reader() == ZSTD
    line, err, only = zstd.read_head(str(zst), 8 * 1024 * 1024)
    assert (line, err, only) == (plain.split(b"\n", 1)[0], None, False)
    with zstd.open_zst(str(zst)) as fh:
        assert fh.read() == plain
    meta = gather(open_home(str(hb.root))).metas[str(zst)]
    assert (meta.error, meta.id, meta.model_provider) == (None, ts[0].id, "oldco")


def _reads_it(hb, t, zst, plain):
    line, err, only = zstd.read_head(str(zst), 8 * 1024 * 1024)
    assert (line, err, only) == (plain.split(b"\n", 1)[0], None, False)
    with zstd.open_zst(str(zst)) as fh:
        assert fh.read() == plain
    meta = gather(open_home(str(hb.root))).metas[str(zst)]
    assert (meta.error, meta.id, meta.model_provider) == (None, t.id, "oldco")


@needs_zstd
def test_a_damaged_file_raises_with_the_program(tmp_path, readers):
    bad = tmp_path / "rollout-2025-01-01T00-00-00-0195aaaa-0000-7000-8000-000000000001.jsonl.zst"
    bad.write_bytes(b"\x28\xb5\x2f\xfd")
    with pytest.raises(OSError):
        with zstd.open_zst(str(bad)) as fh:
            fh.read()
    line, err, _ = zstd.read_head(str(bad), 1024)
    assert line is None and err


@needs_zstd
def test_without_a_reader_the_thread_is_skipped_with_what_to_install(home, readers):
    hb, ts = home
    compress(ts[0].path)
    zstd._TEST_PROGRAM[:] = [None]
    assert zstd.reader() is None and zstd.missing_reason() == zstd.ZSTD_MISSING
    inputs = gather(open_home(str(hb.root)))
    plan = plan_migration(inputs)
    assert [c.thread_id for c in plan.changes] == [ts[1].id]
    assert plan.skipped == [(ts[0].id, f"line 1 is unusable ({zstd.ZSTD_MISSING})")]
    assert "install the zstd program" in zstd.ZSTD_MISSING
    assert decompress.decompressions([]) == []


@needs_zstd
def test_audit_counts_a_compressed_rollout_as_its_rows_file(home):
    """Old code: 'the editors' list shows 0' and 'no session file left' for a compressed home."""
    hb, ts = home
    for t in ts:
        compress(t.path)
    hb.write_config("oldco", ["newco", "oldco"])
    proc = run("session_audit.py", hb.root, "--json")
    audit = json.loads(proc.stdout)
    integ = audit["integrity"]
    assert integ["compressed_rollouts_count"] == 2
    assert (integ["missing_rollout_path_count"], integ["stale_rows_count"], integ["db_not_on_disk_count"],
            integ["missing_active_rows_count"], integ["line1_unreadable_count"]) == (0, 0, 0, 0, 0)
    assert audit["visibility"]["visible"] == 2 and audit["visibility"]["visible_db_only"] == 2
    assert audit["orphans"]["count"] == 0


@needs_zstd
def test_migration_decompresses_first_and_both_rollbacks_restore_every_byte(home):
    hb, ts = home
    zst = compress(ts[0].path)
    before = snapshot(hb.root)
    rows = hb.sql("SELECT * FROM threads ORDER BY id")
    plan = json.loads(run("provider_migrate.py", hb.root, "--json").stdout)
    assert plan["candidates"] == 2 and plan["skipped"] == 0 and snapshot(hb.root) == before
    assert plan["decompress_first"] == 1  # the dry-run says so
    proc = run("provider_migrate.py", hb.root, "--apply", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)["result"]
    assert res["line1_rewritten"] == 2 and res["decompression"]["decompressed"] == 1
    assert not zst.exists() and ts[0].path.is_file()
    assert b'"model_provider":"newco"' in ts[0].path.read_bytes().split(b"\n", 1)[0]
    assert hb.sql("SELECT rollout_path FROM threads WHERE id=?", (ts[0].id,)) == [(str(ts[0].path),)]
    for run_dir in (res["run_dir"], res["decompression"]["run_dir"]):
        rb = run("rollback.py", hb.root, "--manifest", run_dir, "--apply", "--json")
        assert rb.returncode == 0, rb.stdout + rb.stderr
    after = snapshot(hb.root)
    mine = (".tmp/", "state_5.sqlite")  # run artifacts; the DB is compared by its rows
    assert {k: v for k, v in after.items() if not k.startswith(mine)} == \
        {k: v for k, v in before.items() if not k.startswith(mine)}
    assert hb.sql("SELECT * FROM threads ORDER BY id") == rows


def _op(tmp_path, hb, t):
    zst = compress(t.path)
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    op = decompress.Decompress(t.id, str(zst), str(t.path))
    assert op.prepare(run_dir) is None
    return op, zst


@needs_zstd
def test_decompress_op_apply_state_undo_and_record(tmp_path, home):
    hb, ts = home
    plain, mtime = ts[0].path.read_bytes(), ts[0].path.stat().st_mtime_ns
    op, zst = _op(tmp_path, hb, ts[0])
    zbytes = zst.read_bytes()
    assert op.state() == OLD and (op.size, op.mtime_ns) == (len(plain), mtime)
    again = op_from_record(json.loads(json.dumps(op.to_record())))
    assert again == op
    op.apply()
    assert ts[0].path.read_bytes() == plain and not zst.exists()
    assert ts[0].path.stat().st_mtime_ns == mtime  # ordering by mtime unchanged
    assert op.state() == NEW
    op.undo()
    assert zst.read_bytes() == zbytes and zst.stat().st_mtime_ns == mtime and not ts[0].path.exists()
    assert op.state() == OLD
    bad = dict(op.to_record(), dst=str(ts[1].path))
    with pytest.raises(RecordError):
        op_from_record(bad)


@needs_zstd
def test_decompress_killed_between_write_and_unlink_is_torn_and_undone(tmp_path, home, monkeypatch):
    hb, ts = home
    op, zst = _op(tmp_path, hb, ts[0])
    zbytes = zst.read_bytes()

    def die_at(where):
        def hook(label):
            if label == where:
                raise KeyboardInterrupt(label)
        return hook
    monkeypatch.setattr(zstd, "point", die_at("chunk"))  # mid-write: only the temporary file
    with pytest.raises(KeyboardInterrupt):
        op.apply()
    assert op.leftover() and op.state() == OLD and not ts[0].path.exists()
    op.clean()
    assert not op.leftover()
    monkeypatch.setattr(zstd, "point", die_at("none"))
    monkeypatch.setattr(decompress, "point", die_at("file"))  # the .jsonl written, the .zst not yet removed
    with pytest.raises(KeyboardInterrupt):
        op.apply()
    assert zst.exists() and ts[0].path.exists()
    assert op.state() == TORN
    op.undo()
    assert zst.read_bytes() == zbytes and not ts[0].path.exists()


@needs_zstd
def test_a_thread_codex_wrote_to_since_keeps_its_jsonl(tmp_path, home):
    hb, ts = home
    op, zst = _op(tmp_path, hb, ts[0])
    op.apply()
    with open(ts[0].path, "ab") as fh:
        fh.write(b'{"type":"event_msg","payload":{"type":"turn_started"}}\n')
    assert op.state() == CHANGED  # the rollback leaves it (the undo plan calls it a conflict)


@needs_zstd
def test_prepare_refuses_links_and_an_existing_jsonl(tmp_path, home):
    hb, ts = home
    zst = compress(ts[0].path)
    os.link(zst, tmp_path / "other-link")
    op = decompress.Decompress(ts[0].id, str(zst), str(ts[0].path))
    assert "hard links" in op.prepare(tmp_path)
    os.unlink(tmp_path / "other-link")
    ts[0].path.write_bytes(b"x")
    assert "already exists" in op.prepare(tmp_path)


@needs_zstd
@pytest.mark.parametrize("action", ["kill", "eio"])
def test_migration_of_a_compressed_thread_fault_at_every_point(tmp_path, home, action):
    """A kill or an I/O error at any point of the two runs (the decompression, then the migration):
    rolling back each recorded run (the migration's, then the decompression's, as the result prints
    them) puts every byte, mtime and row back."""
    from test_faults import Pristine, frun, points
    from test_migrate_rollback import home_state
    hb, ts = home
    compress(ts[0].path)
    before = home_state(hb.root)
    pristine = Pristine(hb.root)
    labels, _ = points(tmp_path, "provider_migrate.py", hb.root, "--apply")
    assert labels.count("file") >= 3, labels  # the decompression's two, the migration's
    for n in range(1, len(labels) + 1):
        pristine.restore()
        frun("provider_migrate.py", hb.root, "--apply", fault=f"{action}:{n}")
        runs = sorted((hb.root / ".tmp" / "session-migration").iterdir(),
                      key=lambda d: d.name.startswith("decompress"))  # the migration first, as printed
        for run_dir in runs:
            rb = frun("rollback.py", hb.root, "--manifest", str(run_dir), "--apply", "--json")
            assert rb.returncode in (0, 1), (n, rb.stdout, rb.stderr)
        assert home_state(hb.root) == before, (action, n, labels[n - 1])


@needs_zstd
@pytest.mark.parametrize("kind", ["folder", "tar.gz"])
def test_import_of_compressed_threads_writes_them_decompressed_and_rollback_removes_them(homes, tmp_path, kind):
    """The source is never written: each compressed rollout is decompressed into the private scratch
    folder, remapped there, and created in DEST as `.jsonl` (as Codex's resume would write it)."""
    from test_import import _dest_state, _tar, plan_json
    src, made, dst, own = homes
    plain = {t.id: t.path.read_bytes() for t in made}
    for t in made:
        compress(t.path)
    src_before, dest_before = snapshot(src.root), _dest_state(dst)
    source = str(src.root) if kind == "folder" else \
        str(_tar(tmp_path / "old.tar.gz", src.root, "backup/home/olduser/.codex"))
    remap = f"/home/olduser={dst.root.parent}"
    plan = plan_json(dst.root, "--from", source, "--remap-prefix", remap, "--sample", "10")
    assert (plan["to_import"], plan["skipped"], plan["files_to_copy"]) == (3, 0, 3), plan
    out = plan_json(dst.root, "--from", source, "--remap-prefix", remap, "--apply")
    r = out["result"]
    assert (r["imported_threads"], r["files_created"], r["rows_inserted"], r["history_rows_inserted"]) == (3, 3, 3, 9)
    new_cwd = str(dst.root.parent / "proj")
    for t in made:
        copy = dst.root / t.path.relative_to(src.root)  # the .jsonl name
        assert copy.read_bytes() == plain[t.id].replace(b'"cwd":"/home/olduser/proj"', f'"cwd":"{new_cwd}"'.encode())
        assert not Path(str(copy) + ".zst").exists()
        assert dst.sql("SELECT rollout_path FROM threads WHERE id=?", (t.id,)) == [(str(copy),)]
    assert snapshot(src.root) == src_before
    rb = run("rollback.py", dst.root, "--latest", "--apply", "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _dest_state(dst) == dest_before


@pytest.fixture
def homes(tmp_path):
    from test_import import homes as make
    return make.__wrapped__(tmp_path)


def _moved_compressed(tmp_path, specs):
    old = "/home/olduser/.codex"
    hb = HomeBuilder(tmp_path / ".codex")
    ts = [hb.add(cwd=cwd, preview=f"t {i}", archived=archived) for i, (cwd, archived) in enumerate(specs)]
    for t in ts:
        compress(t.path)
        hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", (old + "/" + str(t.path.relative_to(hb.root)), t.id))
    args = ("--remap-prefix", f"{old}={hb.root}", "--remap-prefix", "/home/olduser=/home/newuser", "--json")
    return hb, ts, args


@needs_zstd
def test_moved_home_remap_and_unarchive_of_compressed_threads_then_both_rollbacks(tmp_path):
    """A moved home: the active compressed thread's cwd is remapped (decompressed first); an archived
    compressed thread with nothing to rewrite is unarchived as it is (its `.zst` moved); rows keep
    `.jsonl` paths; the two rollbacks put every byte, mtime and row back."""
    from test_migrate_rollback import home_state
    hb, (active, still), args = _moved_compressed(tmp_path, [("/home/olduser/proj", False), ("/srv/x", True)])
    before = home_state(hb.root)
    proc = run("session_repair.py", hb.root, *args, "--unarchive", "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(proc.stdout)["result"]
    assert res["decompression"]["decompressed"] == 1 and res["line1_rewritten"] == 1
    rows = dict(hb.sql("SELECT id, rollout_path FROM threads"))
    assert all(p.endswith(".jsonl") and p.startswith(str(hb.root / "sessions")) for p in rows.values())
    assert Path(rows[active.id]).is_file() and not Path(rows[active.id] + ".zst").exists()
    assert json.loads(Path(rows[active.id]).read_bytes().split(b"\n", 1)[0])["payload"]["cwd"] == "/home/newuser/proj"
    assert Path(rows[still.id] + ".zst").is_file() and not Path(rows[still.id]).exists()  # moved compressed
    audit = json.loads(run("session_audit.py", hb.root, "--json").stdout)["integrity"]
    assert (audit["stale_rows_count"], audit["archive_mismatches_count"], audit["line1_unreadable_count"]) == (0, 0, 0)
    for run_dir in (res["run_dir"], res["decompression"]["run_dir"]):
        rb = run("rollback.py", hb.root, "--manifest", run_dir, "--apply", "--json")
        assert rb.returncode == 0, rb.stdout + rb.stderr
    assert home_state(hb.root) == before


@needs_zstd
def test_an_archived_compressed_thread_remapped_and_unarchived(tmp_path):
    """Rewritten where it lies (decompressed first); its unarchive waits for the next run (a remap and a
    move of one file are one change after the other, each undoable), which moves its `.jsonl`."""
    from sessionkit.fixes.repair import UNARCHIVE_NEXT_RUN
    hb, (t,), args = _moved_compressed(tmp_path, [("/home/olduser/proj", True)])
    proc = run("session_repair.py", hb.root, *args, "--unarchive", "--apply")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the unarchive waits for the next run
    out = json.loads(proc.stdout)
    res = out["result"]
    assert (res["decompression"]["decompressed"], res["line1_rewritten"], res["moved"]) == (1, 1, 0)
    assert [s["reason"] for s in out["skipped_sample"]] == [UNARCHIVE_NEXT_RUN]
    proc = run("session_repair.py", hb.root, *args, "--unarchive", "--apply")  # one change after the other
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["result"]["moved"] == 1
    (path,) = [p for (p,) in hb.sql("SELECT rollout_path FROM threads")]
    assert path == str(hb.root / "sessions" / "2025" / "03" / "01" / t.path.name)
    assert json.loads(Path(path).read_bytes().split(b"\n", 1)[0])["payload"]["cwd"] == "/home/newuser/proj"
    assert not list((hb.root / "archived_sessions").iterdir())


@needs_zstd
def test_the_text_result_prints_both_undo_commands_in_order(home):
    hb, ts = home
    compress(ts[0].path)
    proc = run("provider_migrate.py", hb.root, "--apply")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    at = lines.index("undo with:")
    assert "--manifest" in lines[at + 1] and "provider_migration_" in lines[at + 1]
    assert lines[at + 2] == "  then (the 1 compressed session(s) decompressed first):"
    assert "--manifest" in lines[at + 3] and "decompress_" in lines[at + 3] and lines[at + 3].endswith("--apply")


@needs_zstd
@pytest.mark.parametrize("reader", ["program", "none"])
def test_encrypted_reasoning_is_counted_in_compressed_rollouts(home, readers, reader):
    """The migration's warning (continuing such a thread may fail with invalid_encrypted_content)
    reads a compressed rollout decompressed, by the row's `.jsonl` path as Codex keeps it; early
    and 2 MB in; without a reader it is counted unreadable, never as carrying none."""
    from sessionkit.codexfiles.reasoning import count_encrypted
    from test_surfaces import _add_reasoning
    hb, ts = home
    more = [hb.add(provider="oldco", preview=f"more {i}") for i in range(2)]
    _add_reasoning(ts[0].path)
    _add_reasoning(more[0].path, at_end_of_mb=2)
    for t in ts + more:
        compress(t.path)
    if reader == "none":
        zstd._TEST_PROGRAM[:] = [None]
    pairs = [(t.id, t.path) for t in ts + more]
    assert not any(p.exists() for _, p in pairs)
    hits, unread = count_encrypted(pairs)
    if reader == "none":
        assert (hits, unread) == ([], [t.id for t in ts + more])
    else:
        assert (hits, unread) == ([ts[0].id, more[0].id], [])
        assert count_encrypted([(ts[0].id, Path(str(ts[0].path) + ".zst"))]) == ([ts[0].id], [])


def _compressed_orphan(hb, t):
    """What Codex leaves when a compressed thread's row is gone: `.jsonl.zst`, cold, no row."""
    plain = t.path.read_bytes()
    zst = compress(t.path)
    os.utime(zst, (1_700_000_000, 1_700_000_000))
    hb.sql("DELETE FROM threads WHERE id=?", (t.id,))
    return zst, plain


def _every_table(db):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall()
                for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")}
    finally:
        conn.close()


@needs_zstd
def test_the_repair_imports_a_compressed_orphan_with_its_row_naming_the_zst(home):
    """Old code: 'ACTIVE_ORPHAN: compressed (.zst), left alone'. Codex 0.171 re-indexes such a file
    with rollout_path = the `.jsonl.zst` (test_e2e_import_tables.py::test_a_compressed_orphan_imported_
    by_the_repair_as_codex_indexes_it): the repair inserts that row, read decompressed, and leaves
    the file as it is (a row insert changes no file)."""
    hb, ts = home
    zst, plain = _compressed_orphan(hb, ts[0])
    zbytes, before = zst.read_bytes(), _every_table(hb.db_path)
    audit = json.loads(run("session_audit.py", hb.root, "--json").stdout)["orphans"]
    assert (audit["importable"], audit["active_orphans"]) == (1, 0)
    out = run("session_repair.py", hb.root, "--import-orphans", "--apply", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    row = dict(zip(["rollout_path", "preview", "model_provider", "updated_at", "archived"], hb.sql(
        "SELECT rollout_path, preview, model_provider, updated_at, archived FROM threads WHERE id=?", (ts[0].id,))[0]))
    assert row == {"rollout_path": str(zst), "preview": "old 0 (turn 0)", "model_provider": "oldco",
                   "updated_at": 1_700_000_000, "archived": 0}
    assert zst.read_bytes() == zbytes and not ts[0].path.exists()
    after = json.loads(run("session_audit.py", hb.root, "--json").stdout)
    assert after["orphans"]["count"] == 0 and after["integrity"]["missing_rollout_path_count"] == 0
    rb = run("rollback.py", hb.root, "--latest", "--apply", "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _every_table(hb.db_path) == before and zst.read_bytes() == zbytes


@needs_zstd
def test_the_import_brings_a_compressed_orphan_of_the_source_decompressed(homes):
    from test_import import _dest_state, plan_json
    src, made, dst, own = homes
    zst, plain = _compressed_orphan(src, made[0])
    dest_before = _dest_state(dst)
    out = plan_json(dst.root, "--from", str(src.root), "--thread-id", made[0].id, "--apply")
    sample = out["imports_sample"][0]
    assert (out["result"]["imported_threads"], sample["row_from"]) == (1, "rollout")
    copy = dst.root / made[0].path.relative_to(src.root)
    assert copy.read_bytes() == plain and not Path(str(copy) + ".zst").exists()
    assert dst.sql("SELECT rollout_path FROM threads WHERE id=?", (made[0].id,)) == [(str(copy),)]
    rb = run("rollback.py", dst.root, "--latest", "--apply", "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _dest_state(dst) == dest_before


@needs_zstd
def test_a_row_naming_the_zst_of_a_file_since_decompressed_is_not_missing(home):
    """Review: the repair's row names `X.jsonl.zst`; the migration then decompresses to `X.jsonl`
    and the row keeps naming the `.zst`. Real 0.171 lists, reads and resumes it (and renames the row
    on resume), so the audit calls nothing missing and recommends nothing for it."""
    hb, ts = home
    zst, _plain = _compressed_orphan(hb, ts[0])
    assert run("session_repair.py", hb.root, "--import-orphans", "--apply").returncode == 0
    out = run("provider_migrate.py", hb.root, "--apply", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert ts[0].path.exists() and not zst.exists()
    assert hb.sql("SELECT rollout_path FROM threads WHERE id=?", (ts[0].id,)) == [(str(zst),)]
    after = json.loads(run("session_audit.py", hb.root, "--json").stdout)
    integ = after["integrity"]
    assert (integ["missing_rollout_path_count"], integ.get("stale_rows_count", 0)) == (0, 0), integ
    assert after["visibility"]["hidden"]["missing_rollout_file"] == 0
