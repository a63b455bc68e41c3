"""Turn what a user passes as `--checkpoint` into a local checkpoint file, and a checkpoint's recorded
CLIP weights into a local file (`ldvc predict`, `ldvc evaluate`).

`--checkpoint` accepts:
- a local file (`model.pt`, `checkpoints/iter_XXXXXX.pt`) or a run folder holding `model.pt`;
- an MLflow run id (32 hex digits): the checkpoint that run logged (`StageRun.log_checkpoint`:
  its LoggedModel output), else a `model.pt` among the run's artifacts;
- `runs:/<run_id>/<path>`: a run artifact, or `<logged model name>/<file>` (MLflow 3 resolves both);
- `models:/<model_id>` (a LoggedModel) or `models:/<registered name>/<version>`.

Choices:
- MLflow URIs are resolved against the store the pipeline logs to (`ldvc.tracking_store.tracking_uri`:
  MLFLOW_TRACKING_URI, e.g. a team's tracking server, else `mlflow.db` at the repository root).
  A missing sqlite store is an error, never silently created empty; a server that does not answer
  fails in seconds, naming it.
- Downloads go to `<repo>/.cache/checkpoints/<hash of store + spec>/` and are reused: logged-model
  artifacts are immutable, and a 60 MB checkpoint should not be fetched for every `predict`.
- mlflow is imported only for MLflow specs, so a plain file path works where mlflow is absent.
- Checkpoints record the CLIP weights path relative to the repository (`portable_path`). It is
  resolved against the working directory, then the repository root; an absolute path from another
  machine or a DVC experiment copy is also tried by its trailing components there. Whatever is
  found is checked against the sha256 the checkpoint recorded (`ldvc.eval.evaluate.check_clip`),
  so a guess can never pair a checkpoint with other weights; nothing found asks for --clip-weights.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from ldvc.config import portable_path, repo_root

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
DEFAULT_CHECKPOINT = "model.pt"
FORMS = "a checkpoint file, a run folder with model.pt, an MLflow run id, runs:/<run_id>/<path> or models:/<model_id>"


class CheckpointNotFound(FileNotFoundError):
    """A --checkpoint spec names nothing that exists (the message says which spec and where it looked)."""


def store_uri(tracking_uri: str | None = None) -> str:
    """The MLflow store checkpoints are fetched from (see the module doc); errors if it does not exist."""
    from ldvc.tracking_store import check_server, configure_http, resolve_store, store_kind

    uri = tracking_uri or resolve_store(repo_root()).uri
    kind = store_kind(uri)
    if kind == "sqlite":
        db = Path(uri[len("sqlite:///"):])
        if not db.exists():
            raise CheckpointNotFound(
                f"no MLflow store at {db}: run from the repository whose pipeline logged the checkpoint, "
                f"or set MLFLOW_TRACKING_URI to its store (e.g. the team's tracking server)"
            )
    elif kind == "server":
        configure_http()
        check_server(uri)
    return uri


def resolve_checkpoint(spec: str | Path, tracking_uri: str | None = None, cache_dir: Path | None = None) -> Path:
    """Local path of the checkpoint that `spec` names (see the module doc for the accepted forms)."""
    text = str(spec).strip()
    if not text:
        raise CheckpointNotFound(f"--checkpoint is empty; give {FORMS}")
    local = Path(text).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        if (local / DEFAULT_CHECKPOINT).is_file():
            return local / DEFAULT_CHECKPOINT
        raise CheckpointNotFound(f"--checkpoint {text!r} is a folder without {DEFAULT_CHECKPOINT}; give the "
                                 f"checkpoint file itself (e.g. {local}/checkpoints/iter_XXXXXX.pt)")
    is_uri = text.startswith(("runs:/", "models:/"))
    if not is_uri and not RUN_ID.match(text):
        raise CheckpointNotFound(f"--checkpoint {text!r}: no such file (looked from {Path.cwd()}); give {FORMS}")
    uri = store_uri(tracking_uri)
    key = hashlib.sha256(f"{uri}\n{text}".encode()).hexdigest()[:16]
    dest = (cache_dir or repo_root() / ".cache" / "checkpoints") / key
    if dest.is_dir():
        found = _pick_checkpoint(dest, text)
        if found is not None:
            return found
    artifact_uri = text if is_uri else _run_checkpoint_uri(text, uri)
    _download(artifact_uri, uri, dest, text)
    found = _pick_checkpoint(dest, text)
    if found is None:
        files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
        raise CheckpointNotFound(f"--checkpoint {text!r}: {artifact_uri} holds no checkpoint file "
                                 f"({'/'.join(CHECKPOINT_SUFFIXES)}); it has {files[:10]}")
    return found


def _run_checkpoint_uri(run_id: str, uri: str) -> str:
    """The artifact URI of the checkpoint that run `run_id` logged (its last LoggedModel output)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise CheckpointNotFound(f"--checkpoint {run_id!r}: no MLflow run with that id in {uri}; "
                                 f"give {FORMS}") from None
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    if outputs:
        last = max(outputs, key=lambda o: o.step)
        return f"models:/{last.model_id}"
    names = {a.path for a in client.list_artifacts(run_id)}
    if DEFAULT_CHECKPOINT in names:
        return f"runs:/{run_id}/{DEFAULT_CHECKPOINT}"
    stage = run.data.tags.get("ldvc.stage", "?")
    raise CheckpointNotFound(f"--checkpoint {run_id!r}: MLflow run {run_id} (stage {stage}) logged no checkpoint "
                             f"(no logged model, no {DEFAULT_CHECKPOINT} artifact); give the run id of a training "
                             f"stage, or a models:/ / runs:/ URI")


def _download(artifact_uri: str, uri: str, dest: Path, spec: str) -> None:
    """Download into a temp folder beside `dest`, then rename: a killed download leaves no half cache."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(tmp), tracking_uri=uri)
        except MlflowException as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise CheckpointNotFound(f"--checkpoint {spec!r}: {artifact_uri} not found in {uri} ({first}); "
                                     f"give {FORMS}") from None
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pick_checkpoint(folder: Path, spec: str) -> Path | None:
    """The checkpoint file among downloaded artifacts: the one the MLmodel names, else the only .pt."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES]
    if len(files) == 1:
        return files[0]
    if not files:
        return None
    named = [p for p in files if p.name == _mlmodel_checkpoint_name(folder)]
    if len(named) == 1:
        return named[0]
    default = [p for p in files if p.name == DEFAULT_CHECKPOINT]
    if len(default) == 1:
        return default[0]
    listed = sorted(str(p.relative_to(folder)) for p in files)
    raise CheckpointNotFound(f"--checkpoint {spec!r} holds several checkpoints {listed[:10]}; name one "
                             f"(runs:/<run_id>/<path>, models:/<model_id>/<file>)")


def _mlmodel_checkpoint_name(folder: Path) -> str | None:
    for mlmodel in folder.rglob("MLmodel"):
        m = re.search(r"^\s*ldvc_checkpoint:\s*(\S+)\s*$", mlmodel.read_text(errors="replace"), flags=re.M)
        if m:
            return m.group(1).strip("'\"")
    return None


def resolve_clip_weights(recorded: str | None, checkpoint: str | Path, given: str | Path | None = None) -> Path | None:
    """The CLIP weights file to pair with `checkpoint`: `given` (--clip-weights) if set, else the path
    the checkpoint recorded, looked up as described in the module doc. None when the checkpoint was
    trained without CLIP weights (random init). The caller checks the recorded sha256."""
    if given is not None:
        path = Path(given).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--clip-weights {given}: no such file")
        return path
    if not recorded:
        return None
    rec = Path(recorded)
    cwd, root = Path.cwd(), repo_root()
    if rec.is_absolute():
        candidates = [rec]
        # longest trailing parts first: /old/clone/models/clip/w.pt -> models/clip/w.pt -> clip/w.pt ...
        for i in range(1, len(rec.parts) - 1):
            tail = Path(*rec.parts[i:])
            candidates += [cwd / tail, root / tail]
    else:
        candidates = [cwd / rec, root / rec]
    for c in candidates:
        if c.is_file():
            return c
    tried = list(dict.fromkeys(str(c) for c in candidates))
    raise FileNotFoundError(
        f"checkpoint {checkpoint} was trained with the CLIP weights {recorded}, which are not here (looked at "
        f"{tried[:6]}{' ...' if len(tried) > 6 else ''}); pass --clip-weights <file> (its sha256 is checked "
        f"against the one the checkpoint recorded)"
    )


__all__ = ["CheckpointNotFound", "portable_path", "resolve_checkpoint", "resolve_clip_weights", "store_uri"]
