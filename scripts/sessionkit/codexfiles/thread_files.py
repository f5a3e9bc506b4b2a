"""Which rollout file is a thread's: the one rule the audit, repair, migration, import, export and
the thread graph ask. A thread may own several files:
- its first rollout `rollout-<date>T<time>-<thread>.jsonl` (in `sessions/` or `archived_sessions/`);
- the segments a 0.148 revert starts, `...-<thread>_<rollout>.jsonl`, each with its own history
  key (the rollout uuid) in `thread_history_1`;
- a compressed `X.jsonl.zst` (0.171 `rollout/compress`): read for a row naming `X.jsonl`, but a
  plain `X.jsonl` beside it wins (it is the compressed file's twin, not a second rollout).
The thread's file is the one its row names (a `.jsonl.zst` for a row naming its `.jsonl`); with
no row, or a row naming none of them, the one candidate (twins left out); several candidates are
ambiguous and nobody guesses between them (a revert segment, the same name in both folders)."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.rollout_index import ROLLOUT_NAME, RolloutFile


def history_key(name: str, thread_id: Optional[str] = None) -> Optional[str]:
    """The key thread_history_1 and a fork's history_base use for a file: a segment's own rollout
    uuid, else the thread id (lower case); `thread_id` (or None) for a name that is no rollout's."""
    m = ROLLOUT_NAME.match(name)
    if m is None:
        return thread_id
    return norm_id(m.group("rollout") or m.group("thread"))


def is_segment(name: str) -> bool:
    """A file a revert started (`<thread>_<rollout>.jsonl`), not the thread's first rollout."""
    m = ROLLOUT_NAME.match(name)
    return bool(m and m.group("rollout"))


def first_files(files: Sequence[RolloutFile]) -> List[RolloutFile]:
    """The files named as the thread's first rollout (compressed ones too): more than one, or one
    name twice, is what `codex doctor` counts as a duplicate rollout id."""
    return [f for f in files if not is_segment(f.name)]


def is_duplicate(files: Sequence[RolloutFile]) -> bool:
    """Two files claim to be the thread's first rollout, or one name lies in two folders."""
    if len(files) < 2:
        return False
    names: Dict[str, int] = {}
    for f in files:
        names[f.name] = names.get(f.name, 0) + 1
    return len(first_files(files)) > 1 or any(n > 1 for n in names.values())


def candidates(files: Sequence[RolloutFile]) -> List[RolloutFile]:
    """Every file that could be the thread's: all but a compressed twin of a plain file beside it."""
    plain = {f.key for f in files if not f.compressed}
    return [f for f in files if not (f.compressed and f.row_path in plain)]


def thread_file(files: Sequence[RolloutFile], row_path: Optional[str] = None,
                row_only: bool = False) -> Optional[RolloutFile]:
    """The thread's file: the one `row_path` names (its `.jsonl.zst` when only that is there), else
    (unless `row_only`) the only candidate; None when none or several (len(candidates) says which)."""
    if row_path:
        for f in files:
            if f.key == row_path:
                return f
        for f in files:
            if f.compressed and f.row_path == row_path:
                return f
        if row_only:
            return None
    cands = candidates(files)
    return cands[0] if len(cands) == 1 else None


def file_for_row(by_path: Mapping[str, RolloutFile], row_path: str) -> Optional[RolloutFile]:
    """The file Codex reads for a row's rollout_path: the path itself (a row naming `X.jsonl` finds
    `X.jsonl.zst` too: RolloutIndex.add), or `X.jsonl` for a row naming `X.jsonl.zst` whose file was
    since decompressed (real 0.171 reads it, and its resume renames the row)."""
    rf = by_path.get(row_path)
    if rf is None and row_path.endswith(".jsonl.zst"):
        rf = by_path.get(row_path[:-4])
    return rf


def first_file(files: Sequence[RolloutFile]) -> Optional[RolloutFile]:
    """The thread's first rollout (where line 1 says what it was forked from), when exactly one."""
    cands = first_files(candidates(files))
    return cands[0] if len(cands) == 1 else None
