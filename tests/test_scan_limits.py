"""A small file cannot make a read-only scan fill memory, and a cut `.zst` says it is cut."""
import json
import sys
from pathlib import Path

import pytest

import faultrun  # script runs forked (tests/faultrun.py)

from test_zstd import ZSTD, compress, needs_zstd, readers  # noqa: F401 (fixture)
from sessionkit.codexfiles import rollout_scan, zstd

META = {"type": "session_meta", "payload": {"id": "0199a0b0-0000-7000-8000-000000000001",
                                             "timestamp": "2025-01-01T00:00:00Z", "cwd": "/work/p",
                                             "model_provider": "openai", "source": "cli"}}
USER = {"type": "event_msg", "payload": {"type": "user_message", "message": "after the long line"}}


def _rollout(path: Path, long_line: int) -> Path:
    with open(path, "wb") as fh:
        fh.write(json.dumps(META).encode() + b"\n")
        fh.write(b'{"type":"response_item","payload":{"x":"')
        for _ in range(long_line // (1 << 20)):
            fh.write(b"a" * (1 << 20))
        fh.write(b"a" * (long_line % (1 << 20)) + b'"}}\n')
        fh.write(json.dumps(USER).encode() + b"\n")
    return path


def _peak_mb_of_a_scan(path: Path) -> int:
    """The scan's peak memory in a process of its own (VmHWM: ru_maxrss would carry this test
    process's own peak over the exec)."""
    code = ("import sys, resource; sys.path.insert(0, sys.argv[2]);"
            "from pathlib import Path; from sessionkit.codexfiles.rollout_scan import row_from_rollout;"
            "row = row_from_rollout(Path(sys.argv[1]), 'x', False, 'openai');"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1];"
            "print(row['first_user_message'], int(hwm) // 1024)")
    out = faultrun.script_run([sys.executable, "-c", code, str(path),
                               str(Path(rollout_scan.__file__).parents[2])],
                              capture_output=True, text=True, check=True).stdout.split()
    assert out[:-1] == ["after", "the", "long", "line"]  # the lines after it are still read
    return int(out[-1])


@needs_zstd
@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='reads VmHWM from /proc')
def test_a_long_line_in_a_small_zst_is_read_past_in_pieces_not_held(tmp_path, readers):
    """200 MB of one line compresses to a few KB; the orphan scan (audit, repair dry-run) once held
    it whole (the review measured 858 MB for 400 MB). Now at most LINE_LIMIT at a time."""
    zst = compress(_rollout(tmp_path / "rollout-x.jsonl", 200 * 1024 * 1024))
    assert zst.stat().st_size < 64 * 1024
    assert _peak_mb_of_a_scan(zst) < 120


def test_a_line_over_the_limit_is_skipped_and_the_scan_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(rollout_scan, "LINE_LIMIT", 1024)
    path = _rollout(tmp_path / "rollout-x.jsonl", 5000)
    row = rollout_scan.row_from_rollout(path, "x", False, "openai")
    assert row["first_user_message"] == "after the long line"
    assert row["cwd"] == "/work/p"
    monkeypatch.setattr(rollout_scan, "LINE_LIMIT", 5000 + 64)
    assert rollout_scan.row_from_rollout(path, "x", False, "openai")["first_user_message"] == "after the long line"


@needs_zstd
def test_a_cut_zst_is_reported_cut_not_empty(tmp_path, readers):
    path = tmp_path / "rollout-x.jsonl"
    path.write_bytes(json.dumps(META).encode() + b"\n" + b'{"a":1}\n' * 2000)
    zst = compress(path)
    data = zst.read_bytes()
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(data[:len(data) // 2])
    line, err, _only = zstd.read_head(str(cut), 1 << 20)
    assert line is None
    assert err == "the .zst is cut short"
    line, err, only = zstd.read_head(str(zst), 1 << 20)
    assert err is None and json.loads(line) == META and only is False
