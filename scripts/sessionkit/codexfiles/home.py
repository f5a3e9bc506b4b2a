"""Find a Codex home, its config and its state DBs the way Codex 0.169 and 0.171 do."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

from sessionkit import UserError
from sessionkit.codexfiles import host
from sessionkit.codexfiles import tomlmini
from sessionkit.codexfiles.record import Record
from sessionkit.codexfiles.paths import user_path
from sessionkit.codexfiles.versions import BUILTIN_PROVIDER_IDS as BUILTIN_PROVIDERS, DEFAULT_PROVIDER, DESKTOP_DB_FOLDER, \
    LATEST, LEGACY_PROFILE_KEY_REJECTED, OLDER_DB_NAMES, STATE_DB_NAME


class CodexConfig(Record):
    """What config.toml says about providers and where the state DB lives."""
    __slots__ = ("path", "exists", "model_provider", "provider_source", "profile", "providers", "sqlite_home",
                 "legacy_profile", "profile_provider")
    path: Path
    exists: bool
    model_provider: str  # DEFAULT_PROVIDER unless config.toml names one
    provider_source: str  # "default", "config.toml", "profile <name>"
    profile: Optional[str]
    providers: List[str]
    sqlite_home: Optional[str]
    legacy_profile: bool  # a top-level `profile = "x"`: Codex 0.169+ refuses to start
    profile_provider: Optional[str]  # what [profiles.<profile>] names, for `--profile` users

    def __init__(self, path: Path, exists: bool, model_provider: str = str(DEFAULT_PROVIDER.value),
                 provider_source: str = "default", profile: Optional[str] = None,
                 providers: Optional[List[str]] = None, sqlite_home: Optional[str] = None,
                 legacy_profile: bool = False, profile_provider: Optional[str] = None) -> None:
        self.path, self.exists, self.model_provider, self.provider_source = path, exists, model_provider, provider_source
        self.profile, self.providers = profile, [] if providers is None else providers
        self.sqlite_home, self.legacy_profile, self.profile_provider = sqlite_home, legacy_profile, profile_provider

    @property
    def legacy_profile_finding(self) -> Optional[str]:
        """One line for the user when config.toml holds the form Codex no longer accepts."""
        if not self.legacy_profile:
            return None
        used = f"; [profiles.{self.profile}] names provider {self.profile_provider!r}" \
            if self.profile_provider else ""
        return (f"config.toml sets the legacy `profile = \"{self.profile}\"`: Codex "
                f"{'/'.join(LEGACY_PROFILE_KEY_REJECTED.measured_on)} refuses to start with it (remove the "
                f"line; start Codex with `--profile {self.profile}` and {self.profile}.config.toml instead); "
                f"judged with the top-level provider {self.model_provider!r}{used}")

    def knows_provider(self, provider: str) -> bool:
        return provider in self.providers or provider in BUILTIN_PROVIDERS


class StateDb(Record):
    __slots__ = ("path", "role", "reason")
    path: Path
    role: str  # "used" or "other"
    reason: str

    def __init__(self, path: Path, role: str, reason: str) -> None:
        self.path, self.role, self.reason = path, role, reason


class CodexHome(Record):
    __slots__ = ("root", "config", "state_db", "other_dbs")
    root: Path
    config: CodexConfig
    state_db: StateDb
    other_dbs: List[StateDb]

    def __init__(self, root: Path, config: CodexConfig, state_db: StateDb, other_dbs: List[StateDb]) -> None:
        self.root, self.config, self.state_db, self.other_dbs = root, config, state_db, other_dbs

    @property
    def sessions_dir(self) -> Path:
        return self.root / "sessions"

    @property
    def archived_dir(self) -> Path:
        return self.root / "archived_sessions"

    @property
    def artifacts_dir(self) -> Path:
        """Backups, manifests and journals of this tool; inside the home, never outside it."""
        return self.root / ".tmp" / "session-migration"


class MissingHome(UserError):
    """No folder at the Codex home's path: the user interface adds where to try a sample home."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(self.message())

    def message(self, hint: str = "") -> str:
        return f"no Codex home at {self.path} (pass --codex-dir or set CODEX_HOME" + (f"; {hint}" if hint else ")")


def resolve_home_dir(codex_dir: Optional[str], environ: Optional[Dict[str, str]] = None) -> Path:
    """`--codex-dir` > `$CODEX_HOME` > `~/.codex` (`%USERPROFILE%\\.codex` on Windows): an existing
    folder. An empty `--codex-dir` is an error (never the default home); an empty $CODEX_HOME is
    unset, as for Codex."""
    env = os.environ if environ is None else environ
    if codex_dir is not None and not codex_dir:
        raise UserError("--codex-dir is empty (pass the Codex home folder, or leave the flag out)")
    raw = codex_dir or str(host.default_home(env))
    if "\x00" in raw:
        raise UserError("the Codex home path contains a NUL byte")
    path = user_path(raw)
    if not path.exists():
        raise MissingHome(path.absolute())
    if not path.is_dir():
        raise UserError(f"the Codex home {path.absolute()} is not a folder")
    return path.resolve()


def read_config(root: Path) -> CodexConfig:
    """config.toml's provider as a running Codex reads it (a legacy `profile` key selects nothing),
    its provider tables and sqlite_home."""
    path = root / "config.toml"
    cfg = CodexConfig(path=path, exists=path.is_file())
    if not cfg.exists:
        return cfg
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    try:
        data = tomlmini.loads(text)
    except tomlmini.TomlError as exc:
        raise UserError(f"{path} does not parse as TOML: {exc}") from None
    providers = data.get("model_providers")
    if isinstance(providers, dict):
        cfg.providers = sorted(k for k, v in providers.items() if isinstance(v, dict))
    if isinstance(data.get("model_provider"), str):
        cfg.model_provider = data["model_provider"]
        cfg.provider_source = "config.toml"
    profile = data.get("profile")
    if isinstance(profile, str):  # Codex 0.169+ rejects this key: it never selects the profile
        cfg.profile = profile
        cfg.legacy_profile = bool(LEGACY_PROFILE_KEY_REJECTED.value)
        profiles = data.get("profiles")
        table = profiles.get(profile) if isinstance(profiles, dict) else None
        if isinstance(table, dict) and isinstance(table.get("model_provider"), str):
            cfg.profile_provider = table["model_provider"]
    if isinstance(data.get("sqlite_home"), str):
        cfg.sqlite_home = data["sqlite_home"]
    return cfg


def locate_state_dbs(root: Path, cfg: CodexConfig, sqlite_home: Optional[str],
                     environ: Optional[Dict[str, str]] = None) -> List[StateDb]:
    """Every state DB this home may have; the first is the one Codex uses, with the reason."""
    env = os.environ if environ is None else environ
    if sqlite_home is not None:
        if not sqlite_home or "\x00" in sqlite_home:
            raise UserError("--sqlite-home is empty or holds a NUL byte (pass the folder of state_5.sqlite)")
        chosen_dir, why = user_path(sqlite_home).absolute(), "--sqlite-home"
    elif cfg.sqlite_home:
        chosen_dir, why = user_path(cfg.sqlite_home), "sqlite_home in config.toml"
    elif env.get("CODEX_SQLITE_HOME"):
        chosen_dir, why = user_path(env["CODEX_SQLITE_HOME"]), "$CODEX_SQLITE_HOME"
    else:
        chosen_dir, why = root, "the Codex home (no sqlite_home set)"
    if not chosen_dir.is_absolute():
        chosen_dir = root / chosen_dir
    used = chosen_dir / STATE_DB_NAME
    found = [StateDb(used, "used", f"{STATE_DB_NAME} in {why}")]
    seen = {os.path.realpath(used)}
    for folder, label in ((root, "the Codex home"), (root / str(DESKTOP_DB_FOLDER.value), "the desktop app's folder"),
                          (chosen_dir, why)):
        for name in (STATE_DB_NAME, *OLDER_DB_NAMES):
            cand = folder / name
            real = os.path.realpath(cand)
            if real in seen or not cand.is_file():
                continue
            seen.add(real)
            note = f"an older schema's DB, no longer read by Codex {LATEST}" if name != STATE_DB_NAME \
                else f"another state DB ({label}); Codex started with other settings uses it"
            found.append(StateDb(cand, "other", note))
    return found


def open_home(codex_dir: Optional[str], sqlite_home: Optional[str] = None,
              environ: Optional[Dict[str, str]] = None, require_db: bool = True) -> CodexHome:
    root = resolve_home_dir(codex_dir, environ)
    cfg = read_config(root)
    dbs = locate_state_dbs(root, cfg, sqlite_home, environ)
    used = dbs[0]
    if require_db and not used.path.is_file():
        others = ", ".join(str(d.path) for d in dbs[1:])
        looks_like_home = any(os.path.exists(os.path.join(root, n)) for n in ("sessions", "config.toml", "auth.json"))
        hint = f"; other state DBs found: {others} (pass --sqlite-home)" if others else \
            " (start Codex once to create it, or pass --sqlite-home)" if looks_like_home else \
            f"; {root} has no sessions/, config.toml nor auth.json: is it a Codex home? (pass --codex-dir)"
        raise UserError(f"no state DB at {used.path}{hint}")
    return CodexHome(root=root, config=cfg, state_db=used, other_dbs=dbs[1:])
