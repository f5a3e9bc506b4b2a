"""Codex 0.171 projects (the desktop app's sidebar groups) after `mv` of the user folder: the audit
names the projects whose folders are gone, the repair's --remap-prefix moves their roots (journaled),
`project/read` then shows folders that exist and `thread/list {projectId}` every thread of the
project; the rollback puts every table back."""
import json
import os

from test_e2e_compressed import _files, _ok, _tables


def _project(world, name, roots, n_threads):
    with world.app(roots[0]) as app:
        pid = app.request("project/create", {"idempotencyKey": f"key-{name}", "name": name,
                                             "roots": [{"path": str(r)} for r in roots]})["project"]["id"]
        ids = []
        for i in range(n_threads):
            tid = app.request("thread/start", {"cwd": str(roots[0]), "projectId": pid})["thread"]["id"]
            app.turn(tid, f"{name} task {i}")
            ids.append(tid)
    return pid, ids


def test_moved_user_folder_projects_are_reported_remapped_and_rolled_back(world):
    proj, other = world.user_project("proj"), world.user_project("other")
    pid, ids = _project(world, "Work", [proj, other], 2)
    loose = world.make_threads(1, cwd=proj, prompt="in no project")
    moved = world.move_user_folder("newuser")
    proj, other = world.user_project("proj"), world.user_project("other")
    with world.app(proj) as app:  # Codex itself never fixes the roots
        roots = [r["path"] for r in app.request("project/read", {"projectId": pid})["project"]["roots"]]
    assert roots and not any(os.path.isdir(r) for r in roots)

    audit = world.audit()
    integ = audit["integrity"]
    assert (integ["projects_total"], integ["projects_missing_roots_count"]) == (1, 1)
    assert integ["projects_missing_roots_sample"][0]["missing_roots"] == roots
    assert any("project(s) with folders" in f for f in audit["findings"])
    arg = integ["moved_home"]["remap_arg"].split(" ", 1)[1]
    files, tables = _files(world), _tables(world)

    plan = _ok(world.script("session_repair.py", "--remap-prefix", arg, "--json"))
    assert (plan["project_roots_to_remap"], plan["project_roots_still_missing"]) == (2, 0)
    res = _ok(world.script("session_repair.py", "--remap-prefix", arg, "--apply", "--json"))["result"]
    assert res["project_roots_remapped"] == 2
    with world.app(proj) as app:
        read = app.request("project/read", {"projectId": pid})["project"]
        assert [r["path"] for r in read["roots"]] == [str(proj), str(other)]
        listed = app.request("project/list", {})
        assert [p["id"] for p in listed["data"]] == [pid]
        in_project = sorted(t["id"] for t in app.request("thread/list", {"projectId": pid})["data"])
    assert in_project == sorted(ids)
    assert loose[0] not in in_project
    after = world.audit()["integrity"]
    assert after["projects_missing_roots_count"] == 0

    _ok(world.script("rollback.py", "--latest", "--apply", "--json"))
    assert _tables(world) == tables
    assert _files(world) == files
    with world.app(proj) as app:
        assert [r["path"] for r in app.request("project/read", {"projectId": pid})["project"]["roots"]] == roots
