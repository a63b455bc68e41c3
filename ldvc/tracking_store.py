"""Which MLflow store the pipeline logs to, and whether it can be used before a stage does any work.

One resolution for every reader and writer (stages, the report stage, `ldvc predict` / `ldvc evaluate
--checkpoint`, `python -m ldvc.reports --from-mlflow`, `ldvc mlflow-sync`): `tracking_uri()`.

- `MLFLOW_TRACKING_URI` when set: an `http(s)://` tracking server (what a team runs, docs/team.md) or
  any MLflow store URI (`sqlite:///...`, `postgresql://...`, ...).
- Otherwise the embedded store `sqlite:///<repository root>/mlflow.db` (artifacts in
  `<root>/mlartifacts/`), the root found from DVC_ROOT when DVC runs us, so experiments that DVC
  runs in temporary copies land in the workspace's store.

Kinds (`Store.kind`) and what follows from each:
- "sqlite": a file on this machine. Several processes creating a FRESH sqlite store at once crash
  in MLflow's schema migrations, so the first access and the experiment creation are serialised by
  a file lock next to the database (`store_lock`); nothing else needs it. Artifacts go to
  `mlartifacts/` next to the database.
- "server" (`http://`, `https://`): nothing is written locally (no mlflow.db, no lock: a local lock
  cannot serialise machines anyway; the parent-run rule in ldvc/tracking_parent.py is race-safe
  against the server). Artifacts and logged models go through the server's artifact proxy
  (`mlflow server --serve-artifacts`, MLflow's default): an experiment we create gets the proxied
  location `mlflow-artifacts:/<name>`, never a path; an existing experiment whose location is a path
  (exists on one machine only) is an error before any work (`check_artifact_location`).
  `check_server` fails fast when the server is down (bounded tries, seconds, naming the URI), and
  `configure_http` bounds MLflow's own retries: its default is 7 retries with exponential backoff
  and a 120 s timeout per call, minutes per failing call.
- "database" (`postgresql://`, `mysql://`, `mssql://`): the process writes to the database itself;
  MLflow would give a new experiment a local ./mlruns artifact folder, so we never create one
  there: the experiment must exist with a shared artifact location (or use a server in front).
- "hosted" (any other scheme, e.g. `databricks`): the service chooses artifact locations; no
  reachability check, no journal.
- "file" (a path or `file:`): MLflow 3.17's file store, refused by MLflow unless
  MLFLOW_ALLOW_FILE_STORE=true; passed through as MLflow handles it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ldvc.config import repo_root

STORE_FILE = "mlflow.db"
LOCK_FILE = "mlflow.db.lock"  # next to the store; holds no data (filelock keeps the file)
ARTIFACT_DIR = "mlartifacts"
LOCK_TIMEOUT_S = 600.0  # a stage waits this long for another process's store setup
ENV_URI = "MLFLOW_TRACKING_URI"

# Server reachability: tries x (timeout + pause) bounds how long a stage waits before failing.
CONNECT_TRIES = 3
CONNECT_TIMEOUT_S = 5.0
CONNECT_PAUSE_S = 1.0
# MLflow's HTTP client (environment variables it reads on every call); set only where the user has not.
HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",  # default 7 with backoff: minutes per call to a dead server
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # MLflow parses an int
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",  # per connect / read, not per upload
}
_DATABASE_SCHEMES = ("postgresql", "mysql", "mssql", "oracle")
_SLUG_BAD = re.compile(r"[^A-Za-z0-9._-]+")


class StoreError(RuntimeError):
    """The tracking store cannot be used as configured; the message names the URI and the fix."""


@dataclass(frozen=True)
class Store:
    uri: str
    kind: str  # sqlite | server | database | hosted | file
    root: Path  # repository root (journal, defaults)

    @property
    def is_remote(self) -> bool:
        """True when other machines see the same store (a server, a database, a hosted service)."""
        return self.kind in ("server", "database", "hosted")

    @property
    def db_path(self) -> Path | None:
        """The sqlite file, for a sqlite store."""
        if self.kind != "sqlite":
            return None
        path = self.uri[len("sqlite:///"):] if self.uri.startswith("sqlite:///") else self.uri[len("sqlite://"):]
        return Path(path) if path and path != ":memory:" else None


def default_uri(root: Path | None = None) -> str:
    """The embedded store of a repository: sqlite:///<root>/mlflow.db."""
    return f"sqlite:///{(root or repo_root()) / STORE_FILE}"


def store_kind(uri: str) -> str:
    scheme = urllib.parse.urlparse(uri).scheme.lower().split("+")[0]  # postgresql+psycopg2 -> postgresql
    if uri == "databricks" or uri.startswith("databricks-uc"):  # MLflow's scheme-less spellings
        return "hosted"
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("http", "https"):
        return "server"
    if scheme in _DATABASE_SCHEMES:
        return "database"
    if scheme in ("", "file") or len(scheme) == 1:  # a path (one letter: a Windows drive)
        return "file"
    return "hosted"  # databricks, a plugin's scheme: the service decides artifact locations


def resolve_store(root: Path | None = None, env: Mapping[str, str] | None = None) -> Store:
    """The store every ldvc reader and writer uses (module doc)."""
    env = os.environ if env is None else env
    root = root or repo_root()
    uri = (env.get(ENV_URI) or "").strip() or default_uri(root)
    return Store(uri, store_kind(uri), root)


def tracking_uri(root: Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI`, else sqlite:///<repository root>/mlflow.db."""
    return resolve_store(root).uri


def artifact_location(root: Path | None = None) -> str:
    """Artifact folder of the embedded store: <root>/mlartifacts."""
    return ((root or repo_root()) / ARTIFACT_DIR).as_uri()


def new_experiment_location(store: Store, name: str) -> str | None:
    """Where a NEW experiment of `store` keeps its artifacts (see the module doc).

    sqlite: `mlartifacts/` next to the database; server: the artifact proxy, `mlflow-artifacts:/<name>`;
    database: refused (StoreError), MLflow would pick a folder on this machine; file: MLflow's default.
    """
    if store.kind == "sqlite":
        db = store.db_path
        return artifact_location(db.parent if db is not None else store.root)
    if store.kind == "server":
        return f"mlflow-artifacts:/{_SLUG_BAD.sub('_', name).strip('_') or 'ldvc'}"
    if store.kind == "database":
        raise StoreError(
            f"MLflow experiment {name!r} does not exist in {redact(store.uri)}, and a database store would give "
            f"it an artifact folder on this machine (./mlruns), which other machines cannot read. Put a tracking "
            f"server in front (`mlflow server --backend-store-uri {redact(store.uri)} --serve-artifacts "
            f"--artifacts-destination <shared dir or s3://...>`, then MLFLOW_TRACKING_URI=http://<host>:<port>), "
            f"or create the experiment with a shared location: `mlflow experiments create -n {name} -l s3://...`"
        )
    return None


def is_local_location(location: str) -> bool:
    """An artifact location that is a path on the writer's disk (no scheme, or file:)."""
    scheme = urllib.parse.urlparse(location).scheme.lower()
    return scheme in ("", "file") or len(scheme) == 1


def check_artifact_location(store: Store, name: str, experiment_id: str, location: str) -> None:
    """A remote store's experiment must keep artifacts where every machine reaches them."""
    if not store.is_remote or not is_local_location(location):
        if store.kind == "server" and location.startswith("mlflow-artifacts:"):
            check_artifact_proxy(store.uri)
        return
    raise StoreError(
        f"MLflow experiment {name!r} (id {experiment_id}) in {redact(store.uri)} stores artifacts at {location}, "
        f"a path on one machine: checkpoints and files logged from other machines would land on their own "
        f"disks. Fix: run the server with `--serve-artifacts --artifacts-destination <dir>` and use a new "
        f"experiment (set project.mlflow_experiment in params.yaml to a new name: ldvc creates it as "
        f"mlflow-artifacts:/<name>), or rename this one out of the way "
        f"(`mlflow experiments rename --experiment-id {experiment_id} --new-name {name}-local`)"
    )


def redact(uri: str) -> str:
    """The URI without a password (error messages are printed and logged)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# ---------------------------------------------------------------------------------------------- servers


def configure_http(env: dict[str, str] | None = None) -> None:
    """Bound MLflow's HTTP retries (module doc); values the user set are kept."""
    env = os.environ if env is None else env
    for key, value in HTTP_SETTINGS.items():
        env.setdefault(key, value)


def _get(url: str, timeout: float) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"User-Agent": "ldvc"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (the user's own server)
            return resp.status, resp.read(2000).decode(errors="replace")
    except urllib.error.HTTPError as err:  # the server answered: it is up
        return err.code, err.read(2000).decode(errors="replace") if err.fp else ""


def server_reachable(uri: str, tries: int = 1, timeout: float = CONNECT_TIMEOUT_S,
                     pause: float = CONNECT_PAUSE_S) -> str | None:
    """None when the server at `uri` answers its health check, else why not (the last error)."""
    url = uri.rstrip("/") + "/health"
    why = "no attempt"
    for attempt in range(max(1, tries)):
        if attempt:
            time.sleep(pause)
        try:
            status, _ = _get(url, timeout)
        except (OSError, ValueError) as err:  # refused, reset, timeout, DNS; ValueError: a malformed URI
            why = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            continue
        if status < 500:
            return None  # anything but a server error means something answers there (401 behind auth too)
        why = f"HTTP {status} from {url}"
    return why


def check_server(uri: str, tries: int = CONNECT_TRIES) -> None:
    """Fail fast, naming the URI, when a tracking server does not answer (a stage calls this first)."""
    why = server_reachable(uri, tries)
    if why is not None:
        raise StoreError(
            f"the MLflow tracking server {redact(uri)} (MLFLOW_TRACKING_URI) does not answer ({why}; "
            f"{tries} tries). Start it (docs/team.md, 'Tracking server'), fix MLFLOW_TRACKING_URI, or unset it "
            f"to log to the repository's own mlflow.db. Nothing was run."
        )


def check_artifact_proxy(uri: str) -> None:
    """The server must serve artifacts (`--serve-artifacts`) for mlflow-artifacts:/ locations."""
    url = uri.rstrip("/") + "/api/2.0/mlflow-artifacts/artifacts"
    try:
        status, body = _get(url, CONNECT_TIMEOUT_S)
    except (OSError, ValueError) as err:
        raise StoreError(f"the MLflow tracking server {redact(uri)} does not answer ({err}); start it, or fix "
                         f"MLFLOW_TRACKING_URI. Nothing was run.") from None
    if status == 503 or "--no-serve-artifacts" in body:
        raise StoreError(
            f"the MLflow tracking server {redact(uri)} runs with --no-serve-artifacts: it cannot store this "
            f"pipeline's checkpoints and files. Restart it with `--serve-artifacts --artifacts-destination <dir>` "
            f"(docs/team.md). Nothing was run."
        )


# ---------------------------------------------------------------------------------------------- sqlite lock


@contextlib.contextmanager
def store_lock(root: Path | None = None, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the inter-process lock that serialises a sqlite store's creation (fresh-store migrations).

    An OS file lock (flock): a process that dies releases it, so a leftover lock file is harmless.
    `root`: the folder holding the database.
    """
    from filelock import FileLock, Timeout  # ships with torch; imported here to keep this module light

    root = root or repo_root()
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / LOCK_FILE), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise RuntimeError(f"waited {timeout:.0f} s for the MLflow store lock {root / LOCK_FILE}, held by another "
                           f"process (`fuser {root / LOCK_FILE}` names it); a stage stuck inside MLflow? stop it "
                           f"and re-run") from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def setup_lock(store: Store) -> Iterator[None]:
    """`store_lock` for a sqlite store (the lock next to its database), nothing for the others."""
    db = store.db_path
    if db is None:
        yield
        return
    with store_lock(db.parent):
        yield


__all__ = [
    "ARTIFACT_DIR", "LOCK_FILE", "STORE_FILE", "Store", "StoreError", "artifact_location", "check_artifact_location",
    "check_artifact_proxy", "check_server", "configure_http", "default_uri", "is_local_location",
    "new_experiment_location", "redact", "resolve_store", "server_reachable", "setup_lock", "store_kind",
    "store_lock", "tracking_uri",
]
