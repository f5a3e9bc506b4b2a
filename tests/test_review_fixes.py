"""Defects an adversarial review of main found, each with the test that would have caught it."""
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness import SCRIPTS, run_on_home
from homebuilder import HomeBuilder

EVIL = "ev\x1b]52;c;ZXZpbA==\x07il\ntouch PWNED #\x1b[31m\r\x7f\x85"
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def run(script, home, *args):
    return run_on_home(script, home, *args, errors="surrogateescape")


def argv_of(command_line):
    """What bash makes of a printed line pasted as it is (the `# why` after it is a comment)."""
    out = subprocess.run(["bash", "-c", "printf '%s\\0' " + command_line], capture_output=True, check=True)
    return [w.decode("utf-8", "surrogateescape") for w in out.stdout.split(b"\0")[:-1]]


@pytest.fixture
def evil_home(tmp_path):
    """A home whose path, provider and titles hold newlines, ESC, an OSC 52 clipboard write, DEL, C1."""
    root = tmp_path / "a\x1b[31mb\nc --apply" / ".codex"
    hb = HomeBuilder(root, provider="x", providers=[])
    (root / "config.toml").write_text("model_provider = " + json.dumps(EVIL) + "\n", encoding="utf-8")
    for i in range(2):
        hb.add(provider="old", preview=f"t{i}" + EVIL)
    return root


def _commands(text, root):
    return [ln.strip() for ln in text.split("\n") if str(SCRIPTS) in ln]


def test_no_raw_control_character_and_every_printed_command_means_its_words(evil_home):
    outputs = [run("session_audit.py", evil_home), run("provider_migrate.py", evil_home),
               run("session_recover.py", evil_home), run("session_repair.py", evil_home),
               run("provider_migrate.py", evil_home, "--apply"), run("rollback.py", evil_home, "--list"),
               run("rollback.py", evil_home, "--latest")]
    commands = []
    for p in outputs:
        assert p.returncode in (0, 1), p.stderr
        for stream in (p.stdout, p.stderr):
            for line in stream.split("\n"):
                assert not RAW_CONTROL.search(line), repr(line)
        commands += _commands(p.stdout, evil_home)
    assert len(commands) >= 6
    for cmd in commands:
        argv = argv_of(cmd)
        assert argv[1].startswith(str(SCRIPTS)), cmd
        assert argv[argv.index("--codex-dir") + 1] == str(evil_home), cmd
        assert "PWNED" not in " ".join(argv[2:]) or "--target-provider" in argv, argv
    assert not (Path.cwd() / "PWNED").exists()


def test_a_word_with_a_control_character_is_quoted_as_bash_reads_it_back():
    sys.path.insert(0, str(SCRIPTS))
    from sessionkit.ui.commands import args_text
    from sessionkit.ui.cli import plain
    words = ["a\nb", "x\x1b[31my", "q'\\\x07", "\x7f\x85\u202e", "plain word", "é"]
    text = plain(args_text(words))
    assert "\n" not in text and not RAW_CONTROL.search(text)
    assert argv_of(text) == words


def test_plain_escapes_a_newline_in_one_string_and_keeps_the_lines_of_lines():
    sys.path.insert(0, str(SCRIPTS))
    from sessionkit import Lines
    from sessionkit.ui.cli import plain
    assert plain("a\nb\x1b") == "a\\nb\\e"
    assert plain(Lines(["one", "t\nwo\x07"])) == "one\nt\\nwo\\x07"


@pytest.fixture
def migrated(tmp_path):
    """Two sessions of another provider migrated to the current one (one run)."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    old = [hb.add(provider="oldco", preview=f"old session {i}") for i in range(2)]
    proc = run("provider_migrate.py", hb.root, "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return hb, old


def _put_back(stdout):
    """The count in "N session(s) put back:" (the line may wrap) and the session labels after it."""
    [m] = list(re.finditer(r"(\d+) session\(s\) put\s+back:", stdout))
    named = []
    for ln in stdout[m.end():].split("\n")[1:]:
        if not ln.startswith('  "'):
            break
        named.append(ln)
    return int(m.group(1)), named


def test_a_forced_rollback_counts_only_the_sessions_it_put_back_not_one_codex_holds(migrated):
    import fcntl
    hb, old = migrated
    locks = hb.root / "thread-writer-locks"
    locks.mkdir(exist_ok=True)
    fd = os.open(str(locks / f"{old[1].id}.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        rb = run("rollback.py", hb.root, "--latest", "--apply", "--force")
    finally:
        os.close(fd)
    assert rb.returncode == 1, rb.stdout + rb.stderr
    count, named = _put_back(rb.stdout)
    assert count == 1 and len(named) == 1 and "old session 0" in named[0], rb.stdout
    assert "old session 1" not in "\n".join(named)


def test_a_session_deleted_since_the_run_is_not_counted_as_put_back(migrated):
    hb, old = migrated
    os.unlink(old[1].path)
    conn = sqlite3.connect(str(hb.root / "state_5.sqlite"))
    with conn:
        conn.execute("DELETE FROM threads WHERE id=?", (old[1].id,))
    conn.close()
    rb = run("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    count, named = _put_back(rb.stdout)
    assert count == 1 and len(named) == 1 and "old session 0" in named[0], rb.stdout


WRITERS = ["migrate", "repair", "import", "recover", "rollback", "prune", "restore-db"]


def _writer_home(tmp_path, writer):
    """A home where `writer` has something to do; returns (home, the writer's script and args)."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    hb.add(provider="oldco", preview="old")
    hb.add(write_row=False, preview="orphan")
    if writer in ("rollback", "prune", "restore-db"):
        assert run("provider_migrate.py", hb.root, "--apply").returncode == 0
    if writer == "prune":
        assert run("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    if writer == "restore-db":
        [bak] = (hb.root / ".tmp" / "session-migration").glob("*/state_5.sqlite.pre_*.bak")
        return hb.root, ("rollback.py", "--restore-db", str(bak), "--force", "--apply")
    if writer == "import":
        src = HomeBuilder(tmp_path / "src" / ".codex", provider="newco", providers=["newco"])
        src.n = 50
        src.add(preview="from elsewhere")
        return hb.root, ("session_import.py", "--from", str(src.root), "--apply")
    return hb.root, {"migrate": ("provider_migrate.py", "--apply"),
                     "repair": ("session_repair.py", "--import-orphans", "--apply"),
                     "recover": ("session_recover.py", "--apply"),
                     "rollback": ("rollback.py", "--latest", "--apply"),
                     "prune": ("rollback.py", "--prune", "--force", "--apply")}[writer]


def _everything(root):
    from harness import snapshot
    return snapshot(root)


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("link", ["lock symlink", "tmp symlink", "writer-locks symlink"])
def test_no_writer_creates_a_file_through_a_link_out_of_the_home(tmp_path, writer, link):
    """(A hard-linked .lock is not refused: it is never written, and a `cp -al` copy of a home
    shares it; test_db_links prunes such a copy.)"""
    home, (script, *args) = _writer_home(tmp_path, writer)
    outside = tmp_path / "outside"
    outside.mkdir()
    arts = home / ".tmp" / "session-migration"
    if link == "lock symlink":
        arts.mkdir(parents=True, exist_ok=True)
        (arts / ".lock").unlink(missing_ok=True)
        (arts / ".lock").symlink_to(outside / "created")
    elif link == "tmp symlink":
        if (home / ".tmp").exists():
            (home / ".tmp").rename(outside / "tmp")
            (home / ".tmp").symlink_to(outside / "tmp")
        else:
            (home / ".tmp").symlink_to(outside / "tmp")
    else:
        (home / "thread-writer-locks").symlink_to(outside / "locks")
    before, outside_before = _everything(home), _everything(outside)
    proc = run(script, home, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().split("\n")) == 1 and "refusing" in proc.stderr.lower(), proc.stderr
    assert _everything(outside) == outside_before
    assert _everything(home) == before


@pytest.mark.parametrize("bad", [
    ("rollback.py", "--manifest", "{out}/provider_migration_1.csv", "--apply"),
    ("rollback.py", "--restore-db", "{out}/state_5.sqlite", "--apply"),
    ("rollback.py", "--until", "{out}", "--apply"),
    ("session_import.py", "--from", "{out}/junk.tgz", "--apply"),
    ("session_import.py", "--from", "{out}/nothing-here", "--apply"),
    ("session_repair.py", "--remap-prefix", "relative=/x", "--apply"),
    ("provider_migrate.py", "--thread-id", "0195ffff-0000-7000-8000-00000000ffff", "--apply"),
    ("session_recover.py", "--thread-id", "0195ffff-0000-7000-8000-00000000ffff", "--apply"),
])
def test_a_bad_argument_is_refused_before_anything_is_created(tmp_path, bad):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    hb.add(provider="oldco", preview="old")
    out = tmp_path / "outside"
    out.mkdir()
    (out / "provider_migration_1.csv").write_text("id,old_provider,new_provider,ts\n")
    (out / "junk.tgz").write_text("this is text, not a gzip file\n")
    sqlite3.connect(str(out / "state_5.sqlite")).close()
    script, *args = bad
    before = _everything(hb.root)
    proc = run(script, hb.root, *[a.format(out=out) for a in args])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().split("\n")) == 1, proc.stderr
    assert _everything(hb.root) == before
    assert not (hb.root / ".tmp").exists()


@pytest.mark.parametrize("name", ["junk.tgz", "junk.tar.gz", "junk.tar", "junk.zip"])
def test_a_text_file_named_as_an_archive_is_one_line_exit_2(tmp_path, name):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(preview="here")
    junk = tmp_path / name
    junk.write_text("this is text\n" * 40)
    for apply in ([], ["--apply"]):
        proc = run("session_import.py", hb.root, "--from", str(junk), *apply)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        [line] = proc.stderr.strip().split("\n")
        assert line.startswith(f"session_import.py: error: --from {junk}: not a readable ") and "\\n" not in line, line
    assert not (hb.root / ".tmp").exists()


def test_every_run_kind_is_said_in_words_and_a_recovery_run_is_called_one(tmp_path):
    sys.path.insert(0, str(SCRIPTS))
    from sessionkit.ui.labels import RUN_KIND_WORDS
    kinds = set()
    for f in SCRIPTS.rglob("*.py"):
        kinds |= set(re.findall(r'= execute\([\w.]+, "(\w+)"', f.read_text(encoding="utf-8")))
        kinds |= set(re.findall(r'^RUN_KIND = "(\w+)"', f.read_text(encoding="utf-8"), re.M))
    assert kinds and kinds <= set(RUN_KIND_WORDS), kinds - set(RUN_KIND_WORDS)
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    hb.add(provider="oldco", preview="old")
    hb.add(write_row=False, preview="orphan")
    assert run("session_recover.py", hb.root, "--apply").returncode == 0
    rb = run("rollback.py", hb.root, "--latest")
    assert "Would undo the recovery run session_recover_" in rb.stdout, rb.stdout
    assert "the session_recover run" not in rb.stdout


def test_the_readme_says_what_the_audit_prints_for_files_with_no_index_entry(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(preview="indexed")
    hb.add(write_row=False, preview="orphan")
    audit = run("session_audit.py", hb.root).stdout
    [cmd] = [ln for ln in audit.split("\n") if str(SCRIPTS) in ln]
    assert "session_recover.py" in cmd and "--import-orphans" not in cmd
    readme = " ".join((SCRIPTS.parent / "README.md").read_text(encoding="utf-8").split())
    assert "third command adds `--import-orphans`" not in readme
    assert "the audit's one `session_recover.py` command indexes them too" in readme
    proc = run("session_recover.py", hb.root, "--no-import-orphans")
    assert proc.returncode in (0, 1), proc.stderr


def test_the_recovery_plan_shows_a_first_line_only_fix_from_line_1s_value(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="openai", providers=[])
    t = hb.add(provider="openai", preview="row says openai")
    lines = t.path.read_bytes().split(b"\n")
    first = json.loads(lines[0])
    first["payload"]["model_provider"] = "oldco"
    t.path.write_bytes(b"\n".join([json.dumps(first, separators=(",", ":")).encode()] + lines[1:]))
    proc = run("session_recover.py", hb.root)
    flat = " ".join(proc.stdout.split())
    assert "provider (first line only) oldco -> openai" in flat, proc.stdout
    assert "openai -> openai" not in flat


@pytest.mark.parametrize("script", ["provider_migrate.py", "session_recover.py"])
def test_an_apply_to_a_provider_neither_defined_nor_built_in_is_refused_unless_forced(tmp_path, script):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    t = hb.add(provider="oldco", preview="old")
    before = _everything(hb.root)
    dry = run(script, hb.root, "--target-provider", "opneai")
    assert dry.returncode in (0, 1) and "not built in" in " ".join(dry.stdout.split()), dry.stdout + dry.stderr
    proc = run(script, hb.root, "--target-provider", "opneai", "--apply")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().split("\n")
    assert "'opneai'" in line and "(newco, oldco)" in line and "--force" in line, line
    assert _everything(hb.root) == before and not (hb.root / ".tmp").exists()
    assert run(script, hb.root, "--target-provider", "ollama", "--apply").returncode == 0  # a built-in
    forced = run(script, hb.root, "--target-provider", "opneai", "--apply", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    conn = sqlite3.connect(str(hb.root / "state_5.sqlite"))
    assert conn.execute("SELECT model_provider FROM threads WHERE id=?", (t.id,)).fetchall() == [("opneai",)]
    conn.close()
