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
