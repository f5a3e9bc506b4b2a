"""Projects (0.171 `projects`/`project_roots` in state_5): the audit's missing roots and the repair's
--remap-prefix of every root, journaled and rolled back exactly (unit level; tests/test_e2e_projects.py
checks the same with real Codex)."""
import json

from harness import run_on_home as run
from homebuilder import HomeBuilder
from sessionkit.codexfiles import projects
from sessionkit.fixes import project_remap


def _home(tmp_path):
    user = tmp_path / "olduser"
    hb = HomeBuilder(user / ".codex")
    (user / "proj").mkdir()
    hb.add(cwd=str(user / "proj"))
    hb.sql("INSERT INTO projects VALUES ('p1', 'Work', '{}', 0, 1, 1)")
    hb.sql("INSERT INTO project_roots VALUES ('p1', 0, ?)", (str(user / "proj"),))
    hb.sql("INSERT INTO project_roots VALUES ('p1', 1, '/elsewhere/never')")
    hb.sql("INSERT INTO projects VALUES ('p2', 'Gone \x1b[31m', '{}', 1, 1, 1)")
    hb.sql("INSERT INTO project_roots VALUES ('p2', 0, ?)", (str(user / "gone"),))
    return hb, user


def test_missing_roots_and_remap_ops(tmp_path):
    hb, user = _home(tmp_path)
    got = projects.load_projects(hb.db_path)
    assert [(p.id, p.roots) for p in got] == [
        ("p1", [(0, str(user / "proj")), (1, "/elsewhere/never")]), ("p2", [(0, str(user / "gone"))])]
    lost = projects.missing_roots(got)
    assert [(x["project_id"], x["missing_roots"]) for x in lost] == [
        ("p1", ["/elsewhere/never"]), ("p2", [str(user / "gone")])]
    assert lost[1]["name"] == "Gone \x1b[31m"  # JSON keeps it; the printers escape at the edge
    ops = project_remap.remap_ops(hb.db_path, lambda v: v.replace(str(user), "/home/new", 1))
    assert [(o.key, o.old, o.new) for o in ops] == [
        ({"project_id": "p1", "position": 0}, {"path": str(user / "proj")}, {"path": "/home/new/proj"}),
        ({"project_id": "p2", "position": 0}, {"path": str(user / "gone")}, {"path": "/home/new/gone"})]
    assert projects.load_projects(tmp_path / "none.sqlite") == []


def test_audit_reports_and_repair_remaps_then_rollback_restores(tmp_path):
    hb, user = _home(tmp_path)
    audit = json.loads(run("session_audit.py", hb.root, "--json").stdout)["integrity"]
    assert (audit["projects_total"], audit["projects_missing_roots_count"]) == (2, 2)
    new_user = tmp_path / "newuser"
    (new_user / "proj").mkdir(parents=True)
    before = hb.sql("SELECT * FROM project_roots ORDER BY project_id, position")
    remap = f"{user}={new_user}"
    plan = json.loads(run("session_repair.py", hb.root, "--remap-prefix", remap, "--json").stdout)
    assert (plan["project_roots_to_remap"], plan["project_roots_still_missing"]) == (2, 1)
    proc = run("session_repair.py", hb.root, "--remap-prefix", remap, "--apply", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    assert json.loads(proc.stdout)["result"]["project_roots_remapped"] == 2
    assert hb.sql("SELECT path FROM project_roots ORDER BY project_id, position") == [
        (str(new_user / "proj"),), ("/elsewhere/never",), (str(new_user / "gone"),)]
    rb = run("rollback.py", hb.root, "--latest", "--apply", "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert hb.sql("SELECT * FROM project_roots ORDER BY project_id, position") == before
