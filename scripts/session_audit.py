#!/usr/bin/env python3
"""Read-only audit of a Codex home: why are sessions missing from the resume list?

Never writes: not the state DB (opened read-only, no -wal/-shm created), not a file, not an mtime.
Exit codes: 0 nothing wrong, 1 findings, 2 error.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

sys.dont_write_bytecode = True  # no __pycache__ inside the Codex home (the skill lives there)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sessionkit import EXIT_CLEAN, EXIT_FINDINGS  # noqa: E402
from sessionkit.audit import INTEGRITY_KEYS, build_report, gather  # noqa: E402
from sessionkit.cli import (Parser, absolute_path_arg, add_home_args, positive_int, print_json,  # noqa: E402
                            provider_arg, run)
from sessionkit.home import open_home  # noqa: E402
from sessionkit.progress import Progress  # noqa: E402


def parse_args(argv: Optional[List[str]]) -> Any:
    parser = Parser(prog="session_audit.py", description=(
        "Read-only audit of a Codex home: counts, integrity between the state DB and the rollout "
        "files, what the default resume list shows and why the rest is hidden, orphan rollouts, "
        "and whether Codex is running. Changes nothing."))
    add_home_args(parser)
    parser.add_argument("--max-samples", type=positive_int, default=10, metavar="N",
                        help="thread ids shown per category (default: 10).")
    parser.add_argument("--provider", metavar="ID", type=provider_arg,
                        help="judge visibility for this model_provider instead of the one in config.toml.")
    parser.add_argument("--cwd", metavar="DIR", type=absolute_path_arg,
                        help="also judge visibility for a listing filtered to this working directory.")
    return parser.parse_args(argv)


def render_text(r: Dict[str, Any]) -> str:
    out: List[str] = ["=== Codex Session Audit ===", f"codex_dir: {r['codex_dir']}",
                      f"state_db: {r['state_db']['path']}  ({r['state_db']['reason']})"]
    for other in r["other_state_dbs"]:
        extra = other.get("counts") or {"error": other.get("error")}
        out.append(f"other state DB: {other['path']}  ({other['reason']}) {extra}")
    cfg = r["config"]
    out.append(f"current provider: {cfg['model_provider']}  (from {cfg['provider_source']})")
    run_info = r["codex_running"]
    if run_info["running"]:
        out.append("WARNING: Codex is running against this home; stop it before any --apply:")
        out += [f"  {h}" for h in run_info["holders"]]
    live = r["live_current_session"]
    if live:
        out.append(f"live current session (the agent running this audit): {live['thread_id']}"
                   f" ({'indexed' if live['has_row'] else 'not indexed yet'}; never touched by these scripts)")
    out += ["", "counts:"] + [f"  {k}: {v}" for k, v in r["counts"].items()]
    for name, dist in r["distribution"].items():
        out += ["", f"{name} distribution:"] + [f"  {k or '<empty>'}: {v}" for k, v in dist.items()]
    integ = r["integrity"]
    out += ["", "integrity:"]
    for key in INTEGRITY_KEYS:
        n = integ[f"{key}_count"]
        line = f"  {key}_count: {n}"
        if n:
            line += "   e.g. " + ", ".join(integ[f"{key}_sample"][:3])
        out.append(line)
    if integ.get("moved_home"):
        m = integ["moved_home"]
        out.append(f"  moved home: rows point under {m['old_prefix']}; this home is {m['new_prefix']}")
        out.append(f"    fix: python3 scripts/session_repair.py {m['remap_arg']}")
    vis = r["visibility"]
    where = f", cwd {vis['cwd']}" if vis["cwd"] else ""
    out += ["", f"visibility (default thread/list for provider {vis['provider']}{where}):",
            f"  visible: {vis['visible']}", f"  hidden: {vis['hidden_total']}"]
    for reason, n in vis["hidden"].items():
        if n:
            out.append(f"    {reason}: {n}   e.g. " + ", ".join(vis["hidden_sample"][reason][:3]))
    out.append(f"  visible in a DB-only listing (useStateDbOnly): {vis['visible_db_only']}")
    for reason, n in vis["db_only_hidden"].items():
        if n:
            out.append(f"    {reason}: {n}   e.g. " + ", ".join(vis["db_only_hidden_sample"][reason][:3]))
    if vis["providers_without_config"]:
        out.append("  providers with no [model_providers] entry (resume fails): "
                   + ", ".join(vis["providers_without_config"]))
    orph = r["orphans"]
    out += ["", f"orphans: {orph['count']} (importable {orph['importable']}, "
                f"ACTIVE_ORPHAN {orph['active_orphans']})"]
    for e in orph["active_orphan_sample"]:
        out.append(f"  {e['thread_id']}: {e['reason']}")
    out += ["", "findings:" if r["findings"] else "findings: none"]
    out += [f"  - {f}" for f in r["findings"]]
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    home = open_home(args.codex_dir, args.sqlite_home)
    inputs = gather(home, Progress.for_terminal())
    report = build_report(inputs, provider=args.provider, cwd=args.cwd, max_samples=args.max_samples)
    if args.json:
        print_json(report)
    else:
        print(render_text(report))
    return EXIT_FINDINGS if report["findings"] else EXIT_CLEAN


if __name__ == "__main__":
    raise SystemExit(run(main))
