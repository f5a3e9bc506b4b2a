"""Results in plain words: what changed (sessions by name, else title; date; folder), what was
skipped and why, the whole undo and verify commands, older runs still applied; the raw counters
only with --verbose. And a dry-run with nothing to do: one line, exit 0."""
import faultrun  # script runs forked (tests/faultrun.py)
import json
import re
import shlex
import sys

from harness import SCRIPTS
from homebuilder import HomeBuilder, build_broken_home

PY = shlex.quote(sys.executable)
COUNTERS = ("rows_to_revert", "offsets_to_revert", "other_to_undo", "db_backup:", "rows_reverted",
            "line1_rewritten", "updated_rows", "manifest_csv", "journal:", "imported_threads")


def script(name, root, *args):
    proc = faultrun.script_run([sys.executable, str(SCRIPTS / name), "--codex-dir", str(root), *args],
                               capture_output=True, text=True, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def block(text, heading):
    lines = text.splitlines()
    return lines[lines.index(f"=== {heading} ==="):]


def test_the_migration_result_names_sessions_and_gives_whole_commands(tmp_path):
    hb = HomeBuilder(tmp_path / "h ü" / ".codex", provider="newco", providers=["newco", "oldco"])
    named = hb.add(provider="oldco", preview="first prompt of the named one", cwd="/work/a")
    hb.add(provider="oldco", preview="plain title", cwd="/work/b")
    with open(hb.root / "session_index.jsonl", "w") as fh:
        fh.write(json.dumps({"id": named.id, "thread_name": "My renamed session",
                             "updated_at": "2025-03-01T00:00:00Z"}) + "\n")
    q = shlex.quote(str(hb.root))
    out = block(script("provider_migrate.py", hb.root, "--apply").stdout, "Provider Migration Result")
    assert out[1] == "Done: 2 sessions moved to newco (sessions per provider now: newco 2):"
    assert out[2:4] == ['  "My renamed session", 2025-03-01 09:37, /work/a',  # its name, as the picker shows
                        '  "plain title", 2025-03-01 09:44, /work/b']
    assert out[4] == "undo with:"
    assert out[5].startswith(f"  {PY} {SCRIPTS}/rollback.py --codex-dir {q} --manifest ") and \
        out[5].endswith(" --apply")
    assert out[6:8] == ["Verify, then restart your editor's Codex:", f"  {PY} {SCRIPTS}/session_audit.py --codex-dir {q}"]
    assert len(out) == 8
    text = "\n".join(out)
    for raw in COUNTERS:
        assert raw not in text, raw
    # a second run: the first is still applied, and said so; the counters come with --verbose
    hb.add(provider="oldco", preview="third", cwd="/work/c")
    again = block(script("provider_migrate.py", hb.root, "--apply", "--verbose").stdout, "Provider Migration Result")
    i = again.index("Older runs still applied (1; each is undone on its own, newest first):")
    assert again[i + 1].startswith("  provider_migration, ")
    assert "Counters:" in again and "  line1_rewritten: 1" in again and "  updated_rows: 1" in again


def test_a_migration_dry_run_with_nothing_to_do_is_one_line_exit_0(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(preview="already here")
    proc = script("provider_migrate.py", hb.root)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0, "Nothing to do: no session of another provider to move to openai.\n", "")


def test_the_rollback_says_what_it_put_back_by_name_not_its_counters(tmp_path):
    hb = build_broken_home(tmp_path / ".codex")
    script("provider_migrate.py", hb.root, "--apply")
    dry = script("session_audit.py", hb.root)  # noqa: F841 - the home as the user sees it
    preview = script("rollback.py", hb.root, "--latest").stdout.splitlines()
    assert preview[0] == "=== Rollback ==="
    assert preview[1].startswith("Would undo the provider migration run provider_migration_")
    assert '  "before the key switch 0", 2025-03-01 10:05, /work/other' in preview
    run_dir = sorted(p for p in (hb.root / ".tmp" / "session-migration").iterdir() if p.is_dir())[0]
    assert preview[-2] == "No changes applied (dry-run). To undo it, run:"  # and the next command
    assert preview[-1].startswith("  ") and preview[-1].endswith(f"rollback.py --codex-dir {hb.root} --manifest {run_dir} --apply")
    done = script("rollback.py", hb.root, "--latest", "--apply")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "=== Rollback Result ==="
    assert " ".join(out[1:3]).startswith("Done: the provider migration run provider_migration_")
    assert '  "before the key switch 0", 2025-03-01 10:05, /work/other' in out
    assert any(line.startswith("The DB as it was before this rollback is saved at") for line in out)
    for raw in COUNTERS:
        assert raw not in done.stdout, raw
    again = script("rollback.py", hb.root, "--latest")
    assert again.returncode == 0 and again.stdout.startswith("nothing left to undo: every run recorded under "), again.stdout


def test_the_import_result_gives_the_verify_command_and_names_the_sessions(tmp_path):
    src = HomeBuilder(tmp_path / "old" / ".codex")
    src.n = 500
    src.add(preview="from the old laptop", cwd="/work/old")
    dst = HomeBuilder(tmp_path / "new" / ".codex")
    dst.add(preview="mine")
    q = shlex.quote(str(dst.root))
    proc = script("session_import.py", dst.root, "--from", str(src.root), "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = block(proc.stdout, "Session Import Result")
    assert out[1] == "Done: 1 session imported:"
    assert re.fullmatch(r'  "from the old laptop", \d{4}-\d\d-\d\d \d\d:\d\d, /work/old', out[2]), out[2]
    assert "Verify: run session_audit.py" not in proc.stdout
    i = out.index("Verify, then restart your editor's Codex:")
    assert out[i + 1] == f"  {PY} {SCRIPTS}/session_audit.py --codex-dir {q}"
    assert out[out.index("undo with:") + 1].startswith(f"  {PY} {SCRIPTS}/rollback.py --codex-dir {q} --manifest ")
    for raw in COUNTERS:
        assert raw not in "\n".join(out), raw
    # the same import again: nothing to do, one line, exit 0
    again = script("session_import.py", dst.root, "--from", str(src.root))
    assert (again.returncode, again.stdout) == (0, f"Nothing to do: all 1 session(s) of {src.root} are already here.\n")


def test_the_recovery_says_what_it_recovered_by_name_not_its_counters(tmp_path):
    """session_recover.py's result, as the other writers say theirs: the sessions by name or title,
    the one undo for all of it and the verify command; its counters only with --verbose."""
    hb = build_broken_home(tmp_path / ".codex")
    done = script("session_recover.py", hb.root, "--apply")
    assert done.returncode in (0, 1), done.stderr
    out = done.stdout.splitlines()
    i = out.index("=== Session Recovery Result ===")
    assert " ".join(out[i + 1:i + 3]).startswith("Done: ") and "recovered in one run" in " ".join(out[i + 1:i + 3])
    assert '  "before the key switch 0", 2025-03-01 10:05, /work/other' in out[i:]
    undo = out[out.index("undo all of it with:") + 1].strip()
    assert undo.startswith(f"{PY} {SCRIPTS}/rollback.py ") and undo.endswith(" --apply")
    assert "Verify, then restart your editor's Codex:" in out
    for raw in ("changes: ", "providers now: {", "applied:", "row_update"):
        assert raw not in done.stdout, raw
    script("rollback.py", hb.root, "--latest", "--apply")
    verbose = script("session_recover.py", hb.root, "--apply", "--verbose")
    assert "row_update" in verbose.stdout  # the counters, when asked for


def test_a_quoted_path_with_spaces_in_a_note_is_never_broken_across_lines():
    """A note names a path quoted as a command would (ui/commands.quote); wrapping breaks the
    words around it, never the spaces inside it, so the path reads (and pastes) whole."""
    sys.path.insert(0, str(SCRIPTS))
    from sessionkit.ui.commands import quote
    from sessionkit.ui.results import WIDTH, Outcome, render, wrap
    path = "/home/me/My Documents/codex backups/state_5.sqlite.pre_rollback_20261207T120000"
    words = "The DB as it was before this rollback is saved at "
    for text in [words * k + quote(p) for k in (1, 2) for p in (path, path + "\x1b]52;c;x\x07")]:
        lines = wrap(text)
        assert len(lines) > 1 and " ".join(x.strip() for x in lines) == text
        held = [x for x in lines if "'/home/me/My Documents/codex backups/state_5" in x]
        assert len(held) == 1, lines
    out = render(Outcome(heading="H", done="Done.", changed=["x " * 30 + quote(path)], notes=[words + quote(path)]))
    assert sum(1 for x in out if "'/home/me/My Documents/codex backups/" in x) == 2
    assert all(len(x) <= WIDTH or "'" in x for x in out)
