"""Issue 24 (second part): a same-length line-1 rewrite with a `cut` journals the lean record,
without the whole line's digests (old_sha/new_sha) that nothing reads beside the cut, and computes
no ~20 KB digest for them; records written before (with them) still roll back."""
import json
import os

import pytest

from sessionkit.runlog import ops
from sessionkit.runlog.ops import NEW, OLD, Line1Rewrite, RecordError

TEXT = "You are Codex. " * 1500
MTIME = 1_700_000_000_000_000_000


def _prepared(tmp_path, new="newco"):
    path = tmp_path / "rollout.jsonl"
    meta = {"timestamp": "t", "type": "session_meta", "payload": {
        "id": "t1", "model_provider": "oldco", "base_instructions": {"text": TEXT}, "history_mode": "paginated"}}
    path.write_bytes(json.dumps(meta, separators=(",", ":")).encode() + b"\n" + b'{"type":"turn"}\n')
    os.utime(path, ns=(MTIME, MTIME))
    op = Line1Rewrite("t1", str(path), {"model_provider": new})
    assert op.prepare(tmp_path) is None
    return path, op


def _read(rec):
    return Line1Rewrite.from_record({"v": 2, "ts": "t", **rec})


def test_a_same_length_rewrite_journals_no_whole_line_digest_and_computes_none(tmp_path, monkeypatch):
    hashed = []
    import hashlib  # ops imports it where a digest is made
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: hashed.append(len(a[0]) if a else 0) or real(*a))
    path, op = _prepared(tmp_path)
    assert max(hashed) < 1000  # only the cut's ~1 KB around the long text, never the ~20 KB line
    rec = op.to_record()
    assert op.cut is not None and op.growth == 0
    assert not {"old_sha", "new_sha", "backup", "old_file_sha", "new_file_sha"} & set(rec)
    op.apply()
    back = _read(rec)
    assert back.state() == NEW
    back.undo()
    assert _read(rec).state() == OLD and b'"model_provider":"oldco"' in path.read_bytes()
    assert os.stat(path).st_mtime_ns == MTIME


def test_a_record_written_before_with_the_whole_line_digests_still_rolls_back(tmp_path):
    path, op = _prepared(tmp_path)
    old_line = path.read_bytes().split(b"\n")[0]
    op.apply()
    new_line = path.read_bytes().split(b"\n")[0]
    rec = {**op.to_record(), "old_sha": ops.sha(old_line), "new_sha": ops.sha(new_line),  # as rb2 wrote it
           "backup": None, "old_file_sha": None, "new_file_sha": None}
    back = _read(rec)
    assert back.old_sha == ops.sha(old_line) and back.state() == NEW
    back.undo()
    assert path.read_bytes().split(b"\n")[0] == old_line and _read(rec).state() == OLD


def test_a_growing_rewrite_keeps_its_whole_line_digests(tmp_path):
    _path, op = _prepared(tmp_path, new="a-much-longer-provider-name")
    rec = op.to_record()
    assert op.growth > 0 and rec["old_sha"] and rec["new_sha"] and rec["backup"]


@pytest.mark.parametrize("edit", [
    lambda r: r.update(old_sha="0" * 64),  # one digest without the other
    lambda r: r.update(new_sha="0" * 64),
    lambda r: [r.pop(k) for k in ("cut", "old_cut_sha", "new_cut_sha")],  # no cut: the digests are required
])
def test_a_lean_record_out_of_shape_is_refused(tmp_path, edit):
    _path, op = _prepared(tmp_path)
    rec = op.to_record()
    edit(rec)
    with pytest.raises(RecordError):
        _read(rec)
