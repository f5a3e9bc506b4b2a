"""Issue 24: a line-1 rewrite records its line's long base_instructions text as a `cut` and the
digests of the line without it, so a rollback judges line 1 on ~1 KB (the bytes before the text,
the bytes after it through the newline) instead of the whole ~20 KB line. Old journals (no `cut`)
are judged on the whole line, as before; a malformed `cut` refuses the journal."""
import json
import os

import pytest

from sessionkit.runlog import ops
from sessionkit.runlog.ops import CHANGED, NEW, OLD, TORN, Line1Rewrite, RecordError

TEXT = "You are Codex. " * 1500
MTIME = 1_700_000_000_000_000_000


def _rollout(path, provider="oldco", text=TEXT):
    payload = {"id": "t1", "model_provider": provider}
    if text is not None:
        payload["base_instructions"] = {"text": text}
    payload["history_mode"] = "paginated"
    meta = {"timestamp": "t", "type": "session_meta", "payload": payload}
    path.write_bytes(json.dumps(meta, separators=(",", ":")).encode() + b"\n" + b'{"type":"turn"}\n')
    os.utime(path, ns=(MTIME, MTIME))


def _applied(tmp_path, new="newco", text=TEXT):
    path = tmp_path / "rollout.jsonl"
    _rollout(path, text=text)
    op = Line1Rewrite("t1", str(path), {"model_provider": new})
    assert op.prepare(tmp_path) is None
    op.apply()
    return path, Line1Rewrite.from_record({"v": 2, "ts": "t", **op.to_record()})  # as a rollback reads it


def test_the_record_carries_the_cut_and_the_rollback_reads_only_around_it(tmp_path, monkeypatch):
    path, op = _applied(tmp_path)
    line = path.read_bytes().split(b"\n")[0]
    start = line.index(b'"base_instructions":{"text":"') + len(b'"base_instructions":{"text":"')
    assert op.cut == [start, start + len(TEXT)]
    read = []
    real, real_pread = os.read, os.pread
    monkeypatch.setattr(ops.os, "read", lambda fd, n: read.append(n) or real(fd, n))
    monkeypatch.setattr(ops.os, "pread", lambda fd, n, at: read.append(n) or real_pread(fd, n, at))
    monkeypatch.setattr(ops, "read_line1", lambda *a, **k: pytest.fail("the whole line read"))
    assert op.state() == NEW
    assert sum(read) < 200 and len(read) == 2  # not the ~22 KB line
    op.undo()
    assert Line1Rewrite.from_record({"v": 2, "ts": "t", **op.to_record()}).state() == OLD
    assert json.loads(path.read_bytes().split(b"\n")[0])["payload"]["model_provider"] == "oldco"
    assert os.stat(path).st_mtime_ns == MTIME


def test_appended_turns_are_not_a_change_and_the_undo_keeps_them(tmp_path):
    path, op = _applied(tmp_path)
    with open(path, "ab") as fh:
        fh.write(b'{"type":"turn2"}\n')
    assert op.state() == NEW
    op.undo()
    assert path.read_bytes().endswith(b'{"type":"turn"}\n{"type":"turn2"}\n')
    assert b'"model_provider":"oldco"' in path.read_bytes()


@pytest.mark.parametrize("before, after", [(b'"timestamp":"t"', b'"timestamp":"u"'),  # before the text
                                           (b'"history_mode":"paginated"', b'"history_mode":"paginatex"')])  # after
def test_a_change_around_the_text_is_seen(tmp_path, before, after):
    path, op = _applied(tmp_path)
    path.write_bytes(path.read_bytes().replace(before, after, 1))
    assert op.state() == CHANGED


def test_a_line_1_cut_short_or_joined_with_line_2_is_seen(tmp_path):
    path, op = _applied(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"}\n{", b"} {", 1))  # the newline after line 1 gone
    assert op.state() == CHANGED
    path.write_bytes(data[:op.old_len])  # line 1 without its newline
    assert op.state() == CHANGED


def test_torn_and_grown_rewrites_are_judged_on_the_cut_too(tmp_path):
    path, op = _applied(tmp_path)
    data = path.read_bytes()
    span_off = op.spans[0][0]
    path.write_bytes(data[:span_off] + op.spans[0][1][:20] + data[span_off + 20:])  # part of the old bytes back
    assert op.state() == TORN
    grown_dir = tmp_path / "g"
    grown_dir.mkdir()
    path2, grown = _applied(grown_dir, new="a-much-longer-provider-name")
    assert grown.growth > 0 and grown.cut is not None and grown.state() == NEW
    grown.undo()
    assert grown.state() == OLD and b'"model_provider":"oldco"' in path2.read_bytes()


def test_an_old_record_without_the_cut_is_judged_on_the_whole_line(tmp_path):
    path, op = _applied(tmp_path)
    rec = op.to_record()
    for k in ("cut", "old_cut_sha", "new_cut_sha"):
        rec.pop(k)
    new_line = path.read_bytes().split(b"\n")[0]  # a record before issue 24: the whole line's digests
    rec.update(old_sha=ops.sha(ops.apply_spans(new_line, op.spans, False)), new_sha=ops.sha(new_line),
               backup=None, old_file_sha=None, new_file_sha=None)
    old = Line1Rewrite.from_record({"v": 2, "ts": "t", **rec})
    assert old.cut is None and old.state() == NEW
    path.write_bytes(path.read_bytes().replace(b"You are Codex.", b"You are Xodex.", 1))  # inside the text
    old = Line1Rewrite.from_record({"v": 2, "ts": "t", **rec})
    assert old.state() == CHANGED


def test_a_line_without_long_text_records_no_cut(tmp_path):
    _path, op = _applied(tmp_path, text=None)
    assert op.cut is None and "cut" not in op.to_record() and op.state() == NEW


@pytest.mark.parametrize("edit", [
    lambda r: r.pop("old_cut_sha"),  # the three go together
    lambda r: r.update(cut=[5]),
    lambda r: r.update(cut=[r["cut"][1], r["cut"][0]]),
    lambda r: r.update(cut=[1, r["cut"][1]]),  # a span past the cut's start
    lambda r: r.update(cut=[r["cut"][0], r["old_len"] + 1]),
    lambda r: r.update(cut=[r["cut"][0], True]),
])
def test_a_malformed_cut_is_refused(tmp_path, edit):
    _path, op = _applied(tmp_path)
    rec = {"v": 2, "ts": "t", **op.to_record()}
    edit(rec)
    with pytest.raises(RecordError):
        Line1Rewrite.from_record(rec)
