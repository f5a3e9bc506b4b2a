"""The write side's work counted, not timed (issue 24): a rollback parses its journal once, a
same-length migration reads no history offsets, and the faster line-1 paths give the same bytes."""
import hashlib
import importlib.util
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from harness import REPO, SCRIPTS

from sessionkit.codexfiles.line1 import read_line1
from sessionkit.codexfiles.reasons import CHANGED_SINCE_PLAN
from sessionkit.codexfiles.rollout_edit import apply_spans
from sessionkit.runlog import journal as journal_mod
from sessionkit.runlog.ops import Line1Rewrite, sha_with_spans


def _bench():
    spec = importlib.util.spec_from_file_location("bench_for_tests", REPO / "bench" / "bench.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _script(name):
    spec = importlib.util.spec_from_file_location(name.replace(".py", "_under_test"), SCRIPTS / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def home(tmp_path):
    """bench.generate's home of 40 threads: 12 on the other provider, every thread paginated (cursors)."""
    root = tmp_path / ".codex"
    _bench().generate(root, 40)
    return root


def _run(mod, argv, capsys):
    code = mod.run(mod.main, argv)
    out = capsys.readouterr().out
    assert code in (0, 1), out
    return json.loads(out)


def test_a_same_length_migration_reads_no_history_offsets(home, capsys, monkeypatch):
    migrate = _script("provider_migrate.py")
    from sessionkit.fixes import migrate as migrate_mod
    calls = []
    real = migrate_mod.read_offsets
    monkeypatch.setattr(migrate_mod, "read_offsets", lambda conn, tid: calls.append(tid) or real(conn, tid))
    out = _run(migrate, ["--codex-dir", str(home), "--apply", "--json"], capsys)
    assert out["result"]["line1_rewritten"] == 12 and out["line1_growing"] == 0
    assert calls == []  # before: one SELECT of the history DB per rewritten thread, every one dropped unused
    journal = Path(out["result"]["journal"]).read_text().splitlines()
    assert [json.loads(x)["op"] for x in journal].count("offsets") == 0


def test_the_migration_plan_reads_each_small_rollout_once(home, capsys, monkeypatch):
    """Line 1, the mtime and the encrypted-reasoning scan from one read of each rollout to rewrite
    (before: line 1 read, the file stat'ed, then the whole file read again for the scan)."""
    migrate = _script("provider_migrate.py")
    from sessionkit.codexfiles import reasoning
    from sessionkit.fixes import migrate as migrate_mod
    scans, edits = [], []
    real_scan, real_edit = reasoning.carries_encrypted_reasoning, migrate_mod.provider_edit
    monkeypatch.setattr(reasoning, "carries_encrypted_reasoning", lambda p: scans.append(p) or real_scan(p))
    monkeypatch.setattr(migrate_mod, "provider_edit", lambda *a: edits.append(a) or real_edit(*a))
    victim = sorted(home.glob("sessions/**/*.jsonl"))[0]  # one of the 12 on the other provider: it carries some
    assert b'"model_provider":"oldco"' in victim.read_bytes().split(b"\n")[0]
    with open(victim, "a") as fh:
        fh.write('{"type":"response_item","payload":{"type":"reasoning","encrypted_content":"gAAAA"}}\n')
    out = _run(migrate, ["--codex-dir", str(home), "--json"], capsys)
    assert out["candidates"] == 12 and out["line1_rewrites"] == 12
    assert scans == [] and edits == []
    assert out["encrypted_reasoning"]["threads"] == 1 and out["encrypted_reasoning"]["unreadable"] == 0


def test_rollback_parses_its_journal_once(home, capsys, monkeypatch):
    migrate, rollback = _script("provider_migrate.py"), _script("rollback.py")
    out = _run(migrate, ["--codex-dir", str(home), "--apply", "--json"], capsys)
    journal = Path(out["result"]["journal"])
    parsed = []

    class CountingJson:
        def __getattr__(self, name):
            return getattr(json, name)

        @staticmethod
        def loads(text, *a, **k):
            parsed.append(text)
            return json.loads(text, *a, **k)
    monkeypatch.setattr(journal_mod, "json", CountingJson())

    class CountingDecoder:  # the reader's own decoder (raw_decode), json.loads only for odd lines
        @staticmethod
        def raw_decode(text, *a, **k):
            parsed.append(text)
            return json.JSONDecoder().raw_decode(text, *a, **k)
    monkeypatch.setattr(journal_mod, "_DECODER", CountingDecoder())
    back = _run(rollback, ["--codex-dir", str(home), "--latest", "--apply", "--json"], capsys)
    assert back["result"]["line1_restored"] == 12 and back["state"] == "rolled back"
    lines = journal.read_text().splitlines()
    assert len(parsed) == len(lines)  # before: every line twice (the undo, then the state after it)
    assert sorted(parsed) == sorted(lines)


def test_the_journal_read_again_is_read_whole_when_its_start_changed(tmp_path):
    path = tmp_path / "journal.jsonl"
    one = {"v": journal_mod.FORMAT, "op": "begin"}
    path.write_text(json.dumps(one) + "\n" + json.dumps({**one, "op": "end"}) + "\n")
    assert [r["op"] for r in journal_mod.read_records(path)] == ["begin", "end"]
    path.write_text(json.dumps(one) + "\n" + json.dumps({**one, "op": "abort"}) + "\n{\"torn")
    assert [r["op"] for r in journal_mod.read_records(path)] == ["begin", "abort"]
    path.write_text(json.dumps(one) + "\n" + json.dumps({**one, "op": "abort"}) + "\nnot json\n")
    with pytest.raises(Exception, match="line 3 is not a journal record"):
        journal_mod.read_records(path)


def test_a_line1_edit_planned_same_length_that_grows_under_the_lock_is_skipped(tmp_path):
    path = tmp_path / "rollout-2024-01-01T00-00-00-0190.jsonl"
    meta = {"type": "session_meta", "payload": {"id": "t", "model_provider": "a", "cwd": "/x"}}
    path.write_bytes((json.dumps(meta, separators=(",", ":")) + "\n").encode())
    before = path.read_bytes()
    op = Line1Rewrite("t", str(path), {"model_provider": "a-much-longer-provider"}, expect_growth=0)
    assert op.prepare(tmp_path) == CHANGED_SINCE_PLAN
    same = Line1Rewrite("t", str(path), {"model_provider": "b"}, expect_growth=0)
    assert same.prepare(tmp_path) is None and same.growth == 0
    assert same.new_sha == hashlib.sha256(before.split(b"\n")[0].replace(b'"a"', b'"b"')).hexdigest()
    assert path.read_bytes() == before


def test_sha_with_spans_is_the_digest_of_the_edited_bytes():
    data = b'{"a":"xx","b":"yyyy","c":"z"}'
    for spans in ([], [(5, b'"xx"', b'"q" ')], [(5, b'"xx"', b'"qqqq"'), (14, b'"yyyy"', b'"y"   ')]):
        assert sha_with_spans(data, spans) == hashlib.sha256(apply_spans(data, spans, True)).hexdigest()


@pytest.mark.parametrize("size", [10, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 200 * 1024])
def test_read_line1_reads_line_one_of_any_length(tmp_path, size):
    path = tmp_path / "r.jsonl"
    line = b"x" * size
    path.write_bytes(line + b"\nsecond\n")
    assert read_line1(path) == (line, None)
    path.write_bytes(line)  # no newline at all: the whole file is line 1
    assert read_line1(path) == (line, None)
    assert read_line1(path, limit=size - 1 if size > 64 * 1024 + 1 else 1)[0] in (None, line)


def test_read_line1_refuses_what_is_not_a_regular_file(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert read_line1(tmp_path / "empty.jsonl") == (None, "empty file")
    assert read_line1(tmp_path / "missing.jsonl")[0] is None
    if hasattr(os, "mkfifo"):
        os.mkfifo(str(tmp_path / "fifo.jsonl"))
        assert read_line1(tmp_path / "fifo.jsonl") == (None, "not a regular file")  # never blocks


def test_a_rollbacks_first_judgement_of_line1_takes_no_lstat_and_no_seek(tmp_path, monkeypatch):
    """The open (not followed) and its fstat stand for the lstat, two preads for read-seek-read: the
    rollback's per-thread syscalls (before: lstat, open, fstat, read, lseek, read, close)."""
    from sessionkit.runlog import ops
    path = tmp_path / "rollout.jsonl"
    meta = {"type": "session_meta", "payload": {"id": "t1", "model_provider": "oldco",
                                                "base_instructions": {"text": "You are Codex. " * 1500}}}
    path.write_bytes(json.dumps(meta, separators=(",", ":")).encode() + b"\n{}\n")
    op = Line1Rewrite("t1", str(path), {"model_provider": "newco"})
    assert op.prepare(tmp_path) is None
    op.apply()
    back = Line1Rewrite.from_record({"v": 2, "ts": "t", **op.to_record()})
    calls = []
    for name in ("lstat", "lseek", "stat"):
        real = getattr(os, name)
        monkeypatch.setattr(ops.os, name, lambda *a, _n=name, _r=real, **k: calls.append(_n) or _r(*a, **k))
    assert back.state() == "new" and back.undo_refusal() is None
    assert calls == []
    assert back.state() == "new" and calls == ["lstat"]  # judged again under the lock: the signature only


def test_a_same_length_rewrite_looks_for_no_temporary_file(tmp_path, monkeypatch):
    """Only a grown rewrite (or its undo) writes `.NAME.session-migration.tmp`: the rollback's plan asks
    the file system about it only for those (before: an lstat for every thread)."""
    from sessionkit.runlog import ops
    path = tmp_path / "rollout.jsonl"
    meta = {"type": "session_meta", "payload": {"id": "t1", "model_provider": "oldco"}}
    path.write_bytes(json.dumps(meta, separators=(",", ":")).encode() + b"\n{}\n")
    same = Line1Rewrite("t1", str(path), {"model_provider": "newco"})
    assert same.prepare(tmp_path) is None and same.growth == 0
    grown = Line1Rewrite("t1", str(path), {"model_provider": "a-much-longer-provider"})
    assert grown.prepare(tmp_path) is None
    assert grown.growth > 0
    Path(grown.tmp).write_bytes(b"a fragment")  # what a kill inside the grown write leaves
    asked = []
    real = os.path.lexists
    monkeypatch.setattr(ops.os.path, "lexists", lambda p: asked.append(p) or real(p))
    assert same.leftover() is False and asked == []
    assert grown.leftover() is True and asked == [grown.tmp]


def test_the_rollback_holds_the_cyclic_gc_off_while_it_works_and_gives_it_back(home, capsys, monkeypatch):
    """A journal's tens of thousands of records and ops hold no cycle: each full collection only
    walked them again (issue 24). The collector is back on when the rollback returns."""
    import gc
    migrate, rollback = _script("provider_migrate.py"), _script("rollback.py")
    _run(migrate, ["--codex-dir", str(home), "--apply", "--json"], capsys)
    seen = []
    real = rollback.plan_undo
    monkeypatch.setattr(rollback, "plan_undo", lambda *a, **k: seen.append(gc.isenabled()) or real(*a, **k))
    assert gc.isenabled()
    back = _run(rollback, ["--codex-dir", str(home), "--latest", "--apply", "--json"], capsys)
    assert back["result"]["line1_restored"] == 12
    assert seen == [False] and gc.isenabled()


def _run_dir_files(out):
    return sorted(p.name for p in Path(out["result"]["journal"]).parent.iterdir())


def test_the_rollback_backs_up_while_it_plans_and_keeps_one_backup(home, capsys, monkeypatch):
    """The DB backup is made in a thread while the undo is planned (BackupsAhead), and it is the one
    backup the undo lists: made from the DB before the undo's change, taken before that change."""
    migrate, rollback = _script("provider_migrate.py"), _script("rollback.py")
    from sessionkit.runlog import artifacts
    out = _run(migrate, ["--codex-dir", str(home), "--apply", "--json"], capsys)
    before = _run_dir_files(out)
    migrated = sqlite3.connect(str(home / "state_5.sqlite")).execute("SELECT id, model_provider FROM threads").fetchall()
    threads = []
    real = artifacts.backup_db
    monkeypatch.setattr(artifacts, "backup_db", lambda db, dest: threads.append(__import__("threading").current_thread().name)
                        or real(db, dest))
    back = _run(rollback, ["--codex-dir", str(home), "--latest", "--apply", "--json"], capsys)
    assert back["result"]["rows_reverted"] == 12 and back["state"] == "rolled back"
    assert len(threads) == 1 and threads[0] != "MainThread"  # one backup, not made by the undo itself
    made = back["result"]["db_backups"]
    assert len(made) == 1 and Path(made[0]).name.startswith("state_5.sqlite.pre_rollback_")
    assert _run_dir_files(out) == sorted(before + [Path(made[0]).name])
    kept = sqlite3.connect(made[0]).execute("SELECT id, model_provider FROM threads").fetchall()
    assert kept == migrated != sqlite3.connect(str(home / "state_5.sqlite")).execute(
        "SELECT id, model_provider FROM threads").fetchall()  # the DB as the migration left it, before the undo


@pytest.mark.parametrize("how", ["nothing to undo", "edited journal", "backup fails"])
def test_a_backup_made_ahead_and_not_used_is_removed(home, capsys, monkeypatch, how):
    """What the undo does not take is removed: a second rollback (nothing left to undo), a journal
    the plan refuses, and a backup that failed (the undo stops before any change, as it did when it
    made the backup itself)."""
    migrate, rollback = _script("provider_migrate.py"), _script("rollback.py")
    from sessionkit.runlog import artifacts
    out = _run(migrate, ["--codex-dir", str(home), "--apply", "--json"], capsys)
    journal = Path(out["result"]["journal"])
    if how == "nothing to undo":
        first = _run(rollback, ["--codex-dir", str(home), "--latest", "--apply", "--json"], capsys)
        assert first["state"] == "rolled back"  # then the same run again: every change is original
    files = _run_dir_files(out)
    rows = sqlite3.connect(str(home / "state_5.sqlite")).execute("SELECT id, model_provider FROM threads").fetchall()
    if how == "edited journal":
        lines = journal.read_text().splitlines()
        i = next(n for n, x in enumerate(lines) if '"op":"row_update"' in x)
        lines[i] = lines[i].replace('"old":{"model_provider":"oldco"}', '"old":{"model_provider":"evil"}')
        journal.write_text("\n".join(lines) + "\n")
    if how == "backup fails":
        def full(db, dest):
            Path(dest).write_bytes(b"partial")  # a backup cut short by a full disk
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(artifacts, "backup_db", full)
    code = rollback.run(rollback.main, ["--codex-dir", str(home), "--manifest", str(journal), "--apply", "--json"])
    capsys.readouterr()
    assert code == (0 if how == "nothing to undo" else 2)
    assert sorted(p.name for p in journal.parent.iterdir()) == files  # no backup left, whole or partial
    assert sqlite3.connect(str(home / "state_5.sqlite")).execute(
        "SELECT id, model_provider FROM threads").fetchall() == rows


def test_the_undo_writes_each_line1_through_the_descriptor_it_checks(home, capsys, monkeypatch):
    """Line 1 is judged once, by the plan; under the writer lock the file opened for the write is
    checked by its signature (no second lstat and judgement); a file written between the plan and
    the undo is judged again: one whose line 1 changed is left alone, one only appended to is undone
    with its new mtime kept."""
    migrate, rollback = _script("provider_migrate.py"), _script("rollback.py")
    from sessionkit.runlog import undo
    _run(migrate, ["--codex-dir", str(home), "--apply", "--json"], capsys)
    files = sorted(p for p in home.glob("sessions/**/*.jsonl") if b'"model_provider":"newco"' in p.read_bytes()[:2000]
                   and p.stat().st_mtime_ns < 1750000000 * 10**9)
    judged = []
    real_state = Line1Rewrite._file_state
    monkeypatch.setattr(Line1Rewrite, "_file_state", lambda self: judged.append(self.path) or real_state(self))
    edited, appended = files[0], files[1]
    real_apply = undo.apply_undo

    def meanwhile(home_, plan, **kw):  # Codex between the plan and the undo
        line1, rest = edited.read_bytes().split(b"\n", 1)
        edited.write_bytes(line1.replace(b'"cwd":"', b'"cwd":"X') + b"\n" + rest)
        with open(appended, "ab") as fh:
            fh.write(b'{"type":"event_msg","payload":{"type":"user_message","message":"more"}}\n')
        return real_apply(home_, plan, **kw)
    monkeypatch.setattr(rollback, "apply_undo", meanwhile)
    back = _run(rollback, ["--codex-dir", str(home), "--latest", "--apply", "--json"], capsys)
    appended_mtime = appended.stat().st_mtime_ns
    n = len(set(judged))
    assert len(judged) == n + 2  # each judged once by the plan; only the two written since, again
    assert back["result"]["line1_restored"] == n - 1 and back["conflicts"] == 1
    assert b'"model_provider":"newco"' in edited.read_bytes()[:2000]  # left alone
    assert b'"model_provider":"oldco"' in appended.read_bytes()[:2000]
    assert appended_mtime > 1750000000 * 10**9  # today's: turns were added since the run


def test_bench_targets_count_the_interpreter_start_in_the_floor_script():
    """A ratio target compares a script with its floor run as a script: the floor function's time
    plus `python3 -c pass` (both start an interpreter); over it, one line that names both parts."""
    b = _bench()
    R = b.Result
    ok = {10000: {"python3 -c pass": R(0.035, 0, 0), "migration rollback": R(0.42, 60, 0.13)}}
    assert [m for m in b.misses(ok) if "migration rollback" in m] == []  # 0.42 <= 3 x (0.13 + 0.035)
    over = {10000: {"python3 -c pass": R(0.035, 0, 0), "migration rollback": R(0.55, 60, 0.13)}}
    assert [m for m in b.misses(over) if "migration rollback" in m] == [
        "bench: migration rollback at 10,000 threads: 0.55 s is 3.3x its floor as a script (0.13 s + python3 -c "
        "pass 0.04 s), over the 3x target"]


def test_a_db_written_while_the_rollback_plans_is_backed_up_again(home, capsys, monkeypatch):
    """The backup made ahead is the DB before the undo's change: a write meanwhile (a Codex) makes
    the undo copy it again when it takes it; the copy ahead, a `.partial`, is not left behind."""
    migrate, rollback = _script("provider_migrate.py"), _script("rollback.py")
    from sessionkit.runlog import undo
    out = _run(migrate, ["--codex-dir", str(home), "--apply", "--json"], capsys)
    real = undo.apply_undo

    def codex_meanwhile(home_, plan, **kw):
        kw["ahead"].wait()  # the copy ahead is made; then Codex writes a row of another thread
        with sqlite3.connect(str(home / "state_5.sqlite")) as c:
            c.execute("UPDATE threads SET title='written meanwhile' WHERE id = (SELECT min(id) FROM threads)")
        return real(home_, plan, **kw)
    monkeypatch.setattr(rollback, "apply_undo", codex_meanwhile)
    back = _run(rollback, ["--codex-dir", str(home), "--latest", "--apply", "--json"], capsys)
    assert back["state"] == "rolled back"
    made = back["result"]["db_backups"]
    assert len(made) == 1 and not made[0].endswith(".partial")
    titles = {t for (t,) in sqlite3.connect(made[0]).execute("SELECT title FROM threads")}
    assert "written meanwhile" in titles  # the DB as it was just before the undo's change
    assert not [p for p in Path(out["result"]["journal"]).parent.iterdir() if p.name.endswith(".partial")]


def test_a_journal_naming_a_path_outside_the_home_makes_no_copy(home, capsys, monkeypatch):
    """The copies ahead begin only once the journal's paths and DBs are checked as this home's."""
    migrate, rollback = _script("provider_migrate.py"), _script("rollback.py")
    from sessionkit.runlog import artifacts
    out = _run(migrate, ["--codex-dir", str(home), "--apply", "--json"], capsys)
    journal = Path(out["result"]["journal"])
    lines = journal.read_text().splitlines()
    i = next(n for n, x in enumerate(lines) if '"op":"line1"' in x)
    rec = json.loads(lines[i])
    rec["path"] = "/etc/passwd"
    lines[i] = json.dumps(rec)
    journal.write_text("\n".join(lines) + "\n")
    copies = []
    monkeypatch.setattr(artifacts, "backup_db", lambda db, dest: copies.append(dest))
    code = rollback.run(rollback.main, ["--codex-dir", str(home), "--latest", "--apply", "--json"])
    assert code == 2 and "outside the Codex home" in capsys.readouterr().err
    assert copies == []


def test_a_backup_left_partial_by_a_kill_is_no_backup_to_restore(home, capsys, tmp_path):
    """A kill while the copy ahead is made leaves `<backup>.partial`: --restore-db does not take it."""
    migrate, rollback = _script("provider_migrate.py"), _script("rollback.py")
    out = _run(migrate, ["--codex-dir", str(home), "--apply", "--json"], capsys)
    run_dir = Path(out["result"]["journal"]).parent
    part = run_dir / "state_5.sqlite.pre_rollback_20990101_000000.bak.partial"
    part.write_bytes((home / "state_5.sqlite").read_bytes()[:4096])
    code = rollback.run(rollback.main, ["--codex-dir", str(home), "--restore-db", str(part), "--json"])
    assert code == 2 and "partial" not in capsys.readouterr().out


_WIN_FORMS = ("\\\\?\\", "C:\\", "c:/", "/mnt/", "/mnt/c/", "/mnt/c", "/", "//", "x:", "\\")


@pytest.mark.parametrize("head", _WIN_FORMS)
@pytest.mark.parametrize("tail", ["", "a", "a/", "Users/me/proj//", "b\\c", "..", "mnt/c/x"])
def test_the_posix_fast_path_of_path_matching_spells_every_path_as_before(head, tail):
    """normalize_for_match skips its three patterns for a POSIX path that is not under /mnt/ (the
    repair's plan asks it thousands of times): every spelling comes out as the patterns give it."""
    from sessionkit.codexfiles import paths

    def by_patterns(path):
        p = paths._WIN_LONG.sub("", path)
        m = paths._WIN_DRIVE.match(p)
        if m:
            p = m.group(1).lower() + ":/" + p[3:].replace("\\", "/")
        else:
            w = paths._WSL_DRIVE.match(p)
            if w:
                p = w.group(1).lower() + ":/" + p[len(w.group(0)):]
        return p.rstrip("/") or "/"
    assert paths.normalize_for_match(head + tail) == by_patterns(head + tail)


@pytest.mark.parametrize("root", ["/h/.codex", "/h/.codex/", "/h/./.codex", "/"])
@pytest.mark.parametrize("path", ["/h/.codex", "/h/.codex/", "/h/.codex/s/x.jsonl", "/h/.codexy/a", "/h", "/other/a",
                                  "/h/.codex/../x", "/h//.codex/a", "/h/.codex/./a", "relative/a", "/h/.codex\x00/a",
                                  "/h/.CODEX/a", ""])
def test_inside_test_answers_as_is_inside(root, path):
    """inside_test answers a plain path that is not under the root without asking is_inside (the
    repair's plan asks it of every row): the same answer is_inside gives, every spelling."""
    from sessionkit.codexfiles.paths import inside_test, is_inside
    assert inside_test(root)(path) == is_inside(path, root)


def test_the_plan_floors_read_whole_only_what_the_plans_must(home, monkeypatch):
    """The migration's dry-run floor reads whole every rollout still on the other provider (the
    encrypted-reasoning scan); the recovery's adds every rollout its row names under another home
    (the folder records it remaps): on bench.generate's home of 40, 12 and 12 + 4 of them."""
    b = _bench()
    read = []
    monkeypatch.setattr(b, "_read_whole", lambda files: read.append(sorted(files)) or 0)
    bench = b.Bench(home, home, home)
    b.migration_plan_floor(bench)
    b.recovery_plan_floor(bench)
    other = [f for f in read[0] if b'"model_provider":"oldco"' in open(f, "rb").readline()]
    assert len(read[0]) == len(other) == 12
    assert len(read[1]) == 16 and set(read[0]) < set(read[1])
