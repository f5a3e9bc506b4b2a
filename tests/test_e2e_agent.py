"""A Codex agent runs the installed skill: read-only sandbox, escalation, its own live thread."""
import json
import sys

import pytest

from codex_client import AppServer, run_exec
from harness import snapshot
from mock_model import ScriptedAgent, text_reply

PY = sys.executable
pytestmark = pytest.mark.compat  # the agent story: also on the older Codex releases


def _payload(output: str):
    """The JSON our script printed, out of an exec_command tool output."""
    text = output.split("Output:\n", 1)[-1]
    return json.JSONDecoder().raw_decode(text[text.index("{"):])[0]


def _exit_code(output: str) -> int:
    return int(output.split("Process exited with code ", 1)[1].split()[0])


def _others(world, skip):
    files = {k: v for k, v in snapshot(world.home).items()
             if k.startswith(("sessions/", "archived_sessions/")) and skip not in k}
    rows = world.db("SELECT * FROM threads WHERE id != ? ORDER BY id", (skip,))
    return files, rows


def test_exec_agent_audits_and_dry_runs_in_the_read_only_sandbox(world, mock_server):
    world.make_threads(3, "mockA")
    world.make_threads(1, "mockB")
    skill = world.install_skill()
    agent = ScriptedAgent([
        {"cmd": f"{PY} {skill}/scripts/session_audit.py --json"},
        {"cmd": f"{PY} {skill}/scripts/provider_migrate.py"},
        {"cmd": f"{PY} {skill}/scripts/session_repair.py --import-orphans"},
    ])
    mock_server.reply = agent
    before = _others(world, "no-such-thread")
    proc = run_exec(world.home, "my old sessions are gone", cwd=world.project())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("done")
    session = next(l.split(":", 1)[1].strip() for l in proc.stderr.splitlines() if l.startswith("session id:"))
    assert "sandbox: read-only" in proc.stderr
    audit = _payload(agent.outputs[0])
    assert _exit_code(agent.outputs[0]) == 1  # findings: the 3 threads of mockA are hidden
    assert audit["live_current_session"]["thread_id"] == session
    assert audit["live_current_session"]["writer_lock_held"] is True
    assert audit["codex_running"]["running"] is False, audit["codex_running"]
    assert not any(session in f for f in audit["findings"])
    assert audit["orphans"]["count"] == 0
    assert audit["visibility"]["hidden"]["other_provider"] == 3
    assert "=== Provider Migration Plan ===" in agent.outputs[1] and "dry_run: True" in agent.outputs[1]
    assert _exit_code(agent.outputs[1]) == 0
    # nothing to repair: one line, then the agent's own live thread named as not checked (exit 0)
    assert "Nothing to repair: every session's index entry already matches its file." in agent.outputs[2]
    assert "live thread (its writer lock is held)" in agent.outputs[2] and _exit_code(agent.outputs[2]) == 0
    assert _others(world, session) == (before[0], before[1])
    assert not (world.home / ".tmp" / "session-migration").exists()
    assert not list(skill.rglob("__pycache__"))


def test_exec_agent_apply_stops_before_any_backup(world, mock_server):
    ids = world.make_threads(2, "mockA")
    world.archive(ids[1])
    world.set_provider("mockB")
    skill = world.install_skill()
    agent = ScriptedAgent([{"cmd": f"{PY} {skill}/scripts/provider_migrate.py --apply"},
                           {"cmd": f"{PY} {skill}/scripts/session_repair.py --unarchive --apply"}])
    mock_server.reply = agent
    before = _others(world, "no-such-thread")
    proc = run_exec(world.home, "fix it", cwd=world.project())
    assert proc.returncode == 0, proc.stderr[-3000:]
    for out in agent.outputs:
        assert _exit_code(out) == 2, out
        assert "cannot write" in out and "escalated permission" in out and "nothing was changed" in out
    assert world.db("SELECT DISTINCT model_provider FROM threads WHERE source='vscode'") == [("mockA",)]
    files, _ = _others(world, "no-such-thread")
    assert {k: v for k, v in files.items() if k in before[0]} == before[0]
    assert not (world.home / ".tmp" / "session-migration").exists()


def _native_pid(app):
    """The native `codex` binary the npm launcher started for this app-server."""
    import os
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if int(fh.read().rsplit(")", 1)[1].split()[1]) == app.proc.pid:
                    return int(pid)
        except (OSError, ValueError):
            continue
    return app.proc.pid


def _approve(requests):
    def handler(msg):
        requests.append(msg)
        return {"decision": "accept"}
    return handler


def test_escalated_apply_migrates_others_and_skips_the_agents_own_thread(world, mock_server):
    old = world.make_threads(3, "mockA", prompt="older work")
    skill = world.install_skill()
    approvals = []
    with world.app(on_request=_approve(approvals)) as app:
        me = app.start_thread(world.project(), "hello")  # a first turn: the agent's thread has a row
        rollout = world.db("SELECT rollout_path FROM threads WHERE id=?", (me,))[0][0]
        mine_before = open(rollout, "rb").read()
        agent = ScriptedAgent([{
            "cmd": f"{PY} {skill}/scripts/provider_migrate.py --target-provider mockB --apply --json",
            "sandbox_permissions": "require_escalated",
            "justification": "write the Codex session index after the user approved the plan"}])
        mock_server.reply = agent
        done = app.turn(me, "move my sessions to mockB", timeout=120)
        assert done["turn"]["status"] == "completed"
        mock_server.reply = text_reply()
        assert approvals and approvals[0]["method"] == "item/commandExecution/requestApproval"
        out = _payload(agent.outputs[0])
        assert _exit_code(agent.outputs[0]) == 1  # partial: the live thread was skipped
        assert out["result"]["updated_rows"] == 3
        assert out["skipped_sample"] == [{"thread_id": me,
                                          "reason": "live thread (its writer lock is held): never touched"}]
        assert len(app.read_thread(me)["turns"]) == 2
    mine_after = open(rollout, "rb").read()
    assert mine_after.startswith(mine_before)  # only appended to: nothing rewritten
    world.set_provider("mockB")
    assert world.listed_ids() == sorted(old)
    assert me in world.listed_ids(modelProviders=[])
    assert world.db("SELECT model_provider FROM threads WHERE id=?", (me,)) == [("mockA",)]


def test_second_app_server_makes_every_write_script_refuse(world, mock_server):
    ids = world.make_threads(2, "mockA")
    world.archive(ids[1])
    world.set_provider("mockB")
    skill = world.install_skill()
    other = AppServer(world.home, cwd=world.project())  # an editor's Codex, left open
    world.apps.append(other)
    approvals = []
    cmds = [f"{PY} {skill}/scripts/provider_migrate.py --apply",
            f"{PY} {skill}/scripts/session_repair.py --apply --import-orphans --unarchive",
            f"{PY} {skill}/scripts/rollback.py --restore-db {world.home}/state_5.sqlite --apply"]
    before = _others(world, "no-such-thread")
    with world.app(on_request=_approve(approvals)) as app:
        me = app.start_thread(world.project(), "hello")
        agent = ScriptedAgent([{"cmd": c, "sandbox_permissions": "require_escalated",
                                "justification": "apply the approved plan"} for c in cmds])
        mock_server.reply = agent
        assert app.turn(me, "apply it", timeout=120)["turn"]["status"] == "completed"
        mock_server.reply = text_reply()
    assert len(agent.outputs) == 3
    for out in agent.outputs:
        assert _exit_code(out) == 2, out
        assert "Codex is running on this home:" in out
        assert f"(pid {_native_pid(other)}, codex app-server)" in out, out  # the other app-server, by its pid
    files, rows = _others(world, me)
    assert rows == [r for r in before[1] if r[0] != me]
    assert not (world.home / ".tmp" / "session-migration").exists() or \
        not list((world.home / ".tmp" / "session-migration").glob("*_*"))
    # without the agent, from a terminal, the open app-server is named too
    proc = world.script("provider_migrate.py", "--apply")
    assert proc.returncode == 2 and "a Codex app-server (an editor extension or the Codex app) (pid " in proc.stderr
    other.close()
