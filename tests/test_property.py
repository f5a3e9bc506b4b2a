"""Property: any sequence of repair / migrate / rollback runs, undone newest first, restores the home."""
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from homebuilder import HomeBuilder
from test_migrate_rollback import home_state
from sessionkit import UserError
from sessionkit.snapshot import gather
from sessionkit.home import open_home
from sessionkit.migrate import apply_migration, plan_migration
from sessionkit.repair import apply_repair, plan_repair
from sessionkit.undo import apply_undo, describe_runs, find_run, plan_undo

PROVIDERS = ["aa", "bbbb", "a-longer-provider-id"]

thread = st.fixed_dictionaries({
    "provider": st.sampled_from(PROVIDERS),
    "archived": st.booleans(),
    "moved": st.booleans(),
    "orphan": st.booleans(),
})
op = st.one_of(
    st.tuples(st.just("repair"), st.booleans(), st.booleans()),
    st.tuples(st.just("migrate"), st.sampled_from(PROVIDERS), st.booleans()),
    st.tuples(st.just("rollback"), st.just(None), st.just(None)),
)


def _build(root: Path, threads) -> None:
    hb = HomeBuilder(root, provider="aa", providers=PROVIDERS)
    for spec in threads:
        t = hb.add(provider=spec["provider"], archived=spec["archived"], write_row=not spec["orphan"])
        if spec["moved"] and not spec["orphan"]:
            hb.sql("UPDATE threads SET rollout_path=? WHERE id=?",
                   ("/elsewhere/.codex/" + str(t.path.relative_to(root)), t.id))


def _do(root: Path, step) -> None:
    kind, a, b = step
    home = open_home(str(root))
    if kind == "rollback":
        try:
            run_dir = find_run(home, None)
        except UserError:
            return
        apply_undo(home, plan_undo(home, run_dir))
        return
    inputs = gather(home)
    if kind == "repair":
        plan = plan_repair(inputs, unarchive=a, import_orphans=b)
        if plan.moves or plan.rows or plan.inserts:
            apply_repair(inputs, plan)
    else:
        plan = plan_migration(inputs, target=a, include_archived=b)
        if plan.changes:
            apply_migration(inputs, plan)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(threads=st.lists(thread, min_size=1, max_size=6), ops=st.lists(op, min_size=1, max_size=5))
def test_any_sequence_rolls_back_to_the_start(tmp_path_factory, threads, ops):
    root = tmp_path_factory.mktemp("prop") / ".codex"
    _build(root, threads)
    start = home_state(root)
    for step in ops:
        _do(root, step)
    home = open_home(str(root))
    for run in reversed(describe_runs(home)):
        apply_undo(home, plan_undo(home, Path(run["run_dir"])))
    assert home_state(root) == start
    shutil.rmtree(root.parent)
