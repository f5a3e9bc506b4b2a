"""rollback.py --prune never removes what is still needed: the only copy of a DB a --restore-db
replaced (without --force, and never unnamed), a run a later applied run builds on (a migration's
decompression); and contradictory modes are refused before anything happens."""
import json
import os
import sqlite3

import pytest

from homebuilder import HomeBuilder, build_broken_home
from test_migrate_rollback import home_state, run
from test_zstd import compress, needs_zstd


def listed(root):
    return json.loads(run("rollback.py", root, "--list", "--json").stdout)["runs"]


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


@pytest.fixture
def restored(tmp_path):
    """recover --apply; the user renames a session; a forced --restore-db of the run's backup throws
    that name away (saved in a pre-restore backup); then the run is rolled back."""
    hb = build_broken_home(tmp_path / ".codex")
    assert run("session_recover.py", hb.root, "--apply").returncode in (0, 1)
    [r] = listed(hb.root)
    conn = sqlite3.connect(str(hb.root / "state_5.sqlite"))
    conn.execute("UPDATE threads SET title='my precious title' WHERE preview='healthy session 1'")
    conn.commit()
    conn.close()
    bak = os.path.join(r["run_dir"], "state_5.sqlite.pre_session_recover.bak")
    rs = run("rollback.py", hb.root, "--restore-db", bak, "--force", "--apply")
    assert rs.returncode == 0, rs.stdout + rs.stderr
    [saved] = [f for f in os.listdir(r["run_dir"]) if ".pre_restore_" in f]
    assert run("rollback.py", hb.root, "--latest", "--apply").returncode in (0, 1)
    return hb, r["run_dir"], os.path.join(r["run_dir"], saved)


def test_prune_keeps_the_only_copy_of_what_a_restore_replaced_unless_forced_and_names_it(restored):
    hb, run_dir, saved = restored
    title = sqlite3.connect(saved).execute("SELECT title FROM threads WHERE preview='healthy session 1'").fetchone()
    assert title == ("my precious title",)  # the only copy of that name
    assert [r["state"] for r in listed(hb.root)] == ["rolled back"]
    assert "--prune" not in run("rollback.py", hb.root, "--list").stdout  # not recommended
    before = files_under(run_dir)
    dry = run("rollback.py", hb.root, "--prune")
    assert dry.returncode == 0 and dry.stdout.splitlines()[0] == "would remove 0 run folder(s), 0 B:"
    assert f"it holds the only copy of the DB as it was before a --restore-db ({saved}; --force removes it too)" \
        in dry.stdout
    done = json.loads(run("rollback.py", hb.root, "--prune", "--apply", "--json").stdout)
    assert done["prune"] == [] and done["freed_bytes"] == 0 and files_under(run_dir) == before
    forced = run("rollback.py", hb.root, "--prune", "--force")
    assert forced.stdout.splitlines()[2:4] == [
        f"      {run_dir}",
        f"      with the only copy of the DB as it was before a --restore-db: {saved}"]
    assert files_under(run_dir) == before  # a preview removes nothing
    assert run("rollback.py", hb.root, "--prune", "--force", "--apply").returncode == 0
    assert not os.path.exists(run_dir)


@needs_zstd
def test_a_migrations_decompression_run_is_never_pruned_while_the_migration_stays(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    ts = [hb.add(provider="oldco", preview=f"old {i}") for i in range(2)]
    zst = compress(ts[0].path)
    zst_bytes = zst.read_bytes()
    assert run("provider_migrate.py", hb.root, "--apply").returncode == 0
    runs = listed(hb.root)
    assert [(r["kind"], r["state"]) for r in runs] == [("decompress", "applied"),
                                                       ("provider_migration", "applied (newest)")]
    assert runs[0]["needed_by"] == [runs[1]["run_dir"]]
    assert "--prune" not in run("rollback.py", hb.root, "--list").stdout
    dry = run("rollback.py", hb.root, "--prune")
    assert f"kept {runs[0]['started']}  decompress: the later run {runs[1]['run_dir']} builds on it " \
           "(roll that back first)" in dry.stdout
    assert json.loads(run("rollback.py", hb.root, "--prune", "--apply", "--json").stdout)["prune"] == []
    for _ in range(2):  # the migration, then its decompression: the .zst comes back, byte for byte
        assert run("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    assert zst.read_bytes() == zst_bytes and not ts[0].path.exists()
    # both undone: both may go now
    assert len(json.loads(run("rollback.py", hb.root, "--prune", "--apply", "--json").stdout)["prune"]) == 2


@needs_zstd
def test_forced_prune_takes_a_migration_and_its_decompression_together(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    compress(hb.add(provider="oldco", preview="old").path)
    assert run("provider_migrate.py", hb.root, "--apply").returncode == 0
    out = json.loads(run("rollback.py", hb.root, "--prune", "--force", "--json").stdout)
    assert [d["kind"] for d in out["prune"]] == ["decompress", "provider_migration"]


@pytest.mark.parametrize("mode", [["--latest"], ["--until", "RUN"], ["--manifest", "RUN"], ["--restore-db", "BAK"],
                                  ["--list"]])
def test_prune_with_another_mode_is_refused_and_nothing_changes(tmp_path, mode):
    hb = build_broken_home(tmp_path / ".codex")
    root = hb.root
    assert run("session_repair.py", root, "--remap-prefix", f"/home/olduser/.codex={root}", "--apply").returncode == 1
    assert run("provider_migrate.py", root, "--apply").returncode == 0
    runs = listed(root)
    bak = next(p for p in os.listdir(runs[0]["run_dir"]) if p.endswith(".bak"))
    args = [a.replace("RUN", runs[0]["run_dir"]).replace("BAK", os.path.join(runs[0]["run_dir"], bak)) for a in mode]
    before, arts = home_state(root), files_under(root / ".tmp")
    proc = run("rollback.py", root, *args, "--prune", "--apply")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1 and "not allowed with argument" in proc.stderr
    assert home_state(root) == before and files_under(root / ".tmp") == arts
