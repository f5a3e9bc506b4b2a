"""A line-1 rewrite reads its file again only when the file's signature (device, inode, size,
mtime, ctime) moved since it was read: apply() after prepare() and a rollback's judgement under the
lock after the plan's skip the second read when nothing changed, and still see every change."""
import json
import os

import pytest

from sessionkit.runlog import ops
from sessionkit.runlog.ops import CHANGED, NEW, OLD, Line1Rewrite

TEXT = "You are Codex. " * 1500


def _rollout(path, provider="oldco"):
    meta = {"timestamp": "t", "type": "session_meta", "payload": {"id": "t1", "model_provider": provider,
                                                                   "base_instructions": {"text": TEXT}}}
    path.write_bytes(json.dumps(meta, separators=(",", ":")).encode() + b"\n" + b'{"type":"turn"}\n')
    os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))


@pytest.fixture
def reads(monkeypatch):
    calls = []
    real, real_cut = ops.read_line1, Line1Rewrite._judge_cut

    def counted(path, *a, **k):
        calls.append(str(path))
        return real(path, *a, **k)

    def counted_cut(self):  # a rollback's judgement reads line 1 without its long text (issue 24)
        calls.append(self.path)
        return real_cut(self)
    monkeypatch.setattr(ops, "read_line1", counted)
    monkeypatch.setattr(Line1Rewrite, "_judge_cut", counted_cut)
    return calls


def _prepared(tmp_path):
    path = tmp_path / "rollout.jsonl"
    _rollout(path)
    op = Line1Rewrite("t1", str(path), {"model_provider": "newco"})
    assert op.prepare(tmp_path) is None
    return path, op


def test_apply_after_prepare_does_not_read_again(tmp_path, reads):
    path, op = _prepared(tmp_path)
    del reads[:]
    op.apply()
    assert reads == []
    assert json.loads(path.read_bytes().split(b"\n")[0])["payload"]["model_provider"] == "newco"
    assert os.stat(path).st_mtime_ns == 1_700_000_000_000_000_000


def test_a_same_size_change_with_the_mtime_put_back_is_still_seen_by_apply(tmp_path, reads):
    path, op = _prepared(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"You are Codex.", b"You are Xodex.", 1))  # same size
    os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))  # ctime moved
    with pytest.raises(AssertionError, match="changed under the lock"):
        op.apply()
    assert b"Xodex" in path.read_bytes() and b'"newco"' not in path.read_bytes()


def test_the_rollbacks_second_judgement_reads_only_when_the_file_moved(tmp_path, reads):
    path, op = _prepared(tmp_path)
    op.apply()
    del reads[:]
    assert op.state() == NEW and len(reads) == 1
    assert op.state() == NEW and len(reads) == 1  # the same file: judged once
    with open(path, "ab") as fh:
        fh.write(b'{"type":"turn2"}\n')  # Codex continued the thread
    assert op.state() == NEW and len(reads) == 2
    data = path.read_bytes()
    st = os.stat(path)
    path.write_bytes(data.replace(b'"timestamp":"t"', b'"timestamp":"u"', 1))  # someone else's same-size rewrite
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert op.state() == CHANGED and len(reads) == 3
    path.write_bytes(data.replace(b'"newco"', b'"oldco"', 1))
    assert op.state() in (OLD, "torn") and len(reads) == 4
