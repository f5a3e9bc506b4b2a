"""rollback.py says only what is true and the one command to run next: a --restore-db after the run
was rolled back finds nothing to restore (no made-up split, no advice to undo a run already undone);
--until's preview lists each run once; a stop and a preview name the command that goes on."""
import json
import os
import shlex
import sqlite3
import subprocess

from harness import clean_env
from homebuilder import HomeBuilder, build_broken_home
from test_migrate_rollback import run
from test_undo_truth import list_runs, three_runs  # noqa: F401 - the fixture


def test_restore_db_after_a_full_rollback_has_nothing_to_restore_and_no_split(tmp_path):
    hb = build_broken_home(tmp_path / ".codex")
    assert run("session_recover.py", hb.root, "--apply").returncode in (0, 1)
    assert run("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    [r] = list_runs(hb.root)
    bak = os.path.join(r["run_dir"], "state_5.sqlite.pre_session_recover.bak")
    files = sorted(os.listdir(r["run_dir"]))
    dry = run("rollback.py", hb.root, "--restore-db", bak)
    assert (dry.returncode, dry.stdout.splitlines()) == (0, [
        "=== Restore a DB backup ===",
        f"nothing to restore: every row of {hb.root / 'state_5.sqlite'} is as in {bak}"])
    out = json.loads(run("rollback.py", hb.root, "--restore-db", bak, "--json").stdout)
    assert (out["split"], out["lost"], out["nothing_to_restore"]) == (0, 0, True)
    assert run("rollback.py", hb.root, "--restore-db", bak, "--apply").returncode == 0
    assert sorted(os.listdir(r["run_dir"])) == files  # no pre-restore copy of an identical DB


def test_a_refused_restore_of_a_rolled_back_run_never_advises_undoing_it_again(tmp_path):
    hb = build_broken_home(tmp_path / ".codex")
    assert run("session_recover.py", hb.root, "--apply").returncode in (0, 1)
    assert run("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    conn = sqlite3.connect(str(hb.root / "state_5.sqlite"))
    conn.execute("UPDATE threads SET title='renamed since' WHERE preview='healthy session 1'")
    conn.commit()
    conn.close()
    [r] = list_runs(hb.root)
    dry = run("rollback.py", hb.root, "--restore-db", os.path.join(r["run_dir"], "state_5.sqlite.pre_session_recover.bak"))
    assert dry.returncode == 1
    assert "title changed since the backup" in dry.stdout and "would be split" not in dry.stdout
    assert "--manifest" not in dry.stdout
    assert f"refused without --force (the run {os.path.basename(r['run_dir'])} is already rolled back)" in dry.stdout


def test_until_preview_lists_each_run_once_and_names_the_command(three_runs):  # noqa: F811
    hb, _old, _arch, _before, runs = three_runs
    dry = run("rollback.py", hb.root, "--until", runs[0])
    lines = dry.stdout.splitlines()
    assert [ln.split()[-1] for ln in lines if "would undo" in ln] == runs[::-1]
    assert not [ln for ln in lines if "not reached" in ln]
    assert lines[-2] == "No changes applied (dry-run); each run is checked, newest first, as it comes. To undo them, run:"
    assert lines[-1].startswith("  ") and lines[-1].endswith(f"rollback.py --codex-dir {hb.root} --until {runs[0]} --apply")


def test_until_that_stops_names_the_command_that_goes_on(three_runs):  # noqa: F811
    hb, _old, arch, _before, runs = three_runs
    (moved,) = hb.sql("SELECT rollout_path FROM threads WHERE id=?", (arch.id,))[0]
    with open(moved, "a") as fh:  # the unarchived thread continued since
        fh.write('{"type":"event_msg","payload":{"type":"user_message","message":"more"}}\n')
    hb.sql("UPDATE threads SET updated_at=updated_at+100 WHERE id=?", (arch.id,))
    proc = run("rollback.py", hb.root, "--until", runs[0], "--apply")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    i = lines.index("to undo the rest of it and leave those items as they are, run:")
    assert lines[i + 1].startswith("  ") and lines[i + 1].endswith(f"rollback.py --codex-dir {hb.root} --manifest {runs[1]} --apply")


def test_latest_preview_names_the_command_that_undoes_it(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    hb.add(provider="oldco", preview="old")
    assert run("provider_migrate.py", hb.root, "--apply").returncode == 0
    [r] = list_runs(hb.root)
    lines = run("rollback.py", hb.root, "--latest").stdout.splitlines()
    assert lines[-2] == "No changes applied (dry-run). To undo it, run:"
    assert lines[-1].startswith("  ") and lines[-1].endswith(f"rollback.py --codex-dir {hb.root} --manifest {r['run_dir']} --apply")
    env = clean_env()
    pasted = subprocess.run(shlex.split(lines[-1]), capture_output=True, text=True, env=env, check=False)
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    assert [x["state"] for x in list_runs(hb.root)] == ["rolled back"]
