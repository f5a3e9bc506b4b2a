#!/usr/bin/env python3
"""`make demo`: build a broken sample Codex home, audit it, and print the commands to try on it.

The sample home stays until the user removes it (the last line says how), so the repair, the
migration and the rollback can be tried on it with the printed commands, pasted from any folder.
Usage: demo.py [FOLDER]   (default: a new folder under the temp dir)
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "scripts"))

from homebuilder import build_broken_home  # noqa: E402
from sessionkit.ui.commands import quote, script_command  # noqa: E402


def main(argv: list) -> int:
    if argv and argv[0]:
        base = Path(os.path.expanduser(argv[0])).absolute()
        if base.exists() and any(base.iterdir()):
            print(f"demo.py: error: {base} exists and is not empty; name a new folder", file=sys.stderr)
            return 2
        base.mkdir(parents=True, exist_ok=True)
    else:
        base = Path(tempfile.mkdtemp(prefix="codex-demo-"))
    home = base / ".codex"
    build_broken_home(home)
    print(f"Sample home with one of every problem (kept until you remove it): {home}\n", flush=True)
    audit = script_command("session_audit.py", home=home)
    rc = subprocess.run([sys.executable, os.path.join(HERE.parent, "scripts", "session_audit.py"),
                         "--codex-dir", str(home)], check=False).returncode
    print(f"\n(the audit exited {rc}: 0 clean, 1 findings, 2 error)")
    print("\nTry the recovery and its undo on this sample home (paste each line, from any folder):")
    for line in (script_command("session_recover.py", home=home),
                 script_command("session_recover.py", "--apply", home=home),
                 audit,
                 script_command("rollback.py", "--list", home=home),
                 script_command("rollback.py", "--latest", "--apply", home=home)):
        print(f"  {line}")
    print("The first shows the plan and changes nothing; the second writes it (after a backup, with a "
          "journal),\nthe audit shows what changed, the rollback puts it all back. Remove the sample home when done:")
    print(f"  rm -rf -- {quote(base)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
