"""Compressed rollouts a run must write: decompressed first, in a journaled run of their own
(kind `decompress`, as Codex's resume does), right before the main run."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from sessionkit.runlog.decompress import Decompress, decompressions
from sessionkit.runlog.ops import Op


def decompress_first(home: Any, ops: List[Op], force: bool, progress: Any = None) -> Optional[Dict[str, Any]]:
    """Before a run that writes compressed rollouts: one journaled run that decompresses them, as
    Codex's resume does; its own rollback command undoes it (after the main run's). None: nothing
    compressed is written."""
    todo = decompressions(ops)
    if not todo:
        return None
    lines = ["thread_id,compressed,decompressed"] + [
        f"{d.thread_id or ''},{d.src},{d.dst}".replace("\n", " ") for d in todo]
    from sessionkit.runlog.writerun import execute  # the executor: loaded only to apply
    r = execute(home, "decompress", todo, ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"), force,
                progress)
    return {"run_dir": str(r.run_dir), "decompressed": r.applied[Decompress.KIND],
            "skipped": [{"thread_id": t, "reason": why} for t, why in r.skipped],
            "rollback": r.rollback_command(home)}
