"""What belongs together, planned together (codexfiles/thread_graph.py says what a careful user
expects): a rewrite that grows a parent's file moves its forks' `history_base` in the same run, so
each fork's rewrite is planned and linked to its parent's; a thread named on the command line
brings its sub-agents; the ops of a group's members say they go together (Op.join), so they are
locked in one batch, skipped together and rolled back together."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Set, Tuple

from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.paths import safe_str
from sessionkit.codexfiles.thread_graph import SubAgents, ThreadGraph
from sessionkit.runlog.ops import Op, RolloutEdit, RolloutRewrite


def fork_rewrites(graph: ThreadGraph, root: RolloutEdit, own: Dict[str, RolloutRewrite]) -> List[RolloutRewrite]:
    """The rewrite of every fork in `root`'s group, parents before their forks, each linked to its
    parent's rewrite (its history_base moves with it at prepare, under both writer locks): a fork's
    own planned rewrite (from `own`, by path, taken out) or one that moves only its history_base."""
    made: Dict[str, object] = {root.path: root}
    out = []
    for link in graph.group(Path(root.path)):
        op = own.pop(str(link.fork_path), None) or RolloutRewrite(link.fork_id, str(link.fork_path), {}, [])
        op.parent = made.get(str(link.parent_path))  # type: ignore[assignment]
        made[str(link.fork_path)] = op
        out.append(op)
    return out


def with_sub_agents(wanted: Iterable[str], subs: SubAgents) -> Set[str]:
    """The threads named on the command line (normalised there) and every sub-agent below them."""
    named = set(wanted)
    return named | set(subs.descendants(named))


def live_groups(planned: Iterable[str], live: Iterable[str], subs: SubAgents) -> Dict[str, str]:
    """Planned threads that go with a live one (a sub-agent or parent Codex holds open), each with
    that live thread: the whole group waits for the next run. `planned` and `live` are keys."""
    live_set = set(live)  # the lock scan's normalised ids
    if not live_set or not subs.parent_of:
        return {}
    out: Dict[str, str] = {}
    for tid in planned:
        if tid in live_set:
            continue
        group = _group(tid, subs)
        hit = sorted(group & live_set)
        if hit:
            out[tid] = hit[0]
    return out


def _group(tid: str, subs: SubAgents) -> Set[str]:
    top, seen = tid, {tid}
    while top in subs.parent_of and subs.parent_of[top] not in seen:
        top = subs.parent_of[top]
        seen.add(top)
    return {top} | set(subs.descendants([top]))


def left_behind(planned: Iterable[str], subs: SubAgents, why: Dict[str, str]) -> List[str]:
    """One line per sub-agent of a planned thread that this run leaves as it is although its parent
    changes (`why`: thread id -> the flag or reason that keeps it out), by name."""
    ids = set(planned)
    out = []
    for child in subs.descendants(ids):
        if child in ids or child not in why:
            continue
        parent = subs.parent_of[child]
        out.append(f"sub-agent {safe_str(child)} of {safe_str(parent)} is left as it is: {why[child]}")
    return out


def join_groups(ops: Sequence[Op], subs: SubAgents) -> List[Tuple[str, str]]:
    """Each op of a sub-agent whose ancestor the same run changes records that it goes with the
    highest such ancestor (Op.join): locked in one batch, skipped together, rolled back together.
    Returns the (member, root) pairs joined."""
    # an op holds the stored id its SQL and journal record need: keyed here, once per op
    present = {norm_id(o.thread_id): o.thread_id for o in ops if o.thread_id}
    if not subs.parent_of or len(present) < 2:
        return []
    tops: Dict[str, str] = {}
    keys = set(present)
    for low, tid in present.items():
        top = subs.top_in(low, keys)
        if top is not None:
            tops[tid] = present[top]
    for o in ops:
        if o.thread_id in tops:
            o.join(tops[o.thread_id])
    return sorted(tops.items())
