"""The one rollout editor (sessionkit/codexfiles/rollout_edit.py): the folder records Codex 0.171 reads back
are remapped alike by the repair and the import (world_state's environment cwd, the workspace
roots of thread_settings_applied), conversation content never (an MCP tool call's arguments and
its structured output keep the old folder), one strict --remap-prefix for both, and journals
written by the code before the editor stay readable and undoable."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import faultrun  # script runs forked (tests/faultrun.py)

from test_faults import frun
from test_import import homes, imp, plan_json  # noqa: F401  (homes: a fixture)
from test_remap_turn_context import OLD, _home, repair, state

from sessionkit import UserError
from sessionkit.codexfiles.rollout_edit import apply_spans, folder_values, parse_remaps, plan_line, remap

REPO = Path(__file__).resolve().parent.parent
NEW = "/home/newuser2"
# The main branch before the editor (the commit whose journals must stay undoable).
MAIN_BEFORE = "4969c32"


def _world_state(cwd):
    """A world_state line as real 0.171 writes it: the cwd per environment; the model-facing
    filesystem text (which names the folder too) is content, left as is."""
    return {"timestamp": "2026-01-01T00:00:00Z", "ordinal": 4, "type": "world_state", "payload": {
        "full": True, "state": {"agents_md": {}, "environments": {
            "environments": {"local": {"cwd": cwd, "status": "available", "shell": "bash"}},
            "current_date": "2026-12-07", "timezone": "Etc/UTC",
            "filesystem": f"<filesystem><workspace_roots><root>{cwd}</root></workspace_roots></filesystem>"},
            "model": "gpt-5"}}}


def _settings(cwd):
    return {"timestamp": "2026-01-01T00:00:00Z", "ordinal": 6, "type": "event_msg", "payload": {
        "type": "thread_settings_applied", "thread_id": "x", "thread_settings": {
            "model": "gpt-5", "model_provider_id": "openai", "cwd": cwd, "runtime_workspace_roots": [cwd],
            "disabled_plugin_ids": []}}}


def _mcp_call(cwd):
    """An MCP tool call as recorded: its arguments and structured result hold a "cwd" key."""
    return {"timestamp": "2026-01-01T00:00:00Z", "ordinal": 9, "type": "event_msg", "payload": {
        "type": "mcp_tool_call_end", "call_id": "call_1",
        "invocation": {"server": "files", "tool": "list", "arguments": {"cwd": cwd, "depth": 1}},
        "result": {"Ok": {"content": [{"type": "text", "text": f"listed {cwd}"}],
                          "structuredContent": {"cwd": cwd, "entries": 3}}}}}


def _line(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _append(path, *objs):
    with open(path, "ab") as fh:
        for o in objs:
            fh.write(_line(o) + b"\n")


def _lines(path):
    return [json.loads(x) for x in Path(path).read_bytes().splitlines()]


def test_plan_line_changes_only_the_folder_records_of_a_line():
    remaps = [(OLD, NEW)]
    ws = _line(_world_state(f"{OLD}/proj"))
    edit = plan_line(ws, remaps)
    assert edit.problem is None and edit.growth == 1  # one environment cwd, one byte longer
    new = json.loads(apply_spans(ws, edit.spans, True))
    env = new["payload"]["state"]["environments"]
    assert env["environments"]["local"]["cwd"] == f"{NEW}/proj"
    assert env["filesystem"] == _world_state(f"{OLD}/proj")["payload"]["state"]["environments"]["filesystem"]
    st = _line(_settings(f"{OLD}/proj"))
    new = json.loads(apply_spans(st, plan_line(st, remaps).spans, True))["payload"]["thread_settings"]
    assert (new["cwd"], new["runtime_workspace_roots"]) == (f"{NEW}/proj", [f"{NEW}/proj"])
    assert plan_line(_line(_mcp_call(f"{OLD}/proj")), remaps).spans == []  # content: never
    assert folder_values(ws) == [f"{OLD}/proj"] and folder_values(_line(_mcp_call("/x"))) == []
    # a line 1 field set and a folder remapped in one pass, checked by decoding the result
    meta = _line({"type": "session_meta", "payload": {"id": "t", "cwd": f"{OLD}/p", "model_provider": "a"}})
    edit = plan_line(meta, remaps, {"model_provider": "bbb"}, first=True)
    assert json.loads(apply_spans(meta, edit.spans, True))["payload"] == {"id": "t", "cwd": f"{NEW}/p",
                                                                       "model_provider": "bbb"}
    assert edit.old_values == {"model_provider": "a"}
    assert remap(f"{OLD}-2/x", remaps) == f"{OLD}-2/x"  # on a path boundary only


@pytest.mark.parametrize("value", ["/home/olduser=relative/dir", "relative=/home/new", "/a=~/b", "/a", "=/b",
                                   "/a=/b\n", "/a=/b\udcff"])
def test_one_strict_parse_remaps(value):
    with pytest.raises(UserError):
        parse_remaps([value])


def test_the_import_refuses_a_relative_new_with_one_line(homes):  # noqa: F811
    src, _made, dst, _own = homes
    from harness import snapshot
    before = snapshot(dst.root)
    proc = imp(dst.root, "--from", str(src.root), "--remap-prefix", "/home/olduser=relative/dir", "--apply",
               expect=(2,))
    assert len(proc.stderr.strip().splitlines()) == 1 and "is not an absolute path" in proc.stderr
    assert snapshot(dst.root) == before


def test_the_import_remaps_world_state_and_thread_settings_but_not_a_tool_call(homes):  # noqa: F811
    src, made, dst, _own = homes
    old = "/home/olduser/proj"
    for t in made:
        _append(t.path, _world_state(old), _settings(old), _mcp_call(old))
    out = json.loads(imp(dst.root, "--from", str(src.root), "--remap-prefix", f"/home/olduser={NEW}",
                         "--apply", "--json").stdout)
    assert out["result"] is not None
    for t in made:
        copy = next(dst.root.glob(f"*sessions/**/*{t.id}.jsonl"))
        lines = _lines(copy)
        ws = [x for x in lines if x["type"] == "world_state"][-1]["payload"]["state"]["environments"]
        assert ws["environments"]["local"]["cwd"] == f"{NEW}/proj"
        st = [x for x in lines if x["payload"].get("type") == "thread_settings_applied"][-1]["payload"]
        assert st["thread_settings"]["runtime_workspace_roots"] == [f"{NEW}/proj"]
        assert [x for x in lines if x["payload"].get("type") == "mcp_tool_call_end"][0] == _mcp_call(old)
        assert all(not v.startswith("/home/olduser/") for x in copy.read_bytes().splitlines()
                   for v in folder_values(x))


def test_the_repair_remaps_workspace_roots_and_leaves_tool_calls_and_their_output(tmp_path):
    hb, threads = _home(tmp_path, n=1, history=True)
    path = threads[0].path
    _append(path, _world_state(f"{OLD}/proj"), _settings(f"{OLD}/proj"), _mcp_call(f"{OLD}/proj"))
    before = state(hb.root)
    proc = repair(hb.root, f"{OLD}={NEW}", extra=["--apply", "--json"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = _lines(path)
    st = [x for x in lines if x["payload"].get("type") == "thread_settings_applied"]
    assert st[-1]["payload"]["thread_settings"]["runtime_workspace_roots"] == [f"{NEW}/proj"]
    assert [x for x in lines if x["payload"].get("type") == "mcp_tool_call_end"] == [_mcp_call(f"{OLD}/proj")]
    ws = [x for x in lines if x["type"] == "world_state"][-1]["payload"]["state"]["environments"]
    assert ws["environments"]["local"]["cwd"] == f"{NEW}/proj"
    assert all(not v.startswith(OLD + "/") for x in path.read_bytes().splitlines() for v in folder_values(x))
    rb = frun("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert state(hb.root) == before


def test_the_repair_leaves_an_mcp_tool_call_and_its_structured_output(tmp_path):
    hb, threads = _home(tmp_path, n=1, history=False)
    _append(threads[0].path, _mcp_call(f"{OLD}/proj"))
    proc = repair(hb.root, f"{OLD}={NEW}", extra=["--apply", "--json"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _lines(threads[0].path)[-1] == _mcp_call(f"{OLD}/proj")
    assert _lines(threads[0].path)[0]["payload"]["cwd"] == f"{NEW}/proj"


def _main_scripts(tmp_path):
    """The scripts as the main branch had them before the editor (its journals: v2 `line1` and
    `rollout_rewrite` records); skipped where the clone lacks that commit."""
    dest = tmp_path / "main-before"
    dest.mkdir()
    try:
        tar = subprocess.run(["git", "-C", str(REPO), "archive", MAIN_BEFORE, "scripts"], capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"commit {MAIN_BEFORE} is not in this clone")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest / "scripts"


def _run_main(scripts, name, home, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "SESSION_MIGRATION", "FAULTRUN"))}
    return faultrun.script_run([sys.executable, str(scripts / name), "--codex-dir", str(home), *args],
                               capture_output=True, text=True, env=env, check=False)


@pytest.mark.parametrize("kind", ["repair", "migration"])
def test_a_journal_written_by_main_before_the_editor_is_undone(tmp_path, kind):
    scripts = _main_scripts(tmp_path)
    hb, threads = _home(tmp_path, n=2, history=True)
    if kind == "migration":
        hb.write_config("a-much-longer-provider", ["openai", "a-much-longer-provider"])
    before = state(hb.root)
    args = ["--remap-prefix", f"{OLD}={NEW}", "--no-unarchive"] if kind == "repair" else []
    proc = _run_main(scripts, "session_repair.py" if kind == "repair" else "provider_migrate.py", hb.root,
                     *args, "--apply", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    journal = sorted((hb.root / ".tmp" / "session-migration").glob("*/journal.jsonl"))[-1]
    ops = {json.loads(x)["op"] for x in journal.read_text().splitlines()}
    assert ("rollout_rewrite" if kind == "repair" else "line1") in ops and "offsets" in ops
    assert state(hb.root) != before
    listed = frun("rollback.py", hb.root, "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    rb = frun("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert state(hb.root) == before


def test_real_codex_rollout_folder_records(world):
    """The folder records of a rollout real 0.171 writes (a thread and its fork): remapping the
    project's parent changes exactly the session_meta, turn_context, world_state and
    thread_settings_applied lines, and leaves no old folder in any `"cwd"` of those lines; message
    text (the environment context the model saw) keeps it."""
    from sessionkit.codexfiles.rollout_cwd import line_cwds
    proj = world.project()
    parent = world.make_threads(1, "mockA", cwd=proj)[0]
    with world.app() as app:
        fork = app.request("thread/fork", {"threadId": parent})["thread"]["id"]
        app.turn(fork, "in the fork")
    old = str(proj.parent)
    remaps = [(old, "/elsewhere/projects")]
    kinds, kept = set(), set()
    for path in sorted(world.home.glob("sessions/**/*.jsonl")):
        for n, line in enumerate(path.read_bytes().splitlines()):
            obj = json.loads(line)
            kind = obj["type"] if obj["type"] != "event_msg" else obj["payload"]["type"]
            edit = plan_line(line, remaps, first=n == 0)
            assert edit.problem is None, (kind, edit.problem)
            new = apply_spans(line, edit.spans, True)
            if edit.spans:
                kinds.add(kind)
                assert not any(c == old or c.startswith(old + "/") for c in line_cwds(new)), kind
            elif old.encode() in line:
                kept.add(kind)
    assert kinds == {"session_meta", "turn_context", "world_state", "thread_settings_applied"}
    assert kept <= {"response_item"}, kept  # the environment context message: content
