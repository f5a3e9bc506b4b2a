"""One rule for which rollout file is a thread's (sessionkit/codexfiles/thread_files.py), on the
ambiguous cases: a revert's segments, a compressed twin beside its plain file, a compressed file
alone, the same name in sessions/ and archived_sessions/, a row naming a segment or nothing."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from sessionkit.codexfiles.rollout_index import RolloutFile  # noqa: E402
from sessionkit.codexfiles.thread_files import (candidates, first_file, first_files, history_key,  # noqa: E402
                                                is_duplicate, is_segment, thread_file)

T = "0195aaaa-0000-7000-8000-000000000001"
R = "0195aaaa-0000-7000-8000-0000000000ff"
S = "/h/sessions/2026/01/02/"
A = "/h/archived_sessions/"
FIRST = f"rollout-2026-01-02T03-04-05-{T}.jsonl"
SEG = f"rollout-2026-01-03T03-04-05-{T}_{R}.jsonl"


def rf(path):
    name = path.rsplit("/", 1)[1]
    return RolloutFile(path, path.startswith(A), T, "2026-01-02", name.endswith(".zst"), False)


def test_names_give_the_history_key_and_say_what_is_a_segment():
    assert history_key(FIRST) == T and history_key(SEG) == R and history_key(SEG.upper().replace("ROLLOUT", "rollout")
                                                                               .replace("JSONL", "jsonl")) == R
    assert history_key(FIRST + ".zst") == T and history_key("notes.jsonl") is None
    assert history_key("notes.jsonl", T) == T
    assert is_segment(SEG) and not is_segment(FIRST) and not is_segment(FIRST + ".zst") and not is_segment("a_b.jsonl")


def test_the_row_names_the_thread_file_even_a_segment_or_a_compressed_one():
    first, seg = rf(S + FIRST), rf(S + SEG)
    assert thread_file([first, seg], S + SEG) is seg and thread_file([first, seg], S + FIRST) is first
    zst = rf(S + FIRST + ".zst")
    assert thread_file([zst, seg], S + FIRST) is zst  # a row keeps the .jsonl path of a compressed file
    plain = rf(S + FIRST)
    assert thread_file([zst, plain], S + FIRST) is plain  # the plain file beside it wins, as in Codex


def test_without_a_row_only_one_candidate_is_the_threads_and_nobody_guesses():
    first, seg, zst = rf(S + FIRST), rf(S + SEG), rf(S + FIRST + ".zst")
    assert thread_file([first]) is first and thread_file([zst]) is zst
    assert thread_file([first, zst]) is first and candidates([first, zst]) == [first]  # a twin is no second file
    assert thread_file([first, seg]) is None and len(candidates([first, seg])) == 2  # a revert: ambiguous
    both = [rf(S + FIRST), rf(A + FIRST)]
    assert thread_file(both) is None and thread_file(both, "/elsewhere/" + FIRST) is None
    assert thread_file([first, seg], "/gone/" + FIRST, row_only=True) is None
    assert thread_file([first], "/gone/" + FIRST, row_only=True) is None and thread_file([first], "/gone/x") is first
    assert thread_file([]) is None


def test_the_first_rollout_and_duplicates():
    first, seg, zst, arch = rf(S + FIRST), rf(S + SEG), rf(S + FIRST + ".zst"), rf(A + FIRST)
    assert first_file([first, seg]) is first and first_file([seg]) is None
    assert first_file([first, zst, seg]) is first and first_file([first, arch]) is None
    assert first_files([first, seg, zst]) == [first, zst]
    assert not is_duplicate([first, seg]) and not is_duplicate([first])
    assert is_duplicate([first, arch])  # one name in both folders
    assert is_duplicate([first, zst])  # kept as the audit always counted it (two files named as the first)


def test_a_repair_points_a_stale_row_at_the_plain_file_not_its_compressed_twin(tmp_path):
    """A row naming a folder that is gone, and on disk the rollout with its compressed twin beside
    it: the plain file is the thread's (Codex reads it), so the row is pointed at it; before the
    one rule the repair called the thread ambiguous and left the row broken."""
    import json
    import subprocess
    from homebuilder import HomeBuilder
    from test_faults import frun
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco"])
    t = hb.add(provider="newco", row_path=f"/old/home/.codex/sessions/2025/01/01/{FIRST}")
    subprocess.run(["zstd", "-q", "-k", str(t.path)], check=True)
    out = frun("session_repair.py", hb.root, "--json")
    plan = json.loads(out.stdout)
    reasons = {s["thread_id"]: s["reason"] for s in plan.get("skipped_sample", [])}
    assert t.id not in reasons, reasons
    done = frun("session_repair.py", hb.root, "--apply", "--json")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert hb.sql("SELECT rollout_path FROM threads WHERE id=?", (t.id,)) == [(str(t.path),)]
