"""One entry point for the download stage: any `data.dataset` -> the canonical format at `out_root`.

- voc / coco_stuff: fetch the official archives (or the `data.sources` overrides) into
  `data.cache_dir`, verify them, extract each once into `<cache_dir>/extracted/<source>/`, and
  convert; or, with `data.extracted_dir`, convert already-extracted data found under it.
- coco_json: rasterise the user's COCO-format annotations (paths relative to the repository).
- synthetic: `ldvc.data.synthetic.generate_synthetic` (another module; imported lazily).
Returns a summary (dataset, per-split counts, classes, sources with their checksums) for logging.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ldvc.data import canonical
from ldvc.data.archive import extract_archive
from ldvc.data.download import fetch_with_digests
from ldvc.data.sources import DATASET_SOURCES, Source, resolve_sources

if TYPE_CHECKING:
    from ldvc.config import DataConfig


def prepare_dataset(data_cfg: DataConfig, out_root: Path, repo_root: Path, progress: bool = True) -> dict[str, Any]:
    """Produce the canonical dataset of `data_cfg` at `out_root`; returns a summary dict."""
    out_root, repo_root = Path(out_root), Path(repo_root)
    dataset = data_cfg.dataset
    sources: dict[str, Any] = {}
    if dataset == "synthetic":
        from ldvc.data.synthetic import generate_synthetic

        generate_synthetic(data_cfg, out_root)
    elif dataset == "coco_json":
        from ldvc.data.coco_json import prepare_coco_json

        prepare_coco_json(data_cfg.coco_json, out_root, repo_root, data_cfg.num_workers)
    elif dataset in DATASET_SOURCES:
        bases, sources = _obtain(data_cfg, repo_root, progress)
        if dataset == "voc":
            from ldvc.data.voc import prepare_voc

            prepare_voc(bases["voc2012"], bases["sbd"], out_root, data_cfg.num_workers, {"archives": sources})
        else:
            from ldvc.data.coco_stuff import prepare_coco_stuff

            prepare_coco_stuff({"train": bases["coco_train2017"], "val": bases["coco_val2017"]},
                               bases["coco_stuffthingmaps"], out_root, data_cfg.num_workers, {"archives": sources})
    else:
        raise ValueError(f"data.dataset = {dataset!r}: unknown (voc | coco_stuff | coco_json | synthetic)")
    meta = canonical.validate_canonical(out_root)
    return {
        "dataset": meta["dataset"],
        "root": str(out_root),
        "num_classes": len(meta["classes"]),
        "classes": meta["classes"],
        "splits": meta["splits"],
        "sources": sources,
    }


def _obtain(data_cfg: DataConfig, repo_root: Path, progress: bool) -> tuple[dict[str, Path], dict[str, Any]]:
    """Per source name, the directory holding its extracted content; and the provenance record."""
    names = DATASET_SOURCES[data_cfg.dataset]
    if data_cfg.extracted_dir:
        base = (repo_root / data_cfg.extracted_dir).resolve()
        if not base.is_dir():
            raise FileNotFoundError(
                f"data.extracted_dir: {base} is not a directory; point it at your extracted data or set it "
                f"to null to download the archives"
            )
        return {n: base for n in names}, {"extracted_dir": str(base)}
    # Resolve every override first: a typo fails before gigabytes are downloaded.
    sources: dict[str, Source] = resolve_sources(data_cfg.sources)
    cache = (repo_root / data_cfg.cache_dir).resolve()
    bases, record = {}, {}
    for name in names:
        src = sources[name]
        path, digests = fetch_with_digests(src, cache, progress=progress)
        bases[name] = extract_archive(path, cache / "extracted" / name, fingerprint=digests["sha256"],
                                      progress=progress)
        record[name] = {"url": src.url, "file": str(path), "bytes": path.stat().st_size, **digests,
                        "expected_md5": src.md5, "expected_sha256": src.sha256}
    return bases, record
