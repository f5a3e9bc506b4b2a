"""The real Codex TUI in a pseudo-terminal (a private tmux server): start `codex resume`, read the
session picker off the screen, map its rows to thread ids, quit.

Codex 0.171's TUI starts a managed app-server daemon that outlives it; `Tui.close()` quits the
TUI and, unless told to keep it, stops that daemon (see harness.stop_home_processes)."""
from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from codex_client import active_version, codex_bin, codex_env

TMUX = shutil.which("tmux") or "/usr/bin/tmux"
_ids = itertools.count()
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SEPARATOR = re.compile(r"^─{10,}")
FOOTER = re.compile(r"(\d+)\s*/\s*(\d+)\s*·")
ROW_MARK = ("›", "⌄")
EXITED = "[codex exited with status "


class TuiError(AssertionError):
    pass


def tmux_available() -> bool:
    return os.path.exists(TMUX) or shutil.which("tmux") is not None


@dataclass
class PickerRow:
    """One session row of the resume picker, as printed; `thread_id` once the row was expanded."""
    age: str
    title: str
    selected: bool = False
    thread_id: Optional[str] = None
    directory: Optional[str] = None


@dataclass
class Picker:
    """What the picker shows: its rows in order, the count in its footer, the tab and filter."""
    rows: List[PickerRow]
    total: int
    status_tab: str = "Active"
    filter: str = "Cwd"
    empty_text: str = ""
    screen: str = field(default="", repr=False)

    @property
    def titles(self) -> List[str]:
        return [r.title for r in self.rows]

    @property
    def ids(self) -> List[str]:
        return sorted(r.thread_id for r in self.rows if r.thread_id)


class Tui:
    """One `codex <args>` in its own tmux server of a fixed size, with this home."""

    def __init__(self, home: Path, cwd: Path, args: List[str], version: Optional[str] = None,
                 width: int = 160, height: int = 50, env_extra: Optional[Dict[str, str]] = None
                 ) -> None:
        self.home = home
        self.cwd = cwd
        self.version = version or active_version()
        self.socket = f"cstest-{os.getpid()}-{next(_ids)}"
        cmd = " ".join(shlex.quote(a) for a in [str(codex_bin(self.version)), *args])
        env = codex_env(home, **(env_extra or {}))
        env.pop("NO_COLOR", None)  # the picker marks its selected tab only with bold/underline
        env["TERM"] = "xterm-256color"
        # the shell stays after Codex exits, so its last words (an error) stay on the screen
        shell = f"{cmd}; s=$?; printf '\\n{EXITED}%s]\\n' \"$s\"; exec sleep 3600"
        subprocess.run([TMUX, "-L", self.socket, "-f", "/dev/null", "new-session", "-d",
                        "-s", "main", "-x", str(width), "-y", str(height), "-c", str(cwd), shell],
                       env=env, check=True, capture_output=True, timeout=30)
        self.closed = False

    # --- the screen --------------------------------------------------------------------
    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True,
                              timeout=30, check=check)

    def screen(self, styled: bool = False, joined: bool = False) -> str:
        """The visible screen as text (with SGR escapes when styled; lines the terminal wrapped
        joined back when joined)."""
        args = ["capture-pane", "-p", "-t", "main"] + (["-e"] if styled else []) + \
            (["-J"] if joined else [])
        return self._tmux(*args).stdout

    def alive(self) -> bool:
        """Codex still runs in the pane (the shell prints EXITED when it ends)."""
        return EXITED not in self.screen()

    def exit_status(self) -> Optional[int]:
        found = re.search(re.escape(EXITED) + r"(\d+)\]", self.screen())
        return int(found.group(1)) if found else None

    def wait_for(self, pred: Callable[[str], bool], timeout: float = 30, what: str = "") -> str:
        """Poll the screen until pred(screen) holds; on timeout fail with the last screen."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if pred(text):
                return text
            if not self.alive():
                text = self.screen()
                if pred(text):
                    return text
                raise TuiError(f"codex exited while waiting for {what}:\n{text}")
            time.sleep(0.15)
        raise TuiError(f"no {what} on screen after {timeout}s:\n{text}")

    def wait_stable(self, settle: float = 0.4, timeout: float = 10) -> str:
        """The screen once it stopped changing for `settle` seconds."""
        deadline = time.monotonic() + timeout
        last = self.screen()
        since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.screen()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= settle:
                return now
        return last

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "main", *keys)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "main", "-l", text)

    # --- the resume picker -------------------------------------------------------------
    def wait_picker(self, timeout: float = 60) -> Picker:
        """The picker once its list has loaded (a footer count, or its empty-list text)."""
        text = self.wait_for(_picker_ready, timeout, "session picker")
        return parse_picker(self.wait_stable(), self.screen(styled=True)) if text else Picker([], 0)

    def picker(self, with_ids: bool = True, timeout: float = 60) -> Picker:
        """Every row of the picker; with_ids expands each row in turn to read its session id."""
        pick = self.wait_picker(timeout)
        if not with_ids or not pick.rows:
            return pick
        if pick.total > len(pick.rows):
            raise TuiError(f"picker shows {len(pick.rows)} of {pick.total} rows: make the terminal taller")
        self.keys("Home")
        for i, row in enumerate(pick.rows):
            if i:
                self.keys("Down")
            self.keys("C-e")
            text = self.wait_for(lambda s, t=row.title: _expanded_title(s) == t, 10,
                                 f"details of row {i} ({row.title!r})")
            found = re.search(r"Session:\s+(" + UUID + ")", text)
            row.thread_id = found.group(1) if found else None
            found = re.search(r"Directory:\s+(\S.*?)\s*$", text, re.M)
            row.directory = found.group(1) if found else None
            self.keys("C-e")
            self.wait_for(lambda s: "Session:" not in s, 10, "the row to collapse")
        return pick

    def focus(self, group: str, timeout: float = 10) -> None:
        """Move the Tab focus to one option group of the header ('Filter', 'Status', 'Sort')."""
        for _ in range(6):
            if _focused_group(self.screen(styled=True)) == group:
                return
            self.keys("Tab")
            time.sleep(0.2)
        raise TuiError(f"could not focus {group}:\n{self.screen()}")

    def choose(self, group: str, option: str) -> Picker:
        """Pick an option of a header group (e.g. Status: Archived) and read the picker again."""
        self.focus(group)
        for _ in range(4):
            if _selected_option(self.screen(styled=True), group) == option:
                break
            self.keys("Right")
            time.sleep(0.3)
        else:
            raise TuiError(f"could not choose {group}: {option}:\n{self.screen()}")
        self.keys("Tab")  # leave the header so arrows browse rows again
        time.sleep(0.3)
        self.wait_stable()
        return self.picker()

    def quit(self, timeout: float = 15) -> None:
        """Ctrl-C, as a user leaves the picker; the pane must end."""
        if self.alive():
            self.keys("C-c")
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.1)

    def close(self) -> None:
        """Quit Codex, end the tmux server and its pane, and wait until both are gone."""
        if self.closed:
            return
        self.closed = True
        pids = []
        try:
            out = self._tmux("display-message", "-p", "-t", "main", "#{pid} #{pane_pid}", check=False)
            pids = [int(x) for x in out.stdout.split()]
            self.quit()
        finally:
            self._tmux("kill-server", check=False)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(_running(p) for p in pids):
                time.sleep(0.05)
            for pid in pids:
                if _running(pid):
                    try:
                        os.kill(pid, 9)
                    except OSError:
                        pass


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie of ours is reaped by its parent, tmux or init)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _picker_ready(text: str) -> bool:
    if "Resume a previous session" not in text:
        return False
    return bool(FOOTER.search(text)) or "No sessions" in text


def _expanded_title(text: str) -> Optional[str]:
    """The title of the row whose details are open (marked ⌄), if any."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("⌄") and i + 1 < len(lines) and "Session:" in lines[i + 1]:
            return _split_row(line)[1]
    return None


def _split_row(line: str):
    body = line.strip()
    selected = body.startswith(ROW_MARK)
    if selected:
        body = body[1:].strip()
    parts = re.split(r"\s{2,}", body, maxsplit=1)
    age, title = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
    title = title.lstrip("●").strip()
    return age, title, selected


def parse_picker(text: str, styled: str = "") -> Picker:
    """Rows between the search line and the footer rule; detail lines (│ ...) are skipped."""
    lines = text.splitlines()
    rows: List[PickerRow] = []
    total = 0
    empty = ""
    start = next((i for i, l in enumerate(lines) if l.startswith(" Filter:")), 0) + 3
    for line in lines[start:]:
        if SEPARATOR.match(line.strip()):
            found = FOOTER.search(line)
            total = int(found.group(2)) if found else 0
            break
        stripped = line.strip()
        if not stripped or stripped.startswith(("│", "└")):
            continue
        if "No sessions" in stripped or stripped.startswith("No "):
            empty = stripped
            continue
        age, title, selected = _split_row(line)
        rows.append(PickerRow(age=age, title=title, selected=selected))
    return Picker(rows=rows, total=total if rows else 0, empty_text=empty,
                  status_tab=_selected_option(styled, "Status") or "Active",
                  filter=_selected_option(styled, "Filter") or "Cwd", screen=text)


_OPTIONS = {"Filter": ("Cwd", "All"), "Status": ("Active", "Archived"), "Sort": ("Updated", "Created")}


def _header_line(styled: str) -> str:
    return next((l for l in styled.splitlines() if "Filter:" in ANSI.sub("", l)), "")


def _selected_option(styled: str, group: str) -> Optional[str]:
    """The bold option of a header group (the selected one)."""
    line = _header_line(styled)
    for opt in _OPTIONS[group]:
        if re.search(r"\x1b\[1(;4)?m " + opt + " ", line):
            return opt
    return None


def _focused_group(styled: str) -> Optional[str]:
    """The group whose selected option is underlined (bold+underline = focused)."""
    line = _header_line(styled)
    found = re.search(r"\x1b\[1;4m (\w+) ", line)
    if not found:
        return None
    for group, opts in _OPTIONS.items():
        if found.group(1) in opts:
            return group
    return None
