"""The skill bundle is well formed: front matter, triggers, manifest, references, standalone scripts."""
import os
import re
import shlex
import subprocess
import sys

from harness import REPO

SKILL = (REPO / "SKILL.md").read_text(encoding="utf-8")


def front_matter() -> dict:
    head = SKILL.split("---", 2)[1]
    out = {}
    for line in head.strip().splitlines():
        key, value = line.split(":", 1)
        out[key.strip()] = value.strip().strip('"')
    return out


def test_front_matter_name_and_description():
    fm = front_matter()
    assert fm["name"] == "codex-session-migration"
    d = fm["description"]
    assert len(d) <= 1024 and "<" not in d and ">" not in d
    for trigger in ("provider", "API key", "machine", "user name", "workspace", "archiving",
                    "resume list", "state_5.sqlite", "sessions/", "archived_sessions/", "partial"):
        assert trigger in d, trigger


def test_body_is_the_workflow():
    body = SKILL.split("---", 2)[2]
    order = [body.index(step) for step in ("**Audit", "**Stop Codex", "**Dry-run", "**Apply only after the user confirms",
                                           "**Verify with a second audit", "**Roll back")]
    assert order == sorted(order)
    for name in ("references/prompts.md", "references/report-fields.md", "before/after", "rollback"):
        assert name.lower() in body.lower(), name


def test_manifest_fields():
    text = (REPO / "agents" / "openai.yaml").read_text(encoding="utf-8")
    assert text.startswith("interface:\n")
    fields = dict(re.findall(r'^\s+(\w+): "(.*)"$', text, re.M))
    assert set(fields) == {"display_name", "short_description", "default_prompt"}
    assert 25 <= len(fields["short_description"]) <= 64
    assert "$codex-session-migration" in fields["default_prompt"]


def test_prompt_templates():
    text = (REPO / "references" / "prompts.md").read_text(encoding="utf-8")
    for title in ("full safe recovery", "provider-only migration", "integrity check only"):
        assert title in text.lower()
    assert text.count("```text") == 3


def test_every_script_runs_standalone_from_any_directory_and_writes_no_bytecode(tmp_path):
    import shutil
    scripts = tmp_path / "skill" / "scripts"
    shutil.copytree(REPO / "scripts", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "PYTHONDONTWRITEBYTECODE"))}
    for name in ("session_audit.py", "session_repair.py", "provider_migrate.py", "rollback.py"):
        proc = subprocess.run([sys.executable, str(scripts / name), "--help"], cwd=str(elsewhere),
                              capture_output=True, text=True, env=env, check=False)
        assert proc.returncode == 0 and "--codex-dir" in proc.stdout and "--json" in proc.stdout, name
    assert list(scripts.rglob("__pycache__")) == []  # nothing written inside the installed skill


def test_missing_home_points_at_the_demo(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "session_audit.py")], cwd=str(tmp_path),
                          capture_output=True, text=True, check=False,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("CODEX_")},
                               "HOME": str(tmp_path)})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"session_audit.py: error: no Codex home at {tmp_path}/.codex (pass --codex-dir or set "
                           f"CODEX_HOME; make -C {shlex.quote(str(REPO))} demo builds a sample home with every "
                           "problem and shows the audit on it)\n")
