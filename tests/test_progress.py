"""The progress line: on a terminal only, only for phases longer than about a second."""
import io

from sessionkit.ui import progress as progress_mod
from sessionkit.ui.progress import Progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_no_line_when_not_a_terminal():
    out = io.StringIO()
    p = Progress(out)
    p.phase("x")
    for n in range(1, 5):
        p.tick("reading", n, 4)
    p.done()
    assert out.getvalue() == ""


def _on_a_terminal(monkeypatch, phase):
    """A progress line on a terminal, its phase begun, and the clock it reads."""
    clock = [100.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: clock[0])
    out = Tty()
    p = Progress(out)
    p.phase(phase)
    return out, p, clock


def test_line_after_a_second_on_a_terminal(monkeypatch):
    out, p, clock = _on_a_terminal(monkeypatch, "reading")
    p.tick("reading line 1 of each rollout", 1, 3)
    assert out.getvalue() == ""  # a short phase prints nothing
    clock[0] += 1.5
    p.tick("reading line 1 of each rollout", 2, 3)
    assert out.getvalue() == "\rreading line 1 of each rollout: 2/3\x1b[K"
    p.done()
    assert out.getvalue().endswith("\r\x1b[K")


def test_a_batch_line_stays_on_a_terminal_and_clears_the_progress_line(monkeypatch):
    out, p, clock = _on_a_terminal(monkeypatch, "writing files")
    clock[0] += 1.5
    p.tick("writing files", 1, 2)
    p.note("batch 2 of 3: 64 session(s)")
    assert out.getvalue() == "\rwriting files: 1/2\x1b[K\r\x1b[Kbatch 2 of 3: 64 session(s)\n"
    quiet = io.StringIO()
    Progress(quiet).note("batch 2 of 3: 64 session(s)")
    assert quiet.getvalue() == ""


def test_a_phase_without_counts_shows_its_time_after_a_second_and_clears():
    """`working`: an import phase with nothing to count (extracting an archive, reading a home)."""
    import time as real_time
    out = Tty()
    p = Progress(out)
    with p.working("reading old-home.tar.gz"):
        pass  # a short phase: nothing
    assert out.getvalue() == ""
    with p.working("reading old-home.tar.gz"):
        real_time.sleep(1.5)
    text = out.getvalue()
    assert text.startswith("\rreading old-home.tar.gz... 1 s\x1b[K") and text.endswith("\r\x1b[K")
    quiet = io.StringIO()
    with Progress(quiet).working("reading"):
        real_time.sleep(1.2)
    assert quiet.getvalue() == ""


def test_the_import_of_a_slow_archive_shows_progress_on_a_terminal(tmp_path):
    """session_import.py on a pseudo-terminal: reading a source that takes over a second prints a
    progress line on stderr; without a terminal nothing."""
    import os
    import pty
    import subprocess
    import sys
    from harness import SCRIPTS
    from homebuilder import HomeBuilder
    src = HomeBuilder(tmp_path / "old" / ".codex")
    src.n = 300
    src.add(preview="old")
    dst = HomeBuilder(tmp_path / "new" / ".codex")
    dst.add(preview="mine")
    slow = ("import sys, time, runpy; sys.path.insert(0, sys.argv[1]); "
            "import sessionkit.fixes.importer as im; real = im.read_source; "
            "im.read_source = lambda s, **kw: (time.sleep(1.6), real(s, **kw))[1]; "
            "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    args = [sys.executable, "-c", slow, str(SCRIPTS), str(SCRIPTS / "session_import.py"),
            "--codex-dir", str(dst.root), "--from", str(src.root)]
    master, slave = pty.openpty()
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=slave, check=False)
    os.close(slave)
    err = b""
    try:
        while True:
            chunk = os.read(master, 4096)
            if not chunk:
                break
            err += chunk
    except OSError:
        pass
    os.close(master)
    assert proc.returncode == 0, proc.stdout
    assert b"reading the source's sessions... 1 s" in err
    piped = subprocess.run(args, capture_output=True, check=False)
    assert piped.stderr == b""
