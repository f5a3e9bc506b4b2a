"""Forks planned with their parent: a rewrite that grows a parent's file moves its forks'
`history_base` in the same run, so each fork's rewrite is planned and linked to its parent's."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from sessionkit.codexfiles.thread_graph import ThreadGraph
from sessionkit.runlog.ops import RolloutEdit, RolloutRewrite


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
