"""Why a thread or a change is skipped or left alone: every reason a plan, a run or a rollback
prints, named once (the tests assert this wording; reports and journals keep it). A template's
fields are filled with str.format; each is printed beside the thread it names."""
from __future__ import annotations

# ---- a thread Codex holds open (its writer lock)
LIVE_UNTOUCHED = "live thread (its writer lock is held): never touched"
LIVE_MOVE = "live thread (its writer lock is held): never moved"
LIVE_ROW = "live thread (its writer lock is held): row left alone"
LIVE_HISTORY = "live thread (its writer lock is held): history not checked or reset"
LIVE_NAME = "live thread (its writer lock is held): name not restored"
LIVE_GROUP = "skipped with {other}: live thread (its writer lock is held); a thread and its sub-agents change together"

# ---- what belongs together (codexfiles/thread_graph.py)
SKIPPED_WITH = "skipped with {other}: {why}"  # at apply: a member failed its check, the group waits
LEFT_ALONE_WITH = "left alone with {other}"  # a rollback: one member changed since, the group stays
GROUP_TOGETHER = "(a thread, its forks and its sub-agents change together)"

# ---- the thread's files (codexfiles/thread_files.py)
NO_FILE = "no rollout file for this thread anywhere"
AMBIGUOUS_FILES = "ambiguous: {n} rollout files carry this thread id"
ROW_FOLLOWS_FILE = "archive state follows the file"
HARD_LINKED = ("not unarchived: its rollout is hard-linked ({links} names for one file, e.g. a backup copy "
               "outside the home); unarchiving sets its mtime, which would change the other copy too")
UNARCHIVE_NEXT_RUN = ("not unarchived in this run: the remap rewrites its rollout where it lies first; run the "
                      "same command again to unarchive it (one change after the other, each undoable)")
OUTSIDE_HOME = "rollout_path is outside this Codex home"
FILE_MISSING = "rollout file missing"

# ---- an operation's check under the writer lock (runlog/ops.py, runlog/decompress.py)
NOT_REGULAR = "the rollout is not a regular file (a symlink?): never written through"
CHANGED_SINCE_PLAN = "the rollout changed since the plan was made (a turn was added?): run again"
CHANGED_WHILE_READ = "the rollout changed while it was read: run again"
NO_HISTORY_BASE = "the fork's line 1 has no history_base.end_byte_offset"
ZST_NOT_REGULAR = "the compressed rollout is not a regular file (a symlink?): never written through"
ZST_CHANGED = "the compressed rollout changed while it was copied: run again"

# ---- a rollback
DELETED = "deleted since the run (thread/delete?); left deleted"

# ---- an import
IMPORT_NO_FILE = "its rollout file is not in the source (a row alone cannot be read or resumed)"
IMPORT_SYMLINK = "a rollout file is a symlink (never followed)"

# ---- an export (fixes/export.py)
SKIP_NO_FILE = "its rollout file is missing"
SKIP_OUTSIDE = "its rollout file is not under sessions/ or archived_sessions/ of this home"
SKIP_UNREADABLE = "its rollout file cannot be read"

# ---- a history rebuild and the audit's advice
INTERRUPTED = "interrupted (Ctrl-C) before Codex rebuilt it: its history comes back the first time it is opened"
WAIT_REASON = "written in the last minutes, maybe still in use: audit again later"
