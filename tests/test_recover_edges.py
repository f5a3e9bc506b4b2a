"""session_recover.py at the edges: a compressed rollout is decompressed first (as Codex's resume
does) and undone by the one command the result prints; what the apply refused (a hard-linked
rollout) is never reported as recovered, and the dry-run says so before."""
import json
import os
import shutil
import subprocess

import pytest

from harness import run_script
from homebuilder import HomeBuilder
from test_migrate_rollback import home_state

needs_zstd = pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd program is not installed")


def recover(home, *args, expect=(0, 1)):
    proc = run_script("session_recover.py", "--codex-dir", str(home), *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in expect, proc.stdout + proc.stderr
    return proc


def two_old_provider_home(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    hb.t = [hb.add(provider="oldco", preview=f"old provider {i}") for i in range(2)]
    return hb


@needs_zstd
def test_a_compressed_rollout_is_decompressed_recovered_and_undone_by_the_printed_command(tmp_path):
    hb = two_old_provider_home(tmp_path)
    cold = hb.t[0].path
    subprocess.run(["zstd", "-q", "--rm", str(cold)], check=True)
    before = home_state(hb.root)
    dry = json.loads(recover(hb.root, "--json").stdout)
    assert dry["decompress_first"] == 1 and dry["sessions"] == 2
    out = recover(hb.root, "--apply", expect=(0,))
    assert "Done: 2 sessions recovered" in out.stdout, out.stdout
    assert "1 compressed session(s) were decompressed first" in out.stdout
    assert cold.is_file() and not os.path.exists(str(cold) + ".zst")
    assert '"model_provider":"newco"' in cold.read_text(encoding="utf-8").split("\n", 1)[0]
    again = json.loads(recover(hb.root, "--json", expect=(0,)).stdout)
    assert again["sessions"] == 0 and again["apply_command"] is None  # the advice converges
    audit = json.loads(run_script("session_audit.py", "--codex-dir", str(hb.root), "--json").stdout)
    assert audit["visibility"]["hidden_total"] == 0 and audit["visibility"]["visible"] == 2
    undo = out.stdout.split("undo all of it with:\n", 1)[1].split("\n", 1)[0].strip()
    assert " --until " in undo and "Older runs" not in out.stdout
    rb = subprocess.run(undo, shell=True, capture_output=True, text=True)
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert home_state(hb.root) == before  # the .zst back byte for byte, the rows as they were


def test_a_hard_linked_rollout_is_predicted_skipped_and_never_reported_recovered(tmp_path):
    hb = two_old_provider_home(tmp_path)
    linked = hb.t[0]
    os.link(str(linked.path), str(tmp_path / "backup-copy.jsonl"))
    dry = json.loads(recover(hb.root, "--json").stdout)
    assert dry["sessions"] == 1
    assert [s["thread_id"] for s in dry["skipped_sample"]] == [linked.id]
    assert "hard-linked (2 names" in dry["skipped_sample"][0]["reason"]
    out = recover(hb.root, "--apply", expect=(1,))
    assert "Done: 1 session recovered" in out.stdout, out.stdout
    done = out.stdout.split("Done:", 1)[1].split("Skipped", 1)[0]
    assert "old provider 1" in done and "old provider 0" not in done
    assert "old provider 0" in out.stdout.split("Skipped", 1)[1]
    assert '"model_provider":"oldco"' in linked.path.read_text(encoding="utf-8").split("\n", 1)[0]


def test_the_result_counts_what_was_applied_not_what_was_planned(tmp_path):
    """A thread the apply skips (the journal's skip) is named as skipped, not as recovered."""
    import sys
    sys.path.insert(0, str(os.path.join(os.path.dirname(__file__), "..", "scripts")))
    import session_recover
    from sessionkit.codexfiles.home import open_home
    from sessionkit.diagnose.snapshot import gather
    from sessionkit.fixes.recover import RecoverOptions, plan_recover
    hb = two_old_provider_home(tmp_path)
    home = open_home(str(hb.root), None)
    plan = plan_recover(gather(home), RecoverOptions())
    result = {"provider_distribution_after": {"newco": 1, "oldco": 1}, "archived_after": 0,
              "rollback": "rb", "skipped_at_apply": [{"thread_id": hb.t[1].id, "reason": "why not"}]}
    o = session_recover.recovery_outcome(home, plan, {}, result, {})
    assert o.done.startswith("Done: 1 session recovered") and o.changed == [hb.t[0].id]
    assert (hb.t[1].id, "why not") in o.skipped


def test_a_symlinked_sessions_folder_is_read_as_codex_reads_it_and_never_written(tmp_path):
    """sessions/ moved to another disk and linked back: Codex lists and reads it; the audit counts
    its sessions, the recovery names why it does not write there (never outside the home)."""
    from harness import snapshot
    hb = two_old_provider_home(tmp_path)
    fine = hb.add(provider="newco", preview="fine one")
    disk = tmp_path / "disk"
    shutil.move(str(hb.root / "sessions"), str(disk))
    os.symlink(str(disk), str(hb.root / "sessions"))
    audit = json.loads(run_script("session_audit.py", "--codex-dir", str(hb.root), "--json").stdout)
    vis, integ = audit["visibility"], audit["integrity"]
    assert (vis["visible"], vis["hidden"]["other_provider"]) == (1, 2), vis
    assert integ["missing_rollout_path_count"] == 0 and integ["db_not_on_disk_count"] == 0, integ
    text = run_script("session_audit.py", "--codex-dir", str(hb.root)).stdout
    assert "no session file" not in text and "symlink out of the Codex home" in text, text
    before = snapshot(disk)
    r = json.loads(recover(hb.root, "--json").stdout)
    assert r["sessions"] == 0 and r["skipped"] == 2
    assert {s["thread_id"] for s in r["skipped_sample"]} == {t.id for t in hb.t}
    assert all("symlink out of the Codex home" in s["reason"] for s in r["skipped_sample"])
    recover(hb.root, "--apply")
    assert snapshot(disk) == before and fine.id


@pytest.mark.parametrize("old_home", ["/home/a=b/.codex", "/home/ctl\x01x/.codex", "rel/home/.codex", "//", "//x/../y"])
def test_an_odd_old_home_in_one_row_is_never_turned_into_a_remap(tmp_path, old_home):
    """A row naming its file under an old home no remap can name (`=`, a control character,
    relative, `/` itself, not normal): the audit and the recovery work on, no --remap-prefix is
    suggested or used, and no other session's folder is rewritten."""
    hb = HomeBuilder(tmp_path / ".codex")
    keep = [hb.add(preview=f"fine {i}") for i in range(2)]
    odd = hb.add(preview="odd row")
    rel = str(odd.path.relative_to(hb.root))
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", (old_home + ("" if old_home.endswith("/") else "/") + rel, odd.id))
    audit = run_script("session_audit.py", "--codex-dir", str(hb.root))
    assert audit.returncode in (0, 1) and audit.stderr == "", audit.stderr
    assert "--remap-prefix" not in audit.stdout, audit.stdout
    report = json.loads(run_script("session_audit.py", "--codex-dir", str(hb.root), "--json").stdout)
    assert report["integrity"]["moved_home"] is None
    dry = json.loads(recover(hb.root, "--json").stdout)
    assert dry["remap"] == [] and "--remap-prefix" not in (dry["apply_command"] or "")
    recover(hb.root, "--apply")
    cwds = dict(hb.sql("SELECT id, cwd FROM threads"))
    assert [cwds[t.id] for t in keep + [odd]] == ["/work/proj"] * 3
    for t in keep:
        assert '"cwd":"/work/proj"' in t.path.read_text(encoding="utf-8").split("\n", 1)[0]


@pytest.mark.parametrize("arg", ["/=/x", "//=/x", "/a//b=/x", "/a/./b=/x", "/a/../b=/x", "/x=/"])
def test_a_remap_of_the_root_or_a_path_that_is_not_normal_is_refused(tmp_path, arg):
    hb = two_old_provider_home(tmp_path)
    proc = recover(hb.root, "--remap-prefix", arg, expect=(2,))
    assert proc.stderr.count("\n") == 1 and "--remap-prefix" in proc.stderr and proc.stdout == ""
