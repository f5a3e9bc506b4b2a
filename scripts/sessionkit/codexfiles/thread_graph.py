"""Which threads belong together: a thread's files (its first rollout and the segments a revert
starts), the forks that record byte offsets into one of them (`history_base`), and their forks in
turn. What belongs together is planned, locked, changed and rolled back together: a rewrite that
grows a parent's file moves its forks' `history_base.end_byte_offset` in the same run."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from sessionkit.codexfiles.line1 import read_line1
from sessionkit.codexfiles.rollout_index import ROLLOUT_NAME, RolloutFile


@dataclass
class ForkLink:
    """A fork whose line 1 records an offset into `parent_path` (its history_base)."""
    fork_id: str
    fork_path: Path
    parent_key: str  # the history key it names: the parent's thread id, or a segment's rollout uuid
    end_byte_offset: int
    parent_path: Optional[Path] = None


@dataclass
class ThreadGraph:
    """The home's files by history key and its fork links, read once (only forks' line 1)."""
    by_key: Dict[str, RolloutFile] = field(default_factory=dict)
    forks: Dict[str, List[ForkLink]] = field(default_factory=dict)  # parent file path -> its forks

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
    m = ROLLOUT_NAME.match(rf.name)
    return (m.group("rollout") or m.group("thread")).lower() if m else None


def build_graph(files: Iterable[RolloutFile], forked: Iterable[RolloutFile]) -> ThreadGraph:
    """`files`: every rollout of the home; `forked`: those whose line 1 names a parent (the audit's
    metas say which), whose history_base is read here."""
    graph = ThreadGraph()
    for rf in files:
        key = history_key(rf)
        if key and not rf.compressed:
            if "_" not in rf.name or key not in graph.by_key:
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
        key, end = str(base["thread_id"]).lower(), base["end_byte_offset"]
        fid = str(payload["id"]).lower()
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
    home, m = _home_of(path), ROLLOUT_NAME.match(path.name)
    if home is None or m is None:
        return []
    key = (m.group("rollout") or m.group("thread")).lower()
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
