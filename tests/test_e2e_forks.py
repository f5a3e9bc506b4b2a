"""Forks judged by the real Codex CLI 0.171 (thread/fork through the app-server): a migration that
grows the parent's line 1 moves the fork's history_base with it, and Codex resumes both; a fork
Codex makes after such a run keeps the rollback from cutting its history, and Codex resumes it."""
import json
from pathlib import Path


def _path(world, tid):
    return Path(world.db("SELECT rollout_path FROM threads WHERE id=?", (tid,))[0][0])


def _base(path):
    return json.loads(path.read_bytes().split(b"\n", 1)[0])["payload"]["history_base"]


def _turns(world, ids):
    with world.app() as app:
        return {t: json.dumps(app.read_thread(t)["turns"], sort_keys=True) for t in ids}


def test_a_growing_migration_moves_the_fork_and_codex_resumes_it(world):
    parent = world.make_threads(1, "mockA", prompt="parent")[0]
    with world.app() as app:
        fork = app.request("thread/fork", {"threadId": parent})["thread"]["id"]
        app.turn(fork, "in the fork")
    end = _base(_path(world, fork))["end_byte_offset"]
    assert end == _path(world, parent).stat().st_size  # Codex records the parent's end of file
    turns_before = _turns(world, [parent, fork])
    world.set_provider("mockLongerProviderName")
    dry = json.loads(world.script("provider_migrate.py", "--json").stdout)
    assert (dry["forks_moved"], dry["skipped"], dry["candidates"]) == (1, 0, 2)
    out = json.loads(world.script("provider_migrate.py", "--apply", "--json").stdout)
    assert out["result"]["skipped_at_apply"] == [] and out["result"]["line1_rewritten"] == 2
    grown = len("mockLongerProviderName") - len("mockA")
    assert _path(world, parent).stat().st_size == end + grown
    assert _base(_path(world, fork)) == {**_base(_path(world, fork)), "thread_id": parent, "end_byte_offset": end + grown}
    assert world.listed_ids() == sorted([parent, fork])
    assert _turns(world, [parent, fork]) == turns_before
    resumed = world.resume_and_turn(fork, "the fork goes on")
    assert resumed.ok, resumed
    assert world.resume_and_turn(parent, "the parent goes on").ok


def test_a_fork_made_after_a_growing_run_survives_the_rollback(world):
    parent = world.make_threads(1, "mockA", prompt="parent")[0]
    world.set_provider("mockLongerProviderName")
    out = json.loads(world.script("provider_migrate.py", "--apply", "--json").stdout)
    assert out["result"]["line1_rewritten"] == 1
    grown_size = _path(world, parent).stat().st_size
    with world.app() as app:
        fork = app.request("thread/fork", {"threadId": parent})["thread"]["id"]
        app.turn(fork, "forked after the migration")
    assert _base(_path(world, fork))["end_byte_offset"] == grown_size
    rb = world.script("rollback.py", "--latest", "--apply", "--json")
    assert rb.returncode == 1, rb.stdout + rb.stderr
    report = json.loads(rb.stdout)
    assert fork in rb.stdout and "forked since the run" in rb.stdout and parent in rb.stdout, report
    assert _path(world, parent).stat().st_size == grown_size  # left alone: the fork still fits
    resumed = world.resume_and_turn(fork, "the fork goes on")
    assert resumed.ok, resumed
    assert world.resume_and_turn(parent, "the parent goes on").ok
