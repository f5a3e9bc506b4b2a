"""--remap-prefix rewrites cwd (and 0.171's runtime_workspace_roots) in line 1 as well as in the
row, and re-points the daemon package's `current` symlink; one rollback puts all of it back."""
import json
import os

from harness import snapshot
from homebuilder import HomeBuilder
from test_faults import frun
from test_migrate_rollback import home_state

OLD_HOME = "/home/olduser/.codex"


def _moved_home(tmp_path, n=3):
    hb = HomeBuilder(tmp_path / ".codex")
    threads = []
    for i in range(n):
        t = hb.add(cwd="/home/olduser/proj", preview=f"moved {i}")
        first, rest = t.path.read_bytes().split(b"\n", 1)
        meta = json.loads(first)
        meta["payload"]["runtime_workspace_roots"] = ["/home/olduser/proj", "/srv/shared"]
        t.path.write_bytes(json.dumps(meta, separators=(",", ":")).encode() + b"\n" + rest)
        os.utime(t.path, (t.created.timestamp() + 60,) * 2)
        hb.sql("UPDATE threads SET rollout_path=? WHERE id=?",
               (OLD_HOME + "/" + str(t.path.relative_to(hb.root)), t.id))
        threads.append(t)
    release = hb.root / "packages" / "app-server-daemon" / "releases" / "0.171.0-x86_64"
    (release / "bin").mkdir(parents=True)
    (release / "bin" / "codex").write_text("#!/bin/sh\n")
    os.symlink(OLD_HOME + "/packages/app-server-daemon/releases/0.171.0-x86_64",
               str(hb.root / "packages" / "app-server-daemon" / "current"))
    return hb, threads


def test_remap_rewrites_line1_and_the_daemon_symlink_and_rolls_back(tmp_path):
    hb, threads = _moved_home(tmp_path)
    before = home_state(hb.root)
    link = hb.root / "packages" / "app-server-daemon" / "current"
    proc = frun("session_repair.py", hb.root, "--remap-prefix", f"{OLD_HOME}={hb.root}",
                "--remap-prefix", "/home/olduser=/home/newuser", "--no-unarchive", "--apply", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)["result"]
    assert (res["updated_rows"], res["line1_rewritten"], res["symlinks_repointed"]) == (3, 3, 1)
    for t in threads:
        payload = json.loads(t.path.read_bytes().split(b"\n", 1)[0])["payload"]
        assert payload["cwd"] == "/home/newuser/proj"
        assert payload["runtime_workspace_roots"] == ["/home/newuser/proj", "/srv/shared"]
        assert t.path.stat().st_mtime_ns == int((t.created.timestamp() + 60) * 1e9)
    assert hb.sql("SELECT DISTINCT cwd FROM threads") == [("/home/newuser/proj",)]
    assert os.readlink(str(link)) == str(hb.root / "packages/app-server-daemon/releases/0.171.0-x86_64")
    assert (link / "bin" / "codex").is_file()
    audit = json.loads(frun("session_audit.py", hb.root, "--json").stdout)
    assert audit["integrity"]["rollout_path_outside_home_count"] == 0
    rb = frun("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert home_state(hb.root) == before
    assert os.readlink(str(link)).startswith(OLD_HOME)


def test_remap_line1_survives_a_kill_at_every_step(tmp_path):
    from test_faults import Pristine, points
    hb, _ = _moved_home(tmp_path, n=2)
    before = home_state(hb.root)
    args = ["--remap-prefix", f"{OLD_HOME}={hb.root}", "--remap-prefix", "/home/olduser=/home/newuser",
            "--no-unarchive", "--apply"]
    pristine = Pristine(hb.root)
    labels, _ = points(tmp_path, "session_repair.py", hb.root, *args)
    assert labels.count("file") == 3  # two line-1 rewrites and one symlink: counted by the run
    for n in range(1, len(labels) + 1):
        pristine.restore()
        assert frun("session_repair.py", hb.root, *args, fault=f"kill:{n}").returncode == -9
        assert frun("rollback.py", hb.root, "--latest", "--apply").returncode == 0
        assert home_state(hb.root) == before, n
        assert snapshot(hb.root).get("packages/app-server-daemon/current") == \
            ("link", OLD_HOME + "/packages/app-server-daemon/releases/0.171.0-x86_64")
