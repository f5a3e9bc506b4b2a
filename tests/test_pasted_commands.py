"""Every command the scripts print, pasted as printed into `bash -c` from an unrelated folder, works.

The homes' paths hold a space or non-ASCII letters, the user names the home by a relative
--codex-dir, and the shell has no CODEX_HOME and a HOME without ~/.codex: a printed command that
relied on the folder it was printed in, or on the default home, fails here.
"""
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import faultrun  # script runs forked (tests/faultrun.py)

from harness import REPO, SCRIPTS, run_on_home, snapshot
from homebuilder import build_broken_home

ARTIFACTS = os.path.join(".tmp", "session-migration")
PY = shlex.quote(sys.executable)


def home_state(root: Path) -> dict:
    """Files outside our artifacts (bytes, mtime, mode) and every threads row."""
    files = {k: v for k, v in snapshot(root).items()
             if not k.startswith(ARTIFACTS) and not k.startswith("state_5.sqlite")}
    conn = sqlite3.connect(f"file:{root / 'state_5.sqlite'}?mode=ro", uri=True)
    rows = conn.execute("SELECT * FROM threads ORDER BY id").fetchall()
    conn.close()
    return {"files": files, "rows": rows}


def rows(root: Path, sql: str) -> list:
    conn = sqlite3.connect(f"file:{root / 'state_5.sqlite'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture(params=["my codex home", "Ünïcödé 家"])
def place(tmp_path, request):
    """A broken home under a folder whose name holds a space or non-ASCII; an unrelated folder; a clean env."""
    base = tmp_path / request.param
    hb = build_broken_home(base / ".codex")
    elsewhere = tmp_path / "somewhere else"
    elsewhere.mkdir()
    nobody = tmp_path / "nobody"
    nobody.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CODEX_", "SESSION_MIGRATION")) and k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    env["HOME"] = str(nobody)  # no ~/.codex: a command that forgot the home fails
    return hb, base, elsewhere, env


def ours(script, *args, cwd, env):
    """Run one of our scripts as the user did: from the home's parent, with a relative --codex-dir."""
    return faultrun.script_run([sys.executable, str(SCRIPTS / script), "--codex-dir", ".codex", *args],
                               cwd=str(cwd), env=env, capture_output=True, text=True, check=False)


def paste(cmd, cwd, env):
    return subprocess.run(["bash", "-c", cmd], cwd=str(cwd), env=env, capture_output=True, text=True,
                          check=False, timeout=300)


def line_after(text, marker):
    """The command printed on the line after `marker`, as the user would copy it."""
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith(marker))
    return lines[i + 1].strip()


def test_audit_next_steps_and_the_whole_recovery_pasted(place):
    hb, base, elsewhere, env = place
    root = hb.root
    q = shlex.quote(str(root))
    audit = ours("session_audit.py", cwd=base, env=env)
    assert audit.returncode == 1, audit.stderr
    lines = audit.stdout.splitlines()
    start = lines.index("Run next (it shows its plan; add --apply to write, then audit again):")
    remap = shlex.quote(f"/home/olduser/.codex={root}")
    one = f"{PY} {SCRIPTS}/session_recover.py --codex-dir {q} --remap-prefix {remap}"
    assert lines[start + 1:start + 4] == [f"  {one}  # every fix in one run, one undo (repair, migrate, import)",
                                          "Optional, only if you want the 2 archived sessions back in the list:",
                                          f"  {PY} {SCRIPTS}/session_repair.py --codex-dir {q} --unarchive"]
    report = json.loads(ours("session_audit.py", "--json", cwd=base, env=env).stdout)
    assert [s["command"] for s in report["next_steps"]] == [one]
    # the recovery, pasted: its plan changes nothing; its --apply and its one undo
    before = home_state(root)
    dry = paste(one, elsewhere, env)
    assert dry.returncode == 1 and dry.stdout.startswith(f"=== Session Recovery Plan ===\ncodex_dir: {root}\n")
    assert home_state(root) == before
    applied = paste(line_after(dry.stdout, "No changes applied (dry-run). To make them all"), elsewhere, env)
    assert applied.returncode == 1, applied.stderr
    assert rows(root, "SELECT count(*) FROM threads WHERE model_provider='oldprov'") == [(0,)]
    assert rows(root, "SELECT count(*) FROM threads WHERE archived=1") == [(2,)]  # archived stays archived
    rolled = paste(line_after(applied.stdout, "undo all of it with:"), elsewhere, env)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert home_state(root) == before
    # the scripts it combines stay, one step at a time
    steps = [
        f"{PY} {SCRIPTS}/session_repair.py --codex-dir {q} --remap-prefix {remap}"
        "  # point the index at the real files, remap the old home",
        f"{PY} {SCRIPTS}/provider_migrate.py --codex-dir {q}  # move sessions of other providers to openai",
        f"{PY} {SCRIPTS}/session_repair.py --codex-dir {q} --remap-prefix {remap} --import-orphans"
        "  # add index entries for session files that have none",
    ]
    fix = steps[0].split("  #")[0]
    assert [f for f in report["findings"] if f.startswith("home moved")] == \
        ["home moved: 1 row(s) under /home/olduser/.codex"]  # what is wrong; commands only in next_steps
    fixed = paste(fix, elsewhere, env)
    assert fixed.returncode == 1 and fixed.stdout.startswith(f"=== Session Repair Plan ===\ncodex_dir: {root}\n")

    # every dry-run step, pasted elsewhere: its plan, for this home, and nothing written
    before = snapshot(root)
    for cmd, head, code in zip(steps, ("=== Session Repair Plan ===", "=== Provider Migration Plan ===",
                                       "=== Session Repair Plan ==="), (1, 0, 1)):
        proc = paste(cmd, elsewhere, env)
        assert proc.returncode == code, proc.stderr  # 1: some sessions are skipped, with a reason
        assert proc.stdout.startswith(f"{head}\ncodex_dir: {root}\ndry_run: True\n"), proc.stdout
        assert snapshot(root) == before

    # the repair: its printed --apply, then its printed undo
    start_state = home_state(root)
    dry = paste(steps[0], elsewhere, env).stdout
    apply_cmd = line_after(dry, "No changes applied (dry-run). To write them")
    assert apply_cmd == f"{PY} {SCRIPTS}/session_repair.py --codex-dir {q} --remap-prefix {remap} --apply"
    applied = paste(apply_cmd, elsewhere, env)
    assert applied.returncode == 1, applied.stderr
    moved = hb.threads[15]
    assert rows(root, f"SELECT rollout_path FROM threads WHERE id='{moved.id}'") == [(str(moved.path),)]
    assert rows(root, "SELECT count(*) FROM threads WHERE archived=1") == [(2,)]  # archived stays archived
    verify = paste(line_after(applied.stdout, "Verify, then restart"), elsewhere, env)
    assert verify.returncode == 1 and verify.stdout.startswith(f"=== Codex Session Audit: {root} ===\n")
    undo = line_after(applied.stdout, "undo with:")
    assert undo.startswith(f"{PY} {SCRIPTS}/rollback.py --codex-dir {q} --manifest ") and undo.endswith(" --apply")
    rolled = paste(undo, elsewhere, env)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert home_state(root) == start_state

    # the migration, the same way
    dry = paste(steps[1], elsewhere, env).stdout
    applied = paste(line_after(dry, "No changes applied (dry-run). To write them"), elsewhere, env)
    assert applied.returncode == 0, applied.stderr
    assert rows(root, "SELECT count(*) FROM threads WHERE model_provider='oldprov'") == [(0,)]
    rolled = paste(line_after(applied.stdout, "undo with:"), elsewhere, env)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert home_state(root) == start_state

    # the import of the orphan rollout
    dry = paste(steps[2], elsewhere, env).stdout
    applied = paste(line_after(dry, "No changes applied (dry-run). To write them"), elsewhere, env)
    orphan = hb.threads[11]
    assert rows(root, f"SELECT count(*) FROM threads WHERE id='{orphan.id}'") == [(1,)]
    listing = ours("rollback.py", "--list", cwd=base, env=env).stdout
    preview = line_after(listing, "preview undoing the newest applied run (then add --apply):")
    assert preview == f"{PY} {SCRIPTS}/rollback.py --codex-dir {q} --latest"
    prune = line_after(listing, "preview removing the artifacts of runs no longer needed:")
    assert prune == f"{PY} {SCRIPTS}/rollback.py --codex-dir {q} --prune"
    pruned = paste(prune, elsewhere, env)
    assert pruned.returncode == 0 and pruned.stdout.startswith("would remove 3 run folder(s), ")  # recover, repair, migrate
    assert line_after(pruned.stdout, "remove them with:") == f"{prune} --apply"
    assert paste(preview, elsewhere, env).stdout.startswith("=== Rollback ===\n")
    rolled = paste(line_after(applied.stdout, "undo with:"), elsewhere, env)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert home_state(root) == start_state


def repair_has_unarchive_flag() -> bool:
    """The repair that unarchives only when asked (`--unarchive [ID_OR_NAME]`, issue 22)."""
    out = faultrun.script_run([sys.executable, str(SCRIPTS / "session_repair.py"), "--help"],
                              capture_output=True, text=True, check=False).stdout
    return re.search(r"--unarchive\b", out) is not None


def advice_of(text):
    """The commands under "Run next" as printed, without their `# why`."""
    lines = text.splitlines()
    if "Run next (it shows its plan; add --apply to write, then audit again):" not in lines:
        return []
    i = lines.index("Run next (it shows its plan; add --apply to write, then audit again):") + 1
    out = []
    while i < len(lines) and lines[i].startswith(f"  {PY} "):
        out.append(lines[i].strip().split("  # ", 1)[0])
        i += 1
    return out


def test_the_advice_applied_in_order_converges_and_archived_stays_archived(place):
    """A new user's whole path on the sample messy home: each printed command pasted from another
    folder, its printed --apply pasted next, the audit again, until it recommends nothing (at most
    two rounds); the sessions the user archived are still archived afterwards."""
    hb, base, elsewhere, env = place
    root = hb.root
    archived = rows(root, "SELECT id FROM threads WHERE archived=1")
    assert len(archived) == 2
    pasted = []
    for _round in range(2):
        audit = ours("session_audit.py", cwd=base, env=env)
        steps = advice_of(audit.stdout)
        if not steps:
            break
        for step in steps:
            dry = paste(step, elsewhere, env)
            assert dry.returncode in (0, 1), dry.stderr
            apply_cmd = line_after(dry.stdout, "No changes applied (dry-run). To")
            assert apply_cmd == step + " --apply"  # a recommended dry-run always has something to write
            done = paste(apply_cmd, elsewhere, env)
            assert done.returncode in (0, 1), done.stdout + done.stderr
            pasted.append(step)
    final = ours("session_audit.py", cwd=base, env=env)
    assert advice_of(final.stdout) == [], final.stdout
    assert "Nothing to run: no command here would change anything." in final.stdout.splitlines()
    assert len(pasted) == 1  # one recovery run: the repair, the migration and the orphan import
    # what no command can fix is said as such, with its reason, not as a command
    assert '  "file deleted", 2025-03-01 10:47, /work/proj: no rollout file for this thread anywhere' \
        in final.stdout.splitlines()
    report = json.loads(ours("session_audit.py", "--json", cwd=base, env=env).stdout)
    assert report["next_steps"] == []
    assert rows(root, "SELECT count(*) FROM threads WHERE model_provider='oldprov'") == [(0,)]
    if repair_has_unarchive_flag():  # the repair of issue 22 keeps archived sessions archived
        assert rows(root, "SELECT id FROM threads WHERE archived=1") == archived
        assert [o["step"] for o in report["options"]] == ["unarchive"]


def test_a_copied_home_once_recovered_names_what_is_left_and_recommends_nothing(tmp_path):
    """A home copied to a new folder, then recovered: rows whose file is gone still name the old
    folder, and no finding nor step carries a command (a repair pasted then would change nothing)."""
    import shutil
    old = build_broken_home(tmp_path / "old" / ".codex").root
    new = tmp_path / "new" / ".codex"
    shutil.copytree(str(old.parent), str(new.parent), symlinks=True)
    assert run_on_home("session_recover.py", new, "--apply").returncode == 1
    report = json.loads(run_on_home("session_audit.py", new, "--json").stdout)
    assert report["next_steps"] == []
    assert f"home moved: 2 row(s) under {old}" in report["findings"]
    assert [f for f in report["findings"] if ".py" in f] == []


def test_the_escalation_command_runs_when_pasted(place):
    """The command check_writable hands back when the home is not writable (as in Codex's sandbox)."""
    hb, base, elsewhere, env = place
    root = hb.root
    # root ignores file modes: deny write access to the home by patching os.access in the process
    wrapper = ("import os, runpy, sys; real = os.access; home = os.path.realpath('.codex'); "
               "os.access = lambda p, m, **k: False if os.path.realpath(str(p)).startswith(home) "
               "else real(p, m, **k); script = sys.argv[1]; sys.argv = sys.argv[1:]; "
               "runpy.run_path(script, run_name='__main__')")
    proc = faultrun.script_run([sys.executable, "-c", wrapper, str(SCRIPTS / "provider_migrate.py"),
                                "--codex-dir", ".codex", "--apply"], cwd=str(base), env=env,
                               capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "escalated permission" in proc.stderr, proc.stderr
    cmd = proc.stderr.strip().split(" run in a terminal: ", 1)[1]
    assert cmd == f"{PY} {SCRIPTS}/provider_migrate.py --codex-dir {shlex.quote(str(root))} --apply"
    assert not (root / ARTIFACTS).exists()
    pasted = paste(cmd, elsewhere, env)
    assert pasted.returncode == 0, pasted.stderr
    assert rows(root, "SELECT count(*) FROM threads WHERE model_provider='oldprov'") == [(0,)]


def test_commands_name_the_sqlite_home_the_user_gave(place):
    hb, base, elsewhere, env = place
    db_dir = base / "db folder"
    db_dir.mkdir()
    (hb.root / "state_5.sqlite").rename(db_dir / "state_5.sqlite")
    proc = ours("session_audit.py", "--sqlite-home", str(db_dir), "--json", cwd=base, env=env)
    steps = json.loads(proc.stdout)["next_steps"]
    q, d = shlex.quote(str(hb.root)), shlex.quote(str(db_dir))
    assert steps[0]["command"].startswith(f"{PY} {SCRIPTS}/session_recover.py --codex-dir {q} --sqlite-home {d} ")
    pasted = paste(steps[0]["command"] + " --json", elsewhere, env)
    assert pasted.returncode == 1 and json.loads(pasted.stdout)["by_cause"]["another provider"] == 4


def test_rerun_command_keeps_every_argument_and_makes_paths_absolute(tmp_path, monkeypatch):
    sys.path.insert(0, str(SCRIPTS))
    from sessionkit.ui.commands import quote, rerun_command
    from sessionkit.codexfiles.home import open_home
    hb = build_broken_home(tmp_path / "a b" / ".codex")
    home = open_home(str(hb.root))
    monkeypatch.chdir(tmp_path)
    cmd = rerun_command(home, ["--codex-dir=x", "--manifest", "a b/run", "--restore-db=c", "--apply",
                               "--sqlite-home", "y"], "rollback.py")
    assert cmd == (f"{PY} {SCRIPTS}/rollback.py --codex-dir {shlex.quote(str(hb.root))} --manifest "
                   f"{shlex.quote(str(tmp_path / 'a b' / 'run'))} --restore-db={tmp_path / 'c'} --apply")
    assert shlex.split(quote("/tmp/it's \"here\" $x")) == ["/tmp/it's \"here\" $x"]
    odd = os.fsdecode(b"/tmp/caf\xe9 x")  # a name that is not UTF-8
    assert quote(odd) == "$'/tmp/caf\\xe9 x'"
    out = subprocess.run(["bash", "-c", f"printf %s {quote(odd)}"], capture_output=True, check=True).stdout
    assert out == b"/tmp/caf\xe9 x"


def test_make_demo_prints_commands_that_run_on_its_sample_home(place):
    """The missing-home message names `make -C <repo> demo`; the demo keeps its home and prints the
    repair, audit, list and rollback for it: each pasted elsewhere does what it says."""
    _, base, elsewhere, env = place
    missing = faultrun.script_run([sys.executable, str(SCRIPTS / "session_audit.py")], cwd=str(elsewhere),
                                  env=env, capture_output=True, text=True, check=False)
    demo_cmd = missing.stderr.split("CODEX_HOME; ", 1)[1].split(" builds a sample home")[0]
    assert demo_cmd == f"make -C {shlex.quote(str(REPO))} demo"
    demo_dir = base.parent / f"{base.name} demo"
    proc = paste(demo_cmd, elsewhere, {**env, "DEMO_DIR": str(demo_dir), "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    home = demo_dir / ".codex"
    q = shlex.quote(str(home))
    lines = [line for line in proc.stdout.splitlines() if not re.match(r"make(\[\d+\])?: ", line)]  # -C's notes
    assert lines[0] == f"Sample home with one of every problem (kept until you remove it): {home}"
    start = lines.index("Try the recovery and its undo on this sample home (paste each line, from any folder):")
    cmds = [line.strip() for line in lines[start + 1:start + 6]]
    assert cmds[:2] == [f"{PY} {SCRIPTS}/session_recover.py --codex-dir {q}",
                        f"{PY} {SCRIPTS}/session_recover.py --codex-dir {q} --apply"]  # the plan first
    before = home_state(home)
    results = [paste(cmds[0], elsewhere, env)]
    assert home_state(home) == before  # the plan changed nothing
    results += [paste(c, elsewhere, env) for c in cmds[1:]]
    assert [r.returncode for r in results] == [1, 1, 1, 0, 0], [r.stderr for r in results]
    assert "=== Session Recovery Result ===" in results[1].stdout, results[1].stdout
    assert results[2].stdout.startswith(f"=== Codex Session Audit: {home} ===\n")
    assert "session_recover  applied (newest)" in results[3].stdout
    assert results[4].stdout.startswith("=== Rollback Result ===\nDone: ")
    assert home_state(home) == before  # recovered, then rolled back exactly
    assert lines[-1] == f"  rm -rf -- {shlex.quote(str(demo_dir))}"
    assert paste(lines[-1].strip(), elsewhere, env).returncode == 0 and not demo_dir.exists()
