#!/usr/bin/env python3
"""`make demo`: build a broken sample Codex home in a temp folder and run the audit on it."""
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from homebuilder import build_broken_home  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="codex-demo-") as tmp:
        home = Path(tmp) / ".codex"
        build_broken_home(home)
        print(f"Sample home with one of every problem: {home}\n", flush=True)
        cmd = [sys.executable, str(HERE.parent / "scripts" / "session_audit.py"), "--codex-dir", str(home)]
        rc = subprocess.run(cmd, check=False).returncode
        print(f"\n(session_audit.py exited {rc}: 0 clean, 1 findings, 2 error)")
        print("Next steps on a real home: session_repair.py and provider_migrate.py dry-runs.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
