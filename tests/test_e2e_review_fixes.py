"""Review defects judged by the real Codex CLI 0.171: what a rollback says when a fork made since
the run keeps part of it, and which sessions a forced rollback really put back."""
import json
import re
from pathlib import Path


def _put_back(stdout):
    m = re.search(r"(\d+) session\(s\) put\s+back:", stdout)
    return int(m.group(1)) if m else 0


def test_a_rollback_kept_partly_by_a_fork_says_so_and_finishes_once_the_fork_is_deleted(world):
    parent, other = world.make_threads(2, "mockA", prompt="parent")
    world.set_provider("mockLongerProviderName")
    assert world.script("provider_migrate.py", "--apply").returncode == 0
    with world.app() as app:
        fork = app.request("thread/fork", {"threadId": parent})["thread"]["id"]
        app.turn(fork, "forked after the growing migration")
    first = world.script("rollback.py", "--latest", "--apply")
    assert first.returncode == 1, first.stdout + first.stderr
    assert _put_back(first.stdout) == 1
    flat = " ".join(first.stdout.split())
    assert "The run stays partly rolled back while the fork made since exists" in flat
    assert "once the items left alone are free" not in flat
    again = world.script("rollback.py", "--latest", "--apply")
    assert again.returncode == 1, again.stdout + again.stderr
    flat = " ".join(again.stdout.split())
    assert "Nothing to undo" not in flat and "already undone" not in flat, again.stdout
    assert "Nothing more can be undone now" in flat and "stays partly rolled back, 1 item(s) left alone" in flat
    assert f"left alone: {parent}: forked since the run" in flat
    listed = world.script("rollback.py", "--list").stdout
    assert "partly rolled back: 1 left alone (kept while the fork made since exists)" in " ".join(listed.split())
    with world.app() as app:
        app.request("thread/delete", {"threadId": fork})
    last = world.script("rollback.py", "--latest", "--apply")
    assert last.returncode == 0, last.stdout + last.stderr
    assert json.loads(world.script("rollback.py", "--list", "--json").stdout)["runs"][0]["state"] == "rolled back"


def _two_migrated(world):
    """Two sessions of mockA, migrated (with real Codex) to a provider of a longer name."""
    ids = world.make_threads(2, "mockA", prompt="t")
    world.set_provider("mockLongerProviderName")
    assert world.script("provider_migrate.py", "--apply").returncode == 0
    return ids


def test_a_forced_rollback_while_codex_holds_a_session_counts_only_the_other(world):
    held, free = _two_migrated(world)
    with world.app() as app:
        app.request("thread/resume", {"threadId": held})
        app.turn(held, "holding")
        rb = world.script("rollback.py", "--latest", "--apply", "--force")
    assert rb.returncode == 1, rb.stdout + rb.stderr
    assert _put_back(rb.stdout) == 1, rb.stdout
    row = world.db("SELECT model_provider FROM threads WHERE id=?", (free,))[0][0]
    assert row == "mockA"


def test_a_session_codex_deleted_since_the_run_is_not_counted_as_put_back(world):
    gone, kept = _two_migrated(world)
    with world.app() as app:
        app.request("thread/delete", {"threadId": gone})
    rb = world.script("rollback.py", "--latest", "--apply")
    assert rb.returncode in (0, 1), rb.stdout + rb.stderr
    assert _put_back(rb.stdout) == 1, rb.stdout
    assert world.db("SELECT model_provider FROM threads WHERE id=?", (kept,)) == [("mockA",)]
