"""The frame of every --apply: checks, one lock, a run folder, journal, backups, manifest, and
undoing itself when anything fails halfway."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Sequence

from .artifacts import Journal, RunDir, backup_db, new_run_dir, private_file
from .home import CodexHome
from .locks import scan_activity
from .safety import HomeLock, check_writable, refuse_if_running
from .undo import undo_after_failure


@dataclass
class WriteRun:
    run: RunDir
    journal: Journal
    backups: Dict[str, Path]  # DB file name -> its backup
    manifest: Path


@contextmanager
def write_run(home: CodexHome, kind: str, changes: int, manifest_csv: bytes, force: bool,
              extra_dbs: Sequence[Path] = ()) -> Iterator[WriteRun]:
    """Refuse if Codex runs or the home is not writable; then, under the home lock, back up every
    DB the run touches and write its manifest before the body makes any change."""
    refuse_if_running(scan_activity(home.root), force)
    check_writable(home, [p for db in extra_dbs for p in (db, db.parent)])
    with HomeLock(home):
        run = new_run_dir(home.artifacts_dir, kind)
        journal = Journal(run.journal_path)
        try:
            journal.write({"op": "begin", "kind": kind, "codex_dir": str(home.root),
                           "state_db": str(home.state_db.path), "changes": changes})
            backups = {db.name: backup_db(db, run.path / f"{db.name}.pre_{kind}.bak")
                       for db in (home.state_db.path, *extra_dbs)}
            journal.write({"op": "backup", "files": {k: str(v) for k, v in backups.items()}})
            manifest = run.path / f"{kind}_{run.stamp}.csv"
            private_file(manifest, manifest_csv)
            journal.write({"op": "manifest", "path": str(manifest)})
            yield WriteRun(run, journal, backups, manifest)
            journal.write({"op": "end", "status": "complete"})
        except Exception as exc:  # disk full, a locked DB, a file that changed: put back what was done
            journal.close()
            raise undo_after_failure(home, run.path, exc) from None
        else:
            journal.close()
