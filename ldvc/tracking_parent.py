"""One parent run per pipeline run, found or created race-free against any MLflow store.

The parent of a pipeline run carries the tags `ldvc.role = pipeline` and `ldvc.pipeline_id = <key>`
(the deterministic key of ldvc.tracking.pipeline_id: the DVC experiment name, else commit + hash of
params.yaml). Stages of one pipeline run may start at the same time on different machines, and no
lock spans machines, so two writers can both find no parent and both create one. Instead of
preventing that, every writer applies the same RULE, which converges to one parent:

    candidates = active runs of the experiment with both tags (any writer's creation)
    canonical  = the candidate with the smallest run id   (a total order every writer agrees on)
    every other candidate (a duplicate) is MERGED into the canonical: tagged
    `ldvc.duplicate_of = <canonical>`, its datasets, latest metrics and end time copied over, its
    children re-parented (tag `mlflow.parentRunId`), then deleted (soft delete, MLflow's
    lifecycle); children still pointing at a deleted duplicate are adopted by the canonical.

A writer (one stage execution) applies it at three points:
1. start: resolve; if there is no candidate, create one and resolve AGAIN (its own creation may
   lose to another writer's smaller id);
2. after creating its child run under the canonical it got: resolve and re-parent the child if the
   canonical changed meanwhile (shrinks the window in which a child hangs under a duplicate);
3. stage end: resolve, re-parent the child, then write what belongs to the parent (dataset
   inputs, end time and status, the report's summary) to the canonical of that moment.

Why it converges (run ids are fixed at creation; candidates appear, and only duplicates disappear):
- The global minimum m (smallest id ever created for the key) is never deleted: a writer deletes
  only candidates larger than the smallest one it sees, and m is smaller than everything.
- Every other candidate x is deleted: if m was created before x, x's creator resolves after
  creating x (point 1), sees m (never deleted) and merges x into it; if m was created after x,
  m's creator resolves after creating m and sees x (unless someone already merged it).
- Every child ends under m: children of a duplicate are moved at its merge; a child attached to
  a duplicate after that duplicate was merged is moved by its own writer at point 2 or 3 (both
  happen after the attachment), or, if that writer died, by the adoption step of any later
  resolve (the deleted duplicate still names its canonical).

The interleavings, two writers A and B of one key (tests/test_tracking_parent.py replays every
interleaving of two writers and sampled ones of three against an in-memory store):
- A finds Pa; B starts later: B finds Pa, creates nothing.        -> one parent, no merge.
- A and B both find nothing, both create (Pa < Pb):
  - A resolves after B created: A keeps Pa and merges Pb (its children, if any, move to Pa);
    B resolves: sees Pa only (or Pa and Pb) -> Pa.
  - A resolves BEFORE B created: A sees only Pa -> Pa; B creates Pb, resolves, sees Pa < Pb ->
    merges Pb into Pa (B's own parent) -> Pa for both.
  - with Pb < Pa and A's resolve before B created: A attaches its child to Pa; B creates Pb,
    resolves -> Pb, merges Pa: A's child moves to Pb. A's point 2/3 resolves -> Pb (idempotent).
    If B merged Pa between A's resolve and A's child creation, the child is born under the
    deleted Pa; A's point 2 (right after creating it) re-parents it to Pb.
- A writer killed after attaching to a duplicate: the duplicate is deleted by another writer; its
  child is adopted at the next resolve of any writer of the key.
What the rule cannot do: make the transient states invisible. For the seconds of a race, a UI may
show two parents, or a child under a deleted duplicate (MLflow hides deleted runs).

The same rule runs against the embedded sqlite store; there the only file lock left is the one for
MLflow's fresh-store migrations (ldvc/tracking_store.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

ROLE_TAG = "ldvc.role"
PIPELINE_ID_TAG = "ldvc.pipeline_id"
DUPLICATE_TAG = "ldvc.duplicate_of"
PARENT_TAG = "mlflow.parentRunId"
_PAGE = 1000


def tolerate_conflict(call: Callable[..., Any], *args: Any, tries: int = 3, **kwargs: Any) -> bool:
    """Run a write that another writer may be making at the same moment (the same tag or dataset on
    the same run). MLflow writes a new tag or input as check-then-insert, so two concurrent writers
    can collide on the database's unique key (seen with PostgreSQL: HTTP 400 "duplicate key value
    violates unique constraint"). Retried; if it still collides, the other writer's row is there,
    which is what we wanted: returns False. Server unreachable (HTTP 5xx) is raised as usual."""
    from mlflow.exceptions import MlflowException

    for attempt in range(tries):
        try:
            call(*args, **kwargs)
            return True
        except MlflowException as err:
            if err.get_http_status_code() >= 500:
                raise
            time.sleep(0.05 * (attempt + 1) + random.random() * 0.05)
    return False


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _search(client: MlflowClient, exp_id: str, filter_string: str, view: Any) -> list[Any]:
    """Every run matching `filter_string` (all pages)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([exp_id], filter_string=filter_string, run_view_type=view, max_results=_PAGE,
                                  page_token=token)
        runs += list(page)
        token = getattr(page, "token", None)
        if not token:
            return runs


def candidate_filter(pid: str) -> str:
    return f"tags.`{ROLE_TAG}` = 'pipeline' AND tags.`{PIPELINE_ID_TAG}` = '{_escape(pid)}'"


def candidates(client: MlflowClient, exp_id: str, pid: str) -> list[Any]:
    """Active parent runs of pipeline `pid`, smallest run id first."""
    from mlflow.entities import ViewType

    return sorted(_search(client, exp_id, candidate_filter(pid), ViewType.ACTIVE_ONLY), key=lambda r: r.info.run_id)


def children(client: MlflowClient, exp_id: str, parent_id: str) -> list[Any]:
    from mlflow.entities import ViewType

    return _search(client, exp_id, f"tags.`{PARENT_TAG}` = '{_escape(parent_id)}'", ViewType.ACTIVE_ONLY)


def _move_children(client: MlflowClient, exp_id: str, from_id: str, to_id: str) -> int:
    moved = 0
    for child in children(client, exp_id, from_id):
        if child.info.run_id != to_id:
            tolerate_conflict(client.set_tag, child.info.run_id, PARENT_TAG, to_id)
            moved += 1
    return moved


def merge_duplicate(client: MlflowClient, exp_id: str, dup: Any, canonical: str) -> None:
    """Fold duplicate parent `dup` (a Run) into `canonical`, then delete it (module doc)."""
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    dup_id = dup.info.run_id
    # several writers may merge the same duplicate at once: every write here tolerates the others'.
    # The tag goes first: a writer dying after it leaves the duplicate adoptable.
    tolerate_conflict(client.set_tag, dup_id, DUPLICATE_TAG, canonical)
    datasets = list(dup.inputs.dataset_inputs) if dup.inputs is not None else []
    if datasets:
        tolerate_conflict(client.log_inputs, canonical, datasets=datasets)
    metrics = dup.data.metrics
    if metrics:
        target = client.get_run(canonical).data.metrics
        missing = {k: v for k, v in metrics.items() if k not in target}  # the canonical's own values win
        if missing:
            ts = dup.info.end_time or dup.info.start_time or 0
            tolerate_conflict(client.log_batch, canonical,
                              metrics=[Metric(k, float(v), ts, 0) for k, v in sorted(missing.items())])
    _move_children(client, exp_id, dup_id, canonical)
    if dup.info.end_time:
        extend_end_time(client, canonical, int(dup.info.end_time), None)
    try:
        client.delete_run(dup_id)
    except MlflowException:
        pass  # another writer deleted it first


def adopt_orphans(client: MlflowClient, exp_id: str, pid: str, canonical: str) -> int:
    """Re-parent children of duplicates that were deleted after the child attached (writer died)."""
    from mlflow.entities import ViewType

    moved = 0
    for dup in _search(client, exp_id, candidate_filter(pid), ViewType.DELETED_ONLY):
        if dup.data.tags.get(DUPLICATE_TAG):
            moved += _move_children(client, exp_id, dup.info.run_id, canonical)
    return moved


def resolve(client: MlflowClient, exp_id: str, pid: str, adopt: bool = False) -> str | None:
    """Apply the rule: the canonical parent of `pid` (None when there is no candidate)."""
    found = candidates(client, exp_id, pid)
    if not found:
        return None
    canonical = found[0].info.run_id
    for dup in found[1:]:
        merge_duplicate(client, exp_id, dup, canonical)
    if adopt:
        adopt_orphans(client, exp_id, pid, canonical)
    return canonical


def find_or_create(client: MlflowClient, exp_id: str, pid: str, create: Callable[[], str]) -> str:
    """Point 1 of the module doc: resolve; create when there is nothing; resolve again."""
    found = resolve(client, exp_id, pid, adopt=True)
    if found is not None:
        return found
    create()
    found = resolve(client, exp_id, pid)
    if found is None:  # our own creation vanished: someone deleted it by hand between the calls
        raise RuntimeError(f"the parent run of pipeline {pid} was deleted while it was being created; re-run")
    return found


def attach(client: MlflowClient, exp_id: str, pid: str, run_id: str, current: str | None,
           adopt: bool = False) -> str:
    """Points 2 and 3: resolve and put child `run_id` under the canonical parent; returns it."""
    canonical = resolve(client, exp_id, pid, adopt=adopt)
    if canonical is None:  # every parent deleted by hand: the child keeps the one it has
        if current is None:
            raise RuntimeError(f"no parent run of pipeline {pid} exists any more; re-run the stage")
        return current
    if canonical != current or client.get_run(run_id).data.tags.get(PARENT_TAG) != canonical:
        tolerate_conflict(client.set_tag, run_id, PARENT_TAG, canonical)
    return canonical


def extend_end_time(client: MlflowClient, run_id: str, end_ms: int, status: str | None, tries: int = 3) -> None:
    """Move a parent's end time forward to `end_ms` (never backwards: stages finish out of order and
    on several machines); re-read and retry when a concurrent writer set an earlier one."""
    for _ in range(tries):
        info = client.get_run(run_id).info
        current = int(info.end_time or 0)
        if current >= end_ms and status is None:
            return
        client.set_terminated(run_id, status=status or info.status, end_time=max(current, end_ms))
        if int(client.get_run(run_id).info.end_time or 0) >= end_ms:
            return


def canonical_of(runs: Iterable[Any]) -> str | None:
    """The rule's choice among `runs` (exposed for tests and tools)."""
    ids = sorted(r.info.run_id for r in runs)
    return ids[0] if ids else None


__all__ = [
    "DUPLICATE_TAG", "PARENT_TAG", "PIPELINE_ID_TAG", "ROLE_TAG", "adopt_orphans", "attach", "candidates",
    "canonical_of", "extend_end_time", "find_or_create", "merge_duplicate", "resolve", "tolerate_conflict",
]
