"""Ctrl-C while `session_repair.py --apply --rebuild-history` waits for the real Codex 0.171
app-server (issue 20): the reset has committed, so the run says what it applied and prints its undo
(exit 1, never "interrupted" alone with exit 2); `rollback.py --list` shows it applied; the printed
undo puts back every history row Codex did not rebuild meanwhile, and the list then agrees."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import codex_client
from harness import SCRIPTS, clean_env, fake_codex_exe, home_processes
from test_e2e_history import TABLES, hist, history_rows, make_threads, script_env


def _env():
    env = clean_env()
    env.update(script_env())
    return env


def listed(world):
    proc = world.script("rollback.py", "--list", "--json")
    return json.loads(proc.stdout)["runs"]


@pytest.mark.parametrize("script", ["session_repair.py", "session_recover.py"])
@pytest.mark.parametrize("group", [False, True], ids=["our-process", "terminal-group"])
def test_ctrl_c_while_the_real_codex_rebuilds_reports_the_applied_reset_and_its_undo(world, group, script):
    ids = make_threads(world, 3, turns=2)
    for t in ids:  # turns and items gone, the cursor kept: each is reset, then rebuilt by Codex
        hist(world, "DELETE FROM thread_items WHERE thread_id=?", (t,))
        hist(world, "DELETE FROM thread_turns WHERE thread_id=?", (t,))
    damaged = {t: history_rows(world, t) for t in ids}
    assert all(damaged[t]["thread_history_projection_state"] for t in ids)
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / script), "--codex-dir", str(world.home),
                             "--json", "--apply", "--rebuild-history",
                             "--codex-bin", str(codex_client.codex_bin(world.version))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)
    deadline = time.time() + 120
    kids = []
    while not kids and time.time() < deadline and proc.poll() is None:  # the app-server: after the apply
        kids = [p for p in home_processes([world.home]) if p.ppid == proc.pid]
        time.sleep(0.01)
    assert kids, proc.communicate()
    if group:  # a terminal's Ctrl-C: every process of the foreground group, the real Codex too
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, (stdout, stderr)
    assert "interrupted" not in stderr, stderr
    out = json.loads(stdout)
    result, rebuild = out["result"], out["history_rebuild"]
    deleted = result.get("history_rows_deleted", (result.get("applied") or {}).get("row_delete"))
    assert deleted > 0 and "rollback.py" in result["rollback"], result
    rebuilt = set(rebuild["rebuilt_sample"])
    failed = {f["thread_id"]: f["reason"] for f in rebuild["failed"]}
    assert rebuild["rebuilt"] == len(rebuilt) and rebuilt | set(failed) == set(ids) and not rebuilt & set(failed)
    assert failed, "Codex rebuilt every thread before the Ctrl-C: nothing was interrupted"
    assert rebuild["interrupted"] or all("codex app-server" in why for why in failed.values()), rebuild
    for t in ids:  # reset: no row left of a thread Codex did not rebuild
        rows = history_rows(world, t)
        assert (rows["thread_turns"] != []) == (t in rebuilt), (t, rows)
        if t not in rebuilt:
            assert all(rows[table] == [] for table in TABLES), (t, rows)
    assert not [p for p in home_processes([world.home]) if p.ppid == proc.pid]  # no Codex left running
    [run] = listed(world)
    assert (run["status"], run["state"]) == ("applied", "applied (newest)")
    assert run["run_dir"] == result["run_dir"]
    undo = subprocess.run(result["rollback"], shell=True, capture_output=True, text=True, env=_env(), check=False)
    assert undo.returncode == (1 if rebuilt else 0), undo.stdout + undo.stderr
    for t in ids:
        if t not in rebuilt:
            assert history_rows(world, t) == damaged[t], t  # every row back, exactly
    [run] = listed(world)
    assert run["state"] == ("rolled back" if not rebuilt else
                            f"partly rolled back: {len(rebuilt)} left alone (rollback.py --latest finishes it "
                            "once they are free)")


# ---- the same at unit level: a Ctrl-C before Codex's loop (a fake `codex`, no world) ----------

FAKE_CODEX = "#!/usr/bin/env python3\nimport sys\nfor line in sys.stdin:\n    pass\n"


def test_a_ctrl_c_while_the_app_server_starts_closes_it_and_says_interrupted(tmp_path, monkeypatch):
    """Ctrl-C lands while `codex app-server` is being started: it is closed again, and the rebuild
    reports every thread as interrupted (the caller then says the applied run and its undo)."""
    from sessionkit.fixes import codex_rebuild
    exe = fake_codex_exe(tmp_path, FAKE_CODEX)
    started = []
    real = codex_rebuild._AppServer.__init__

    def starting(self, *a, **kw):
        real(self, *a, **kw)
        started.append(self)
        os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, right after the process started
    monkeypatch.setattr(codex_rebuild._AppServer, "__init__", starting)
    done, failed = codex_rebuild.rebuild_histories(tmp_path, ["t1", "t2"], str(exe))
    assert done == [] and failed == [("t1", codex_rebuild.INTERRUPTED), ("t2", codex_rebuild.INTERRUPTED)]
    [app] = started
    assert app.proc.poll() is not None  # closed, never left running


def test_a_ctrl_c_before_codex_starts_is_an_interrupted_rebuild_of_every_thread(tmp_path, monkeypatch):
    """Ctrl-C while the archived threads are read, before Codex starts (session_recover.py has no
    handler of its own): every thread is named as not rebuilt, and the run's result still stands."""
    from types import SimpleNamespace
    from sessionkit.fixes import history_reset

    def ctrl_c(_db):
        raise KeyboardInterrupt
    monkeypatch.setattr(history_reset, "archived_ids", ctrl_c)
    home = SimpleNamespace(root=tmp_path, state_db=SimpleNamespace(path=tmp_path / "state_5.sqlite"))
    plan = history_reset.HistoryPlan(rebuild=["t1", "t2"])
    out = history_reset.rebuild_after(home, plan, {"skipped_at_apply": []}, "/bin/codex")
    assert out["interrupted"] is True and out["rebuilt"] == 0
    assert [f["thread_id"] for f in out["failed"]] == ["t1", "t2"]
