"""A real Codex home copied with `cp -al` (every file, its WAL and -shm too, shares an inode with the
copy): every writer refuses before any change and the copy keeps its bytes; with the links broken
the recovery goes through and the real Codex lists every session."""
import hashlib
import os
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.e2e


def digests(folder):
    out = {}
    for d, _, fs in os.walk(folder):
        for f in fs:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as fh:
                    out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_a_hard_linked_copy_of_a_real_home_is_never_written_through(world, tmp_path):
    old = world.make_threads(2, provider="mockA", prompt="before the switch")
    world.make_threads(1, provider="mockB", prompt="after the switch")
    world.stop_home_processes()
    assert not set(old) & set(world.listed_ids())  # hidden by the provider switch
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-al", str(world.home), str(copy)], check=True)
    outside = digests(copy)
    for script, args in (("session_recover.py", ["--apply"]), ("provider_migrate.py", ["--apply"])):
        proc = world.script(script, *args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.count("\n") == 1 and "hard links (a copy made with cp -al or rsnapshot?)" in proc.stderr
    assert digests(copy) == outside
    shutil.rmtree(str(copy))  # the links broken: the home is its own again
    assert world.script("session_recover.py", "--apply").returncode in (0, 1)
    assert set(old) <= set(world.listed_ids())
