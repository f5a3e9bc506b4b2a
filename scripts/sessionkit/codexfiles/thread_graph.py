"""Which threads belong together: a thread's files (its first rollout and the segments a revert
starts), the forks that record byte offsets into one of them (`history_base`), and their forks in
turn; and a thread's sub-agents (0.171: a `thread_spawn_edges` row, and the child's row `source`
naming its parent), their sub-agents in turn. What belongs together is planned, locked, changed
and rolled back together: a rewrite that grows a parent's file moves its forks'
`history_base.end_byte_offset` in the same run.

What a careful user expects (the rule every planner follows):
- A sub-agent is part of its parent's conversation: naming a thread (`--thread-id`) selects its
  sub-agents too; a filter the user chose (`--from-provider`, archived left out) may leave one
  behind, and the plan names each such sub-agent with the flag that would bring it.
- A fork is a thread of its own: it moves with its parent only when it records offsets into bytes
  the run moves (then always, named in `forks_moved`).
- The members of a group a run changes go together: a live member (Codex holds its writer lock)
  keeps the whole group out of the run, named; their ops say so (`Op.join`, "with" in the journal),
  so the executor takes their writer locks in one batch and skips them together, and a rollback
  that finds one member changed since leaves the whole group alone and names each member."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.record import Record
from sessionkit import UserError
from sessionkit.codexfiles.line1 import read_line1
from sessionkit.codexfiles.rollout_index import ROLLOUT_NAME, RolloutFile
from sessionkit.codexfiles.statedb import open_readonly
from sessionkit.codexfiles.thread_files import history_key as key_of, is_segment


class ForkLink(Record):
    """A fork whose line 1 records an offset into `parent_path` (its history_base); parent_key is
    the history key it names: the parent's thread id, or a segment's rollout uuid."""
    __slots__ = ("fork_id", "fork_path", "parent_key", "end_byte_offset", "parent_path")

    def __init__(self, fork_id: str, fork_path: Path, parent_key: str, end_byte_offset: int,
                 parent_path: Optional[Path] = None) -> None:
        self.fork_id, self.fork_path, self.parent_key = fork_id, fork_path, parent_key
        self.end_byte_offset, self.parent_path = end_byte_offset, parent_path


class ThreadGraph(Record):
    """The home's files by history key and its fork links, read once (only forks' line 1)."""
    __slots__ = ("by_key", "forks")

    def __init__(self) -> None:
        self.by_key: Dict[str, RolloutFile] = {}
        self.forks: Dict[str, List[ForkLink]] = {}  # parent file path -> its forks

    def forks_into(self, path: Path) -> List[ForkLink]:
        """Forks recording offsets into this file."""
        return self.forks.get(str(path), [])

    def group(self, path: Path) -> List[ForkLink]:
        """Every fork that moves when this file grows, parents before their forks (forks of forks too)."""
        out: List[ForkLink] = []
        todo, seen = [str(path)], {str(path)}
        while todo:
            for link in self.forks.get(todo.pop(0), []):
                if str(link.fork_path) not in seen:
                    seen.add(str(link.fork_path))
                    out.append(link)
                    todo.append(str(link.fork_path))
        return out


def history_key(rf: RolloutFile) -> Optional[str]:
    """The key thread_history_1 and a fork's history_base use for a file: a segment's own rollout
    uuid, else the thread id."""
    return key_of(rf.name)


def build_graph(files: Iterable[RolloutFile], forked: Iterable[RolloutFile]) -> ThreadGraph:
    """`files`: every rollout of the home; `forked`: those whose line 1 names a parent (the audit's
    metas say which), whose history_base is read here."""
    graph = ThreadGraph()
    for rf in files:
        key = history_key(rf)
        if key and not rf.compressed:
            if not is_segment(rf.name) or key not in graph.by_key:
                graph.by_key.setdefault(key, rf)
    for rf in forked:
        link = _fork_link(rf)
        if link is None:
            continue
        parent = graph.by_key.get(link.parent_key)
        if parent is not None and parent.path != rf.path:
            link.parent_path = parent.path
            graph.forks.setdefault(str(parent.path), []).append(link)
    return graph


def _fork_link(rf: RolloutFile) -> Optional[ForkLink]:
    line, _err = read_line1(rf.path)
    if line is None or b'"history_base"' not in line:
        return None
    try:
        payload = json.loads(line)["payload"]
        base = payload["history_base"]
        key, end = norm_id(str(base["thread_id"])), base["end_byte_offset"]
        fid = norm_id(str(payload["id"]))
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(end, int) or isinstance(end, bool):
        return None
    return ForkLink(fid, rf.path, key, end)


def graph_of(inputs) -> ThreadGraph:  # type: ignore[no-untyped-def]
    """The graph of an audit's inputs (snapshot.AuditInputs): only forks' line 1 is read again."""
    files = list(inputs.index.files)
    forked = [rf for rf in files if not rf.compressed and inputs.meta_for(rf).forked_from_id]
    return build_graph(files, forked)


def members(graph: ThreadGraph, paths: Iterable[Path]) -> Dict[str, ForkLink]:
    """Every fork (by file) that moves when any of these files grows."""
    return {str(link.fork_path): link for p in paths for link in graph.group(p)}


def uuid7_ms(uuid: str) -> Optional[int]:
    """The creation time (unix ms) a UUIDv7 thread id carries; None for another version."""
    hexs = uuid.replace("-", "")
    if len(hexs) != 32 or hexs[12] != "7":
        return None
    try:
        return int(hexs[:12], 16)
    except ValueError:
        return None


def _home_of(path: Path) -> Optional[Path]:
    for parent in path.parents:
        if parent.name in ("sessions", "archived_sessions"):
            return parent.parent
    return None


def forks_since(path: Path, since_ms: int, first: int) -> List[str]:
    """Ids of forks made after `since_ms` (their UUIDv7 time) whose history_base names this file's
    history key at an offset >= `first`. The rollouts named since that day are read once per
    process (line 1 of each) and again only when today's folder changes: a rollback asks this for
    every grown file it undoes."""
    home, key = _home_of(path), key_of(path.name)
    if home is None or key is None:
        return []
    day = _day(since_ms / 1000 - 86400)
    links = _forks_by_parent(home, day)
    return sorted(fid for fid, end, born, fpath in links.get(key, [])
                  if born > since_ms and end >= first and fpath != path)


_FORK_INDEX: Dict[Tuple[str, str], Tuple[Tuple[int, ...], Dict[str, List[Tuple[str, int, int, Path]]]]] = {}


def _day(ts: float) -> str:
    import datetime
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d")


def _now_signature(home: Path) -> Tuple[int, ...]:
    """mtimes of the folders a fork made from now on lands in (today's and yesterday's, in any
    time zone, and archived_sessions): they change when Codex writes a new rollout there."""
    import os
    import time
    out = []
    for days in (-1, 0, 1):
        d = _day(time.time() + days * 86400).replace("-", "/")
        for folder in (home / "sessions" / d, home / "archived_sessions"):
            try:
                out.append(os.stat(str(folder)).st_mtime_ns)
            except OSError:
                out.append(0)
    return tuple(out)


def _forks_by_parent(home: Path, day: str) -> Dict[str, List[Tuple[str, int, int, Path]]]:
    import os
    sig = _now_signature(home)
    cached = _FORK_INDEX.get((str(home), day))
    if cached is not None and cached[0] == sig:
        return cached[1]
    index: Dict[str, List[Tuple[str, int, int, Path]]] = {}
    for folder in ("sessions", "archived_sessions"):
        for dirpath, dirnames, names in os.walk(str(home / folder)):
            rel = os.path.relpath(dirpath, str(home / folder)).replace(os.sep, "-")
            dirnames[:] = sorted(d for d in dirnames
                                 if (d if rel == "." else rel + "-" + d) >= day[:len(d if rel == "." else rel + "-" + d)])
            for name in names:
                n = ROLLOUT_NAME.match(name)
                if n is None or n.group("zst") or n.group("date") < day:
                    continue
                born = uuid7_ms(n.group("thread"))
                if born is None:
                    continue
                link = _fork_link(_Stub(Path(dirpath, name)))  # type: ignore[arg-type]
                if link is not None:
                    index.setdefault(link.parent_key, []).append((link.fork_id, link.end_byte_offset, born,
                                                                  Path(dirpath, name)))
    _FORK_INDEX[(str(home), day)] = (sig, index)
    return index


class _Stub:
    """What _fork_link reads of a file: its path."""

    def __init__(self, path: Path) -> None:
        self.path = path


# ---- sub-agents

class SubAgents(Record):
    """Spawn links of a home: child -> parent, and each parent's children (ids in lower case)."""
    __slots__ = ("parent_of", "children")

    def __init__(self) -> None:
        self.parent_of: Dict[str, str] = {}
        self.children: Dict[str, List[str]] = {}

    def add(self, parent: str, child: str) -> None:
        """A link between two normalised ids (the readers below normalise what they read)."""
        if parent == child or child in self.parent_of:
            return  # a thread has one parent: the first record read wins (the edges table)
        self.parent_of[child] = parent
        self.children.setdefault(parent, []).append(child)

    def descendants(self, ids: Iterable[str]) -> List[str]:
        """Every sub-agent below these threads (their sub-agents too), not the threads themselves;
        a hostile cycle of edges ends. `ids`: normalised."""
        start = list(ids)
        seen, out, todo = set(start), [], list(start)
        while todo:
            for c in self.children.get(todo.pop(0), []):
                if c not in seen:
                    seen.add(c)
                    out.append(c)
                    todo.append(c)
        return out

    def top_in(self, tid: str, present: Set[str]) -> Optional[str]:
        """The highest ancestor of `tid` that is in `present` (the threads a run changes), else None.
        Both in normalised form."""
        top, seen, t = None, {tid}, tid
        while t in self.parent_of:
            t = self.parent_of[t]
            if t in seen:
                break
            seen.add(t)
            if t in present:
                top = t
        return top


def spawn_parent(source: Optional[str]) -> Optional[str]:
    """The parent a sub-agent row's `source` names (`{"subagent":{"thread_spawn":{"parent_thread_id"
    ...}}}`), else None; read only for rows that look like one."""
    if not source or "thread_spawn" not in source:
        return None
    try:
        parent = json.loads(source)["subagent"]["thread_spawn"]["parent_thread_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return norm_id(parent) if isinstance(parent, str) and parent else None


def spawn_edges(db: Path) -> List[Tuple[str, str]]:
    """(parent, child) of 0.171's `thread_spawn_edges`; none for an older schema or a DB that cannot
    be read (the rows' `source` still names parents)."""
    try:
        conn = open_readonly(db)
    except (OSError, sqlite3.Error, UserError):
        return []
    try:
        rows = conn.execute("SELECT parent_thread_id, child_thread_id FROM thread_spawn_edges").fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()
    return [(norm_id(p), norm_id(c)) for p, c in rows if isinstance(p, str) and isinstance(c, str) and p and c]


def sub_agents(rows: Sequence[Any], edges: Iterable[Tuple[str, str]]) -> SubAgents:
    """Spawn links from the edges table, then from each row's `source` (a child whose edge is
    missing still names its parent there)."""
    subs = SubAgents()
    for parent, child in edges:
        subs.add(parent, child)
    for row in rows:
        parent = spawn_parent(getattr(row, "source", None))
        if parent:
            subs.add(parent, row.key)
    return subs


def sub_agents_of(inputs: Any, db: Optional[Path] = None) -> SubAgents:
    """The spawn links of an audit's inputs (snapshot.AuditInputs): its rows, and the edges of `db`
    (default: the used state DB)."""
    return sub_agents(inputs.rows, spawn_edges(db or inputs.home.state_db.path))
