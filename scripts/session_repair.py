#!/usr/bin/env python3
"""Point every thread's row at its real rollout again, unarchive, and index unindexed rollouts.

Dry-run by default: prints every move `src -> dst` and every row change. `--apply` writes, after a
backup and with a journal that rollback.py replays backwards. Never touches a file outside the home.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

sys.dont_write_bytecode = True  # no __pycache__ inside the Codex home (the skill lives there)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionkit import EXIT_CLEAN, EXIT_FINDINGS  # noqa: E402
from sessionkit.snapshot import gather  # noqa: E402
from sessionkit.cli import (COMMAND, Parser, add_home_args, positive_int, print_json,  # noqa: E402
                            require_known_threads, run, thread_id_arg)
from sessionkit.commands import home_command, rerun_command  # noqa: E402
from sessionkit.home import CodexHome, open_home  # noqa: E402
from sessionkit.labels import readable_time, relative, session_names, short_title  # noqa: E402
from sessionkit.paths import safe_str  # noqa: E402
from sessionkit.progress import Progress  # noqa: E402
from sessionkit.repair import RepairPlan, apply_repair, parse_remaps, plan_repair, plan_report  # noqa: E402
from sessionkit.history_check import check_history  # noqa: E402
from sessionkit.history_offsets import history_db_path  # noqa: E402
from sessionkit.history_reset import (history_lines, history_ops, history_plan_report, name_changes,  # noqa: E402
                                      plan_history, rebuild_after)
from sessionkit.locks import scan_activity  # noqa: E402
from sessionkit.safety import refuse_if_running  # noqa: E402


def parse_args(argv: Optional[List[str]]) -> Any:
    p = Parser(prog="session_repair.py", description=(
        "Repair the session index: rows whose rollout_path is stale (moved files, a moved home), "
        "archived threads, and rollouts no row indexes. Dry-run unless --apply."))
    add_home_args(p)
    p.add_argument("--apply", action="store_true", help="write the changes (default: show the plan only).")
    p.add_argument("--force", action="store_true", help="apply even though Codex seems to be running.")
    p.add_argument("--no-fix-paths", action="store_true",
                   help="leave rows whose rollout_path does not exist as they are.")
    p.add_argument("--no-unarchive", action="store_true",
                   help="leave archived threads archived (default: bring all of them back).")
    p.add_argument("--thread-id", metavar="ID", action="append", default=[], type=thread_id_arg,
                   help="only this thread (repeatable); also limits unarchiving to these.")
    p.add_argument("--remap-prefix", metavar="OLD=NEW", action="append", default=[],
                   help="rewrite rollout_path and cwd values starting with OLD (on a path boundary) "
                        "to start with NEW, e.g. after moving the home (repeatable).")
    p.add_argument("--import-orphans", action="store_true",
                   help="add DB rows for rollouts that have none (never for ACTIVE_ORPHANs).")
    p.add_argument("--no-fix-history", action="store_true",
                   help="leave incomplete paginated histories as they are (default: reset them).")
    p.add_argument("--rebuild-history", action="store_true",
                   help="after --apply, have your Codex rebuild each reset history now (thread/resume).")
    p.add_argument("--codex-bin", metavar="PATH", help="the Codex CLI for --rebuild-history (default: codex on PATH).")
    p.add_argument("--sample", "--max-samples", dest="sample", type=positive_int, default=10, metavar="N",
                   help="moves and rows shown in the plan (default: 10).")
    return p.parse_args(argv)


ROW_WORDS = {"rollout_path": "file", "cwd": "folder", "archived": "archived", "archived_at": "archived at",
             "updated_at": "updated", "updated_at_ms": None}


def _value(key: str, value: Any, root: str) -> str:
    if key.endswith("_at") or key.endswith("_at_ms"):
        return readable_time(value)
    return relative(value, root) if key == "rollout_path" and value else repr(value)


def _change(key: str, old: Any, new: Any, root: str) -> str:
    """`old -> new`; a file that keeps its name shows only the folders it moves between."""
    if key == "rollout_path" and old and new and os.path.basename(str(old)) == os.path.basename(str(new)):
        return f"{relative(os.path.dirname(str(old)), root)}/ -> {relative(os.path.dirname(str(new)), root)}/"
    return f"{_value(key, old, root)} -> {_value(key, new, root)}"


def render(home: CodexHome, plan: RepairPlan, r: Dict[str, Any], result: Optional[Dict[str, Any]],
           dry_run: bool, names: Dict[str, str], sample: int) -> str:
    """The plan as the user knows the sessions (title, date, folder), then the result and the undo."""
    root = str(home.root)
    out = ["=== Session Repair Plan ===", f"codex_dir: {root}", f"dry_run: {dry_run}",
           f"files to move: {len(plan.moves)} ({r['planned_path_moves']} back to their recorded path, "
           f"{r['planned_unarchive_moves']} out of the archive)",
           f"index entries to update: {r['planned_row_updates']}, to add: {r['planned_row_inserts']}; "
           f"sessions skipped: {r['skipped']}"]
    if not r["path_fix_enabled"] or not r["unarchive_enabled"]:
        out.append(f"path fixes: {'on' if r['path_fix_enabled'] else 'off'}; "
                   f"unarchiving: {'on' if r['unarchive_enabled'] else 'off'}")
    out += history_lines(r)
    if r["suggested_remap"]:
        old = r["suggested_remap"].split(" ", 1)[1].rsplit("=", 1)[0]
        out += ["Rows point into another home; preview the repair that moves them here:",
                "  " + home_command(home, "session_repair.py", "--remap-prefix", f"{old}={home.root}")]
    for m in plan.moves[:sample]:
        out += [f"  move ({m.why}) {names.get(m.thread_id, m.thread_id)}",
                f"      {_change('rollout_path', m.src, m.dst, root)}"]
    for row in plan.rows[:sample]:
        changes = "; ".join(f"{ROW_WORDS.get(k) or k} {_change(k, row.old.get(k), v, root)}"
                            for k, v in row.new.items() if ROW_WORDS.get(k, k))
        out += [f"  update {names.get(row.thread_id, row.thread_id)}", f"      {changes}"]
    for ins in plan.inserts[:sample]:
        out += [f"  add {short_title(ins.get('preview'))}, {readable_time(ins.get('created_at'))}, "
                f"{safe_str(ins.get('cwd') or '(no folder)')}",
                f"      in {relative(os.path.dirname(ins['rollout_path']), root)}/, provider {ins.get('model_provider')}"]
    for tid, reason in plan.skipped[:sample]:
        out += [f"  skipped {names.get(tid, tid)}", f"      {reason}"]
    shown = max(len(plan.moves), len(plan.rows), len(plan.inserts), len(plan.skipped))
    if shown > sample:
        out.append(f"  (first {sample} of each shown; --sample N shows more, --json lists the ids)")
    if result is None:
        out.append("No changes applied (dry-run). To write them, run the same command with --apply:"
                   if dry_run else "Nothing to change.")
        if dry_run and (plan.moves or plan.rows or plan.inserts or r["planned_history_resets"]):
            out.append("  " + rerun_command(home, COMMAND[2:] + ["--apply"], "session_repair.py"))
        return "\n".join(out)
    out += ["", "=== Session Repair Result ===", f"db_backup: {result['db_backup']}",
            f"manifest_csv: {result['manifest_csv']}", f"journal: {result['journal']}",
            f"files moved: {result['moved']} (path_moves_applied {result['path_moves_applied']}); "
            f"index entries updated: {result['updated_rows']}, added: {result['inserted_rows']}; "
            f"history rows deleted: {result['history_rows_deleted']}",
            f"unarchived_rows: {result['unarchived_rows']}, archived_after: {result['archived_after']}",
            "undo with:", f"  {result['rollback']}",
            "Verify, then restart your editor's Codex:", "  " + home_command(home, "session_audit.py")]
    return "\n".join(out)


def has_work_of(plan: Any, hplan: Any) -> bool:
    return bool(plan.moves or plan.rows or plan.inserts or plan.others or hplan.resets or hplan.names)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    remaps = parse_remaps(args.remap_prefix)
    home = open_home(args.codex_dir, args.sqlite_home)
    progress = Progress.for_terminal()
    inputs = gather(home, progress)
    require_known_threads(args.thread_id, (r.id for r in inputs.rows), inputs.index.by_thread)
    plan = plan_repair(inputs, fix_paths=not args.no_fix_paths, unarchive=not args.no_unarchive,
                       thread_ids=args.thread_id, remaps=remaps, import_orphans=args.import_orphans)
    hplan = plan_history(inputs, check_history(inputs), not args.no_fix_history, args.thread_id)
    codex = None
    if args.rebuild_history and args.apply and hplan.rebuild:
        from sessionkit.codex_rebuild import find_codex  # only here: it loads subprocess and threading
        codex = find_codex(args.codex_bin)
    if codex is not None and not has_work_of(plan, hplan):  # a rebuild alone: the same refusal as any write
        refuse_if_running(scan_activity(home.root), args.force)
    report = {**plan_report(plan, args.sample), **history_plan_report(hplan, args.sample, args.rebuild_history)}
    plan.rows += name_changes(hplan)
    has_work = has_work_of(plan, hplan)
    result = None
    if args.apply and has_work:
        result = apply_repair(inputs, plan, args.force, progress=progress,
                              extra_ops=history_ops(history_db_path(home.state_db.path), hplan))
    if codex is not None:
        report["history_rebuild"] = rebuild_after(home, hplan, result, codex)
    if args.json:
        print_json({"codex_dir": str(home.root), **report, "dry_run": not args.apply, "result": result})
    else:
        ids = [m.thread_id for m in plan.moves[:args.sample]] + [c.thread_id for c in plan.rows[:args.sample]] \
            + [s[0] for s in plan.skipped[:args.sample]]
        print(render(home, plan, report, result, not args.apply, session_names(inputs, ids), args.sample))
    failed = (report.get("history_rebuild") or {}).get("failed")
    return EXIT_FINDINGS if plan.skipped or hplan.skipped or failed else EXIT_CLEAN


if __name__ == "__main__":
    raise SystemExit(run(main))
