"""One wording of a run's state (issue 20, duplicates report): `status` and `state` of
`rollback.py --list` are one decision (runlog/runstate.py), `state` the same words and then what to
do; a rollback's summary and result say the run's state in the words --list uses."""
import fcntl
import json
import os
import signal

from homebuilder import HomeBuilder
from test_faults import frun


def listed(root):
    return json.loads(frun("rollback.py", root, "--list", "--json").stdout)["runs"]


def _one_wording(runs):
    for r in runs:
        assert r["state"].startswith(r["status"]), r
    return [r["status"] for r in runs]


def test_list_rollback_summary_and_result_word_each_state_alike(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    old = [hb.add(provider="oldco", preview=f"old {i}") for i in range(2)]
    assert frun("provider_migrate.py", hb.root, "--apply").returncode == 0
    [r] = listed(hb.root)
    assert (r["status"], r["state"]) == ("applied", "applied (newest)")
    dry = json.loads(frun("rollback.py", hb.root, "--latest", "--json").stdout)
    assert dry["state"] == "applied (newest)"  # the summary says what --list says
    # partly rolled back: Codex holds one thread during a forced rollback
    locks = hb.root / "thread-writer-locks"
    locks.mkdir(exist_ok=True)
    fd = os.open(str(locks / f"{old[0].id}.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        rb = frun("rollback.py", hb.root, "--latest", "--apply", "--force", "--json")
    finally:
        os.close(fd)
    assert rb.returncode == 1, rb.stdout + rb.stderr
    [r] = listed(hb.root)
    assert (r["status"], r["state"]) == ("partly rolled back: 1 left alone",
                                         "partly rolled back: 1 left alone (rollback.py --latest finishes it once "
                                         "they are free)")
    assert json.loads(rb.stdout)["state"] == r["state"]
    text = frun("rollback.py", hb.root, "--latest", "--apply")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "rollback.py --list now shows the run as: rolled back" in text.stdout
    # a run that failed and undid itself, a killed one, and one applied after them
    assert frun("provider_migrate.py", hb.root, "--apply", fault="eio:journal:3").returncode == 2
    assert frun("provider_migrate.py", hb.root, "--apply", fault="kill:journal:3").returncode == -signal.SIGKILL
    statuses = _one_wording(listed(hb.root))
    assert statuses == ["rolled back", "failed, undone", "incomplete (killed?)"]
    assert listed(hb.root)[1]["state"] == "failed, undone (by itself)"
    dry = json.loads(frun("rollback.py", hb.root, "--latest", "--json").stdout)
    assert dry["state"] == listed(hb.root)[2]["state"] == "incomplete (killed?), rollback.py finishes it"
    done = json.loads(frun("rollback.py", hb.root, "--latest", "--apply", "--json").stdout)
    assert done["state"] == listed(hb.root)[2]["state"] == "rolled back"
    again = frun("rollback.py", hb.root, "--latest")
    assert again.stdout.startswith("nothing left to undo: every run recorded under ")
    assert "undone or changed nothing" in again.stdout
    assert _one_wording(listed(hb.root)) == ["rolled back", "failed, undone", "rolled back"]
