"""The progress line: on a terminal only, only for phases longer than about a second."""
import io

from sessionkit import progress as progress_mod
from sessionkit.progress import Progress


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
