"""session_export.py at the edges: compressed sessions exported as they are (and imported), bad
input and leftovers, archive dates out of range, a manifest that is valid UTF-8."""
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness import run_script
from homebuilder import HomeBuilder

needs_zstd = pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd program is not installed")


def export(home, *args, expect=(0,)):
    proc = run_script("session_export.py", "--codex-dir", str(home), *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in expect, proc.stdout + proc.stderr
    return proc


@needs_zstd
def test_a_compressed_session_is_exported_as_it_is_and_imported(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    cold, warm = hb.add(preview="cold one"), hb.add(preview="warm one")
    subprocess.run(["zstd", "-q", "--rm", str(cold.path)], check=True)
    zst = Path(str(cold.path) + ".zst")
    plan = json.loads(export(hb.root, "--all", "--json").stdout)
    assert (plan["threads"], plan["files"], plan["skipped"]) == (2, 2, 0), plan
    target = tmp_path / "out.tar.gz"
    out = export(hb.root, "--all", "--to", str(target), "--apply")
    assert "missing" not in out.stdout, out.stdout
    with tarfile.open(str(target)) as tf:
        names = tf.getnames()
        data = tf.extractfile(str(zst.relative_to(hb.root))).read()
    assert str(zst.relative_to(hb.root)) in names and data == zst.read_bytes()
    assert str(warm.path.relative_to(hb.root)) in names
    dest = tmp_path / "dest" / ".codex"
    HomeBuilder(dest)
    proc = run_script("session_import.py", "--codex-dir", str(dest), "--from", str(target), "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = dict(sqlite3.connect(str(dest / "state_5.sqlite")).execute("SELECT id, rollout_path FROM threads"))
    assert sorted(rows) == sorted([cold.id, warm.id])
    got = Path(rows[cold.id])
    plain = subprocess.run(["zstd", "-dc", str(zst)], capture_output=True, check=True).stdout
    assert got.read_bytes() == plain  # DEST gets it decompressed, byte for byte


def test_a_bad_thread_with_a_live_shm_leaves_no_private_copy(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add()
    Path(str(hb.db_path) + "-shm").write_bytes(b"")  # a Codex has the DB open: it is read through a copy
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = run_script("session_export.py", "--codex-dir", str(hb.root), "--thread", "nosuch",
                      env={"TMPDIR": str(scratch)})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert list(scratch.iterdir()) == []


def test_a_zip_of_a_file_dated_2200_clamps_the_date_and_says_so(tmp_path):
    from sessionkit.fixes.export import verify_archive
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add()
    os.utime(t.path, (7258118400, 7258118400))  # 2200-01-01
    target = tmp_path / "out.zip"
    out = export(hb.root, "--all", "--to", str(target), "--apply")
    assert "1 file date(s) lie outside what a .zip can hold" in out.stdout, out.stdout
    assert verify_archive(target)["threads"][0]["id"] == t.id
    import zipfile
    with zipfile.ZipFile(str(target)) as zf:
        assert zf.getinfo(str(t.path.relative_to(hb.root))).date_time == (2107, 12, 31, 23, 59, 58)


@pytest.mark.parametrize("flag,value", [("--until", "0001-01-01T00:00"),
                                        ("--until", "0001-01-01")])
def test_a_date_out_of_range_is_one_line_exit_2(tmp_path, flag, value):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add()
    proc = run_script("session_export.py", "--codex-dir", str(hb.root), flag, value)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "internal error" not in proc.stderr, proc.stderr


def test_the_manifest_is_valid_utf8_with_a_name_that_is_not_and_the_import_verifies_it(tmp_path):
    from sessionkit.fixes.export import MANIFEST, verify_archive
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add()
    hb.sql("UPDATE threads SET title=CAST(x'6f6c64ff6e616d65' AS TEXT) WHERE id=?", (t.id,))
    target = tmp_path / "out.tar.gz"
    export(hb.root, "--all", "--to", str(target), "--apply")
    with tarfile.open(str(target)) as tf:
        body = tf.extractfile(MANIFEST).read()
    body.decode("utf-8")  # strict: valid UTF-8
    assert json.loads(body)["threads"][0]["title"] == "old\udcffname"
    assert verify_archive(target)["threads"][0]["id"] == t.id
    # the same archive with one member changed: the import refuses it (one line, exit 2), DEST untouched
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(str(target)) as src, tarfile.open(str(bad), "w:gz") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read()
            if info.name.endswith(".jsonl"):
                data = data.replace(b"fix the tests", b"fix the TESTS")
            dst.addfile(info, __import__("io").BytesIO(data))
    dest = HomeBuilder(tmp_path / "dest" / ".codex")
    proc = run_script("session_import.py", "--codex-dir", str(dest.root), "--from", str(bad), "--apply")
    assert proc.returncode == 2 and "members differ from the manifest" in proc.stderr, proc.stdout + proc.stderr
    assert dest.sql("SELECT count(*) FROM threads") == [(0,)]


def test_a_home_path_that_is_not_utf8_works_in_every_script(tmp_path):
    root = Path(os.fsdecode(bytes(tmp_path) + b"/h\xff/.codex"))
    hb = HomeBuilder(root)
    hb.add(write_row=False)
    for script, args in (("session_audit.py", ()), ("session_recover.py", ()), ("session_repair.py", ()),
                         ("provider_migrate.py", ()), ("session_export.py", ("--all",)), ("rollback.py", ("--list",))):
        proc = run_script(script, "--codex-dir", str(root), *args)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr and "internal error" not in proc.stderr, \
            (script, proc.stderr)
    src = HomeBuilder(tmp_path / "src" / ".codex")
    src.n = 50
    src.add()
    before = sorted(p for p in Path(os.fsdecode(bytes(tmp_path))).rglob("*") if "h\udcff" in str(p))
    proc = run_script("session_import.py", "--codex-dir", str(root), "--from", str(src.root), "--apply")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "is not valid UTF-8" in proc.stderr, proc.stderr
    assert sorted(p for p in Path(os.fsdecode(bytes(tmp_path))).rglob("*") if "h\udcff" in str(p)) == before
