#!/usr/bin/env python3
"""Take chosen sessions along: write one archive (.tar.gz or .zip) holding them as a Codex home
subset that `session_import.py --from FILE` brings into another home.

Dry-run by default: which sessions (by name or title, date, folder) with their sizes. `--to FILE
--apply` writes the archive (never over an existing file, 0600). The home is only read.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

sys.dont_write_bytecode = True  # no __pycache__ inside the Codex home (the skill lives there)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionkit import EXIT_CLEAN, EXIT_FINDINGS, Lines, UserError  # noqa: E402
from sessionkit.ui.cli import COMMAND, Parser, absolute_path_arg, add_home_args, emit, path_arg, positive_int, print_json, run  # noqa: E402
from sessionkit.ui.commands import home_command, script_command  # noqa: E402
from sessionkit.fixes.export import (ARCHIVED_CHOICES, SKIP_NO_FILE, SKIP_OUTSIDE, ExportPlan, Selection,  # noqa: E402
                                     check_target, has_filter, label, parse_time, plan_export, write_export)
from sessionkit.codexfiles.home import open_home  # noqa: E402
from sessionkit.ui.labels import readable_time  # noqa: E402
from sessionkit.codexfiles.paths import safe_str  # noqa: E402
from sessionkit.ui.progress import Progress  # noqa: E402
from sessionkit.ui.results import wrap  # noqa: E402


def parse_args(argv: Optional[List[str]]) -> Any:
    p = Parser(prog="session_export.py", description=(
        "Export chosen sessions (by id or name, project folder, time, or all) as one .tar.gz or .zip "
        "that session_import.py --from reads on another machine. Dry-run unless --apply; the home is only read."))
    add_home_args(p)
    p.add_argument("--thread", metavar="ID_OR_NAME", action="append", default=[],
                   help="this thread, by id or by its name (repeatable); always exported, archived or not.")
    p.add_argument("--folder", metavar="DIR", type=absolute_path_arg,
                   help="threads whose folder (cwd) is DIR or inside it.")
    p.add_argument("--since", metavar="DATE", help="threads active on or after DATE (YYYY-MM-DD or YYYY-MM-DDTHH:MM, local).")
    p.add_argument("--until", metavar="DATE", help="threads started before the end of DATE (a date) or before DATE (a time).")
    p.add_argument("--archived", choices=("include", "only"), default=None,
                   help="also archived threads (include) or only them (only); default: not archived.")
    p.add_argument("--all", action="store_true", help="every thread (with --archived include: really every one).")
    p.add_argument("--to", metavar="FILE", type=path_arg,
                   help="the archive to write: a new .tar.gz, .tgz or .zip (never an existing file).")
    p.add_argument("--apply", action="store_true", help="write the archive (default: show the selection only).")
    p.add_argument("--sample", type=positive_int, default=20, metavar="N", help="threads shown (default: 20).")
    args = p.parse_args(argv)
    if not (args.thread or args.folder or args.since or args.until or args.all or args.archived == "only"):
        p.error("choose threads: --thread, --folder, --since, --until, --archived only or --all")
    if args.apply and not args.to:
        p.error("--apply needs --to FILE (the archive to write)")
    return args


def selection(args: Any) -> Selection:
    return Selection(threads=args.thread, folder=args.folder,
                     since=parse_time(args.since) if args.since else None,
                     until=parse_time(args.until, end_of_day=True) if args.until else None,
                     archived=args.archived or ARCHIVED_CHOICES[0], all=args.all)


def report(plan: ExportPlan, sample: int) -> Dict[str, Any]:
    return {
        "threads": len(plan.picked),
        "threads_chosen": sum(1 for p in plan.picked if p.why == "chosen"),
        "threads_along": sum(1 for p in plan.picked if p.why != "chosen"),
        "archived": sum(1 for p in plan.picked if p.archived),
        "files": sum(len(p.files) for p in plan.picked),
        "file_bytes": plan.file_bytes,
        "partial": sum(1 for p in plan.picked if p.notes),
        "skipped": len(plan.skipped),
        "sample": [{"thread_id": p.id, "name": p.name, "title": p.title, "created": readable_time(p.created_at),
                    "folder": safe_str(p.cwd), "archived": p.archived, "why": p.why, "files": len(p.files),
                    "bytes": p.size, "notes": p.notes} for p in plan.picked[:sample]],
        "skipped_sample": [{"thread_id": t, "label": lab, "reason": r} for t, lab, r in plan.skipped[:sample]],
        "thread_ids": plan.ids,
    }


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def render(root: str, plan: ExportPlan, r: Dict[str, Any], to: Optional[str], result: Optional[Dict[str, Any]],
           apply_cmd: Optional[str], sample: int, recover_cmd: Optional[str] = None) -> str:
    out = ["=== Session Export ===", f"codex_dir: {root}", f"to: {to or '(none: add --to FILE)'}",
           f"dry_run: {result is None}"]
    out += wrap(f"sessions: {r['threads']} ({r['threads_chosen']} chosen, {r['threads_along']} along as fork "
                f"parents or sub-agents; {r['archived']} archived), files: {r['files']}, {_size(r['file_bytes'])}")
    for p in plan.picked[:sample]:  # each line wrapped to the terminal at spaces (a path stays whole)
        extra = ", archived" if p.archived else ""
        extra += f", {p.why}" if p.why != "chosen" else ""
        out += wrap(f"  {label(p)}  ({len(p.files)} file{'s' if len(p.files) != 1 else ''}, {_size(p.size)}{extra})"
                    f"  [{p.id}]", "      ")
        out += [ln for n in p.notes for ln in wrap(f"    note: {safe_str(n)}", "      ")]
    if len(plan.picked) > sample:
        out.append(f"  (first {sample} of {len(plan.picked)} shown; --sample N shows more, --json lists the ids)")
    for tid, lab, reason in plan.skipped[:sample]:
        out += wrap(f"  skipped {lab} [{tid}]: {reason}", "      ")
    if any(reason in (SKIP_OUTSIDE, SKIP_NO_FILE) for _t, _l, reason in plan.skipped) and recover_cmd:
        out += wrap("Their index entries point where no file is (a moved home or folder?). Bring them back "
                    "first (a dry-run), then export again:") + ["  " + recover_cmd]
    if not plan.picked:
        out.append("No session matches: nothing to export.")
        return Lines(out)
    if result is None:
        out.append("Nothing written (dry-run)." + (" To write the archive:" if apply_cmd else
                                                    " Add --to FILE.tar.gz (or .zip) and --apply to write it."))
        if apply_cmd:
            out.append("  " + apply_cmd)
        return Lines(out)
    out += ["", "=== Export Result ==="] + wrap(f"archive: {safe_str(result['archive'])} ({_size(result['bytes'])}, "
                                                 f"{result['members']} members, 0600)") + [
            f"sessions: {result['threads']}" + (f" ({r['partial']} being written: up to their last complete line)"
                                                  if r["partial"] else ""),
            "On the other machine (the archive and this skill copied there), preview the import with:",
            "  " + script_command("session_import.py", "--from", result["archive"])]
    if result.get("dates_clamped"):
        out[-2:-2] = wrap(f"note: {result['dates_clamped']} file date(s) lie outside what a .zip can hold (1980 to "
                          "2107): stored as the nearest date it can; a .tar.gz keeps every date")
    return Lines(out)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    home = open_home(args.codex_dir, args.sqlite_home)
    sel = selection(args)
    target = check_target(args.to, home) if args.to else None
    if not has_filter(sel) and not sel.threads:
        raise UserError("choose threads: --thread, --folder, --since, --until or --all")
    plan = plan_export(home, sel)
    try:
        r = report(plan, args.sample)
        result = None
        if args.apply and target is not None and plan.picked:
            result = write_export(plan, target, Progress.for_terminal())
    finally:
        plan.reader.close()
    apply_cmd = None
    if target is not None and not args.apply and plan.picked:
        words = [w for w in COMMAND[2:] if w != "--apply"]
        from sessionkit.ui.commands import rerun_command
        apply_cmd = rerun_command(home, _absolute_to(words) + ["--apply"], "session_export.py")
    if args.json:
        print_json({"codex_dir": str(home.root), "to": str(target) if target else None, **r,
                    "dry_run": result is None, "result": result, "next_command": apply_cmd})
    else:
        text = render(str(home.root), plan, r, str(target) if target else None, result, apply_cmd, args.sample,
                      home_command(home, "session_recover.py"))
        emit(text)
    return EXIT_FINDINGS if plan.skipped or not plan.picked else EXIT_CLEAN


def _absolute_to(words: List[str]) -> List[str]:
    """--to's value made absolute, so the printed command writes the same file from any folder."""
    out: List[str] = []
    skip = False
    for n, w in enumerate(words):
        if skip:
            skip = False
            continue
        if w == "--to" and n + 1 < len(words):
            out += ["--to", os.path.abspath(os.path.expanduser(words[n + 1]))]
            skip = True
        elif w.startswith("--to="):
            out.append("--to=" + os.path.abspath(os.path.expanduser(w[5:])))
        else:
            out.append(w)
    return out


if __name__ == "__main__":
    raise SystemExit(run(main))
