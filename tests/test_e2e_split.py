"""Issue 12, told with the real Codex: archive two threads, repair (unarchive), continue one of
them, roll back. The continued thread is left alone whole (row and file together), the other is
archived again; every thread stays readable and its archived flag matches its folder."""
import json
import os

from codex_client import CodexError


def test_rollback_after_continuing_an_unarchived_thread_never_splits_it(world):
    ids = world.make_threads(3)
    world.archive(ids[0], ids[1])
    assert world.script("session_repair.py", "--unarchive", "--apply").returncode == 0
    with world.app() as app:  # the user continues thread 0 after the repair
        app.request("thread/resume", {"threadId": ids[0]})
        app.turn(ids[0], "one more thing")
    rb = world.script("rollback.py", "--latest", "--apply", "--json")
    assert rb.returncode == 1, rb.stdout + rb.stderr  # a conflict reported, not an error
    out = json.loads(rb.stdout)
    assert out["conflicts"] >= 1 and all(ids[0] in c for c in out["conflict_sample"])
    assert out["result"]["files_moved_back"] == 1  # thread 1 only
    for tid, path, archived in world.db("SELECT id, rollout_path, archived FROM threads"):
        assert os.path.isfile(path), tid
        assert bool(archived) == ("/archived_sessions/" in path), (tid, path, archived)
    with world.app() as app:
        turns = {}
        for t in ids:
            try:
                turns[t] = len(app.read_thread(t)["turns"])
            except CodexError as exc:
                turns[t] = str(exc)
    assert turns == {ids[0]: 2, ids[1]: 1, ids[2]: 1}
    assert world.listed_ids() == sorted([ids[0], ids[2]])
    assert world.listed_ids(archived=True) == [ids[1]]
