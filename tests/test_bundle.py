"""The skill bundle is well formed: front matter, triggers, manifest, references, standalone scripts."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import faultrun  # script runs forked (tests/faultrun.py)

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
                    "resume list", "state_5.sqlite", "sessions/", "archived_sessions/", "partial",
                    "new laptop", ".tar.gz", "only its start", "names", "daemon executable not found",
                    "thread_history_1.sqlite"):
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
        proc = faultrun.script_run([sys.executable, str(scripts / name), "--help"], cwd=str(elsewhere),
                                   capture_output=True, text=True, env=env, check=False)
        assert proc.returncode == 0 and "--codex-dir" in proc.stdout and "--json" in proc.stdout, name
    assert list(scripts.rglob("__pycache__")) == []  # nothing written inside the installed skill


def test_missing_home_points_at_the_demo(tmp_path):
    proc = faultrun.script_run([sys.executable, str(REPO / "scripts" / "session_audit.py")], cwd=str(tmp_path),
                               capture_output=True, text=True, check=False,
                               env={**{k: v for k, v in os.environ.items() if not k.startswith("CODEX_")},
                                    "HOME": str(tmp_path)})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"session_audit.py: error: no Codex home at {tmp_path}/.codex (pass --codex-dir or set "
                           f"CODEX_HOME; make -C {shlex.quote(str(REPO))} demo builds a sample home with every "
                           "problem and shows the audit on it)\n")


BUNDLE = ["SKILL.md", "agents", "references", "scripts"]


def make_install(env, install_dir=None):
    args = ["make", "-s", "-C", str(REPO), "install"] + ([f"INSTALL_DIR={install_dir}"] if install_dir else [])
    return subprocess.run(args, env=env, capture_output=True, text=True, check=False)


def test_make_install_copies_only_the_bundle(tmp_path):
    dest = tmp_path / "my skills ü" / "codex-session-migration"
    (REPO / "scripts" / "__pycache__").mkdir(exist_ok=True)  # as a test run leaves it
    stale = dest / "scripts" / "old_script.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("left from an older install")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = make_install(env, dest)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == BUNDLE
    installed = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    source = sorted(str(p.relative_to(REPO)) for name in BUNDLE for p in [REPO / name, *(REPO / name).rglob("*")]
                    if "__pycache__" not in str(p) and not str(p).endswith(".pyc"))
    tag = sys.implementation.cache_tag
    compiled = sorted({str(Path(f).parent / "__pycache__") for f in source if f.endswith(".py")} |
                      {str(Path(f).parent / "__pycache__" / f"{Path(f).stem}.{tag}.pyc") for f in source if f.endswith(".py")})
    assert installed == sorted(source + compiled)  # every file of the bundle, compiled once, nothing else
    assert all((dest / f).read_bytes() == (REPO / f).read_bytes() for f in source if (REPO / f).is_file())
    assert not stale.exists()  # the bundle's folders are replaced, not merged
    assert proc.stdout.splitlines()[-1] == "  " + " ".join(
        shlex.quote(a) for a in (sys.executable, str(dest / "scripts" / "session_audit.py")))
    help_proc = subprocess.run(["bash", "-c", proc.stdout.splitlines()[-1].strip() + " --help"],
                               cwd=str(tmp_path), capture_output=True, text=True, check=False)
    assert help_proc.returncode == 0 and "--codex-dir" in help_proc.stdout


def test_an_installed_run_loads_the_compiled_modules_and_writes_nothing_in_the_bundle(tmp_path):
    """`make install` compiles the bundle once: a run then loads every module of sessionkit from its
    .pyc (nothing compiled at run time), and writes no file in the bundle (dont_write_bytecode)."""
    from harness import snapshot
    from homebuilder import HomeBuilder
    dest = tmp_path / "skill"
    assert make_install({**os.environ, "PYTHON": sys.executable}, dest).returncode == 0
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco"])
    hb.add(provider="oldco")
    other = HomeBuilder(tmp_path / "other" / ".codex", provider="newco", providers=["newco"])
    other.add(provider="newco")
    before = snapshot(dest)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "PYTHON"))}
    runs = {"session_audit.py": [], "session_repair.py": [], "provider_migrate.py": [], "rollback.py": ["--list"],
            "session_import.py": ["--from", str(other.root)]}
    names = sorted(p.name for p in (REPO / "scripts").glob("*.py"))
    assert set(runs) <= set(names)
    for name in names:  # a script this test does not know yet: its --help
        args = ["--codex-dir", str(hb.root), *runs[name]] if name in runs else ["--help"]
        proc = faultrun.script_run([sys.executable, "-v", str(dest / "scripts" / name), *args],
                                   capture_output=True, text=True, env=env, cwd=str(tmp_path), check=False)
        assert proc.returncode in (0, 1), (name, proc.stderr[-2000:])
        ours = str(dest / "scripts" / "sessionkit")
        loaded = set(re.findall(r"^# code object from '?(" + re.escape(ours) + r"[^' ]*)", proc.stderr, re.M))
        assert loaded and all(p.endswith(".pyc") for p in loaded), (name, sorted(loaded))
    assert snapshot(dest) == before


def test_codex_finds_the_skill_where_the_readme_installs_it(world):
    """`make install` (default ~/.agents/skills), $CODEX_HOME/skills and a repository's .agents/skills:
    the real client's skills/list finds the skill in each, with the scope it reports."""
    from codex_client import AppServer
    env = {**os.environ, "PYTHON": sys.executable}
    user_home = Path(os.environ["HOME"])
    assert make_install(env).returncode == 0
    default = user_home / ".agents" / "skills" / "codex-session-migration"
    old_place = world.home / "skills" / "codex-session-migration"
    repo = world.project("a repo")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    in_repo = repo / ".agents" / "skills" / "codex-session-migration"
    for dest in (old_place, in_repo):
        assert make_install(env, dest).returncode == 0
    found = {}
    for cwd in (world.project(), repo):
        with AppServer(world.home, cwd=cwd) as app:
            for entry in app.request("skills/list", {"cwds": [str(cwd)]})["data"]:
                for s in entry["skills"]:
                    if s["name"] == "codex-session-migration":
                        found[(str(cwd), s["path"])] = s["scope"]
    plain, in_git = str(world.project()), str(repo)
    assert found.get((plain, str(default / "SKILL.md"))) == "user"
    assert found.get((plain, str(old_place / "SKILL.md"))) == "user"
    assert found.get((in_git, str(in_repo / "SKILL.md"))) == "repo"


def test_install_places_and_commands_are_real():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    prompts = (REPO / "references" / "prompts.md").read_text(encoding="utf-8")
    for text in (readme, SKILL, prompts):
        assert "~/.agents/skills/codex-session-migration" in text
    for text in (readme, SKILL):
        assert "$CODEX_HOME/skills" in text and ".agents/skills/" in text
    assert "<this repo>" not in readme
    assert "make install" in readme and "cp -R SKILL.md agents scripts references ~/.agents/skills/" in readme


def test_every_test_the_docs_name_exists():
    """A README or reference claim backed by a test name that no longer exists is a defect."""
    import re
    defined = set()
    for path in (REPO / "tests").glob("*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), re.M))
    files = {p.stem for p in (REPO / "tests").glob("test_*.py")}
    docs = [REPO / "README.md", REPO / "SKILL.md", *sorted((REPO / "references").glob("*.md"))]
    missing = {}
    for doc in docs:
        for name in re.findall(r"\b(test_\w+?)(?:\[|\b)", doc.read_text(encoding="utf-8")):
            if name not in defined and name not in files:
                missing.setdefault(doc.name, set()).add(name)
    assert missing == {}


def test_tests_that_run_as_another_user_give_it_a_readable_copy_of_the_scripts():
    """A clone in a private folder (0700) is closed to `nobody`: the tests that run a script as
    that user run readable_scripts(), a copy of scripts/ byte for byte that it can read."""
    from harness import readable_scripts
    copy = readable_scripts()
    source = {str(p.relative_to(REPO / "scripts")): p.read_bytes() for p in (REPO / "scripts").rglob("*.py")
              if "__pycache__" not in p.parts}
    assert {str(p.relative_to(copy)): p.read_bytes() for p in copy.rglob("*.py")} == source
    assert str(REPO) not in str(copy)
    from test_odd_input import _nobody_python
    py = _nobody_python()
    if py is None:
        return
    names = sorted(str(copy / f) for f in source)
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", py, "-c",
                           "import sys; print(sum(len(open(p, 'rb').read()) > 0 for p in sys.argv[1:]))", *names],
                          capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout.strip()) == (0, str(len(names))), proc.stderr


# The package's layers, lowest first: a module imports only from its own layer or lower ones.
LAYERS = ["codexfiles", "ui", "diagnose", "runlog", "fixes"]


def sessionkit_imports(root: Path) -> dict:
    """Module -> the sessionkit modules it imports, anywhere in its text (also inside functions and
    under `if TYPE_CHECKING:`): `sessionkit.sub.mod` names, as the tools in cycles.py read them."""
    import ast
    mods = {}
    for p in root.rglob("*.py"):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for name, p in mods.items():
        pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
        out = set()
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    up = pkg.split(".")[:len(pkg.split(".")) - (n.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in n.names}
            elif isinstance(n, ast.Import):
                out |= {a.name for a in n.names}
        graph[name] = {d for d in out if d in mods and d != name}
    return graph


def import_cycles(graph: dict) -> list:
    """Every strongly connected set of more than one module (Tarjan), sorted."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def layering_breaks(graph: dict) -> list:
    """Imports that go up a layer (or out of the layers): `a -> b` with b's subpackage above a's."""
    def layer(m):
        parts = m.split(".")
        return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else None
    return sorted(f"{m} -> {d}" for m, ds in graph.items() for d in ds
                  if layer(m) is not None and layer(d) is not None and layer(d) > layer(m))


def test_sessionkit_has_no_import_cycles_and_each_layer_imports_only_lower_ones():
    """scripts/sessionkit/ is codexfiles < ui < diagnose < runlog < fixes: no module imports one
    that imports it back (by any path), and no layer imports a higher one; every module is in a layer."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    graph = sessionkit_imports(REPO / "scripts" / "sessionkit")
    loose = sorted(m for m in graph if m != "sessionkit" and m.split(".")[1] not in LAYERS)
    assert loose == []
    assert len(graph) > 50 and sum(len(d) for d in graph.values()) > 200  # the walk found the imports
    assert import_cycles(graph) == []
    assert layering_breaks(graph) == []


def test_the_cycle_check_finds_a_cycle_and_an_upward_import(tmp_path):
    """The checks above can fail: a planted two-module cycle and an import of a higher layer."""
    root = tmp_path / "sessionkit"
    for sub in ("codexfiles", "fixes"):
        (root / sub).mkdir(parents=True)
        (root / sub / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "codexfiles" / "a.py").write_text("def f():\n    from sessionkit.fixes.b import g\n")
    (root / "fixes" / "b.py").write_text("from sessionkit.codexfiles import a\n")
    graph = sessionkit_imports(root)
    assert import_cycles(graph) == [["sessionkit.codexfiles.a", "sessionkit.fixes.b"]]
    assert layering_breaks(graph) == ["sessionkit.codexfiles.a -> sessionkit.fixes.b"]


def _imported_modules(path: Path):
    """Every module a file imports, at any depth (inside functions and try blocks too)."""
    import ast
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


@pytest.mark.skipif(sys.version_info < (3, 10), reason="sys.stdlib_module_names is 3.10+")
def test_the_scripts_import_only_the_standard_library_and_their_own_package():
    """Standard library only at run time, on every supported Python: a module only a newer Python has
    (3.14's compression.zstd) counts as outside it, even behind a guarded import."""
    outside = sorted({(str(p.relative_to(REPO)), m) for p in (REPO / "scripts").rglob("*.py")
                      for m in _imported_modules(p)
                      if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "sessionkit"
                      and m != "__future__"})
    assert outside == []
