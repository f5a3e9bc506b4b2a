"""The audit agrees with the real Codex CLI: `codex doctor --json` and a default `thread/list`."""
import os

import pytest

from harness import REPO, snapshot

pytestmark = pytest.mark.compat  # audit vs `codex doctor`: also on the older Codex releases

DOCTOR_TO_AUDIT = {
    "rollout DB active files": ("counts", "sessions_rollouts"),
    "rollout DB archived files": ("counts", "archived_rollouts"),
    "rollout DB rows": ("counts", "threads_total"),
    "rollout DB active rows": ("counts", "threads_active"),
    "rollout DB archived rows": ("counts", "threads_archived"),
    "rollout DB missing active rows": ("integrity", "missing_active_rows_count"),
    "rollout DB missing archived rows": ("integrity", "missing_archived_rows_count"),
    "rollout DB stale rows": ("integrity", "stale_rows_count"),
    "rollout DB archive mismatches": ("integrity", "archive_mismatches_count"),
    "rollout DB duplicate rollout thread ids": ("integrity", "duplicate_rollout_id_count"),
    "rollout DB duplicate DB paths": ("integrity", "duplicate_db_paths_count"),
    "rollout DB malformed file names": ("integrity", "malformed_file_names_count"),
}


def _dist(text: str) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, v = part.rsplit("=", 1)
        out[k] = int(v)
    return out


def assert_audit_matches_codex(world) -> dict:
    """Every number doctor reports equals the audit's; the audit's visible count equals thread/list."""
    doctor = world.doctor()
    audit = world.audit()
    for key, (section, field) in DOCTOR_TO_AUDIT.items():
        assert int(doctor[key]) == audit[section][field], (key, doctor[key], audit[section][field])
    assert _dist(doctor["rollout DB model providers"]) == audit["distribution"]["model_provider"]
    assert _dist(doctor["rollout DB sources"]) == audit["distribution"]["source"]
    db_only = world.listed_ids(useStateDbOnly=True)  # first: a default listing re-indexes the DB
    assert audit["visibility"]["visible_db_only"] == len(db_only), (audit["visibility"], db_only)
    listed = world.listed_ids()
    assert audit["visibility"]["visible"] == len(listed), (audit["visibility"], listed)
    return audit


def test_clean_home_agrees_and_has_no_findings(world):
    world.make_threads(3)
    audit = assert_audit_matches_codex(world)
    assert audit["counts"]["threads_total"] == 3
    assert audit["visibility"]["visible"] == 3
    assert audit["findings"] == []
    assert world.script("session_audit.py").returncode == 0


def test_two_providers_hides_the_other_providers_threads(world):
    a = world.make_threads(3, "mockA")
    b = world.make_threads(2, "mockB")
    world.make_exec(provider="mockB")
    audit = assert_audit_matches_codex(world)
    vis = audit["visibility"]
    assert (vis["provider"], vis["visible"]) == ("mockB", 2)
    assert vis["hidden"]["other_provider"] == 3
    assert vis["hidden"]["non_interactive_source"] == 1
    assert sorted(vis["hidden_sample"]["other_provider"]) == sorted(a)
    assert world.listed_ids() == sorted(b)
    # judged for the other provider, the other threads are the visible ones
    assert world.audit("--provider", "mockA")["visibility"]["visible"] == 3


def test_archived_threads_are_counted_and_hidden(world):
    ids = world.make_threads(4)
    world.archive(ids[0], ids[1])
    audit = assert_audit_matches_codex(world)
    assert audit["counts"]["archived_rollouts"] == 2
    assert audit["counts"]["threads_archived"] == 2
    assert audit["visibility"]["hidden"]["archived"] == 2
    assert audit["visibility"]["visible"] == 2


def test_deleted_rollout_and_deleted_row(world):
    ids = world.make_threads(4)
    path = world.db("SELECT rollout_path FROM threads WHERE id=?", (ids[0],))[0][0]
    os.unlink(path)
    world.db("DELETE FROM threads WHERE id=?", (ids[1],))
    audit = assert_audit_matches_codex(world)  # doctor and the audit before the listing re-indexes
    integ = audit["integrity"]
    assert integ["db_not_on_disk_count"] == 1 and integ["db_not_on_disk_sample"] == [ids[0]]
    assert integ["disk_not_in_db_count"] == 1 and integ["disk_not_in_db_sample"] == [ids[1]]
    assert integ["missing_rollout_path_count"] == 1
    assert audit["orphans"]["count"] == 1
    assert audit["visibility"]["hidden"]["missing_rollout_file"] == 1
    assert audit["visibility"]["rollout_not_indexed"] == 1
    assert integ["missing_active_rows_count"] == 1 and integ["stale_rows_count"] == 1
    assert audit["visibility"]["visible"] == 3


def test_moved_home_names_the_old_prefix(world):
    world.make_threads(3)
    old = world.home
    new = world.move_home("otheruser")
    audit = assert_audit_matches_codex(world)
    integ = audit["integrity"]
    assert integ["rollout_path_outside_home_count"] == 3
    assert integ["moved_home"]["old_prefix"] == str(old)
    assert integ["moved_home"]["new_prefix"] == str(new)
    assert integ["stale_rows_count"] == 3


def test_duplicate_paths_and_archive_mismatch_agree_with_doctor(world):
    ids = world.make_threads(3)
    p0 = world.db("SELECT rollout_path FROM threads WHERE id=?", (ids[0],))[0][0]
    world.db("UPDATE threads SET rollout_path=? WHERE id=?", (p0, ids[1]))
    world.db("UPDATE threads SET archived=1, archived_at=1 WHERE id=?", (ids[2],))
    doctor = world.doctor()
    audit = world.audit()
    for key, (section, field) in DOCTOR_TO_AUDIT.items():
        assert int(doctor[key]) == audit[section][field], (key, doctor[key], audit[section][field])


def test_skill_installs_and_codex_lists_it(world):
    world.install_skill()
    with world.app() as app:
        result = app.request("skills/list", {"cwds": [str(world.project())]})
    skills = [s for entry in result["data"] for s in entry["skills"]]
    ours = [s for s in skills if s["name"] == "codex-session-migration"]
    assert len(ours) == 1, [s["name"] for s in skills]
    skill_md = (REPO / "SKILL.md").read_text(encoding="utf-8")
    description = skill_md.split("description:", 1)[1].split("\n", 1)[0].strip().strip('"')
    assert ours[0]["description"] == description
    yaml_text = (REPO / "agents" / "openai.yaml").read_text(encoding="utf-8")
    iface = ours[0]["interface"]
    for key, field in (("display_name", "displayName"), ("short_description", "shortDescription"),
                       ("default_prompt", "defaultPrompt")):
        line = next(l for l in yaml_text.splitlines() if l.strip().startswith(key + ":"))
        assert iface[field] == line.split(":", 1)[1].strip().strip('"'), field


def test_audit_is_read_only_while_app_server_runs(world):
    ids = world.make_threads(2)
    with world.app() as app:
        app.read_thread(ids[0])
        live = app.start_thread(world.project(), "still open")
        before = snapshot(world.home)
        proc = world.script("session_audit.py", "--json")
        after = snapshot(world.home)
    assert proc.returncode == 1, proc.stderr
    import json
    report = json.loads(proc.stdout)
    assert report["codex_running"]["running"] is True
    assert any("codex process" in h for h in report["codex_running"]["holders"])
    assert live in report["codex_running"]["live_threads"]
    assert any(f.startswith("Codex is running") for f in report["findings"])
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    # Codex itself may write its own logs/WAL meanwhile; our audit must add nothing of its own
    assert not {k for k in changed if "session-migration" in k}
    assert report["counts"]["threads_total"] == 3


def test_cwd_filter_and_empty_preview_agree_with_thread_list(world):
    here = world.make_threads(2, cwd=world.project("here"))
    world.make_threads(3, cwd=world.project("there"))
    world.db("UPDATE threads SET preview='' WHERE id=?", (here[1],))
    vis = world.audit("--cwd", str(world.project("here")))["visibility"]
    # an empty DB preview hides a thread only from a DB-only listing: the default one reads the rollout
    assert vis["visible"] == len(world.listed_ids(cwd=str(world.project("here")))) == 2
    assert vis["visible_db_only"] == len(world.listed_ids(cwd=str(world.project("here")),
                                                          useStateDbOnly=True)) == 1
    assert vis["hidden"]["cwd"] == 3 and vis["db_only_hidden"]["empty_preview"] == 1
    assert_audit_matches_codex(world)
