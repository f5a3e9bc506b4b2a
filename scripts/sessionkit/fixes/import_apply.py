"""An import plan as the one executor's typed ops: folders, new rollout files, the threads rows
and the thread_history_1 rows; rollback.py --latest undoes exactly these."""
from __future__ import annotations

import csv
import io
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional

from sessionkit import Lines, UserError
from sessionkit.codexfiles import host
from sessionkit.codexfiles.thread_tables import Update, thread_refs
from sessionkit.fixes.importer import FileCopy, ImportPlan, history_rows, read_dest
from sessionkit.fixes.rollout_remap import RolloutRemapper
from sessionkit.codexfiles.locks import scan_activity
from sessionkit.codexfiles.paths import safe_str
from sessionkit.ui.progress import Progress

HISTORY_KEYS = {"thread_turns": ("thread_id", "turn_id"), "thread_items": ("thread_id", "turn_id", "item_id"),
                "thread_realtime_items": ("thread_id", "item_id"), "thread_history_projection_state": ("thread_id",)}
FILE_MODE = 0o600  # imported history is private, whatever the source's modes were


def refuse_live_source(plan: ImportPlan, force: bool) -> None:
    """A source folder Codex is writing to would be copied half-written: close it first."""
    if plan.source.kind != "folder" or force:
        return
    activity = scan_activity(plan.source.root)
    if activity.running:
        raise UserError(Lines([f"Codex is running against the source home {safe_str(plan.source.root)}:",
                                   *activity.running_lines()[1:], "Nothing was changed. Stop it and run again "
                                   "(or pass --force if you are sure)."]))


def stage(fc: FileCopy, remapper: RolloutRemapper, scratch: Path, n: int) -> Path:
    """A file whose folders are remapped is first written whole into the private scratch folder,
    so the executor creates it in DEST from a finished source it can hash."""
    folder = scratch / "staged"
    folder.mkdir(mode=0o700, exist_ok=True)
    out = folder / f"{n}-{fc.dst.name}"
    fd = os.open(str(out), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | host.BINARY, 0o600)
    try:
        for chunk in remapper.stream(fc.src):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.utime(str(out), ns=(fc.mtime_ns, fc.mtime_ns))
    return out


def table_op(db: str, change: Any, thread_id: Optional[str] = None) -> Any:
    """A thread_tables Insert as a RowInsert, an Update (a queue counter) as a RowUpdate."""
    from sessionkit.runlog.ops import RowInsert, RowUpdate
    if isinstance(change, Update):
        return RowUpdate(db, change.table, change.key, change.old, change.new, thread_id)
    return RowInsert(db, change.table, change.row, change.key, thread_id, list(change.serves) if change.serves
                     else None, change.refs, change.unit)


def import_ops(plan: ImportPlan, hist: Dict[str, Dict[str, List[Dict[str, Any]]]]) -> List[Any]:
    """Folders first, then each thread's files, its threads row and its history rows."""
    from sessionkit.runlog.ops import FileCreate, Mkdir, RowInsert
    ops: List[Any] = [Mkdir(str(d)) for d in plan.mkdirs]
    state_db = str(plan.dest.state_db.path)
    tables = plan.table_dbs
    ops += [table_op(str(tables[i.db]), i) for i in plan.shared]  # projects, sections, keys, queue sequence
    hist_db = str(plan.dest_history_db) if plan.dest_history_db else None
    n = 0
    for t in plan.imports:
        for fc in t.files:
            n += 1
            staged = plan.remapper is not None and (fc.edits or plan.remaps)
            source = stage(fc, plan.remapper, plan.source.scratch, n) if staged else fc.src
            ops.append(FileCreate(str(fc.dst), source=str(source), mode=FILE_MODE, mtime_ns=fc.mtime_ns,
                                  thread_id=t.thread_id))
        row = dict(t.row, **t.extras.columns) if t.extras else t.row  # its project, section, position
        # rows DEST makes for it since (queued input, an attachment) tell the rollback Codex used it
        ops.append(RowInsert(state_db, "threads", row, {"id": row["id"]}, t.thread_id, refs=thread_refs()))
        for i in t.extras.inserts if t.extras else ():  # its goal, sub-agent link, attachments, ...
            ops.append(table_op(str(tables[i.db]), i, t.thread_id))
        if hist_db is None:
            continue
        for table, rows in hist.get(t.thread_id, {}).items():
            for row in rows:
                ops.append(RowInsert(hist_db, table, row, {k: row[k] for k in HISTORY_KEYS[table]}, t.thread_id))
    named = [(t.thread_id, t.name) for t in plan.imports if t.name]
    if named:  # Codex 0.171 shows a legacy thread's name from session_index.jsonl only: written there too
        from sessionkit.runlog.session_index import SESSION_INDEX, IndexAppend, name_lines
        ops.append(IndexAppend(str(plan.dest.root / SESSION_INDEX), name_lines(named)))
    return ops


def manifest(plan: ImportPlan) -> bytes:
    ts = datetime.now().isoformat(timespec="seconds")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "action", "source", "dest", "ts"])
    for t in plan.imports:
        for fc in t.files:
            w.writerow([t.thread_id, "import file" + (" (folders remapped)" if (fc.edits or plan.remaps) else ""),
                        safe_str(fc.src), safe_str(fc.dst), ts])
        w.writerow([t.thread_id, "insert row", "", t.row.get("rollout_path", ""), ts])
    return buf.getvalue().encode("utf-8")


def apply_import(plan: ImportPlan, force: bool = False, progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Run the plan through the executor (refuses while Codex runs on DEST, backs up both DBs,
    journals first, one transaction per DB) after refusing a live source."""
    from sessionkit.runlog.writerun import execute
    refuse_live_source(plan, force)
    # DEST without thread_history_1.sqlite (0.130 never makes one; newer releases make it with their first
    # paginated thread): the rollouts and rows that Codex reads are imported, the history rows it has no place for are not
    dest = read_dest(plan.dest)
    hist = history_rows(plan, dest.history_columns)
    ops = import_ops(plan, hist)
    r = execute(plan.dest, "session_import", ops, manifest(plan), force, progress)
    skipped = {t for t, _ in r.skipped}
    done = [t for t in plan.imports if t.thread_id not in skipped]
    rows = r.rows
    return {"run_dir": str(r.run_dir), "journal": str(r.journal), "manifest_csv": str(r.manifest),
            "db_backups": [str(b) for b in r.backups.values()],
            "imported_threads": len(done), "files_created": r.applied["file_create"],
            "folders_created": r.applied["mkdir"],
            "rows_inserted": rows.get(str(plan.dest.state_db.path), 0),
            "history_rows_inserted": rows.get(str(plan.dest_history_db), 0) if plan.dest_history_db else 0,
            "skipped_at_apply": [{"thread_id": t, "reason": why} for t, why in r.skipped],
            "rollback": r.rollback_command(plan.dest)}
