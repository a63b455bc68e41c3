"""The official archives of the real data path (protocol.md, "Official download sources").

Each `Source` names one archive: where to get it and the checksums it must match. Every field
except the name can be overridden per source with `data.sources: {name: {url, md5, sha256}}` in
params.yaml, e.g. a mirror URL, a `file://` URL or a plain local path to an archive the user
already has. An override that gives only a `url` keeps the official checksums (a mirror serves
the same bytes); set `md5: ""` (or "none") to disable a check for a re-packed archive.
The md5 of stuffthingmaps_trainval2017.zip and of the PASCAL-Context trainval.tar.gz are not
published: they are None, and the checksum actually downloaded is recorded in the dataset's
provenance instead. The VOC2010 md5 is the one torchvision's VOC dataset code publishes.
ADEChallengeData2016.zip has no md5 or sha256 anywhere; the established loaders publish its SHA-1
(dmlc/gluon-cv scripts/datasets/ade20k.py line 22 at a1212784aeb69978ea9570a3a8c21a92bca8017d, the
same value in PyTorch-Encoding's and Segmenter's ADE20K scripts), so a source may carry a `sha1`.

The full ADE20K release (ADE20K_2021_17_01.zip, the 847-class benchmark) is handed out only to
registered users: its source has no URL (`needs_local_copy`); `require_configured` turns that into
an error saying where to get it and how to point `data.sources.ade20k_full.url` or
`data.extracted_dir` at it.

Splits: a dataset prepared as `data` (the training data) has a train and a val split; an evaluation
target (params.yaml `cross_dataset`, `open_vocab.targets`) is prepared with its validation split only
(`ldvc.data.canonical.EVAL_SPLITS`). `SPLIT_SOURCES` says which archives each split needs
(`dataset_sources`): a target never checks, downloads or extracts an archive only training reads
(SBD for VOC-20, train2017.zip for COCO-Stuff). Inside an archive both splits share,
`TRAIN_ONLY_MEMBERS` names the folders only training reads, which a validation-only preparation
does not extract (`skipped_members`: the training images and annotations of ADEChallengeData2016,
of the full ADE20K release and of stuffthingmaps). The VOC and PASCAL-Context archives keep every
split's images in one JPEGImages folder: extracted whole, converted for val only.

Paths (one rule; `input_path`, and `resolve_sources(..., root)` for local archives): every path in
`data` that names an INPUT - `data.cache_dir`, `data.extracted_dir`, a local archive in
`data.sources.<name>.url` (a plain path, `~/...`, or a `file:` URL) and the `data.coco_json` files
and folders - is resolved against the repository root (`ldvc.config.repo_root()`: DVC_ROOT when DVC
runs the stage, else the nearest folder holding dvc.yaml). So `dvc exp run --temp` and queued
experiments, which run in .dvc/tmp/exps/..., read the workspace's archives, download cache and
extracted data instead of looking for them in their temporary copy. Absolute paths are used as
they are. `data.root`, the prepared dataset, is an OUTPUT: it stays relative to the working
directory (the stage's own tree), so an experiment writes its own copy.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class Source:
    name: str
    url: str  # http(s)://, file:// or a plain local path
    filename: str  # name in data.cache_dir
    md5: str | None = None
    sha256: str | None = None
    description: str = ""
    sha1: str | None = None  # only where the established loaders publish nothing else (ADEChallengeData2016)
    how_to_get: str = ""  # for a source without a public URL: where a user obtains the archive

    @property
    def needs_local_copy(self) -> bool:
        """No public URL: the user must supply the archive (data.sources.<name>.url) or extracted data."""
        return not self.url

    @property
    def needs_local_copy_officially(self) -> bool:
        """The official source has no public URL (even when an override now names the user's archive)."""
        return bool(self.how_to_get)


OFFICIAL_SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "voc2012",
            "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
            "VOCtrainval_11-May-2012.tar",
            md5="6cd6e144f989b92b3379bac3b3de84fd",
            description="PASCAL VOC 2012 trainval (JPEGImages, SegmentationClass, ImageSets)",
        ),
        Source(
            "sbd",
            "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
            "benchmark.tgz",
            md5="82b4d87ceb2ed10f6038a1cba92111cb",
            description="Semantic Boundaries Dataset (cls/*.mat, train.txt, val.txt)",
        ),
        Source(
            "coco_train2017",
            "http://images.cocodataset.org/zips/train2017.zip",
            "train2017.zip",
            md5="cced6f7f71b7629ddf16f17bbcfab6b2",
            description="COCO 2017 train images (118k)",
        ),
        Source(
            "coco_val2017",
            "http://images.cocodataset.org/zips/val2017.zip",
            "val2017.zip",
            md5="442b8da7639aecaf257c1dceb8ba8c80",
            description="COCO 2017 val images (5k)",
        ),
        Source(
            "coco_stuffthingmaps",
            "http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/stuffthingmaps_trainval2017.zip",
            "stuffthingmaps_trainval2017.zip",
            md5=None,  # not published; the downloaded checksum is recorded in meta.json
            description="COCO-Stuff 164k stuff+thing label maps (raw ids 0..181, 255)",
        ),
        Source(
            "voc2010",
            "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
            "VOCtrainval_03-May-2010.tar",
            md5="da459979d0c395079b5c75ee67908abb",
            description="PASCAL VOC 2010 trainval (JPEGImages, ImageSets/Main/{train,val}.txt)",
        ),
        Source(
            "pascal_context",
            # The dataset page's link (CAT-Seg's README links roozbehm.info/pascal-context/trainval.tar.gz,
            # usable as a data.sources mirror). Cached under a distinct name: "trainval.tar.gz" is generic.
            "https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz",
            "pascal-context_trainval.tar.gz",
            md5=None,  # not published; the downloaded checksum is recorded in meta.json
            description="PASCAL-Context 459-class label maps (trainval/<id>.mat LabelMap, labels.txt)",
        ),
        Source(
            "ade20k_challenge",
            "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
            "ADEChallengeData2016.zip",
            sha1="219e1696abb36c8ba3a3afe7fb2f4b4606a897c7",  # gluon-cv scripts/datasets/ade20k.py (module docstring)
            description="ADE20K SceneParsing (150 classes): images/ and annotations/{training,validation}",
        ),
        Source(
            "ade20k_full",
            "",  # no public URL: the release is handed out after registration
            "ADE20K_2021_17_01.zip",
            description="full ADE20K release 2021_17_01 (images/ADE/{training,validation}/**/ADE_*.jpg + _seg.png)",
            how_to_get="register and download ADE20K_2021_17_01.zip at https://ade20k.csail.mit.edu/",
        ),
    )
}

# Which archives each dataset needs (both splits: the order in which they are fetched).
DATASET_SOURCES: dict[str, tuple[str, ...]] = {
    "voc": ("voc2012", "sbd"),
    "coco_stuff": ("coco_train2017", "coco_val2017", "coco_stuffthingmaps"),
    "context59": ("voc2010", "pascal_context"),
    "context60": ("voc2010", "pascal_context"),
    "context459": ("voc2010", "pascal_context"),
    "voc21": ("voc2012",),  # val (and VOC train) only: no SBD (ldvc/data/voc21.py)
    "ade20k_150": ("ade20k_challenge",),
    "ade20k_847": ("ade20k_full",),
}

SPLITS = ("train", "val")  # = ldvc.data.canonical.SPLITS (this module imports nothing heavy)
_PASCAL_CONTEXT = {"train": ("voc2010", "pascal_context"), "val": ("voc2010", "pascal_context")}
# Which archives each split needs. VOC-20's val split is VOC2012 val with its own SegmentationClass
# labels: SBD only extends the TRAINING split (train_aug, ldvc/data/voc.py).
SPLIT_SOURCES: dict[str, dict[str, tuple[str, ...]]] = {
    "voc": {"train": ("voc2012", "sbd"), "val": ("voc2012",)},
    "coco_stuff": {"train": ("coco_train2017", "coco_stuffthingmaps"), "val": ("coco_val2017", "coco_stuffthingmaps")},
    "context59": _PASCAL_CONTEXT,
    "context60": _PASCAL_CONTEXT,
    "context459": _PASCAL_CONTEXT,
    "voc21": {"train": ("voc2012",), "val": ("voc2012",)},
    "ade20k_150": {"train": ("ade20k_challenge",), "val": ("ade20k_challenge",)},
    "ade20k_847": {"train": ("ade20k_full",), "val": ("ade20k_full",)},
}
assert all(tuple(n for n in DATASET_SOURCES[d] if any(n in SPLIT_SOURCES[d][s] for s in SPLITS)) == DATASET_SOURCES[d]
           for d in DATASET_SOURCES) and set(SPLIT_SOURCES) == set(DATASET_SOURCES)

# Archive folders only the training split reads, as consecutive path components matched at any depth
# (so a re-packed archive with another top folder still matches): not extracted for a validation-only
# preparation. Everything else (validation folders, objectInfo150.txt, index files) is extracted.
TRAIN_ONLY_MEMBERS: dict[str, tuple[str, ...]] = {
    "coco_stuffthingmaps": ("train2017",),  # stuffthingmaps_trainval2017.zip: train2017/*.png, val2017/*.png
    "ade20k_challenge": ("images/training", "annotations/training"),  # ADEChallengeData2016/...
    "ade20k_full": ("images/ADE/training",),  # ADE20K_2021_17_01/images/ADE/training/<scene>/...
}


def check_splits(splits: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`splits` as a tuple if it is one of the two preparations: both splits (data) or val only (a target)."""
    splits = tuple(splits)
    if splits not in (SPLITS, ("val",)):
        raise ValueError(f"splits = {list(splits)}: a dataset is prepared with {list(SPLITS)} (training data) or "
                         f"['val'] (an evaluation target)")
    return splits


def dataset_sources(dataset: str, splits: tuple[str, ...] | list[str] = SPLITS) -> tuple[str, ...]:
    """The archives (source names, in DATASET_SOURCES order) that preparing `splits` of `dataset` needs."""
    splits = check_splits(splits)
    need = {n for s in splits for n in SPLIT_SOURCES[dataset][s]}
    return tuple(n for n in DATASET_SOURCES[dataset] if n in need)


def skipped_members(name: str, splits: tuple[str, ...] | list[str] = SPLITS) -> tuple[str, ...]:
    """The member folders of archive `name` not to extract when preparing `splits` (see TRAIN_ONLY_MEMBERS)."""
    return () if "train" in check_splits(splits) else TRAIN_ONLY_MEMBERS.get(name, ())


def input_path(value: str | os.PathLike, root: str | os.PathLike) -> Path:
    """An input path of `data` (cache_dir, extracted_dir, coco_json files, a local archive) resolved
    against the repository root `root` (module docstring, "Paths"); `~` is expanded, absolute paths kept."""
    return (Path(root) / Path(value).expanduser()).resolve()


def missing_archive_fix(src: Source) -> str:
    """The fix to print when the local archive named for `src` does not exist."""
    if src.needs_local_copy_officially:
        return (f"fix data.sources.{src.name}.url ({src.filename} cannot be downloaded automatically: "
                f"{src.how_to_get}), or set data.extracted_dir to the extracted data")
    return f"fix data.sources.{src.name}.url or remove the override to download {src.filename} from the official host"


class SourceNotConfiguredError(FileNotFoundError):
    """A source without a public URL was needed and neither an archive nor extracted data was given."""


def require_configured(src: Source, dataset: str) -> None:
    """Raise SourceNotConfiguredError for a source the user must supply but has not (see module docstring)."""
    if not src.needs_local_copy:
        return
    raise SourceNotConfiguredError(
        f"data.dataset = {dataset} needs {src.filename} ({src.description}), which cannot be downloaded "
        f"automatically: {src.how_to_get}. Then either set data.sources.{src.name}.url to the archive "
        f"(e.g. data: {{sources: {{{src.name}: {{url: /path/to/{src.filename}}}}}}}; it is checked and extracted "
        f"once into data.cache_dir), or extract it yourself and set data.extracted_dir to the folder that holds "
        f"{Path(src.filename).stem}/"
    )

_OVERRIDE_KEYS = ("url", "md5", "sha1", "sha256")
_DISABLED = ("", "none", "null", "skip")


def resolve_sources(overrides: dict[str, dict[str, str]] | None = None,
                    root: str | os.PathLike | None = None) -> dict[str, Source]:
    """The official sources with `data.sources` overrides applied; unknown names/keys raise.

    `root`: the repository root; a relative local archive path in an override's `url` is made
    absolute against it (module docstring, "Paths"). Every caller that opens the archives passes it;
    without it (configuration checks that only look at the keys) such a path is left as written."""
    overrides = overrides or {}
    out = dict(OFFICIAL_SOURCES)
    for name, fields in overrides.items():
        if name not in OFFICIAL_SOURCES:
            close = difflib.get_close_matches(name, list(OFFICIAL_SOURCES), n=3)
            raise ValueError(
                f"data.sources.{name}: unknown source{f' (did you mean {close})' if close else ''}; "
                f"known sources: {sorted(OFFICIAL_SOURCES)}"
            )
        if not isinstance(fields, dict):
            raise ValueError(f"data.sources.{name}: expected a mapping with keys {list(_OVERRIDE_KEYS)}")
        bad = sorted(set(fields) - set(_OVERRIDE_KEYS))
        if bad:
            raise ValueError(f"data.sources.{name}: unknown keys {bad}; allowed: {list(_OVERRIDE_KEYS)}")
        changes: dict[str, str | None] = {}
        if "url" in fields:
            url = str(fields["url"]).strip()
            if not url:
                raise ValueError(f"data.sources.{name}.url is empty; give a URL or a local archive path")
            changes["url"] = url if root is None else _anchored(url, root)
            # A local archive keeps its own name; a mirror's basename may differ from the official one.
            base = _basename(url)
            if base:
                changes["filename"] = base
        for key in ("md5", "sha1", "sha256"):
            if key in fields:
                value = fields[key]
                changes[key] = None if value is None or str(value).strip().lower() in _DISABLED else str(value).lower()
                _check_hex(name, key, changes[key])
        out[name] = dataclasses.replace(OFFICIAL_SOURCES[name], **changes)
    return out


def _anchored(url: str, root: str | os.PathLike) -> str:
    """A relative local archive path (plain or `file:`) as an absolute path under `root`; any other URL as is."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https", "ftp"):
        return url
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url).expanduser()
    return url if path.is_absolute() else str(input_path(path, root))


def _basename(url: str) -> str:
    parsed = urlparse(url)
    path = parsed.path if parsed.scheme in ("http", "https", "file") else url
    return PurePosixPath(path.replace("\\", "/")).name


def _check_hex(name: str, key: str, value: str | None) -> None:
    length = {"md5": 32, "sha1": 40, "sha256": 64}[key]
    if value is not None and (len(value) != length or any(c not in "0123456789abcdef" for c in value)):
        raise ValueError(f"data.sources.{name}.{key}: {value!r} is not a {length}-digit hex {key} digest")
