"""config.toml reading: tomllib where present, the fallback reader on Python 3.9; and 3.9 itself."""
import os
import subprocess
from pathlib import Path

import pytest

from harness import SCRIPTS
from homebuilder import HomeBuilder
from sessionkit import UserError
from sessionkit.codexfiles import tomlmini
from sessionkit.codexfiles.home import read_config

CONFIG = '''# a user's config
model = "gpt-5"
model_provider = "azure"   # switched last week
profile = 'work'
sqlite_home = "/var/db/codex"
notify = ["notify-send", "Codex"]
tools = { web_search = true }
[profiles.work]
model_provider = "work-proxy"
[profiles."home pc"]
model_provider = "openai"
[model_providers.azure]
name = "Azure"
base_url = "https://x.openai.azure.com/openai"
query_params = { api-version = "2025-04-01-preview" }
[model_providers."work-proxy"]
name = "Work"
[mcp_servers.docs]
command = "npx"
args = [
  "-y",
  "docs-server",
]
[[skills.config]]
path = "/x"
'''


def test_fallback_reader_matches_tomllib():
    mini = tomlmini.parse_minimal(CONFIG)
    assert mini["model_provider"] == "azure"
    assert mini["profile"] == "work"
    assert mini["sqlite_home"] == "/var/db/codex"
    assert mini["profiles"]["work"]["model_provider"] == "work-proxy"
    assert mini["profiles"]["home pc"]["model_provider"] == "openai"
    assert sorted(mini["model_providers"]) == ["azure", "work-proxy"]
    full = tomlmini.loads(CONFIG)
    for key in ("model_provider", "profile", "sqlite_home"):
        assert full[key] == mini[key]


def test_read_config_profile_wins(tmp_path):
    (tmp_path / "config.toml").write_text(CONFIG)
    cfg = read_config(tmp_path)
    # the legacy `profile = 'work'` selects nothing in Codex 0.169+ (it refuses to start): reported
    assert (cfg.model_provider, cfg.provider_source) == ("azure", "config.toml")
    assert (cfg.profile, cfg.legacy_profile, cfg.profile_provider) == ("work", True, "work-proxy")
    assert "--profile work" in (cfg.legacy_profile_finding or "")
    assert cfg.providers == ["azure", "work-proxy"]
    assert cfg.knows_provider("openai") and not cfg.knows_provider("gone")


@pytest.mark.parametrize("text", ['model_provider = "x\n', "[broken\n", "= 3\n"])
def test_bad_toml_is_a_user_error(tmp_path, text):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(UserError):
        read_config(tmp_path)
    with pytest.raises(tomlmini.TomlError):
        tomlmini.parse_minimal(text)


def _find_py39():
    """A real Python 3.9 (pyenv shims that only forward to another version do not count)."""
    roots = {os.environ.get("PYENV_ROOT") or "", os.path.expanduser("~/.pyenv"), "/root/.pyenv"}
    cands = sorted(p for r in roots if r for p in Path(r, "versions").glob("3.9*/bin/python3"))
    cands += [Path(p) for p in ("/usr/bin/python3.9", "/usr/local/bin/python3.9")]
    for cand in cands:
        if cand.exists() and subprocess.run([str(cand), "-c", "import sys; assert sys.version_info[:2] == (3, 9)"],
                                            capture_output=True, check=False).returncode == 0:
            return str(cand)
    return None


PY39 = _find_py39()


@pytest.mark.skipif(PY39 is None, reason="no python3.9 on this machine")
def test_audit_runs_on_python_39(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", providers=["corp"])
    hb.write_config("corp", ["corp"], extra='profile = "p"\n[profiles.p]\nmodel_provider = "corp"')
    hb.add(provider="corp")
    hb.add(provider="openai")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "PYENV"))}
    proc = subprocess.run([PY39, str(SCRIPTS / "session_audit.py"), "--codex-dir", str(hb.root), "--json"],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 1, proc.stderr
    import json
    r = json.loads(proc.stdout)
    assert r["config"]["provider_source"] == "config.toml" and r["config"]["legacy_profile"] is True
    assert r["visibility"]["visible"] == 1 and r["visibility"]["hidden"]["other_provider"] == 1
