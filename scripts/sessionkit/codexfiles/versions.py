"""What is specific to a Codex version, in one place, each fact with the versions it was measured on.

A new Codex release is a change here: re-measure (tests/test_e2e_*.py drive the real client),
then update the value and `measured_on`. Everything else imports the plain names at the bottom.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple


class Fact(NamedTuple):
    value: object
    measured_on: Tuple[str, ...]  # Codex CLI versions whose real binary showed it
    note: str = ""


V130, V148, V160, V169, V171 = "0.130.0", "0.148.0", "0.160.0", "0.169.0", "0.171.0"
LATEST = V171

# --- files and databases -------------------------------------------------------------------
STATE_DB = Fact("state_5.sqlite", (V130, V148, V160, V169, V171),
                "since 0.100; migrations: 0.130 31, 0.148 48, 0.160 58, 0.169 62, 0.171 64")
OLDER_STATE_DBS = Fact(("state_4.sqlite", "state_2.sqlite", "state.sqlite"), (V169,),
                       "older schemas; no longer read (releases before 0.131 deleted them on start)")
HISTORY_DB = Fact("thread_history_1.sqlite", (V169, V171), "paginated history; byte offsets into rollouts")
HISTORY_DB_MADE_WHEN = Fact("first paginated thread", (V148, V171),
                            "thread_history_1.sqlite appears when a Codex first writes a paginated thread (0.148, "
                            "0.171) or reads one (0.171 thread/read: an empty DB), not when it opens a home: both "
                            "opened (and migrated) a 0.130 home without making one; 0.130 never makes one")
HISTORY_MODE_COLUMN = Fact("history_mode", (V130, V148, V160, V171),
                           "threads.history_mode came with paginated history: 0.148 (48 migrations) has it, 0.130 "
                           "(31) not. The Codex of a home without it lists no paginated thread (it finds no "
                           "user_message event in one, empties the row's title and first_user_message and hides "
                           "it) and reads its turns with no items; it lists and reads legacy ones")
PAGINATED_SINCE = Fact({"exec": V148, "app-server": V160}, (V130, V148, V160),
                       "the first release that writes each kind of thread paginated: 0.148's exec is paginated and "
                       "its app-server legacy; 0.160 writes both paginated; 0.130 writes neither")
LEGACY_NAME_IN_INDEX = Fact("session_index.jsonl", (V130, V148, V171),
                            "a legacy thread's name lives in session_index.jsonl only: 0.130 has no threads.name, "
                            "0.148 leaves it NULL for its legacy threads (sets it for paginated ones), 0.171 shows "
                            "the index's name for a legacy thread; a paginated thread's name is threads.name")
DESKTOP_DB_FOLDER = Fact("sqlite", (V171,), "the desktop app's server keeps <home>/sqlite/state_5.sqlite")

# --- who lists what (see SURFACES) ---------------------------------------------------------
INTERACTIVE_SOURCES = Fact(("cli", "vscode"), (V169, V171),
                           "thread/list without sourceKinds; a line 1 with source 'atlas' was not "
                           "listed by 0.171 although newer source names it interactive")
META_ONLY_LISTED = Fact(False, (V171,), "a rollout holding only its session_meta line (TUI started "
                        "and quit) is listed by no default thread/list, with or without a row; the TUI "
                        "picker lists it when it has a row (a TUI session quit at once has none)")
UNREADABLE_LINE1_LISTED = Fact(False, (V171,), "a rollout whose line 1 does not parse (UTF-8 BOM, the "
                               "pre-session_meta format) is listed by no surface; thread/read fails on it")
TUI_READS_ROWS = Fact(True, (V171,), "the picker lists rows: never an unindexed rollout, never a row with an "
                      "empty preview, filters on the row's cwd; a row whose rollout_path is gone is kept "
                      "only when the same sessions/... path exists in this home (a moved home)")
CWD_FROM_LINE1 = Fact(True, (V169, V171), "thread/list's cwd filter compares line 1's cwd (a DB-only cwd is "
                      "reverted); the TUI picker compares the row's")
PROVIDER_FROM_LINE1 = Fact(True, (V169, V171), "the provider filter reads line 1; a DB-only change is reverted")
ACCOUNT_FIELDS_HIDE = Fact(False, (V171,), "session_meta.account_scoped (written true on every 0.171 "
                           "session) and threads.creator_account_id set to another account hid nothing "
                           "from thread/list, default or DB-only (API-key login; no SQL filter on either "
                           "in the binary)")


class Surface(NamedTuple):
    """One place a user looks for sessions, and the filters it applies."""

    name: str
    label: str
    current_provider_only: bool
    cwd_filter: bool  # exact match: line 1's cwd (reads "rollouts") or the row's (reads "rows")
    reads: str  # "rollouts": thread/list reconciles from line 1; "rows": the state DB's rows
    measured_on: Tuple[str, ...]


SURFACES = (
    Surface("editors", "VS Code extension / desktop app (app-server thread/list)", True, False, "rollouts",
            (V169, V171)),
    Surface("tui", "TUI picker `codex resume` in a folder (cwd filter, every provider)", False, True, "rows",
            (V171,)),
    Surface("tui_all", "TUI picker `codex resume --all` (every provider and folder)", False, False, "rows",
            (V171,)),
)

# --- who is running ------------------------------------------------------------------------
ARG0_LOCK_GLOB = Fact("tmp/arg0*/codex-arg0*/.lock", (V169, V171), "held by every CLI process for its life")
WRITER_LOCK_DIR = Fact("thread-writer-locks", (V169, V171), "<thread>.lock held while a thread is open")
DAEMON_STATE_DIR = Fact("app-server-daemon", (V169, V171), "app-server.pid, daemon.lock (pidfile backend)")
DAEMON_LOCK_DIR = Fact("codex-daemon-{uid}", (V171,), "under the temp dir: the socket <sha256 of the home's "
                       "control socket path> and <hash>.lock, open but not flock-held while idle")
CONTROL_SOCKET = Fact("app-server-control/app-server-control.sock", (V171,),
                      "the managed daemon's control socket: a symlink to the socket in DAEMON_LOCK_DIR")
DAEMON_PACKAGE_LINK = Fact("packages/app-server-daemon/current", (V171,),
                           "absolute symlink to releases/<version>-<target>; the TUI stops with 'daemon "
                           "executable not found' while it points at a missing folder (codex exec still runs); "
                           "re-pointed with ln -sfn to the release inside the home, the TUI starts again")
DAEMON_STOP = Fact(("app-server", "daemon", "stop"), (V171,), "stops the managed app-server daemon")
DAEMON_SERVER_ARGS = Fact(("app-server", "--managed-daemon"), (V171,), "left running by the TUI; writes sessions")
UPDATE_LOOP_ARGS = Fact(("app-server", "daemon", "pid-update-loop"), (V171,),
                        "left running by the TUI; hourly fetches install.sh into packages/ and restarts a "
                        "running daemon; never writes sessions, state DBs or rollouts")

# --- config --------------------------------------------------------------------------------
BUILTIN_PROVIDERS = Fact(("openai", "amazon-bedrock", "ollama", "lmstudio"), (V169,))
DEFAULT_PROVIDER = Fact("openai", (V169, V171))
LEGACY_PROFILE_KEY_REJECTED = Fact(True, (V169, V171), "a top-level `profile = \"x\"` in config.toml is an "
                                   "error; the profile is chosen with `--profile x` (x.config.toml)")

# --- rollout content -----------------------------------------------------------------------
LINE1_NEW_FIELDS = Fact(("runtime_workspace_roots", "account_scoped"), (V171,),
                        "written into session_meta by 0.171; the roots are folders (the cwd)")

# plain names for the rest of the code
STATE_DB_NAME: str = STATE_DB.value  # type: ignore[assignment]
OLDER_DB_NAMES: Tuple[str, ...] = OLDER_STATE_DBS.value  # type: ignore[assignment]
HISTORY_DB_NAME: str = HISTORY_DB.value  # type: ignore[assignment]
HISTORY_MODE_COLUMN_NAME: str = HISTORY_MODE_COLUMN.value  # type: ignore[assignment]
INTERACTIVE_SOURCE_KINDS: Tuple[str, ...] = INTERACTIVE_SOURCES.value  # type: ignore[assignment]
BUILTIN_PROVIDER_IDS: Tuple[str, ...] = BUILTIN_PROVIDERS.value  # type: ignore[assignment]
