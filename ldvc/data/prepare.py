"""One entry point for the download stage: any `data.dataset` -> the canonical format at `out_root`.

- voc / voc21 / coco_stuff / context59 / context60 / context459 / ade20k_150 / ade20k_847 (every
  dataset of ldvc.data.sources.DATASET_SOURCES): first check every source (`ldvc.data.preflight`: reachable,
  sizes, free disk; nothing is downloaded when one fails), then fetch the official archives (or
  the `data.sources` overrides) into `data.cache_dir`, verify them, extract each once into
  `<cache_dir>/extracted/<source>/`, and convert; or, with `data.extracted_dir`, convert
  already-extracted data found under it.
  A cached archive that turns out truncated or damaged when extracted (possible when its
  checksum check is off) has its verified record dropped and is moved aside to `<file>.corrupt`,
  so the next run downloads it again; the error names it and says so. A user's own archive
  (`data.sources.<name>.url` a local path) is never moved: the error asks to replace it.
- coco_json: rasterise the user's COCO-format annotations (paths relative to the repository).
- synthetic: `ldvc.data.synthetic.generate_synthetic` (another module; imported lazily).
Returns a summary (dataset, per-split counts, classes, sources with their checksums, and
`inputs`: the digests of every external input actually used, `ldvc.data.inputs.resolved_inputs`)
for logging; the same `inputs` record is added to meta.json's provenance ("source").

`splits`: both (the download stage: training data) or `canonical.EVAL_SPLITS` (the prepare stages of
the evaluation targets): then only the validation split is prepared - the archives only training
needs are neither checked nor downloaded, the training folders of a shared archive are not extracted
and no training image is converted (ldvc/data/sources.py SPLIT_SOURCES, TRAIN_ONLY_MEMBERS); the
dataset's meta.json records {"val": n} as its splits (ldvc/data/canonical.py, "Splits"). Training
data refuses a `data.extracted_dir` that is such a validation-only extraction, naming it.
Relative input paths (data.cache_dir, data.extracted_dir, local archives) resolve against `repo_root`
(ldvc/data/sources.py, "Paths"); `out_root` is used as given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ldvc.data import canonical
from ldvc.data.archive import MARKER, CorruptArchiveError, extract_archive
from ldvc.data.download import discard_cached, fetch_with_digests, is_cached_file
from ldvc.data.inputs import resolved_inputs
from ldvc.data.preflight import preflight
from ldvc.data.sources import (
    DATASET_SOURCES,
    Source,
    check_splits,
    dataset_sources,
    input_path,
    resolve_sources,
    skipped_members,
)

if TYPE_CHECKING:
    from ldvc.config import DataConfig


def prepare_dataset(data_cfg: DataConfig, out_root: Path, repo_root: Path, progress: bool = True,
                    splits: tuple[str, ...] = canonical.SPLITS) -> dict[str, Any]:
    """Produce the canonical dataset of `data_cfg` at `out_root` with `splits` (both, or EVAL_SPLITS
    for an evaluation target); returns a summary dict."""
    out_root, repo_root = Path(out_root), Path(repo_root)
    splits = check_splits(splits)
    dataset = data_cfg.dataset
    sources: dict[str, Any] = {}
    if dataset == "synthetic":
        from ldvc.data.synthetic import generate_synthetic

        generate_synthetic(data_cfg, out_root, splits)
    elif dataset == "coco_json":
        from ldvc.data.coco_json import prepare_coco_json

        prepare_coco_json(data_cfg.coco_json, out_root, repo_root, data_cfg.num_workers, splits)
    elif dataset in DATASET_SOURCES:
        bases, sources = _obtain(data_cfg, repo_root, progress, splits, out_root)
        _convert(dataset, bases, out_root, data_cfg.num_workers, {"archives": sources}, splits)
    else:
        raise ValueError(f"data.dataset = {dataset!r}: unknown (synthetic | coco_json | {' | '.join(DATASET_SOURCES)})")
    meta = canonical.validate_canonical(out_root, splits=splits)
    inputs = resolved_inputs(data_cfg, repo_root, sources, progress, splits=splits)
    canonical.update_meta_source(out_root, inputs=inputs)
    return {
        "dataset": meta["dataset"],
        "root": str(out_root),
        "num_classes": len(meta["classes"]),
        "ignore_index": meta["ignore_index"],  # 255, or 65535 for the 16-bit labels of > 255 classes
        "classes": meta["classes"],
        "splits": meta["splits"],
        "sources": sources,
        "inputs": inputs,
    }


def _convert(dataset: str, bases: dict[str, Path], out_root: Path, workers: int, source: dict[str, Any],
             splits: tuple[str, ...]) -> None:
    """Run the converter of archive dataset `dataset` over its extracted sources `bases` for `splits`."""
    if dataset == "voc":
        from ldvc.data.voc import prepare_voc

        prepare_voc(bases["voc2012"], bases.get("sbd"), out_root, workers, source, splits)
    elif dataset == "voc21":
        from ldvc.data.voc21 import prepare_voc21

        prepare_voc21(bases["voc2012"], out_root, workers, source, splits)
    elif dataset in ("context59", "context60", "context459"):
        from ldvc.data import context59, context60, context459

        prepare = {"context59": context59.prepare_context59, "context60": context60.prepare_context60,
                   "context459": context459.prepare_context459}[dataset]
        prepare(bases["voc2010"], bases["pascal_context"], out_root, workers, source, splits)
    elif dataset == "ade20k_150":
        from ldvc.data.ade20k_150 import prepare_ade20k_150

        prepare_ade20k_150(bases["ade20k_challenge"], out_root, workers, source, splits)
    elif dataset == "ade20k_847":
        from ldvc.data.ade20k_847 import prepare_ade20k_847

        prepare_ade20k_847(bases["ade20k_full"], out_root, workers, source, splits)
    else:
        from ldvc.data.coco_stuff import prepare_coco_stuff

        images = {"train": bases.get("coco_train2017"), "val": bases["coco_val2017"]}
        prepare_coco_stuff({s: images[s] for s in splits}, bases["coco_stuffthingmaps"], out_root, workers, source,
                           splits)


def _obtain(data_cfg: DataConfig, repo_root: Path, progress: bool, splits: tuple[str, ...] = canonical.SPLITS,
            out_root: Path | None = None) -> tuple[dict[str, Path], dict[str, Any]]:
    """Per source name that `splits` need, the directory holding its extracted content; and the provenance record."""
    names = dataset_sources(data_cfg.dataset, splits)
    if data_cfg.extracted_dir:
        base = input_path(data_cfg.extracted_dir, repo_root)
        if not base.is_dir():
            raise FileNotFoundError(
                f"data.extracted_dir: {base} is not a directory; point it at your extracted data or set it "
                f"to null to download the archives"
            )
        if "train" in splits:
            _refuse_partial_extraction(base)
        return {n: base for n in names}, {"extracted_dir": str(base)}
    # Resolve every override first: a typo fails before gigabytes are downloaded.
    sources: dict[str, Source] = resolve_sources(data_cfg.sources, repo_root)
    cache = input_path(data_cfg.cache_dir, repo_root)
    # Every source reachable, sized and fitting on the disk before the first byte is downloaded (and an
    # archive only the user can supply, the full ADE20K, configured: `require_configured`).
    preflight(data_cfg, repo_root, splits=splits, out_root=out_root)
    bases, record = {}, {}
    for name in names:
        src = sources[name]
        path, digests = fetch_with_digests(src, cache, progress=progress)
        try:
            bases[name] = extract_archive(path, cache / "extracted" / name, fingerprint=digests["sha256"],
                                          exclude=skipped_members(name, splits) or None, progress=progress)
        except CorruptArchiveError as err:
            raise _corrupt_archive(err, src, path, cache) from err
        record[name] = {"url": src.url, "file": str(path), "bytes": path.stat().st_size,
                        "md5": digests["md5"], "sha256": digests["sha256"],
                        "expected_md5": src.md5, "expected_sha256": src.sha256}
        if src.sha1:  # recorded only where published, so other datasets' provenance stays as it was
            record[name].update(sha1=digests["sha1"], expected_sha1=src.sha1)
    return bases, record


def _refuse_partial_extraction(base: Path) -> None:
    """Training data cannot come from an extraction made for an evaluation target (its training
    folders were left out: the marker records `exclude`): say so instead of a layout error later."""
    for marker in (base / MARKER, *base.glob(f"*/{MARKER}")):
        try:
            stamp = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(stamp, dict) and stamp.get("exclude"):
            raise FileNotFoundError(
                f"data.extracted_dir: {marker.parent} is a validation-only extraction of {stamp.get('archive')} made "
                f"for an evaluation target (left out: {stamp['exclude']}); training data needs the whole archive: "
                f"set data.extracted_dir to null (the download stage then extracts it completely) or point it at a "
                f"complete extraction"
            )


def _corrupt_archive(err: CorruptArchiveError, src: Source, path: Path, cache: Path) -> CorruptArchiveError:
    """The error for an archive that verified (or had no checksum) but cannot be extracted.

    A cached download whose checksum check is off is dropped (record removed, file moved aside) so
    the next run fetches it again instead of failing the same way until someone deletes it by hand.
    One that MATCHED its expected checksum is kept: it is the expected archive, a new download
    would give the same bytes, and the message says so."""
    if src.md5 or src.sha1 or src.sha256:
        return CorruptArchiveError(
            f"{err}. Source {src.name!r}: the file matches its expected checksum (data.sources.{src.name}), so it is "
            f"the expected archive and is kept: downloading it again would not help. If you set that checksum "
            f"yourself, check that it belongs to a complete archive; otherwise report this archive."
        )
    unchecked = (f" Its checksum check is off (data.sources.{src.name}.md5/sha1/sha256): set one to catch a bad "
                 f"download before extraction.")
    if is_cached_file(path, cache):
        moved = discard_cached(path)
        return CorruptArchiveError(
            f"{err}. Source {src.name!r}: its verified record was removed and the file moved aside to {moved}; "
            f"the next run downloads {src.filename} again from {src.url}.{unchecked}"
        )
    return CorruptArchiveError(
        f"{err}. This is your own archive for source {src.name!r} (data.sources.{src.name}.url): it is left "
        f"in place; replace it with a complete copy.{unchecked}"
    )
