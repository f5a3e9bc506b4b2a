"""Printed commands at the edges: a flag only as spelled in full (an abbreviation is never copied
into a printed command), path values absolute whatever the user typed, the export's import
command built from the real script path; long result lines wrapped to the terminal."""
import os
import shlex
import sys
from pathlib import Path

import pytest

import faultrun  # script runs forked (tests/faultrun.py)

from harness import run_script
from homebuilder import HomeBuilder

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
ALL = ("session_audit.py", "session_repair.py", "provider_migrate.py", "session_import.py", "rollback.py",
       "session_export.py", "session_recover.py")


@pytest.mark.parametrize("script", ALL)
def test_an_abbreviated_flag_is_refused(tmp_path, script):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add()
    extra = {"session_import.py": ("--from", str(hb.root)), "session_export.py": ("--all",)}.get(script, ())
    proc = run_script(script, "--codex", str(hb.root), *extra)
    assert proc.returncode == 2 and "unrecognized arguments: --codex" in proc.stderr, proc.stdout + proc.stderr


def _words_after(text, script):
    line = next(ln.strip() for ln in text.splitlines() if script in ln and ln.startswith("  "))
    return shlex.split(line)


def test_restore_db_prints_absolute_paths_when_typed_relative(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    hb.add(provider="oldco")
    assert run_script("provider_migrate.py", "--codex-dir", str(hb.root), "--apply").returncode == 0
    run = next(p for p in (hb.root / ".tmp" / "session-migration").iterdir() if p.is_dir())
    backup = next(run.glob("state_5.sqlite.*bak"))
    proc = faultrun.script_run([sys.executable, str(SCRIPTS / "rollback.py"), "--codex-dir", str(hb.root),
                                "--restore-db", backup.name], cwd=str(run), capture_output=True, text=True)
    assert "Traceback" not in proc.stderr
    cmds = [shlex.split(ln[ln.index(sys.executable):]) for ln in (proc.stdout + proc.stderr).splitlines()
            if sys.executable + " " in ln]
    assert len(cmds) == 2, proc.stdout + proc.stderr
    for words in cmds:
        for flag in ("--restore-db", "--manifest"):
            if flag in words:
                assert os.path.isabs(words[words.index(flag) + 1]), words


def test_the_export_prints_the_real_import_command(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add()
    out = faultrun.script_run([sys.executable, str(SCRIPTS / "session_export.py"), "--codex-dir", str(hb.root), "--all",
                               "--to", "my export.tgz", "--apply"], cwd=str(tmp_path), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    words = _words_after(out.stdout, "session_import.py")
    assert words[1] == str(SCRIPTS / "session_import.py") and os.path.isabs(words[0])
    assert words[2:] == ["--from", str(tmp_path / "my export.tgz")]
    assert "<skill>" not in out.stdout


def test_export_and_recover_lines_fit_a_terminal(tmp_path):
    """A long title and folder, a moved home: every line but a command fits 100 columns, wrapped at
    spaces; the moved home's export points to session_recover.py."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    folder = "/work/" + "/".join(["a-rather-long-folder-name"] * 3)
    hb.add(provider="oldco", cwd=folder, preview="a title " * 20)
    gone = hb.add(provider="newco", preview="row from the old machine")
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?",
           ("/home/olduser/.codex/" + str(gone.path.relative_to(hb.root)), gone.id))
    outs = []
    for script, args in (("session_export.py", ("--all", "--to", str(tmp_path / "x.zip"))),
                         ("session_export.py", ("--thread", gone.id)), ("session_recover.py", ())):
        proc = run_script(script, "--codex-dir", str(hb.root), *args)
        assert proc.returncode in (0, 1), proc.stderr
        outs.append(proc.stdout)
        long = [ln for ln in proc.stdout.splitlines() if len(ln) > 100 and sys.executable not in ln
                and " " in ln.strip()]  # one path longer than the line (the test's own folder) stays whole
        assert long == [], (script, long)
    assert "session_recover.py" in outs[1] and "No session matches" in outs[1], outs[1]


def test_a_date_flag_is_copied_as_a_date_and_the_archive_path_absolute(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add()
    out = faultrun.script_run([sys.executable, str(SCRIPTS / "session_export.py"), "--codex-dir", str(hb.root),
                               "--until", "2030-01-01", "--to", "x.tgz"], cwd=str(tmp_path), capture_output=True,
                              text=True)
    words = _words_after(out.stdout, "session_export.py")
    assert words[words.index("--until") + 1] == "2030-01-01"
    assert words[words.index("--to") + 1] == str(tmp_path / "x.tgz") and words[-1] == "--apply"
