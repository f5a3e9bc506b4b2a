"""Ids are normalised once, where they enter (codexfiles/ids.py): `norm_id`/`norm_ids` are called
only by the readers of rollouts, DB rows, locks and the name index, by argument parsing and by the
readers of journals and reports. Every other function compares the keys its inputs carry
(ThreadRow.key, a plan object's .key). Each allowed caller is named with why it is an entry."""
import ast
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"

# (module under scripts/, function qualname; "*": the whole module) -> why ids enter there
ALLOWED = {
    ("sessionkit/codexfiles/ids.py", "norm_ids"): "the helper itself",
    ("sessionkit/ui/cli.py", "thread_id_arg"): "a --thread-id argument",
    ("sessionkit/fixes/repair.py", "resolve_threads"): "--unarchive arguments (an id or a name)",
    ("sessionkit/codexfiles/thread_names.py", "names_from_session_index"): "reads session_index.jsonl",
    ("sessionkit/codexfiles/thread_names.py", "named_threads"): "reads the rows' names",
    ("sessionkit/codexfiles/thread_graph.py", "_fork_link"): "reads a fork's line 1 (history_base)",
    ("sessionkit/codexfiles/thread_graph.py", "spawn_parent"): "reads a row's source (its spawn parent)",
    ("sessionkit/codexfiles/thread_graph.py", "spawn_edges"): "reads thread_spawn_edges",
    ("sessionkit/codexfiles/thread_tables.py", "read_home"): "reads the per-thread tables",
    ("sessionkit/codexfiles/thread_tables.py", "_read_state"): "reads the threads table's columns",
    ("sessionkit/fixes/rollout_remap.py", "RolloutRemapper._parent_offset"): "reads a fork's line 1 (history_base)",
    ("sessionkit/diagnose/history_check.py", "read_history_rows"): "reads the history cursors",
    ("sessionkit/diagnose/audit.py", "_history_beside"): "reads the history DB's threads",
    ("sessionkit/fixes/history_reset.py", "history_ops"): "reads the history rows to delete",
    ("sessionkit/fixes/history_reset.py", "archived_ids"): "reads the archived rows after the apply",
    ("sessionkit/fixes/advice.py", "_thread_of"): "parses an id out of the audit report's text",
    ("sessionkit/ui/labels.py", "session_names"): "labels ids as reports show them (a row's stored spelling)",
    ("sessionkit/ui/labels.py", "names_from_db"): "ids a journal names, and the rows it reads",
    ("sessionkit/fixes/forks.py", "join_groups"): "an op (runlog/ops.py) holds only the stored id its SQL and "
                                                  "journal record need: keyed here, once per op",
    ("sessionkit/fixes/importer.py", "SourceInputs.ids_with_null"): "reads SRC's rows",
    ("sessionkit/fixes/importer.py", "_read_names"): "reads SRC's session_index.jsonl",
    ("sessionkit/fixes/importer.py", "_rows_of"): "reads SRC's rows",
    ("sessionkit/fixes/importer.py", "_whole_rows"): "reads SRC's rows of a per-thread table",
    ("sessionkit/fixes/importer.py", "read_source"): "reads SRC's history cursors",
    ("sessionkit/fixes/importer.py", "read_dest"): "reads DEST's rows and history cursors",
    ("sessionkit/fixes/importer.py", "Line1Rewriter._parent_shift"): "reads a fork's line 1 (history_base)",
    ("sessionkit/fixes/importer.py", "history_rows"): "reads SRC's history rows",
    ("sessionkit/fixes/export.py", "Picked.__init__"): "reads a row (its id and attached parent)",
    ("sessionkit/fixes/export.py", "_read_index"): "reads session_index.jsonl",
    ("sessionkit/fixes/export.py", "_resolve_refs"): "--thread arguments (an id or a name) and the rows they name",
    ("sessionkit/fixes/export.py", "_plan_export"): "reads the rows chosen",
    ("sessionkit/fixes/export.py", "_add_relatives"): "reads the rows of relatives",
    ("sessionkit/fixes/export.py", "_list"): "reads the ids in rollout file names",
    ("sessionkit/fixes/export.py", "_copy_rows"): "reads the per-thread tables' rows",
    ("sessionkit/diagnose/snapshot.py", "AuditInputs.row_for"): "the audit's verdicts name a thread by a row's stored spelling",
    ("sessionkit/codexfiles/rollout_index.py", "_walk"): "the rollout walk: ids in file names",
    ("sessionkit/codexfiles/rollout_index.py", "parse_session_meta"): "reads line 1 (id, forked_from_id)",
    ("sessionkit/codexfiles/rollout_index.py", "unusable_reason"): "a caller's thread id against line 1's (any spelling)",
    ("sessionkit/codexfiles/statedb.py", "ThreadRow.__init__"): "the DB row reader",
    ("sessionkit/codexfiles/locks.py", "CodexActivity.why_live"): "a caller's id (a live thread asked about by any spelling)",
    ("sessionkit/codexfiles/locks.py", "scan_activity"): "the lock scan: ids in lock names and processes' arguments",
    ("sessionkit/codexfiles/thread_files.py", "history_key"): "reads the id in a rollout's file name",
    ("sessionkit/codexfiles/thread_tables.py", "_read_revisions"): "reads queue_1's revision rows",
    ("sessionkit/runlog/shared_undo.py", "forks_since"): "reads a journal's ops and forks' line 1 (forked_from_id as written)",
    ("session_recover.py", "recovery_outcome"): "ids a run's result names (any spelling)",
    ("sessionkit/fixes/recover.py", "skipped_at_apply"): "ids a run's result records name (any spelling)",
    ("sessionkit/fixes/migrate.py", "migration_ops"): "the history resets' ids, against an op's stored id",
    ("sessionkit/fixes/migrate.py", "migration_ops.emit"): "an op's stored id, against the history resets'",
}


def norm_calls(tree: ast.AST):
    """(qualname of the enclosing function or class, line) of every norm_id/norm_ids call."""
    out = []

    def walk(node, stack):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                walk(child, stack + [child.name])
                continue
            if isinstance(child, ast.Call):
                f = child.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if name in ("norm_id", "norm_ids"):
                    out.append((".".join(stack) or "<module>", child.lineno))
            walk(child, stack)
    walk(tree, [])
    return out


def all_calls():
    for path in sorted(SCRIPTS.rglob("*.py")):
        rel = path.relative_to(SCRIPTS).as_posix()
        for qual, line in norm_calls(ast.parse(path.read_text(encoding="utf-8"))):
            yield rel, qual, line


def test_ids_are_normalised_only_where_they_enter():
    outside = [f"{rel}:{line} in {qual}" for rel, qual, line in all_calls()
               if (rel, qual) not in ALLOWED and (rel, "*") not in ALLOWED]
    assert outside == [], "norm_id called outside an entry point (compare the key the object carries):\n" + \
        "\n".join(outside)


def test_every_allowed_entry_still_calls_it():
    """A stale entry would let a later re-normalisation in unnoticed: the list stays exact."""
    used = {(rel, qual) for rel, qual, _ in all_calls()} | {(rel, "*") for rel, _q, _l in all_calls()}
    assert sorted(set(ALLOWED) - used) == []


def test_the_walk_finds_a_call_the_list_does_not_allow():
    tree = ast.parse("class P:\n    def f(self, r):\n        return ids.norm_id(r.thread_id)\n")
    assert norm_calls(tree) == [("P.f", 3)]
