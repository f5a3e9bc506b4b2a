"""session_recover.py judged by the real Codex CLI: a provider switch, a moved user folder and
unindexed files at once, fixed by one run; every surface (the editors' lists, `codex resume` in the
project folder and with --all, thread/read) shows every session; one rollback puts the index back."""
import json
import os

from test_e2e_stories import NONE_MISSING, _ok, _rows


def test_one_recovery_run_fixes_provider_moved_folder_and_unindexed_files(world):
    proj = world.user_project("proj")
    old = world.make_threads(2, provider="mockA", cwd=proj, prompt="before the switch")
    new = world.make_threads(2, provider="mockB", cwd=proj, prompt="after the switch")
    ids = sorted(old + new)
    assert world.listed_ids() == sorted(new)  # the editors list only mockB's
    world.stop_home_processes()
    unindexed = [old[1], new[1]]
    for (path,) in world.db(f"SELECT rollout_path FROM threads WHERE id IN ({','.join('?' * len(unindexed))})",
                            tuple(unindexed)):
        stamp = os.stat(path).st_mtime - 3600  # not written for an hour: not a session being written
        os.utime(path, (stamp, stamp))
    world.db(f"DELETE FROM threads WHERE id IN ({','.join('?' * len(unindexed))})", tuple(unindexed))
    moved = world.move_user_folder("newuser")
    proj = world.user_project("proj")
    before = _rows(world)

    audit = world.audit()
    assert [s["step"] for s in audit["next_steps"]] == ["recover"]
    plan = json.loads(_ok(world.script("session_recover.py", "--json"), (0, 1)).stdout)
    assert plan["remap"] == [f"{moved['old_user']}={moved['new_user']}"]
    assert plan["by_cause"] == {"moved home": 2, "unindexed files": 2}, plan["by_cause"]
    assert plan["sessions"] == 4 and plan["planned_provider_row_updates"] == 1  # old[0]; old[1] is added as mockB
    res = json.loads(_ok(world.script("session_recover.py", "--apply", "--json"), (0, 1)).stdout)["result"]
    assert res["provider_distribution_after"] == {"mockB": 4}
    after = world.audit()
    assert after["visibility"]["hidden_total"] == 0 and after["next_steps"] == [], after["visibility"]

    s = world.surfaces(proj)  # the TUI picker here and with --all, the editors, thread/read
    assert s.shown_everywhere(ids) == NONE_MISSING
    assert s.turns == {t: 1 for t in ids}
    assert {r.directory for r in s.picker.rows} == {str(proj)}

    world.stop_home_processes()
    _ok(world.script("rollback.py", "--latest", "--apply"), (0, 1))
    rows = _rows(world)
    assert {t: (r[0], r[2], r[3]) for t, r in rows.items()} == \
        {t: (r[0], r[2], r[3]) for t, r in before.items()}
