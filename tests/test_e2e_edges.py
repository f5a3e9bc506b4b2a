"""Real Codex 0.171 at the edges of the recovery and the export: a home whose rollouts Codex
compressed (`rollout/compress`) is recovered (decompressed first, as Codex's resume does) until the
editors list every session and the advice is done, one printed command undoes it, and the export
takes the compressed sessions as they are."""
import json
import subprocess
from pathlib import Path

import pytest

from test_e2e_compressed import _files, _read_all, _tables, compress

pytestmark = pytest.mark.e2e


def test_recover_of_a_compressed_home_converges_and_one_command_undoes_it(world):
    ids = world.make_threads(2, "mockA", prompt="cold")
    world.set_provider("mockB")
    compress(world)
    assert world.listed_ids() == []
    turns = _read_all(world, ids)
    files, tables = _files(world), _tables(world)
    out = world.script("session_recover.py", "--apply")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Done: 2 sessions recovered" in out.stdout and "2 compressed session(s)" in out.stdout
    assert world.listed_ids() == sorted(ids)  # the editors list them under mockB now
    assert _read_all(world, ids) == turns
    again = json.loads(world.script("session_recover.py", "--json").stdout)
    assert again["sessions"] == 0 and again["apply_command"] is None
    assert world.audit()["next_steps"] == []
    undo = out.stdout.split("undo all of it with:\n", 1)[1].split("\n", 1)[0].strip()
    rb = subprocess.run(undo, shell=True, capture_output=True, text=True)
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _files(world) == files and _tables(world) == tables  # the .zst files back byte for byte


def test_export_of_a_compressed_home_takes_every_session_and_imports(world, tmp_path):
    import tarfile
    ids = world.make_threads(2, prompt="cold")
    paths = compress(world)
    target = tmp_path / "e.tgz"
    exp = world.script("session_export.py", "--all", "--to", str(target), "--apply")
    assert exp.returncode == 0 and "missing" not in exp.stdout, exp.stdout + exp.stderr
    with tarfile.open(str(target)) as tf:
        names = set(tf.getnames())
    assert {str(Path(p + ".zst").relative_to(world.home)) for p in paths} <= names
    new_home = world.base / "newmachine" / ".codex"
    new_home.mkdir(parents=True)
    world.home = new_home
    world.homes.append(new_home)
    world.set_provider("mockA")
    own = world.make_threads(1, prompt="new machine task")  # its Codex made its DBs (history too)
    imp = world.script("session_import.py", "--from", str(target), "--apply")
    assert imp.returncode == 0, imp.stdout + imp.stderr
    assert world.listed_ids() == sorted(ids + own)  # the new machine's Codex lists and reads them
    assert world.read_turns(*ids) == {t: 1 for t in ids}


def test_a_symlinked_sessions_folder_is_counted_as_codex_lists_it(world, tmp_path):
    import os
    import shutil
    ids = world.make_threads(2, "mockA", prompt="hello")
    world.set_provider("mockA")
    disk = tmp_path / "disk"
    disk.mkdir()
    shutil.move(str(world.home / "sessions"), str(disk / "sessions"))
    os.symlink(str(disk / "sessions"), str(world.home / "sessions"))
    assert world.listed_ids() == sorted(ids)  # Codex follows it
    assert world.read_turns(*ids) == {t: 1 for t in ids}
    audit = world.audit()
    assert audit["visibility"]["visible"] == 2 and audit["visibility"]["hidden_total"] == 0, audit["visibility"]
    assert audit["surfaces"]["editors"]["visible"] == 2
    text = world.script("session_audit.py").stdout
    assert "shows 2" in text and "no session file" not in text, text
    rec = json.loads(world.script("session_recover.py", "--json").stdout)
    assert rec["sessions"] == 0 and rec["skipped"] == 0, rec
