"""The audit's first screen: the diagnosis in plain words, the surfaces' numbers and the commands to
paste, in about 15 lines that fit a terminal; then only the counters that are not zero."""
import json
import os
import shlex
import subprocess
import sys

import pytest

import faultrun  # script runs forked (tests/faultrun.py)

from harness import SCRIPTS
from homebuilder import HomeBuilder, build_broken_home

PY = shlex.quote(sys.executable)


def audit(root, *args):
    return faultrun.script_run([sys.executable, str(SCRIPTS / "session_audit.py"), "--codex-dir", str(root), *args],
                               capture_output=True, text=True, check=False)


@pytest.fixture
def broken(tmp_path):
    return build_broken_home(tmp_path / "a home" / ".codex")


def first_screen(text):
    """The diagnosis: the lines before the first blank one."""
    lines = text.splitlines()
    return lines[:lines.index("")] if "" in lines else lines


def last_part(text):
    """The advice: the lines after the last blank one (what stays on screen)."""
    lines = text.splitlines()
    return lines[len(lines) - lines[::-1].index(""):] if "" in lines else lines


def test_first_screen_of_a_messy_home(broken):
    root = broken.root
    proc = audit(root)
    assert proc.returncode == 1 and proc.stderr == ""
    q = shlex.quote(str(root))
    remap = shlex.quote(f"/home/olduser/.codex={root}")
    assert first_screen(proc.stdout) == [
        f"=== Codex Session Audit: {root} ===",
        "18 sessions (15 in Codex's index, 3 only as files; 2 archived); current provider: openai.",
        "The editors' list (VS Code, desktop app) shows 8.",
        "`codex resume --all` shows 9.",
        "Hidden or at risk:",
        "  2 are archived (shown under Archived)",
        "  1 has no session file left in sessions/",
        "  2 have an unreadable first line (Codex lists none of those)",  # the BOM file, the damaged .zst
        "  4 were made under another provider (oldprov); the editors list only openai's",
        "  1 was started by `codex exec` or a subagent (never listed)",
        "  `codex resume --all` misses 3 not in Codex's index, 1 without a title",
        "  4 listed but out of date in Codex's index (2 not in it, 1 file moved, 1 no title)",
        "  1 index entry points into an old home (/home/olduser/.codex)",
        "  resuming fails for provider(s) config.toml does not define: oldprov",
    ]
    assert last_part(proc.stdout) == [
        "No command here can fix these (nothing is suggested for them):",
        '  "file deleted", 2025-03-01 10:47, /work/proj: no rollout file for this thread anywhere',
        "  (not indexed), 2025-03-01, (no folder): first line unreadable: the .zst is cut short",  # the damaged .zst
        '  "corrupt line 1", 2025-03-01 11:29, /work/proj: first line unreadable: line 1 is not JSON',
        "      (truncated or corrupt)",
        "  2 session files were written in the last minutes (maybe still in use): audit again later",
        "Run next (it shows its plan; add --apply to write, then audit again):",
        f"  {PY} {SCRIPTS}/session_recover.py --codex-dir {q} --remap-prefix {remap}"
        "  # every fix in one run, one undo (repair, migrate, import)",
        "Optional, only if you want the 2 archived sessions back in the list:",
        f"  {PY} {SCRIPTS}/session_repair.py --codex-dir {q} --unarchive",
    ]
    # the numbers on the first screen are the report's own
    r = json.loads(audit(root, "--json").stdout)
    assert r["visibility"]["visible"] == 8 and r["surfaces"]["tui_all"]["visible"] == 9
    assert r["counts"]["threads_total"] + r["integrity"]["disk_not_in_db_count"] == 18
    assert r["visibility"]["hidden"] == {"archived": 2, "missing_rollout_file": 1, "line1_unreadable": 2,
                                         "only_session_meta": 0, "other_provider": 4,
                                         "non_interactive_source": 1, "cwd": 0, "cwd_folder_gone": 0}
    assert [o["step"] for o in r["options"]] == ["unarchive"]
    assert [(u["count"], u["sessions"]) for u in r["unfixable"]] == [
        (1, ['"file deleted", 2025-03-01 10:47, /work/proj']),
        (1, ["(not indexed), 2025-03-01, (no folder)"]),  # the damaged .zst: its own reason, its own count
        (1, ['"corrupt line 1", 2025-03-01 11:29, /work/proj']),
        (2, [u["sessions"] for u in r["unfixable"]][3])]
    assert r["unfixable"][3]["reason"].startswith("written in the last minutes")



def test_the_whole_report_fits_one_screen_and_no_line_is_cut(broken):
    """About 40 lines on the sample messy home (49 before), the commands last; nothing ends in '...'."""
    out = audit(broken.root).stdout
    lines = out.splitlines()
    assert len(lines) <= 40, len(lines)
    assert lines[0].startswith("=== Codex Session Audit") and lines[-1].endswith("--unarchive")
    for line in lines:
        assert not line.rstrip().endswith("...") and "...)" not in line and "... " not in line, line
    assert "findings: none" not in out
    # each counter that means the same thing appears once: the hidden reasons are said in words
    # above, their counters (archived, missing_rollout_file, stale_rollout_path) only in --verbose
    for twin in ("threads_archived", "  archived: ", "missing_rollout_file", "stale_rollout_path",
                 "rollout_not_indexed", "visible_db_only"):
        assert twin not in out, twin
    verbose = audit(broken.root, "--verbose").stdout
    for twin in ("threads_archived", "    archived: 2", "    missing_rollout_file: 1", "    stale_rollout_path: 1"):
        assert twin in verbose, twin


def test_every_line_fits_a_terminal_and_speaks_plainly(broken):
    out = audit(broken.root).stdout
    for line in out.splitlines()[1:]:  # the heading names the home: there the path is the point
        if not line.startswith(f"  {PY} "):  # and a pasteable command is as long as its paths
            assert len(line) <= 100, line
    for jargon in ("useStateDbOnly", "DB-only", "thread/list"):
        assert jargon not in out, jargon
    words = [line for line in first_screen(out)[1:] if not line.startswith(f"  {PY} ")]
    for jargon in ("db_only", "rollout", "orphan", "_"):  # counter names wait for the details
        assert jargon not in "\n".join(words), jargon
    assert str(broken.root) not in out.replace(f"--codex-dir {shlex.quote(str(broken.root))}", "") \
        .replace(f"/home/olduser/.codex={broken.root}", "").replace(f"Audit: {broken.root} ===", "")


def test_details_show_only_non_zero_counters_with_one_line_per_pair(broken):
    lines = audit(broken.root).stdout.splitlines()
    details = lines[lines.index("") + 1:]
    assert details[0] == "Details (only what is not zero; --verbose shows every counter and samples, --json all):"
    assert "  missing_rollout_path: 2, stale_rows: 2   index entries whose file is not at the recorded path" in details
    assert "  disk_not_in_db: 3, missing_active_rows: 4   session files with no index entry" in details
    assert "  db_not_on_disk: 1   index entries whose session has no file anywhere" in details
    i = details.index("  malformed_file_names: 1   files in sessions/ whose name Codex cannot read (ignored by Codex)")
    assert details[i + 1] == "      e.g. sessions/2025/03/01/notes-from-user.jsonl"  # a path where it is the point
    text = "\n".join(details)
    for zero in ("duplicate_rollout_id", "archive_mismatches", "duplicate_db_paths", "unreadable_paths",
                 "session_meta_id_mismatch", "missing_archived_rows", "db_provider_differs", "cwd: 0"):
        assert zero not in text, zero


def test_verbose_prints_every_counter_and_json_keeps_every_key(broken):
    verbose = audit(broken.root, "--verbose").stdout
    assert first_screen(verbose) == first_screen(audit(broken.root).stdout)
    assert last_part(verbose) == last_part(audit(broken.root).stdout)
    for line in ("  duplicate_rollout_id_count: 0", "  archive_mismatches_count: 0", "  unreadable_paths_count: 0",
                 "  visible in a DB-only listing (useStateDbOnly): 6"):
        assert line in verbose.splitlines(), line
    sample = json.loads(audit(broken.root, "--json", "--sample", "1").stdout)
    alias = json.loads(audit(broken.root, "--json", "--max-samples", "1").stdout)
    assert sample["integrity"] == alias["integrity"] and sample["visibility"] == alias["visibility"]
    assert sample["integrity"]["disk_not_in_db_sample"] == ["01950000-0000-7000-8000-00000000000c"]
    for key in ("disk_not_in_db", "missing_active_rows", "stale_rows", "duplicate_rollout_id", "unreadable_paths",
                "db_not_on_disk", "missing_rollout_path", "stale_rows"):
        assert f"{key}_count" in sample["integrity"] and f"{key}_sample" in sample["integrity"]
    assert sample["counts"]["threads_archived"] == 2 and sample["visibility"]["hidden"]["archived"] == 2
    assert [s["step"] for s in sample["next_steps"]] == ["recover"]
    assert sample["next_steps"][0]["parts"] == "repair, migrate, import"


def test_first_screen_of_a_healthy_home(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    for i in range(5):
        hb.add(preview=f"session {i}")
    proc = audit(hb.root)
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [
        f"=== Codex Session Audit: {hb.root} ===",
        "5 sessions; current provider: openai.",
        "The editors' list (VS Code, desktop app) shows 5.",
        "`codex resume --all` shows 5.",
        "",
        "Nothing is hidden and the index matches the files: nothing to run.",
    ]
    assert json.loads(audit(hb.root, "--json").stdout)["next_steps"] == []


def test_only_a_provider_switch_asks_for_the_migration_only(tmp_path):
    hb = HomeBuilder(tmp_path / "h ü" / ".codex", provider="newco", providers=["newco", "oldco"])
    for i in range(3):
        hb.add(provider="oldco", preview=f"old {i}")
    hb.add(provider="newco", preview="new")
    q = shlex.quote(str(hb.root))
    out = audit(hb.root).stdout
    assert first_screen(out) == [
        f"=== Codex Session Audit: {hb.root} ===",
        "4 sessions; current provider: newco.",
        "The editors' list (VS Code, desktop app) shows 1.",
        "`codex resume --all` shows 4.",
        "Hidden or at risk:",
        "  3 were made under another provider (oldco); the editors list only newco's",
    ]
    assert last_part(out) == [
        "Run next (it shows its plan; add --apply to write, then audit again):",
        f"  {PY} {SCRIPTS}/session_recover.py --codex-dir {q}  # move sessions of other providers to newco",
    ]


def test_many_sessions_nothing_can_fix_are_one_line_with_their_count(tmp_path):
    """A hundred index entries whose files are gone: one line, the count and two names, not a
    hundred lines (the first screen stays one screen) and no command for them."""
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(preview="kept")
    for i in range(100):
        t = hb.add(preview=f"lost {i}")
        t.path.unlink()
    out = audit(hb.root).stdout
    assert last_part(out) == [
        "No command here can fix these (nothing is suggested for them):",
        '  100 sessions: no rollout file for this thread anywhere (e.g. "lost 0", 2025-03-01 09:44,',
        '      /work/proj; "lost 1", 2025-03-01 09:51, /work/proj)',
        "Nothing to run: no command here would change anything.",
    ]
    assert len(out.splitlines()) <= 20


def test_archived_sessions_are_an_option_not_advice(tmp_path):
    """A home whose only 'problem' is an archived session: no command is recommended, the
    unarchive is offered as an option, and the audit says nothing needs running."""
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(preview="kept")
    hb.add(preview="put away", archived=True)
    r = json.loads(audit(hb.root, "--json").stdout)
    assert r["next_steps"] == [] and [o["step"] for o in r["options"]] == ["unarchive"]
    assert last_part(audit(hb.root).stdout) == [
        "Nothing to run: no command here would change anything.",
        "Optional, only if you want the 1 archived session back in the list:",
        f"  {PY} {SCRIPTS}/session_repair.py --codex-dir {shlex.quote(str(hb.root))} --unarchive",
    ]


def test_surfaces_from_the_report_slot_in_and_running_codex_comes_first():
    """The report's per-surface keys (the TUI picker for a folder, why each is missing there) are
    rendered from the dict as they come; a running Codex is said before anything else, whole."""
    sys.path.insert(0, str(SCRIPTS))
    import session_audit
    holder = ("codex process (codex app-server --managed-daemon: the daemon the TUI leaves running) "
              "(pid 42): holds the writer lock of 2 sessions; stop it with: codex app-server daemon stop")
    report = {
        "codex_dir": "/h/.codex", "config": {"model_provider": "openai", "provider_source": "config.toml"},
        "counts": {"threads_total": 12, "threads_archived": 0},
        "integrity": {"disk_not_in_db_count": 0, "history_skipped_live": 2},
        "codex_running": {"running": True, "holders": [holder], "daemon_stop": "codex app-server daemon stop"},
        "visibility": {"provider": "openai", "visible": 9, "hidden": {"other_provider": 3}},
        "distribution": {"model_provider": {"openai": 9, "old": 3}},
        "surfaces": {"editors": {"label": "app-server thread/list", "visible": 9, "hidden": {"other_provider": 3}},
                     "editors_cwd": {"visible": 1, "cwd": "/work/proj", "hidden": {}},
                     "tui": {"visible": 2, "cwd": "/work/proj", "hidden": {"cwd": 10, "future_reason": 0}},
                     "tui_all": {"visible": 12, "hidden": {}}, "rules": {"x": 1}, "tui_cwd_source": "--cwd"},
        "findings": ["x"], "next_steps": [],
    }
    lines = session_audit.diagnosis(report)
    assert lines == [
        "=== Codex Session Audit: /h/.codex ===",
        "12 sessions; current provider: openai.",
        "Codex is running on this home; close it before any --apply:",
        "  codex process (codex app-server --managed-daemon: the daemon the TUI leaves running) (pid 42):",
        "      holds the writer lock of 2 sessions",
        "  stop it with:",
        "    codex app-server daemon stop",
        "2 sessions open in Codex were not checked (audit again once Codex is closed).",
        "The editors' list (VS Code, desktop app) shows 9.",
        "The TUI picker (`codex resume`) in /work/proj shows 2.",
        "Hidden or at risk:",
        "  3 were made under another provider (old); the editors list only openai's",
        "  The TUI picker (`codex resume`) in /work/proj misses 10 in other folders",
    ]
    assert " ".join(x.strip() for x in lines[3:7]) == holder.replace("; stop it with:", " stop it with:")
    assert sum("daemon stop" in x for x in lines) == 1  # the stop command once


def test_a_moved_home_codex_cannot_start_in_is_said_first():
    sys.path.insert(0, str(SCRIPTS))
    import session_audit
    report = {"codex_dir": "/new/.codex", "config": {"model_provider": "openai"}, "counts": {"threads_total": 1},
              "integrity": {"moved_home": {"rows": 1, "old_prefix": "/old/.codex"}},
              "visibility": {"provider": "openai", "visible": 1, "hidden": {}},
              "daemon_package": {"path": "/new/.codex/packages/app-server-daemon/current",
                                 "target": "/old/.codex/packages/app-server-daemon/releases/x",
                                 "problem": "points outside this Codex home: ... 'daemon executable not found'",
                                 "repoint_to": "/new/.codex/packages/app-server-daemon/releases/x"}}
    assert session_audit.diagnosis(report)[2] == \
        "Codex will not start here: its daemon link points into the old home; the repair fixes it."


def plan(script, root, *args):
    return faultrun.script_run([sys.executable, str(SCRIPTS / script), "--codex-dir", str(root), *args],
                               capture_output=True, text=True, check=False)


def test_plans_name_each_session_by_title_date_and_folder_with_readable_dates(broken):
    import re
    repair = plan("session_repair.py", broken.root, "--import-orphans", "--unarchive")
    lines = repair.stdout.splitlines()
    assert lines[3:5] == ["files to move: 2 (0 back to their recorded path, 2 out of the archive)",
                          "index entries to update: 3, to add: 1; sessions skipped: 4"]
    i = lines.index('  move (unarchive) "archived one", 2025-03-01 10:33, /work/proj')
    assert lines[i + 1] == "      archived_sessions/ -> sessions/2025/03/01/"
    i = lines.index('  update "row from the old machine", 2025-03-01 11:22, /work/proj')
    assert lines[i + 1] == "      file /home/olduser/.codex/sessions/2025/03/01/ -> sessions/2025/03/01/"
    i = lines.index('  update "archived one", 2025-03-01 10:33, /work/proj')
    assert lines[i + 1].startswith("      archived 1 -> 0; archived at 2025-03-01 10:35 -> none; "
                                   "file archived_sessions/ -> sessions/2025/03/01/; updated 2025-03-01 10:34 -> ")
    assert '  add "orphan, old (turn 0)", 2025-03-01 10:54, /work/proj' in lines
    i = lines.index('  skipped "file deleted", 2025-03-01 10:47, /work/proj')
    assert lines[i + 1] == "      no rollout file for this thread anywhere"
    migrate = plan("provider_migrate.py", broken.root).stdout.splitlines()
    i = migrate.index('  "before the key switch 0", 2025-03-01 10:05, /work/other')
    assert migrate[i + 1] == "      oldprov -> openai; first line: rewrite (same length)"
    i = migrate.index('  "db says openai, line 1 says oldprov", 2025-03-01 11:15, /work/proj')
    assert migrate[i + 1] == "      index already openai; first line: rewrite (same length)"
    for text in (repair.stdout, "\n".join(migrate)):
        assert not re.search(r"\b1[6-9]\d{8}\b", text)  # no epoch seconds
    # --sample and its alias --max-samples cut the plan the same way
    one = plan("provider_migrate.py", broken.root, "--sample", "1").stdout.splitlines()
    alias = plan("provider_migrate.py", broken.root, "--max-samples", "1").stdout.splitlines()
    assert one[:-1] == alias[:-1] and one[-1].endswith("--sample 1 --apply")  # the command echoes the flag given
    short = plan("session_repair.py", broken.root, "--sample", "1").stdout.splitlines()
    assert "  (first 1 of each shown; --sample N shows more, --json lists the ids)" in short


READER_ARGS = {"session_audit.py": ["--verbose"], "session_repair.py": [], "session_recover.py": [],
               "provider_migrate.py": [], "rollback.py": ["--list"], "session_export.py": ["--all"],
               "session_import.py": ["--from", "OTHER"]}


def test_every_script_is_tried_with_a_reader_that_stops_reading():
    assert sorted(READER_ARGS) == sorted(p.name for p in SCRIPTS.glob("*.py"))


@pytest.mark.parametrize("help_only", [False, True], ids=["report", "help"])
@pytest.mark.parametrize("script", sorted(READER_ARGS))
def test_a_reader_that_stops_reading_gets_no_error_line(broken, tmp_path, script, help_only):
    """`... | head`: the reader closes the pipe before the report is written; the script says
    nothing on stderr (no 'Broken pipe' line, no traceback), as any Unix tool, and exits 2 (0 for
    --help). Without PYTHONUNBUFFERED, as a user runs it: the output then waits in Python's buffer
    until the end, where a closed pipe once printed "Exception ignored ... BrokenPipeError"."""
    other = HomeBuilder(tmp_path / "other" / ".codex", provider="openai", providers=["openai"])
    other.add(preview="to import")
    args = ["--help"] if help_only else [a.replace("OTHER", str(other.root)) for a in READER_ARGS[script]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "PYTHONUNBUFFERED"))}
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / script), "--codex-dir", str(broken.root), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # long before the script has anything to print
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert (proc.wait(), err) == (0 if help_only else 2, "")
