"""What a stage could not log because the tracking server went away, kept until `ldvc mlflow-sync`.

When a call to the tracking server fails for want of the server (connection refused or reset,
timeout, HTTP 5xx; ldvc.tracking_ops.is_transport_failure), the stage stops talking to it for the
rest of its run, writes that operation and every later one here, finishes its work and its DVC
outputs, exits 0 and prints which records are missing and the command that logs them:

    ldvc mlflow-sync

Layout (at the repository root, git-ignored; DVC_ROOT, so DVC's temporary experiment copies write
to the workspace's journal):

    mlflow-pending/<UTC time>-<stage>-<8 hex>/
        journal.jsonl   line 1 a header {version, tracking_uri, stage, created, reason}, then one
                        operation (ldvc/tracking_ops.py) per line, in the order the stage made them
        ids.json        stage-local references -> MLflow ids known so far (the stage's run when it
                        was created before the failure; the sync adds what it creates)
        done            indices of the operations a sync has applied (a resumed sync skips them)
        files/<n>/      copies of the files the operations log (hard links where the filesystem
                        allows): a DVC temporary experiment folder (.dvc/tmp/exps/...) is deleted
                        when its experiment ends, and a workspace file changes with the next run
        .lock           flock held by the writing stage, then by a sync: a sync skips a journal
                        whose stage is still running, two syncs never apply one journal twice

A journal is removed once every operation in it is applied. The sync logs to the store the
journal was written for (its header), unless `--tracking-uri` says otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldvc.files import write_json_atomic
from ldvc.tracking_store import Store, StoreError, check_server, configure_http, redact, store_kind

PENDING_DIR = "mlflow-pending"
SYNC_COMMAND = "ldvc mlflow-sync"
VERSION = 1


def pending_root(root: Path) -> Path:
    return root / PENDING_DIR


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)
    return dst


def _lock(path: Path, blocking: bool) -> int | None:
    """An exclusive flock on `path`; None when another process holds it (non-blocking)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return fd


class Journal:
    """The pending journal of one stage execution (created at its first failed call)."""

    def __init__(self, root: Path, tracking_uri: str, stage: str, reason: str, ids: Mapping[str, str]) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.dir = pending_root(root) / f"{stamp}-{stage.replace('/', '_')}-{uuid.uuid4().hex[:8]}"
        (self.dir / "files").mkdir(parents=True)
        self._fd = _lock(self.dir / ".lock", blocking=True)
        self.reason = reason
        self.ops: list[dict[str, Any]] = []
        write_json_atomic(self.dir / "ids.json", dict(ids))
        header = {"version": VERSION, "tracking_uri": tracking_uri, "stage": stage,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reason": reason}
        self._write_line(header)

    def _write_line(self, data: Mapping[str, Any]) -> None:
        with open(self.dir / "journal.jsonl", "a") as f:
            f.write(json.dumps(data, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _keep(self, path: str | Path) -> str:
        """A copy of `path` inside the journal (files/<n>/<name>)."""
        src = Path(path)
        dest = self.dir / "files" / str(len(list((self.dir / "files").iterdir()))) / src.name
        dest.parent.mkdir(parents=True)
        if src.is_dir():
            shutil.copytree(src, dest, copy_function=_link_or_copy)
        elif src.is_file():
            _link_or_copy(str(src), str(dest))
        else:
            return str(src)  # gone already: the sync will say so
        return str(dest)

    def append(self, op: Mapping[str, Any]) -> None:
        op = json.loads(json.dumps(op, default=str))  # a deep copy in JSON types
        if op["op"] in ("artifact", "checkpoint"):
            op["path"] = self._keep(op["path"])
        elif op["op"] == "summary":
            op["artifacts"] = [self._keep(p) for p in op["artifacts"]]
        elif op["op"] == "open" and op["parent"].get("params_file"):
            op["parent"]["params_file"] = self._keep(op["parent"]["params_file"])
        self._write_line(op)
        self.ops.append(op)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def summary(self) -> list[str]:
        """What is missing from MLflow, one line per kind of record."""
        return describe(self.ops)


def describe(ops: list[Mapping[str, Any]]) -> list[str]:
    lines: list[str] = []
    metric_keys: Counter[str] = Counter()
    for op in ops:
        kind = op["op"]
        if kind == "metrics":
            metric_keys.update(list(op["metrics"]))  # keys, one count per value
        elif kind == "open":
            lines.append(f"the run itself ({op['child']['name']}) and its parent link, params and tags")
        elif kind == "params":
            lines.append(f"{len(op['params'])} params")
        elif kind == "tags":
            lines.append(f"tags {', '.join(sorted(op['tags']))}")
        elif kind == "artifact":
            lines.append(f"artifact {Path(op['path']).name}")
        elif kind == "dict":
            lines.append(f"artifact {op['name']}")
        elif kind == "dataset":
            lines.append(f"dataset input {op['dataset']['name']}")
        elif kind == "checkpoint":
            lines.append(f"logged model {op['name']} ({op['file_name']})")
        elif kind == "summary":
            lines.append(f"the pipeline summary on the parent run ({len(op['metrics'])} metrics, "
                         f"{len(op['artifacts'])} artifacts)")
        elif kind == "end":
            lines.append(f"the run's end ({op['status']}) and the parent's end time")
    if metric_keys:
        keys = sorted(metric_keys)
        shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        lines.insert(0, f"{sum(metric_keys.values())} metric values ({shown})")
    return lines


# ---------------------------------------------------------------------------------------------- sync


@dataclass
class SyncReport:
    synced: list[str] = field(default_factory=list)  # journal folders fully applied (and removed)
    skipped: list[str] = field(default_factory=list)  # still being written by a running stage
    left: list[str] = field(default_factory=list)  # not (fully) applied: the store is unreachable again
    messages: list[str] = field(default_factory=list)


def pending_journals(root: Path) -> list[Path]:
    base = pending_root(root)
    return sorted(p for p in base.iterdir() if (p / "journal.jsonl").is_file()) if base.is_dir() else []


def _read(journal: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = [json.loads(line) for line in (journal / "journal.jsonl").read_text().splitlines() if line.strip()]
    if not lines or lines[0].get("version") != VERSION:
        raise ValueError(f"{journal}/journal.jsonl: not an ldvc pending journal of version {VERSION}")
    return lines[0], lines[1:]


def _done(journal: Path) -> set[int]:
    path = journal / "done"
    return {int(x) for x in path.read_text().split()} if path.is_file() else set()


def _mark_done(journal: Path, index: int) -> None:
    with open(journal / "done", "a") as f:
        f.write(f"{index}\n")
        f.flush()
        os.fsync(f.fileno())


def iter_ops(journal: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    _, ops = _read(journal)
    done = _done(journal)
    for i, op in enumerate(ops):
        if i not in done:
            yield i, op


def sync_journal(journal: Path, root: Path, tracking_uri: str | None = None,
                 applier_factory: Callable[[Store, dict[str, str]], Any] | None = None) -> int:
    """Apply one journal's remaining operations; returns how many were applied, removes the journal
    when complete. Raises StoreError when the store cannot be reached (nothing more is applied)."""
    from ldvc.tracking_ops import Applier, is_transport_failure

    header, _ = _read(journal)
    uri = tracking_uri or header["tracking_uri"]
    store = Store(uri, store_kind(uri), root)
    if store.kind == "server":
        configure_http()
        check_server(uri)
    ids = json.loads((journal / "ids.json").read_text()) if (journal / "ids.json").is_file() else {}
    applier = (applier_factory or (lambda s, i: Applier(s, ids=i)))(store, ids)
    applied = 0
    for index, op in iter_ops(journal):
        try:
            applier.apply(op)
        except Exception as err:
            if is_transport_failure(err):
                raise StoreError(f"the MLflow store {redact(uri)} stopped answering during the sync ({err}); "
                                 f"{journal.name} keeps what is left: run `{SYNC_COMMAND}` again") from None
            raise RuntimeError(f"{journal}: operation {index + 1} ({op['op']}) failed: {err}") from err
        write_json_atomic(journal / "ids.json", applier.ids)
        _mark_done(journal, index)
        applied += 1
    shutil.rmtree(journal)
    return applied


def sync(root: Path, tracking_uri: str | None = None, log: Callable[[str], None] = print) -> SyncReport:
    """Apply every pending journal of the repository at `root` (oldest first)."""
    report = SyncReport()
    for journal in pending_journals(root):
        fd = _lock(journal / ".lock", blocking=False)
        if fd is None:
            report.skipped.append(journal.name)
            log(f"{journal.name}: skipped, its stage is still running (or another sync holds it)")
            continue
        try:
            header, ops = _read(journal)
            lines = describe([op for i, op in iter_ops(journal)])
            n = sync_journal(journal, root, tracking_uri)
        except StoreError as err:
            report.left.append(journal.name)
            report.messages.append(str(err))
            log(str(err))
            break  # the store is down: the other journals would fail the same way
        finally:
            os.close(fd)
        report.synced.append(journal.name)
        target = redact(tracking_uri or header["tracking_uri"])
        log(f"{journal.name}: logged {n} of {len(ops)} operations of stage {header['stage']} to {target}")
        for line in lines:
            log(f"    {line}")
    return report


__all__ = ["Journal", "PENDING_DIR", "SYNC_COMMAND", "SyncReport", "describe", "pending_journals", "sync",
           "sync_journal"]
