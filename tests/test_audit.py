"""session_audit.py on hand-built homes with the real 0.169 schema: exact numbers, no writes."""
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import faultrun  # script runs forked (tests/faultrun.py)

from harness import SCRIPTS, snapshot
from homebuilder import HomeBuilder, build_broken_home


def audit(home: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    e.update(env or {})
    return faultrun.script_run([sys.executable, str(SCRIPTS / "session_audit.py"), "--codex-dir",
                                str(home), *args], capture_output=True, text=True, env=e, check=False)


def audit_json(home: Path, *args: str) -> dict:
    proc = audit(home, "--json", *args)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def broken(tmp_path):
    return build_broken_home(tmp_path / ".codex")


def test_clean_home_exit_0(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    for _ in range(3):
        hb.add()
    proc = audit(hb.root)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.splitlines()[-1] == "Nothing is hidden and the index matches the files: nothing to run."
    r = audit_json(hb.root)
    assert r["counts"] == {"sessions_rollouts": 3, "archived_rollouts": 0, "rollouts_total": 3,
                           "threads_total": 3, "threads_active": 3, "threads_archived": 0}
    assert r["visibility"]["visible"] == 3


def test_broken_home_counts(broken):
    r = audit_json(broken.root)
    # files: 17 rollouts written, 1 deleted; + 1 .zst; malformed name not counted
    assert r["counts"] == {"sessions_rollouts": 15, "archived_rollouts": 2, "rollouts_total": 17,
                           "threads_total": 15, "threads_active": 13, "threads_archived": 2}
    assert r["distribution"]["model_provider"] == {"openai": 12, "oldprov": 3}
    assert r["distribution"]["source"] == {"cli": 13, "exec": 1, "vscode": 1}
    assert r["distribution"]["cwd"] == {"/work/proj": 12, "/work/other": 3}


def test_broken_home_integrity(broken):
    i = audit_json(broken.root)["integrity"]
    by_note = {n: t for n, t in zip(
        ["h0", "h1", "h2", "h3", "o0", "o1", "o2", "exec", "ar1", "ar2", "missing", "orph_old",
         "orph_new", "empty", "mismatch", "moved", "bad"], broken.threads)}
    expect = {
        "disk_not_in_db": [by_note["orph_old"].id, by_note["orph_new"].id, "0195aaaa-0000-7000-8000-000000000001"],
        "db_not_on_disk": [by_note["missing"].id],
        "missing_rollout_path": [by_note["missing"].id, by_note["moved"].id],
        "stale_rows": [by_note["missing"].id, by_note["moved"].id],
        "rollout_path_outside_home": [by_note["moved"].id],
        "provider_mismatch": [by_note["mismatch"].id],
        "duplicate_rollout_id": [],
        "archive_mismatches": [],
        "duplicate_db_paths": [],
        "session_meta_id_mismatch": [],
        "compressed_rollouts": 1,
        "line1_unreadable": 2,  # the BOM file and the .zst that is only a zstd magic number (read now)
        "malformed_file_names": 1,
        "missing_active_rows": 4,  # 2 orphans, the moved row's real file, the .zst
        "missing_archived_rows": 0,
    }
    for key, want in expect.items():
        if isinstance(want, int):
            assert i[f"{key}_count"] == want, key
        else:
            assert i[f"{key}_count"] == len(want), key
            assert sorted(i[f"{key}_sample"]) == sorted(want), key
    moved = {k: i["moved_home"][k] for k in ("old_prefix", "new_prefix", "rows", "remap_arg")}
    assert moved == {"old_prefix": "/home/olduser/.codex", "new_prefix": str(broken.root),
                     "rows": 1, "remap_arg": f"--remap-prefix /home/olduser/.codex={broken.root}"}
    # no session's cwd lies under /home/olduser: the narrower .codex remap is the one printed
    assert (i["moved_home"]["cwd_rows"], i["moved_home"]["old_user_prefix"]) == (0, None)


def test_broken_home_visibility(broken):
    by_note = {n: t for n, t in zip(
        ["h0", "h1", "h2", "h3", "o0", "o1", "o2", "exec", "ar1", "ar2", "missing", "orph_old",
         "orph_new", "empty", "mismatch", "moved", "bad"], broken.threads)}
    v = audit_json(broken.root)["visibility"]
    assert v["provider"] == "openai" and v["provider_source"] == "config.toml"
    assert v["hidden"] == {"archived": 2, "missing_rollout_file": 1, "line1_unreadable": 2,
                           "only_session_meta": 0, "other_provider": 4, "non_interactive_source": 1,
                           "cwd": 0, "cwd_folder_gone": 0}
    # visible: 4 healthy, the empty preview (Codex derives it from the rollout), moved (file found
    # by id), 2 unindexed orphans; the corrupt line 1 is listed by no default listing (0.171)
    assert v["visible"] == 8
    # a DB-only listing misses the orphans, the moved row's stale path and the empty preview, and
    # shows two rows the default listing hides: it reads no line 1 (corrupt; another provider there)
    assert v["db_only_hidden"] == {"rollout_not_indexed": 2, "stale_rollout_path": 1, "empty_preview": 1,
                                   "db_provider_differs": 0, "db_cwd_differs": 0, "db_archived": 0}
    assert v["db_only_extra"] == 2
    assert sorted(v["db_only_extra_sample"]) == sorted([by_note["bad"].id, by_note["mismatch"].id])
    assert v["visible_db_only"] == 6  # the 4 healthy rows, the corrupt line 1, the line-1 mismatch
    assert v["rollout_not_indexed"] == 2
    assert v["providers_without_config"] == ["oldprov"]
    cwd = audit_json(broken.root, "--cwd", "/work/proj")["visibility"]
    assert cwd["visible"] == 8 and cwd["hidden"]["cwd"] + cwd["hidden"]["cwd_folder_gone"] == 0
    other = audit_json(broken.root, "--cwd", "/nowhere")["visibility"]
    # hidden by the folder filter; as a folder that is gone where /work/proj does not exist here
    gone = 0 if os.path.isdir("/work/proj") else 8
    assert other["visible"] == 0 and (other["hidden"]["cwd"], other["hidden"]["cwd_folder_gone"]) == (8 - gone, gone)
    p = audit_json(broken.root, "--provider", "oldprov")["visibility"]
    assert p["provider_source"] == "--provider"
    assert p["visible"] == 4  # 3 oldprov cwd /work/other + the line-1 mismatch


def test_broken_home_orphans(broken):
    o = audit_json(broken.root)["orphans"]
    assert (o["count"], o["importable"], o["active_orphans"]) == (3, 1, 2)
    reasons = sorted(e["reason"].split(":")[0] for e in o["active_orphan_sample"])
    assert reasons == ["ACTIVE_ORPHAN", "ACTIVE_ORPHAN"]
    assert o["importable_sample"][0]["thread_id"] == broken.threads[11].id


def test_text_report_and_exit_1(broken):
    proc = audit(broken.root)
    assert proc.returncode == 1
    assert proc.stdout.startswith(f"=== Codex Session Audit: {broken.root} ===\n")
    assert "  4 were made under another provider (oldprov); the editors list only openai's" in proc.stdout
    assert "--remap-prefix /home/olduser/.codex=" in proc.stdout
    assert proc.stderr == ""


def test_audit_changes_nothing(broken):
    before = snapshot(broken.root)
    for args in ((), ("--json",), ("--cwd", "/x"), ("--provider", "oldprov")):
        audit(broken.root, *args)
    assert snapshot(broken.root) == before
    assert not (broken.root / "state_5.sqlite-wal").exists()
    assert not (broken.root / "state_5.sqlite-shm").exists()


def test_rows_still_in_the_wal_are_seen(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", wal=True)
    hb.add()
    writer = sqlite3.connect(str(hb.db_path))
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("UPDATE threads SET model_provider='inwal'")
    writer.commit()
    assert (hb.root / "state_5.sqlite-wal").stat().st_size > 0
    try:
        r = audit_json(hb.root)
    finally:
        writer.close()
    assert r["distribution"]["model_provider"] == {"inwal": 1}


def test_old_schema_home(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", old_schema=True)
    hb.add()
    hb.add(provider="other")
    hb.add(archived=True)
    r = audit_json(hb.root)
    assert r["counts"]["threads_total"] == 3 and r["counts"]["threads_archived"] == 1
    assert r["visibility"]["visible"] == 1
    assert r["visibility"]["hidden"]["other_provider"] == 1


def test_profile_and_sqlite_home(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(provider="work")
    dbdir = tmp_path / "dbs"
    dbdir.mkdir()
    os.replace(hb.db_path, dbdir / "state_5.sqlite")
    (hb.root / "config.toml").write_text(
        f'model_provider = "openai"\nprofile = "job"\nsqlite_home = "{dbdir}"\n'
        '[profiles.job]\nmodel_provider = "work"\n[model_providers.work]\nname = "w"\n')
    r = audit_json(hb.root)
    # Codex 0.169+ refuses the legacy `profile` key: the running Codex uses the top-level provider
    assert r["config"]["model_provider"] == "openai"
    assert r["config"]["provider_source"] == "config.toml"
    assert (r["config"]["legacy_profile"], r["config"]["profile_provider"]) == (True, "work")
    assert any("legacy `profile = \"job\"`" in f and "--profile job" in f for f in r["findings"])
    assert r["state_db"]["path"] == str(dbdir / "state_5.sqlite")
    assert r["state_db"]["reason"] == "state_5.sqlite in sqlite_home in config.toml"
    assert r["visibility"]["visible"] == 0 and r["visibility"]["hidden"]["other_provider"] == 1
    assert r["surfaces"]["tui_all"]["visible"] == 1  # the TUI lists every provider


def test_second_state_db_is_reported(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add()
    (hb.root / "sqlite").mkdir()
    other = HomeBuilder(tmp_path / "desktop")
    other.add()
    other.add()
    os.replace(other.db_path, hb.root / "sqlite" / "state_5.sqlite")
    r = audit_json(hb.root)
    assert r["state_db"]["path"] == str(hb.db_path)
    assert len(r["other_state_dbs"]) == 1
    assert r["other_state_dbs"][0]["path"] == str(hb.root / "sqlite" / "state_5.sqlite")
    assert r["other_state_dbs"][0]["counts"]["threads_total"] == 2


@pytest.mark.parametrize("case", ["no-folder", "no-db", "not-sqlite", "no-threads", "bad-toml",
                                  "missing-column", "bad-flag"])
def test_bad_input_is_one_line_exit_2(tmp_path, case):
    home = tmp_path / ".codex"
    if case != "no-folder":
        hb = HomeBuilder(home)
        hb.add()
    args = []
    if case == "no-db":
        hb.db_path.unlink()
    elif case == "not-sqlite":
        hb.db_path.write_bytes(b"this is not a database" * 100)
    elif case == "no-threads":
        hb.sql("DROP TABLE threads")
    elif case == "missing-column":
        hb.sql("DROP INDEX idx_threads_provider")
        hb.sql("ALTER TABLE threads DROP COLUMN model_provider")
    elif case == "bad-toml":
        (home / "config.toml").write_text('model_provider = "unterminated\n')
    elif case == "bad-flag":
        args = ["--max-samples", "zero"]
    before = snapshot(home) if home.exists() else {}
    proc = audit(home, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (snapshot(home) if home.exists() else {}) == before


def test_reverted_thread_with_several_rollout_files_is_not_a_duplicate(tmp_path):
    """From 0.148 a reverted thread may own `<thread>_<rollout>.jsonl` files: one thread, no duplicate."""
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add()
    stem = t.path.name[:-len(".jsonl")]
    for n in (1, 2):
        (t.path.parent / f"{stem}_0195beef-0000-7000-8000-00000000000{n}.jsonl").write_bytes(t.path.read_bytes())
    r = audit_json(hb.root)
    assert r["counts"]["sessions_rollouts"] == 3
    assert r["integrity"]["duplicate_rollout_id_count"] == 0
    assert r["integrity"]["malformed_file_names_count"] == 0
    assert r["integrity"]["disk_not_in_db_count"] == 0
