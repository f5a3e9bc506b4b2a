#!/usr/bin/env python3
"""Point every thread's row at its real rollout again, index unindexed rollouts, and (when asked)
bring archived sessions back.

Dry-run by default: prints every move `src -> dst` and every row change. `--apply` writes, after a
backup and with a journal that rollback.py replays backwards. Never touches a file outside the home.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

sys.dont_write_bytecode = True  # no __pycache__ inside the Codex home (the skill lives there)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionkit import EXIT_CLEAN, EXIT_FINDINGS, Lines, UserError  # noqa: E402
from sessionkit.diagnose.snapshot import gather  # noqa: E402
from sessionkit.ui.cli import (COMMAND, Parser, add_home_args, emit, positive_int, print_json,  # noqa: E402
                            require_known_threads, run, thread_id_arg)
from sessionkit.ui.commands import home_command, quote, rerun_command  # noqa: E402
from sessionkit.codexfiles.home import CodexHome, open_home  # noqa: E402
from sessionkit.ui.labels import readable_time, relative, session_names, short_title, shown  # noqa: E402
from sessionkit.ui.results import Outcome, labels_for  # noqa: E402
from sessionkit.ui.results import render as render_outcome  # noqa: E402
from sessionkit.ui.progress import Progress  # noqa: E402
from sessionkit.fixes.repair import (RepairPlan, apply_repair, parse_remaps, plan_repair, plan_report,  # noqa: E402
                               resolve_threads)
from sessionkit.diagnose.history_check import check_history  # noqa: E402
from sessionkit.codexfiles.history_offsets import history_db_path  # noqa: E402
from sessionkit.fixes.history_reset import (history_lines, history_ops, history_plan_report,  # noqa: E402
                                      interrupted_rebuild, plan_history, rebuild_after,
                                      reset_and_remapped)
from sessionkit.codexfiles.locks import scan_activity  # noqa: E402


ALL = "\0all"  # a bare --unarchive


def parse_args(argv: Optional[List[str]]) -> Any:
    p = Parser(prog="session_repair.py", description=(
        "Repair the session index: rows whose rollout_path is stale (moved files, a moved home), "
        "archived threads, and rollouts no row indexes. Dry-run unless --apply."))
    add_home_args(p)
    p.add_argument("--apply", action="store_true", help="write the changes (default: show the plan only).")
    p.add_argument("--force", action="store_true", help="apply even though Codex seems to be running.")
    p.add_argument("--no-fix-paths", action="store_true",
                   help="leave rows whose rollout_path does not exist as they are.")
    p.add_argument("--unarchive", metavar="ID_OR_NAME", nargs="?", const=ALL, action="append", default=[],
                   help="bring archived sessions back: all of them, or the one with this id or name "
                        "(repeatable). Without it archived sessions stay archived (Codex shows them under "
                        "Archived); a row and file that disagree are still made to agree.")
    p.add_argument("--no-unarchive", action="store_true",
                   help="leave archived sessions archived (the default; kept for older commands).")
    p.add_argument("--thread-id", metavar="ID", action="append", default=[], type=thread_id_arg,
                   help="only this thread (repeatable).")
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
    p.add_argument("--verbose", action="store_true", help="also print the result's raw counters.")
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
           dry_run: bool, names: Dict[str, str], sample: int, verbose: bool = False) -> str:
    """The plan as the user knows the sessions (title, date, folder), then the result and the undo."""
    root = str(home.root)
    out = ["=== Session Repair Plan ===", f"codex_dir: {root}", f"dry_run: {dry_run}",
           f"files to move: {len(plan.moves)} ({r['planned_path_moves']} back to their recorded path, "
           f"{r['planned_unarchive_moves']} out of the archive)",
           f"index entries to update: {r['planned_row_updates']}, to add: {r['planned_row_inserts']}; "
           f"sessions skipped: {r['skipped']}"]
    if not r["path_fix_enabled"]:
        out.append("path fixes: off (--no-fix-paths)")
    if not r["unarchive_enabled"] and r["archived_before"]:
        out.append(f"archived sessions stay archived: {r['archived_before']} (Codex shows them under Archived; "
                   f"--unarchive brings them back)")
    out += history_lines(r, names)
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
                f"{shown(ins.get('cwd') or '(no folder)')}",
                f"      in {relative(os.path.dirname(ins['rollout_path']), root)}/, provider {ins.get('model_provider')}"]
    for tid, reason in plan.skipped[:sample]:
        out += [f"  skipped {names.get(tid, tid)}", f"      {reason}"]
    most = max(len(plan.moves), len(plan.rows), len(plan.inserts), len(plan.skipped))
    if most > sample:
        out.append(f"  (first {sample} of each shown; --sample N shows more, --json lists the ids)")
    for link in r["planned_link_repoints"]:
        out += [f"  re-point {relative(link['link'], root)} (Codex does not start without it)",
                f"      {link['from']} -> {link['to']}"]
    if result is None:
        out.append("No changes applied (dry-run). To write them, run the same command with --apply:"
                   if dry_run else "Nothing to change.")
        if dry_run:
            out.append("  " + rerun_command(home, COMMAND[2:] + ["--apply"], "session_repair.py"))
        return Lines(out)
    return Lines(out + [""] + render_outcome(repair_outcome(home, plan, r, result, names), verbose))


def repair_outcome(home: CodexHome, plan: RepairPlan, r: Dict[str, Any], result: Dict[str, Any],
                   names: Dict[str, str]) -> Outcome:
    """The repair's result in words: the sessions it changed by name, the skips, undo and verify."""
    ids: List[str] = []
    for tid in [m.thread_id for m in plan.moves] + [c.thread_id for c in plan.rows] + \
            [rw.thread_id for rw in plan.rewrites]:
        if tid not in ids:
            ids.append(tid)
    parts = [f"{result['moved']} file(s) moved" if result.get("moved") else "",
             f"{result['updated_rows']} index entr{'y' if result.get('updated_rows') == 1 else 'ies'} updated"
             if result.get("updated_rows") else "",
             f"{result['inserted_rows']} added" if result.get("inserted_rows") else "",
             f"{result['history_rows_deleted']} history row(s) reset" if result.get("history_rows_deleted") else ""]
    said = ", ".join(p for p in parts if p) or "nothing needed changing"
    links = result.get("links_repointed") or []
    rebuilt = r.get("history_rebuild") or {}
    from sessionkit.runlog.runs import older_runs  # only with a result to show: a dry-run never loads it
    return Outcome(
        heading="Session Repair Result", done=f"Done: {said}" + (":" if ids else "."),
        notes=[f"re-pointed {quote(relative(link, str(home.root)))}: Codex's daemon link points into this home "
               "again, so Codex starts here." for link in links]
        + (["Interrupted while your Codex rebuilt the histories: the repair above WAS applied; a history "
            "not rebuilt comes back the first time its session is opened."] if rebuilt.get("interrupted") else []),
        changed=labels_for(names, ids),
        skipped=[(names.get(t, t), shown(why)) for t, why in plan.skipped],
        undo=result.get("rollback"), verify=home_command(home, "session_audit.py"),
        undo_then=[(f"the {result['decompression']['decompressed']} compressed session(s) decompressed first",
                    result["decompression"]["rollback"])] if result.get("decompression") else [],
        older=older_runs(home, result.get("run_dir")),
        counters={k: v for k, v in result.items() if k != "rollback"})


def nothing_to_do(names: Dict[str, str], skipped: List[Any]) -> str:
    """A repair with nothing to write: one line, then the sessions nothing here can fix and why."""
    out = ["Nothing to repair: every session's index entry already matches its file."]
    if skipped:
        out.append(f"{len(skipped)} session(s) this repair cannot fix:")
        out += [f"  {names.get(t, t)}: {why}" for t, why in skipped]
    return Lines(out)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.unarchive and args.no_unarchive:
        raise UserError("--unarchive and --no-unarchive contradict each other")
    remaps = parse_remaps(args.remap_prefix)
    home = open_home(args.codex_dir, args.sqlite_home)
    progress = Progress.for_terminal()
    inputs = gather(home, progress)
    require_known_threads(args.thread_id, (r.key for r in inputs.rows), inputs.index.by_thread)
    unarchive: Any = True if ALL in args.unarchive else resolve_threads(inputs, args.unarchive)
    hplan = plan_history(inputs, check_history(inputs), not args.no_fix_history, args.thread_id)
    plan = plan_repair(inputs, fix_paths=not args.no_fix_paths, unarchive=unarchive or False,
                       thread_ids=args.thread_id, remaps=remaps, import_orphans=args.import_orphans,
                       names=hplan.names)
    codex = None
    if args.rebuild_history and args.apply and hplan.rebuild:
        from sessionkit.fixes.codex_rebuild import find_codex  # only here: it loads subprocess and threading
        codex = find_codex(args.codex_bin)
    has_work = plan.has_work() or bool(hplan.resets)
    if codex is not None and not has_work:  # a rebuild alone: the same refusal as any write
        from sessionkit.runlog.safety import refuse_if_running  # only to apply
        refuse_if_running(scan_activity(home.root), args.force)
    report = {**plan_report(plan, args.sample), **history_plan_report(hplan, args.sample, args.rebuild_history),
              "history_reset_instead_of_shift": reset_and_remapped(plan, hplan)}
    report["nothing_to_do"] = idle = not has_work and not (args.rebuild_history and hplan.rebuild)
    result = None
    if args.apply and has_work:
        result = apply_repair(inputs, plan, args.force, progress=progress,
                              extra_ops=history_ops(history_db_path(home.state_db.path), hplan),
                              reset=[f.key for f in hplan.resets])
    if codex is not None:
        try:
            report["history_rebuild"] = rebuild_after(home, hplan, result, codex)
        except KeyboardInterrupt:  # after the apply: the result and its undo are still said
            report["history_rebuild"] = interrupted_rebuild(hplan, codex)
    skipped = plan.skipped + hplan.skipped
    if args.json:
        print_json({"codex_dir": str(home.root), **report, "dry_run": not args.apply, "result": result})
    elif idle:
        emit(nothing_to_do(session_names(inputs, [t for t, _ in skipped]), skipped))
    else:
        n = max(args.sample, 10)  # the plan's and the result's lists name this many of each
        ids = [m.thread_id for m in plan.moves[:n]] + [c.thread_id for c in plan.rows[:n]] \
            + [s[0] for s in plan.skipped[:n]] + [rw.thread_id for rw in plan.rewrites[:n]] \
            + [f.thread_id for f in hplan.resets[:n]] + [t for t, _name in hplan.names[:n]] \
            + [s[0] for s in hplan.skipped[:n]]
        emit(render(home, plan, report, result, not args.apply, session_names(inputs, ids), args.sample,
                    args.verbose))
    rebuild = report.get("history_rebuild") or {}
    if idle:
        return EXIT_CLEAN
    return EXIT_FINDINGS if skipped or rebuild.get("failed") or rebuild.get("interrupted") else EXIT_CLEAN


if __name__ == "__main__":
    raise SystemExit(run(main))
