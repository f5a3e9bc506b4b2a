"""Issue 22's new user, with real Codex 0.171: the audit's advice, every printed command pasted from
another folder, applied in order until the audit recommends nothing (at most two rounds); the
session the user archived is still archived; every other session is listed again."""
import json
import re
import shlex
import subprocess
import sys

from harness import SCRIPTS

PY = shlex.quote(sys.executable)
RUN_NEXT = "Run next (it shows its plan; add --apply to write, then audit again):"


def _advice(text):
    lines = text.splitlines()
    if RUN_NEXT not in lines:
        return []
    out, i = [], lines.index(RUN_NEXT) + 1
    while i < len(lines) and lines[i].startswith(f"  {PY} "):
        out.append(lines[i].strip().split("  # ", 1)[0])
        i += 1
    return out


def _repair_has_unarchive_flag():
    out = subprocess.run([sys.executable, str(SCRIPTS / "session_repair.py"), "--help"],
                         capture_output=True, text=True, check=False).stdout
    return re.search(r"--unarchive\b", out) is not None


def test_the_advice_on_a_real_codex_home_converges_and_archived_stays_archived(world, tmp_path):
    ids = world.make_threads(3, "mockA", prompt="old work")
    world.archive(ids[2])  # put away on purpose
    world.move_home("newuser")  # the home moved
    world.set_provider("mockB")  # and the provider changed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pasted = []
    for _round in range(2):
        audit = world.script("session_audit.py")
        assert audit.returncode in (0, 1), audit.stderr
        steps = _advice(audit.stdout)
        if not steps:
            break
        for step in steps:
            dry = subprocess.run(["bash", "-c", step], cwd=str(elsewhere), capture_output=True, text=True,
                                 check=False)
            assert dry.returncode in (0, 1), dry.stdout + dry.stderr
            lines = dry.stdout.splitlines()
            i = next(n for n, x in enumerate(lines) if x.startswith("No changes applied (dry-run). To"))
            assert lines[i + 1].strip() == step + " --apply"
            done = subprocess.run(["bash", "-c", lines[i + 1].strip()], cwd=str(elsewhere), capture_output=True,
                                  text=True, check=False)
            assert done.returncode in (0, 1), done.stdout + done.stderr
            pasted.append(step)
    final = world.script("session_audit.py")
    assert _advice(final.stdout) == [], final.stdout
    assert json.loads(world.script("session_audit.py", "--json").stdout)["next_steps"] == []
    assert 1 <= len(pasted) <= 3
    listed = world.listed_ids()
    assert set(ids[:2]) <= set(listed)
    if _repair_has_unarchive_flag():  # the repair of issue 22 leaves archived sessions archived
        assert world.db("SELECT archived FROM threads WHERE id=?", (ids[2],)) == [(1,)]
        assert ids[2] not in listed
