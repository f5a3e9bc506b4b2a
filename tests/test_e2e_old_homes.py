"""Homes made by the real Codex 0.130, 0.148 and 0.160 keep working (issue 21).

Each old release makes one home against the mock model (a `codex exec` session, three editor
threads through its app-server, one of them named, one archived, and a fork with a turn of its
own); the module shares it, restored from a pristine copy before each test. Then the audit says
nothing is lost (on the home as that Codex left it, and after 0.171 opened it), a moved user
folder is repaired and a provider switch migrated with 0.171 (thread/list, thread/read with turns,
names; the TUI picker on the 0.130 home) and the old Codex seeing every thread, and each rollback
restores every byte and row (also after 0.171 migrated the DB). Real 0.130 is the target of an
import of a home 0.171 used: the legacy threads arrive and it lists and reads them; the paginated
ones, which it cannot read, are skipped with that reason (after 0.171 opened the 0.130 home,
every thread arrives). The mock model needed no change for 0.130, 0.148 or 0.160."""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from codex_client import (BLACKHOLE_PROXY, CODEX_VERSION, OLD_VERSIONS, AppServer, CodexError, codex_bin,
                          installed_version, run_exec)
from harness import REPO, CodexWorld, codex_available, run_script, snapshot
from tui import tmux_available

pytestmark = pytest.mark.xdist_group("old_homes")  # one worker: the homes live at fixed paths

NAME = "Parser rewrite"
NEW = CODEX_VERSION


def test_makefile_installs_the_old_versions_the_tests_use():
    """One list: the Makefile's CODEX_OLD_VERSIONS is what these tests make homes with."""
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    old = re.search(r"^CODEX_OLD_VERSIONS\s*:?=\s*(.*)$", text, re.M).group(1).split()
    assert tuple(old) == OLD_VERSIONS
    assert re.search(r"for v in \$\(CODEX_VERSION\) \$\(CODEX_COMPAT_VERSIONS\) \$\(CODEX_OLD_VERSIONS\);", text)


# ------------------------------------------------------------------------------- the homes


@dataclass
class OldHome:
    """One home as an old Codex left it, and what that Codex showed of it."""
    version: str
    world: CodexWorld
    pristine: Path
    exec_id: str
    named: str
    plain: str
    archived: str
    fork: str
    turns: Dict[str, int] = field(default_factory=dict)

    @property
    def listed(self) -> List[str]:
        return sorted([self.named, self.plain, self.fork])

    @property
    def every(self) -> List[str]:
        return sorted(self.turns)

    def restore(self) -> CodexWorld:
        """The home and its projects exactly as the old Codex left them, at their first path."""
        w = self.world
        w.stop_home_processes()
        for p in w.base.iterdir():
            if p.name not in ("pristine", ".git", "projects"):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        shutil.copytree(self.pristine, w.base / "user", symlinks=True)
        w.home = w.base / "user" / ".codex"
        return w

    def proj(self) -> Path:
        return self.world.user_project("proj")


def _require(version: str) -> None:
    got = installed_version(version)
    if not codex_available(version) or got != version:
        msg = (f"the real Codex CLI {version} is not installed (found {got}): run `make codex-cli` "
               f"(it installs @openai/codex@{version} into .codex-cli/{version}/)")
        if os.environ.get("REQUIRE_E2E"):
            pytest.fail(msg)
        pytest.skip(msg)


def _build(version: str, server, root: Path) -> OldHome:
    """One home made by `version` alone: exec, 3 editor threads (named, archived), a fork."""
    _require(version)
    _require(NEW)
    base = root / f"old-home-{version}-{os.getpid()}"  # one per pytest-xdist worker
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    w = CodexWorld(base, server, version=version)
    proj = w.user_project("proj")
    proc = run_exec(w.home, "exec hi", cwd=proj, version=version)
    assert proc.returncode == 0, proc.stderr[-2000:]
    exec_id = next(x.split(":", 1)[1].strip() for x in proc.stderr.splitlines() if x.startswith("session id:"))
    with w.app(proj) as app:
        named, plain, archived = (app.start_thread(proj, f"first {i}") for i in range(3))
        app.request("thread/name/set", {"threadId": named, "name": NAME})
        fork = app.request("thread/fork", {"threadId": plain})["thread"]["id"]
        app.turn(fork, "in the fork")
        app.request("thread/archive", {"threadId": archived})
    w.stop_home_processes()
    shutil.copytree(w.base / "user", base / "pristine", symlinks=True)
    return OldHome(version, w, base / "pristine", exec_id, named, plain, archived, fork,
                   {exec_id: 1, named: 1, plain: 1, archived: 1, fork: 2})


@pytest.fixture(scope="module")
def homes(request, mock_server):
    """Every old home built so far (lazily, once per module), closed at the end."""
    from conftest import E2E_TMP
    made: Dict[str, OldHome] = {}

    def get(version: str) -> OldHome:
        if version not in made:
            made[version] = _build(version, mock_server, E2E_TMP)
        return made[version]
    yield get
    for h in made.values():
        h.world.close()
        leaked = h.world.home_processes(include_open_apps=True)
        assert not leaked, leaked
        if not request.session.testsfailed:  # kept to look at after a failure, as conftest does
            shutil.rmtree(h.world.base, ignore_errors=True)


@pytest.fixture(params=OLD_VERSIONS)
def old(request, homes):
    """The home of one old release, restored as that release left it."""
    h = homes(request.param)
    h.restore()
    yield h
    h.world.stop_home_processes()


# ------------------------------------------------------------------------------- what Codex shows


@dataclass
class Seen:
    listed: List[str]
    listed_cwd: List[str]
    archived: List[str]
    exec: List[str]
    names: Dict[str, Optional[str]]
    turns: Dict[str, object]
    titles: List[str]  # what a picker row shows for each listed thread: its name, else its preview


def seen_by(home: Path, version: str, cwd: Path, read: List[str]) -> Seen:
    """thread/list (default, by cwd, archived, exec sources) and thread/read with turns of `read`,
    by the app-server of `version`."""
    with AppServer(home, cwd=cwd, version=version) as app:
        listed = app.list_threads()
        names = {t["id"]: t.get("name") for t in listed}
        archived = app.list_threads(archived=True)
        execs = app.list_threads(sourceKinds=["exec"])
        by_cwd = app.list_threads(cwd=str(cwd))
        for t in archived + execs:
            names[t["id"]] = t.get("name")
        turns: Dict[str, object] = {}
        for tid in read:
            try:
                turns[tid] = len(app.read_thread(tid)["turns"])
            except CodexError as exc:
                turns[tid] = str(exc)[:300]
    return Seen(sorted(t["id"] for t in listed), sorted(t["id"] for t in by_cwd),
                sorted(t["id"] for t in archived), sorted(t["id"] for t in execs), names, turns,
                sorted(t.get("name") or t.get("preview") or "" for t in listed))


def assert_sees_all(h: OldHome, version: str, cwd: Path) -> Seen:
    s = seen_by(h.world.home, version, cwd, h.every)
    assert (s.listed, s.listed_cwd, s.archived, s.exec) == (h.listed, h.listed, [h.archived], [h.exec_id]), \
        (version, s)
    assert s.turns == h.turns, (version, s.turns)
    assert {t: n for t, n in s.names.items() if n} == {h.named: NAME}, (version, s.names)
    return s


def audit(h: OldHome) -> dict:
    return h.world.audit()


def assert_no_loss(h: OldHome, a: dict) -> None:
    """The audit counts what that Codex shows and reports nothing lost."""
    assert (a["counts"]["threads_total"], a["counts"]["threads_archived"], a["counts"]["rollouts_total"]) == (5, 1, 5)
    vis = a["surfaces"]["editors"]
    assert (vis["visible"], vis["hidden"]) == (3, {"archived": 1, "non_interactive_source": 1}), vis
    assert sorted(vis.get("visible_sample") or a["visibility"]["visible_sample"]) == h.listed
    integ = a["integrity"]
    assert (integ["names_lost_count"], integ["history_incomplete_count"]) == (0, 0), integ
    assert not [f for f in a["findings"] if re.search(r"lost|missing|no session file|incomplete", f)], a["findings"]


def state(home: Path) -> Dict[str, object]:
    """Every file (bytes, mtime, mode) but the runs' own folder, Codex's logs and the helper
    binaries each Codex process unpacks into tmp/arg0/ (0.130 leaves them behind), and every row of
    every table of each SQLite file (the DB files' bytes may differ where their rows do not)."""
    files = {k: v for k, v in snapshot(home).items()
             if not k.startswith((".tmp/", "logs_", "tmp/arg0")) and ".sqlite" not in k}
    rows = {}
    for db in sorted(home.glob("*.sqlite")):
        if db.name.startswith("logs_"):
            continue
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
                rows[f"{db.name}:{table}"] = sorted(map(repr, conn.execute(f'SELECT * FROM "{table}"')))
        finally:
            conn.close()
    return {"files": files, "rows": rows}


PAGINATED = {"0.130.0": 0, "0.148.0": 1, "0.160.0": 5}  # threads each release wrote paginated (PAGINATED_SINCE)
MIGRATIONS = {"0.130.0": 31, "0.148.0": 48, "0.160.0": 58, "0.171.0": 64}  # state_5's, per release


def migrations(home: Path) -> int:
    conn = sqlite3.connect(f"file:{home / 'state_5.sqlite'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM _sqlx_migrations").fetchone()[0]
    finally:
        conn.close()


def stored(home: Path) -> Dict[str, tuple]:
    """id -> (rollout_path, cwd, model_provider, archived) of state_5."""
    conn = sqlite3.connect(f"file:{home / 'state_5.sqlite'}?mode=ro", uri=True)
    try:
        return {r[0]: tuple(r[1:]) for r in conn.execute(
            "SELECT id, rollout_path, cwd, model_provider, archived FROM threads")}
    finally:
        conn.close()


def ok(proc, codes=(0,)):
    assert proc.returncode in codes, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# ------------------------------------------------------------------------------- the tests


@pytest.mark.e2e
def test_audit_of_an_old_home_reports_no_loss_before_and_after_0171_opens_it(old):
    """Names kept only in session_index.jsonl (legacy threads of 0.130 and 0.148) are names the
    owning Codex shows: never reported lost, neither before nor after 0.171 migrated the DB."""
    assert_sees_all(old, old.version, old.proj())  # what the owner shows
    assert_no_loss(old, audit(old))
    assert_sees_all(old, NEW, old.proj())  # 0.171 opens it (migrates its DBs) and shows the same
    assert_no_loss(old, audit(old))


@pytest.mark.e2e
def test_moved_old_home_repaired_seen_by_both_and_rolled_back(old):
    """`mv ~olduser ~newuser`: the audit's one remap, the repair; rollback restores every byte and
    row; repaired again, the old Codex and 0.171 see every thread and name in the new folder."""
    w = old.world
    moved = w.move_user_folder("newuser")
    proj = old.proj()
    before = state(w.home)
    stored_before, migrations_before = stored(w.home), migrations(w.home)
    remap = w.audit()["integrity"]["moved_home"]["remap_arg"]
    assert remap == f"--remap-prefix {moved['old_user']}={moved['new_user']}"
    arg = remap.split(" ", 1)[1]
    res = json.loads(ok(w.script("session_repair.py", "--remap-prefix", arg, "--apply", "--json")).stdout)["result"]
    assert (res["updated_rows"], res["line1_rewritten"], res["skipped_at_apply"]) == (5, 5, [])
    ok(w.script("rollback.py", "--latest", "--apply"), (0, 1))
    assert state(w.home) == before

    ok(w.script("session_repair.py", "--remap-prefix", arg, "--apply"))
    assert_no_loss(old, w.audit())
    assert_sees_all(old, old.version, proj)
    seen = assert_sees_all(old, NEW, proj)
    assert_no_loss(old, w.audit())
    if old.version == OLD_VERSIONS[0] and tmux_available():
        # 0.171's TUI picker in the new project folder: every row (names, previews); on the oldest
        # home only (it reads rows, and 0.130's are the furthest from 0.171's), ~8 s each
        w.version = NEW
        try:
            pick = w.picker(proj, with_ids=False)
        finally:
            w.version = old.version
        assert (pick.total, sorted(pick.titles)) == (3, seen.titles), pick.screen

    # rolled back after 0.171 migrated the DB: our values go back, 0.171's schema stays
    ok(w.script("rollback.py", "--latest", "--apply"), (0, 1))
    after = state(w.home)
    rollouts = {k: v for k, v in before["files"].items() if "sessions/" in k}
    assert {k: v for k, v in after["files"].items() if "sessions/" in k} == rollouts
    assert stored(w.home) == stored_before
    assert migrations(w.home) == MIGRATIONS[NEW] > migrations_before == MIGRATIONS[old.version]


@pytest.mark.e2e
def test_provider_switch_on_an_old_home_migrated_seen_by_both_and_rolled_back(old):
    """The user switched to another provider: the migration brings every thread back to the
    editors' list of the old Codex and of 0.171; the rollback restores every byte and row."""
    w = old.world
    w.set_provider("mockB")
    before = state(w.home)
    every = ("--include-archived",)
    plan = json.loads(ok(w.script("provider_migrate.py", *every, "--json")).stdout)
    assert (plan["target_provider"], plan["candidates"]) == ("mockB", 5)
    with AppServer(w.home, cwd=old.proj(), version=old.version) as app:  # the old Codex is open
        app.list_threads()
        proc = w.script("provider_migrate.py", *every, "--apply")
        assert (proc.returncode, proc.stdout) == (2, ""), proc.stdout + proc.stderr
        assert proc.stderr.startswith("provider_migrate.py: error: Codex is running on this home:"), proc.stderr
    assert state(w.home) == before
    ok(w.script("provider_migrate.py", *every, "--apply"))
    ok(w.script("rollback.py", "--latest", "--apply"), (0, 1))
    assert state(w.home) == before

    ok(w.script("provider_migrate.py", *every, "--apply"))
    assert_sees_all(old, old.version, old.proj())
    assert_sees_all(old, NEW, old.proj())


@pytest.mark.e2e
def test_import_of_a_0171_home_into_a_real_0130_home_brings_what_0130_reads(homes):
    """SRC: a 0.148 home then used by 0.171 (a legacy thread continued, a new paginated thread):
    its legacy threads arrive in the 0.130 home, which lists and reads them (names from
    session_index.jsonl, the turn 0.171 added included); its paginated ones (0.148's exec, 0.171's
    thread) are skipped with the reason; the rollback restores every byte and row of the 0.130
    home, after 0.130 has listed and read the imported threads."""
    from sessionkit.fixes.importer import UNREADABLE_PAGINATED
    src, dst = homes("0.148.0"), homes("0.130.0")
    src.restore()
    dst.restore()
    newer = _src_used_by_0171(src)
    sw, dw = src.world, dst.world
    before = state(dw.home)
    args = ("--from", str(sw.home), "--remap-prefix", f"{sw.user_dir}={dw.user_dir}")
    plan = json.loads(ok(dw.script("session_import.py", *args, "--json"), (0, 1)).stdout)
    legacy = [src.named, src.plain, src.archived, src.fork]
    assert (plan["to_import"], plan["already_here"] if "already_here" in plan else 0) == (4, 0), plan
    assert sorted((s["thread_id"], s["reason"]) for s in plan["skipped_sample"]) == \
        sorted([(src.exec_id, UNREADABLE_PAGINATED), (newer, UNREADABLE_PAGINATED)])
    res = json.loads(ok(dw.script("session_import.py", *args, "--apply", "--json"), (0, 1)).stdout)["result"]
    assert (res["imported_threads"], res["files_created"], res["rows_inserted"], res["history_rows_inserted"]) == \
        (4, 4, 4, 0)
    assert not (dw.home / "thread_history_1.sqlite").exists()
    a = dw.audit()  # what 0.130 lists, nothing lost
    assert (a["counts"]["threads_total"], a["surfaces"]["editors"]["visible"], a["integrity"]["names_lost_count"]) == \
        (9, 6, 0)
    assert a["surfaces"]["editors"]["hidden"] == {"archived": 2, "non_interactive_source": 1}

    turns = dict(dst.turns, **{src.named: 1, src.plain: 2, src.archived: 1, src.fork: 2})
    s = seen_by(dw.home, "0.130.0", dst.proj(), sorted(turns))
    assert (s.listed, s.listed_cwd) == (sorted(dst.listed + [src.named, src.plain, src.fork]),) * 2, s
    assert (s.archived, s.exec) == (sorted([dst.archived, src.archived]), [dst.exec_id]), s
    assert s.turns == turns
    assert {t: n for t, n in s.names.items() if n} == {dst.named: NAME, src.named: NAME}
    assert sorted(legacy) == sorted(set(s.listed + s.archived) - set(dst.every))

    ok(dw.script("rollback.py", "--latest", "--apply"), (0, 1))
    assert state(dw.home) == before


def _src_used_by_0171(src: OldHome) -> str:
    """The 0.148 home, then used by 0.171: a legacy thread continued, a new paginated thread."""
    with AppServer(src.world.home, cwd=src.proj(), version=NEW) as app:
        app.request("thread/resume", {"threadId": src.plain})
        app.turn(src.plain, "continued in 0.171")
        newer = app.start_thread(src.proj(), "made by 0.171")
    src.world.stop_home_processes()
    return newer


@pytest.mark.e2e
def test_import_into_a_0130_home_that_0171_opened_brings_every_thread(homes):
    """0.171 opened the 0.130 home (its DB migrated, history_mode added) but wrote no paginated
    thread, so there is no thread_history_1.sqlite yet: every thread arrives; 0.171 lists them,
    reads the legacy ones whole and a paginated one with 0 turns until one resume rebuilds it, as
    the plan says. The rollback restores every byte and row."""
    src, dst = homes("0.148.0"), homes("0.130.0")
    src.restore()
    dst.restore()
    newer = _src_used_by_0171(src)
    sw, dw = src.world, dst.world
    assert_sees_all(dst, NEW, dst.proj())  # opened by 0.171
    assert not (dw.home / "thread_history_1.sqlite").exists()
    before = state(dw.home)
    args = ("--from", str(sw.home), "--remap-prefix", f"{sw.user_dir}={dw.user_dir}", "--apply", "--json")
    out = json.loads(ok(dw.script("session_import.py", *args), (0, 1)).stdout)
    assert (out["result"]["imported_threads"], out["result"]["history_rows_inserted"]) == (6, 0)
    assert any("0 turns until it is resumed once" in n for n in out["notes"]), out["notes"]
    _assert_no_history_db_said(dw, [src.exec_id, newer])
    turns = dict(dst.turns, **{src.named: 1, src.plain: 2, src.archived: 1, src.fork: 2, src.exec_id: 0, newer: 0})
    s = seen_by(dw.home, NEW, dst.proj(), sorted(turns))
    assert s.listed == sorted(dst.listed + [src.named, src.plain, src.fork, newer]), s
    assert (s.archived, s.exec) == (sorted([dst.archived, src.archived]), sorted([dst.exec_id, src.exec_id])), s
    assert s.turns == turns
    assert {t: n for t, n in s.names.items() if n} == {dst.named: NAME, src.named: NAME}
    a = dw.audit()  # the two paginated ones 0.171 read with 0 turns (it made the history DB then)
    assert (a["counts"]["threads_total"], a["surfaces"]["editors"]["visible"], a["integrity"]["names_lost_count"]) == \
        (11, 7, 0)
    assert {k: n for k, n in a["integrity"]["history_incomplete_by_kind"].items() if n} == {"not_built": 2}
    assert sorted(d["thread_id"] for d in a["integrity"]["history_incomplete_detail"]) == sorted([src.exec_id, newer])
    ok(dw.script("rollback.py", "--latest", "--apply"), (0, 1))
    after = state(dw.home)
    made = {k: v for k, v in after["rows"].items() if k.startswith("thread_history_1.sqlite:")}
    assert {k for k, v in made.items() if v and not k.endswith(":_sqlx_migrations")} == set()
    after["rows"] = {k: v for k, v in after["rows"].items() if k not in made}
    assert after == before  # but the empty history DB 0.171 made when it read a paginated thread

    # imported again into the home as it was before 0.171 read a paginated thread (no history DB):
    # the command the audit names has 0.171 build both histories, and 0.171 reads every turn
    for suffix in ("", "-wal", "-shm"):
        made_db = Path(f"{dw.home / 'thread_history_1.sqlite'}{suffix}")
        if made_db.exists():
            made_db.unlink()
    ok(dw.script("session_import.py", *args), (0, 1))
    _assert_no_history_db_said(dw, [src.exec_id, newer])
    rebuilt = json.loads(ok(dw.script("session_repair.py", "--apply", "--rebuild-history", "--json", "--codex-bin",
                                      str(codex_bin(NEW)), env=MOCK_ENV)).stdout)
    assert (rebuilt["planned_history_resets"], rebuilt["history_rebuild"]["rebuilt"]) == (0, 2), rebuilt
    assert seen_by(dw.home, NEW, dst.proj(), [src.exec_id, newer]).turns == {src.exec_id: 1, newer: 1}


# what the scripts' Codex child inherits: the mock key, and no way out but loopback
MOCK_ENV = {"MOCK_API_KEY": "mock-key", "HTTP_PROXY": BLACKHOLE_PROXY, "HTTPS_PROXY": BLACKHOLE_PROXY,
            "ALL_PROXY": BLACKHOLE_PROXY, "NO_PROXY": "127.0.0.1,localhost"}


def _assert_no_history_db_said(w: CodexWorld, paginated: List[str]) -> None:
    """Paginated threads with no thread_history_1.sqlite beside them: the audit says 0.171 reads
    them with 0 turns until each is opened once, and what does that; never that anything is lost."""
    assert not (w.home / "thread_history_1.sqlite").exists()
    a = w.audit()
    integ = a["integrity"]
    assert {k: n for k, n in integ["history_incomplete_by_kind"].items() if n} == {"no_history_db": len(paginated)}
    assert sorted(d["thread_id"] for d in integ["history_incomplete_detail"]) == sorted(paginated)
    said = [f for f in a["findings"] if "thread_history_1.sqlite" in f]
    assert len(said) == 1 and "shows 0 turns until each is opened once" in said[0], a["findings"]
    assert "--rebuild-history" in said[0]
    assert not [f for f in a["findings"] if re.search(r"lost|missing|incomplete", f)], a["findings"]


@pytest.mark.e2e
def test_export_of_an_old_home_imported_into_a_0171_home_reads_whole(old):
    """session_export.py --all of the home the old Codex left (read only: not a byte or row of it
    changes), imported into another user's 0.171 home: 0.171 lists every thread in the new folder
    (archived and exec ones under their filters), reads each with every turn and shows the name;
    the rollback restores every byte and row of the 0.171 home."""
    w = old.world
    before_src = state(w.home)
    target = w.base / "old-home.zip"
    out = json.loads(ok(w.script("session_export.py", "--all", "--archived", "include", "--to", str(target),
                                 "--apply", "--json")).stdout)
    assert out["result"]["threads"] == 5, out
    assert state(w.home) == before_src
    old_user = w.user_dir
    dest = w.base / "newuser" / ".codex"  # another user's home, made by 0.171 (one exec session)
    dest.mkdir(parents=True)
    w.home = dest
    w.homes.append(dest)
    w.set_provider("mockA")
    proj = w.user_project("proj")
    proc = run_exec(dest, "exec in the new home", cwd=proj, version=NEW)
    assert proc.returncode == 0, proc.stderr[-2000:]
    own = next(x.split(":", 1)[1].strip() for x in proc.stderr.splitlines() if x.startswith("session id:"))
    before = state(dest)
    args = ("session_import.py", "--from", str(target), "--remap-prefix", f"{old_user}={w.user_dir}", "--json")
    res = json.loads(ok(w.script(*args, "--apply")).stdout)["result"]
    assert res["imported_threads"] == 5, res
    s = seen_by(dest, NEW, proj, old.every + [own])
    assert (s.listed, s.listed_cwd, s.archived, s.exec) == (old.listed, old.listed, [old.archived],
                                                            sorted([old.exec_id, own])), s
    assert s.turns == dict(old.turns, **{own: 1})
    assert {t: n for t, n in s.names.items() if n} == {old.named: NAME}, s.names
    ok(w.script("rollback.py", "--latest", "--apply"), (0, 1))
    assert state(dest) == before


@pytest.mark.e2e
def test_recover_on_a_moved_old_home_seen_by_both_and_rolled_back(old):
    """`mv ~olduser ~newuser`, then session_recover.py with the audit's remap: one run, one undo that
    restores every byte and row; recovered again, the old Codex and 0.171 see every thread and name
    in the new folder, and the audit finds nothing lost."""
    w = old.world
    moved = w.move_user_folder("newuser")
    proj = old.proj()
    before = state(w.home)
    plan = json.loads(ok(w.script("session_recover.py", "--json")).stdout)
    assert (plan["remap"], plan["remap_from"]) == ([f"{moved['old_user']}={moved['new_user']}"],
                                                   "the audit (a moved home)"), plan
    assert (plan["sessions"], plan["by_cause"], plan["planned_row_updates"], plan["planned_rollout_rewrites"],
            plan["skipped"]) == (5, {"moved home": 5}, 5, 5, 0), plan
    res = json.loads(ok(w.script("session_recover.py", "--apply", "--json")).stdout)["result"]
    paginated = PAGINATED[old.version]  # their history rows' byte offsets move with line 1's new folder
    assert (res["applied"], res["skipped_at_apply"]) == (
        dict({"rollout_rewrite": 5, "row_update": 5}, **({"offsets": paginated} if paginated else {})), []), res
    ok(w.script("rollback.py", "--latest", "--apply"), (0, 1))
    assert state(w.home) == before

    ok(w.script("session_recover.py", "--apply"))
    assert_sees_all(old, old.version, proj)
    assert_sees_all(old, NEW, proj)
    assert_no_loss(old, w.audit())
