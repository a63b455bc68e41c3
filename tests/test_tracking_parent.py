"""The parent-run rule of ldvc/tracking_parent.py under injected interleavings.

Writers (stage executions of one pipeline run on different machines) call the rule's functions
against one in-memory store whose every call is a scheduling point: a scheduler lets exactly one
writer make its next store call, in an order the test chooses. Checked after every schedule:
exactly one active parent remains, it is the smallest run id ever created for the key, every
child points at it, and every deleted parent names the one it was merged into.

- every interleaving of two writers at the rule's step level (find-or-create, child, re-resolve,
  end), then random interleavings at the level of single store calls (2 and 3 writers);
- a writer killed right after attaching its child to what becomes a duplicate: a later stage of the
  pipeline adopts the orphan;
- the fake store answers like MLflow for what the rule uses (tag filters joined by AND, active /
  deleted views, soft delete); the real thing is exercised by tests/test_tracking_server.py.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from ldvc import tracking_parent as rule

EXP = "1"
PID = "abc1234567-0123456789ab"


# ---------------------------------------------------------------------------------------------- a store


@dataclass
class FakeRun:
    run_id: str
    tags: dict[str, str]
    start_time: int
    end_time: int | None = None
    status: str = "RUNNING"
    lifecycle_stage: str = "active"
    metrics: dict[str, float] = field(default_factory=dict)
    datasets: list[Any] = field(default_factory=list)

    def view(self) -> Any:
        info = SimpleNamespace(run_id=self.run_id, start_time=self.start_time, end_time=self.end_time,
                               status=self.status, lifecycle_stage=self.lifecycle_stage)
        data = SimpleNamespace(tags=dict(self.tags), metrics=dict(self.metrics))
        return SimpleNamespace(info=info, data=data, inputs=SimpleNamespace(dataset_inputs=list(self.datasets)))


class FakeStore:
    """The MlflowClient calls tracking_parent makes, on a dict; `gate()` before each one."""

    _clause = re.compile(r"^tags\.`([^`]+)` = '((?:[^'\\]|\\.)*)'$")

    def __init__(self, rng: random.Random, gate=lambda: None) -> None:
        self.runs: dict[str, FakeRun] = {}
        self.rng = rng
        self.gate = gate
        self.clock = 0
        self.created_parents: list[str] = []
        self.next_ids: list[str] = []  # ids to hand out first (tests that need an order)
        self.stale_searches = 0  # the next searches see nothing (a search made before others' creations)

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def create_run(self, experiment_id: str, start_time: int | None = None, tags: dict | None = None,
                   run_name: str | None = None) -> Any:
        self.gate()
        # random order, like MLflow's uuid4, unless the test chose the ids
        run_id = self.next_ids.pop(0) if self.next_ids else uuid.UUID(int=self.rng.getrandbits(128)).hex
        self.runs[run_id] = FakeRun(run_id, dict(tags or {}), start_time or self._tick())
        if (tags or {}).get(rule.ROLE_TAG) == "pipeline":
            self.created_parents.append(run_id)
        return self.runs[run_id].view()

    def search_runs(self, experiment_ids, filter_string="", run_view_type=None, max_results=1000, page_token=None):
        self.gate()
        from mlflow.entities import ViewType

        if self.stale_searches:
            self.stale_searches -= 1
            return []
        wanted = {ViewType.ACTIVE_ONLY: ("active",), ViewType.DELETED_ONLY: ("deleted",),
                  ViewType.ALL: ("active", "deleted")}[run_view_type or ViewType.ACTIVE_ONLY]
        clauses = [self._clause.match(c.strip()) for c in filter_string.split(" AND ")] if filter_string else []
        assert all(clauses), filter_string
        conds = {m.group(1): m.group(2).replace("\\'", "'") for m in clauses}
        return [r.view() for r in self.runs.values()
                if r.lifecycle_stage in wanted and all(r.tags.get(k) == v for k, v in conds.items())]

    def get_run(self, run_id: str) -> Any:
        self.gate()
        return self.runs[run_id].view()

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.gate()
        self.runs[run_id].tags[key] = value

    def log_inputs(self, run_id: str, datasets=None) -> None:
        self.gate()
        self.runs[run_id].datasets += [d for d in datasets or [] if d not in self.runs[run_id].datasets]

    def log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        self.gate()
        for m in metrics:
            self.runs[run_id].metrics[m.key] = m.value

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        self.gate()
        run = self.runs[run_id]
        run.status, run.end_time = status or "FINISHED", end_time or self._tick()

    def delete_run(self, run_id: str) -> None:
        self.gate()
        from mlflow.exceptions import MlflowException

        if self.runs[run_id].lifecycle_stage == "deleted":
            raise MlflowException(f"run {run_id} is already deleted")
        self.runs[run_id].lifecycle_stage = "deleted"

    # -- what the test checks ---------------------------------------------------------------------

    def assert_converged(self) -> str:
        active = [r for r in self.runs.values()
                  if r.tags.get(rule.ROLE_TAG) == "pipeline" and r.lifecycle_stage == "active"]
        assert len(active) == 1, f"{len(active)} active parents"
        canonical = active[0].run_id
        assert canonical == min(self.created_parents), "the canonical parent is not the smallest id created"
        for r in self.runs.values():
            if r.tags.get(rule.ROLE_TAG) == "stage":
                assert r.tags.get(rule.PARENT_TAG) == canonical, f"child {r.run_id} under {r.tags.get(rule.PARENT_TAG)}"
            elif r.lifecycle_stage == "deleted":
                assert r.tags.get(rule.DUPLICATE_TAG), "a deleted parent does not say what it was merged into"
        return canonical


# ---------------------------------------------------------------------------------------------- writers


def writer_steps(client: FakeStore, name: str, crash_after_child: bool = False) -> list:
    """One stage execution as the rule's steps (what Applier's open and end ops do)."""
    state: dict[str, Any] = {}

    def create() -> str:
        return client.create_run(EXP, tags={rule.ROLE_TAG: "pipeline", rule.PIPELINE_ID_TAG: PID}).info.run_id

    def start() -> None:
        state["parent"] = rule.find_or_create(client, EXP, PID, create)

    def child() -> None:
        state["child"] = client.create_run(EXP, tags={rule.ROLE_TAG: "stage", "name": name,
                                                      rule.PARENT_TAG: state["parent"]}).info.run_id

    def after_child() -> None:
        state["parent"] = rule.attach(client, EXP, PID, state["child"], state["parent"])

    def end() -> None:
        state["parent"] = rule.attach(client, EXP, PID, state["child"], state["parent"], adopt=True)
        rule.extend_end_time(client, state["parent"], client.clock + 1000, "FINISHED")

    return [start, child] if crash_after_child else [start, child, after_child, end]


def later_stage(client: FakeStore) -> None:
    """A stage that starts after the others ended (the next stage of the same pipeline run)."""
    for step in writer_steps(client, "later"):
        step()


# ---------------------------------------------------------------------------------------------- step level


def _step_schedules(n_a: int, n_b: int):
    """Every interleaving of two writers' steps (positions of A's steps among n_a + n_b)."""
    for positions in itertools.combinations(range(n_a + n_b), n_a):
        yield ["A" if i in positions else "B" for i in range(n_a + n_b)]


@pytest.mark.parametrize("seed", range(4))  # different run ids: either writer's parent may be the smaller
def test_every_step_interleaving_of_two_writers_converges(seed: int) -> None:
    schedules = list(_step_schedules(4, 4))
    assert len(schedules) == 70
    for schedule in schedules:
        store = FakeStore(random.Random(seed * 1000 + len(schedule)))
        steps = {"A": iter(writer_steps(store, "A")), "B": iter(writer_steps(store, "B"))}
        for who in schedule:
            next(steps[who])()
        store.assert_converged()


def test_two_parents_really_happen_and_are_merged() -> None:
    """Both writers find nothing before either creates: two parents, then one, children moved."""
    for seed in range(8):
        store = FakeStore(random.Random(seed))
        a, b = writer_steps(store, "A"), writer_steps(store, "B")
        # A and B both search (nothing), both create: run the searches first by hand
        assert rule.resolve(store, EXP, PID) is None and rule.resolve(store, EXP, PID) is None
        for step in (a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3]):
            step()
        if len(store.created_parents) == 1:
            continue  # B's find saw A's parent: no race this time
        assert len(store.created_parents) == 2
        store.assert_converged()
    # a deterministic race: both writers' first searches happen before either creation
    store = FakeStore(random.Random(99))
    created = []
    for _ in range(2):
        created.append(store.create_run(EXP, tags={rule.ROLE_TAG: "pipeline", rule.PIPELINE_ID_TAG: PID}).info.run_id)
    canonical = rule.resolve(store, EXP, PID)
    assert canonical == min(created)
    loser = max(created)
    assert store.runs[loser].lifecycle_stage == "deleted" and store.runs[loser].tags[rule.DUPLICATE_TAG] == canonical


def test_a_killed_writers_orphan_is_adopted_by_a_later_stage() -> None:
    """A creates Pa and resolves (sees only Pa); B, whose search saw nothing, creates Pb < Pa and
    merges Pa (no children yet); A then attaches its child under the deleted Pa and is killed
    before re-resolving. The next stage of the pipeline adopts the orphan."""
    orphaned = 0
    for seed in range(20):
        store = FakeStore(random.Random(seed))
        a = writer_steps(store, "A", crash_after_child=True)
        a[0]()  # find nothing, create Pa, resolve -> Pa
        pb = store.create_run(EXP, tags={rule.ROLE_TAG: "pipeline", rule.PIPELINE_ID_TAG: PID}).info.run_id
        assert rule.resolve(store, EXP, PID) == min(store.created_parents)  # B's re-resolve after creating
        a[1]()  # A's child, under Pa whatever happened to Pa
        pa = store.created_parents[0]
        if pb < pa:
            orphaned += 1
            assert store.runs[pa].lifecycle_stage == "deleted"
            child = next(r for r in store.runs.values() if r.tags.get("name") == "A")
            assert child.tags[rule.PARENT_TAG] == pa  # hangs under the deleted duplicate ...
        later_stage(store)
        store.assert_converged()  # ... until the next stage adopts it
    assert orphaned > 0  # the orphan case really occurred


def _parent(store: FakeStore, run_id: str) -> str:
    store.next_ids.append(run_id)
    return store.create_run(EXP, tags={rule.ROLE_TAG: "pipeline", rule.PIPELINE_ID_TAG: PID}).info.run_id


def test_each_point_of_the_rule_on_its_own() -> None:
    """What each point guarantees at once (the convergence tests would also pass if one point were
    missing, since the later points repair what an earlier one left: here each is checked alone)."""
    low, high = "1" * 32, "f" * 32
    # point 1: a writer whose search saw nothing creates a parent that loses to one created meanwhile
    store = FakeStore(random.Random(0))
    _parent(store, low)
    store.stale_searches = 1
    got = rule.find_or_create(store, EXP, PID, lambda: _parent(store, high))
    assert got == low and store.runs[high].lifecycle_stage == "deleted"  # re-resolved after creating

    # merge: the duplicate's children move to the canonical at once, with its datasets and metrics
    store = FakeStore(random.Random(0))
    _parent(store, low), _parent(store, high)
    store.runs[high].datasets.append("ds-train")
    store.runs[high].metrics["inductive.hIoU"] = 50.0
    kid = store.create_run(EXP, tags={rule.ROLE_TAG: "stage", rule.PARENT_TAG: high}).info.run_id
    assert rule.resolve(store, EXP, PID) == low
    assert store.runs[kid].tags[rule.PARENT_TAG] == low
    assert store.runs[high].tags[rule.DUPLICATE_TAG] == low
    assert store.runs[low].datasets == ["ds-train"] and store.runs[low].metrics["inductive.hIoU"] == 50.0

    # point 2: a child born under an already merged duplicate is re-parented by attach, no adoption needed
    store = FakeStore(random.Random(0))
    _parent(store, low), _parent(store, high)
    assert rule.resolve(store, EXP, PID) == low  # high merged and deleted
    kid = store.create_run(EXP, tags={rule.ROLE_TAG: "stage", rule.PARENT_TAG: high}).info.run_id
    assert rule.attach(store, EXP, PID, kid, high, adopt=False) == low
    assert store.runs[kid].tags[rule.PARENT_TAG] == low


# ---------------------------------------------------------------------------------------------- call level


class CallScheduler:
    """Runs writers in threads; exactly one makes its next store call, the one `pick` chooses."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.cond = threading.Condition()
        self.waiting: set[str] = set()
        self.turn: str | None = None
        self.done: set[str] = set()
        self.errors: list[BaseException] = []
        self.calls = 0

    def gate(self) -> None:
        me = threading.current_thread().name
        with self.cond:
            self.waiting.add(me)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.turn == me)
            self.turn = None
            self.waiting.discard(me)
            self.calls += 1

    def run(self, writers: dict[str, Any]) -> None:
        def body(fn):
            try:
                fn()
            except BaseException as err:  # noqa: BLE001 - reported below
                self.errors.append(err)
            finally:
                with self.cond:
                    self.done.add(threading.current_thread().name)
                    self.cond.notify_all()

        threads = [threading.Thread(target=body, args=(fn,), name=name, daemon=True) for name, fn in writers.items()]
        for t in threads:
            t.start()
        with self.cond:
            while len(self.done) < len(threads):
                ok = self.cond.wait_for(lambda: self.turn is None and
                                        len(self.waiting) + len(self.done) == len(threads), timeout=10)
                assert ok, "scheduler stalled"
                if len(self.done) == len(threads):
                    break
                self.turn = self.rng.choice(sorted(self.waiting))
                self.cond.notify_all()
        for t in threads:
            t.join(timeout=10)
        if self.errors:
            raise self.errors[0]


@pytest.mark.parametrize("writers,schedules", [(2, 150), (3, 100)])
def test_random_call_level_interleavings_converge(writers: int, schedules: int) -> None:
    rng = random.Random(writers)
    races = 0
    for _ in range(schedules):
        scheduler = CallScheduler(random.Random(rng.getrandbits(32)))
        store = FakeStore(random.Random(rng.getrandbits(32)), gate=scheduler.gate)

        def stage(name: str, store: FakeStore = store):
            def go() -> None:
                for step in writer_steps(store, name):
                    step()
            return go

        scheduler.run({f"w{i}": stage(f"w{i}") for i in range(writers)})
        races += len(store.created_parents) > 1
        store.gate = lambda: None
        store.assert_converged()
    assert races > schedules // 10, f"only {races} schedules made duplicate parents: the test does not race"
