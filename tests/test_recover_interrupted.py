"""Ctrl-C while session_recover.py --apply --rebuild-history waits for Codex: the text result
says in plain words that the run was interrupted, that what it applied stands (the histories not
rebuilt read 0 turns until opened once) and the one command that undoes it all; --json says
`interrupted` too. A fake Codex that never answers thread/resume stands in for the real one
(tests/test_e2e_interrupt.py does the same against the real 0.171)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness import SCRIPTS, clean_env, fake_codex_exe
from test_history import PaginatedHome

HANGING_CODEX = r'''#!/usr/bin/env python3
import json, os, select, sys
open(os.environ["FAKE_READY"], "w").close()
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "thread/resume":
        open(os.environ["FAKE_WAITING"], "w").close()
        select.select([sys.stdin], [], [], 120)  # busy rebuilding until Ctrl-C (its stdin then closes)
        sys.exit(0)
    if "id" in msg:
        print(json.dumps({"id": msg["id"], "result": {}}), flush=True)
'''


def _interrupted(tmp_path, *args):
    ph = PaginatedHome(tmp_path / ".codex")
    threads = [ph.add() for _ in range(2)]
    for th in threads:
        ph.delete_turns_keep_cursor(th)  # each is reset, then rebuilt by Codex
    exe = fake_codex_exe(tmp_path / "bin", HANGING_CODEX)
    waiting = tmp_path / "waiting"
    env = clean_env(FAKE_READY=str(tmp_path / "ready"), FAKE_WAITING=str(waiting))
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "session_recover.py"), "--codex-dir", str(ph.root),
                             "--apply", "--rebuild-history", "--codex-bin", str(exe), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while not waiting.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert waiting.exists(), proc.communicate()
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    return out


def test_the_text_result_of_an_interrupted_rebuild_says_so_what_stands_and_the_undo(tmp_path):
    out = _interrupted(tmp_path)
    assert "=== Session Recovery Result ===" in out
    words = " ".join(out.split())
    assert ("The run was interrupted (Ctrl-C) while your Codex rebuilt the stored histories: everything applied "
            "above stands. Your Codex rebuilt 0 of them; 2 session(s) were not rebuilt") in words
    note = words[words.index("The run was interrupted"):]
    assert note.index("The command below undoes all of it. undo all of it with: ") == note.index("The command below")
    undo = note.split("undo all of it with: ", 1)[1].split(" Verify", 1)[0]
    assert "rollback.py" in undo and undo.endswith("--apply")


def test_the_json_result_of_an_interrupted_rebuild_says_interrupted(tmp_path):
    out = json.loads(_interrupted(tmp_path, "--json"))
    assert out["history_rebuild"]["interrupted"] is True
    assert out["history_rebuild"]["rebuilt"] == 0 and len(out["history_rebuild"]["failed"]) == 2
    assert "rollback.py" in out["result"]["rollback"]
