"""Evaluation targets (params.yaml cross_dataset, open_vocab.targets) are prepared with their
validation split only (ldvc.data.prepare.prepare_dataset(..., splits=EVAL_SPLITS), what
stages/prepare_cross.py runs): the archives only training needs are neither checked nor downloaded
(VOC-20: no SBD; COCO-Stuff: no train2017.zip), the training folders of an archive both splits share
are not extracted (ADE20K-150, ADE20K-847, stuffthingmaps), and no training image is converted or
drawn (every dataset kind). The result is a validation-only canonical dataset (meta.json splits
{"val": n}) that evaluation reads and training refuses. Also: relative input paths resolve against the
repository root (DVC_ROOT), not the working directory (ldvc/data/sources.py, "Paths")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures import serve_directory
from fixtures.mini_datasets import (
    ADE150_VAL,
    ADE_FULL_VAL,
    COCO_VAL,
    CTX_VAL,
    VOC_VAL,
    build_mini_ade20k_150,
    build_mini_ade20k_full,
    build_mini_coco_json,
    voc_raw_label,
)

from ldvc.config import CocoJsonConfig, DataConfig, SyntheticConfig
from ldvc.data import canonical
from ldvc.data.archive import MARKER
from ldvc.data.canonical import EVAL_SPLITS, CanonicalFormatError
from ldvc.data.dataset import DatasetError, SegmentationFolder
from ldvc.data.digest import dataset_digest
from ldvc.data.inputs import fingerprint_inputs
from ldvc.data.prepare import prepare_dataset
from ldvc.data.sources import resolve_sources

VOC_TAR = "/VOCtrainval_11-May-2012.tar"


def _cfg(tmp: Path, dataset: str, sources: dict | None = None, **kw) -> DataConfig:
    return DataConfig(dataset=dataset, root=str(tmp / "prepared"), cache_dir=str(tmp / "cache"),
                      sources=sources or {}, num_workers=1, image_size=64, **kw)


def _local(archives: dict) -> dict:
    """data.sources pointing at the archives where they lie (a user's local copies)."""
    # A re-packed miniature has none of the official checksums (ADE20K's is a SHA-1): both disabled.
    return {name: {"url": str(path), "md5": md5 or "none", "sha1": "none"} for name, (path, md5) in archives.items()}


@pytest.fixture
def converted(monkeypatch) -> set[str]:
    """The splits of every item a converter hands to canonical.parallel_map (its conversion pool)."""
    seen: set[str] = set()
    real = canonical.parallel_map

    def recording(fn, items, num_workers, desc):
        seen.update(item[0] for item in items)
        return real(fn, items, num_workers, desc)

    monkeypatch.setattr(canonical, "parallel_map", recording)
    return seen


def _assert_validation_only(root: Path, n_val: int) -> dict:
    meta = canonical.validate_canonical(root, splits=EVAL_SPLITS)
    assert meta["splits"] == {"val": n_val}
    assert not (root / "images" / "train").exists() and not (root / "labels" / "train").exists()
    assert not canonical.list_path(root, "train").exists()
    return meta


# --------------------------------------------------------------------------------------------
# VOC-20 as a target: the VOC tar only, served on 127.0.0.1
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def voc_target(mini_voc_archives, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("voc_target")
    www = mini_voc_archives["voc2012"][0].parent
    log: list = []
    head_log: list = []
    with serve_directory(www, log=log, head_log=head_log) as url:
        # SBD is configured and served: a preparation that wanted it would ask for it.
        sources = {n: {"url": url + p.name, "md5": md5} for n, (p, md5) in mini_voc_archives.items()}
        cfg = _cfg(tmp, "voc", sources)
        inputs = fingerprint_inputs(cfg, tmp, progress=False, splits=EVAL_SPLITS)
        summary = prepare_dataset(cfg, tmp / "prepared", tmp, progress=False, splits=EVAL_SPLITS)
    return tmp / "prepared", summary, inputs, log, head_log


def test_voc20_target_asks_for_the_voc_tar_only(voc_target):
    """No SBD request at all: not in the preflight (HEAD), not downloaded (GET), not fingerprinted."""
    _, summary, inputs, log, head_log = voc_target
    assert {path for path, _, _ in log} == {VOC_TAR}
    assert {path for path, _ in head_log} <= {VOC_TAR}
    assert not any("benchmark" in entry[0] for entry in log + head_log)
    assert set(summary["sources"]) == set(summary["inputs"]) == {"voc2012"}
    assert set(inputs["inputs"]) == {"voc2012"}


def test_voc20_target_is_a_validation_only_dataset_evaluation_reads(voc_target, tmp_path):
    root, summary, _, _, _ = voc_target
    meta = _assert_validation_only(root, len(VOC_VAL))
    assert summary["splits"] == {"val": len(VOC_VAL)} and "sbd_root" not in meta["source"]
    assert canonical.list_ids(root, "val") == sorted(VOC_VAL)
    for i in VOC_VAL:  # VOC's own val labels: background and 0 ignored, 1..20 -> 0..19
        raw = voc_raw_label(i)
        want = np.where((raw >= 1) & (raw <= 20), raw - 1, 255).astype(np.uint8)
        np.testing.assert_array_equal(canonical.read_label(canonical.label_path(root, "val", i)), want)
    assert list(dataset_digest(root, "voc", progress=False)["splits"]) == ["val"]

    # What evaluate_cross runs: an (untrained) model scored on the target's val split, its classes.
    from fixtures.engine import fresh_checkpoint, tiny_config

    from ldvc.data.classes import dataset_classes
    from ldvc.data.split import make_split
    from ldvc.eval.evaluate import cross_split, evaluate_checkpoint

    cfg = tiny_config()
    split = make_split(dataset_classes(cfg.data), "default", "synthetic")
    ckpt = fresh_checkpoint(cfg, split, tmp_path / "model.pt")
    metrics = evaluate_checkpoint(cfg, "cross", cross_split(meta["classes"]), root, ckpt, None, tmp_path / "eval")
    assert metrics["num_images"] == len(VOC_VAL) and 0.0 <= metrics["mIoU"] <= 100.0


# --------------------------------------------------------------------------------------------
# Every other real dataset kind: the training split is not converted (nor its archive folders extracted)
# --------------------------------------------------------------------------------------------


def test_voc21_target_converts_val_only(mini_voc_archives, tmp_path, converted):
    cfg = _cfg(tmp_path, "voc21", _local(mini_voc_archives))
    prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False, splits=EVAL_SPLITS)
    assert converted == {"val"}
    _assert_validation_only(tmp_path / "prepared", len(VOC_VAL))


@pytest.mark.parametrize("dataset", ["context59", "context60", "context459"])
def test_context_target_converts_val_only(dataset, mini_context59_archives, tmp_path, converted):
    cfg = _cfg(tmp_path, dataset, _local(mini_context59_archives))
    prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False, splits=EVAL_SPLITS)
    assert converted == {"val"}
    _assert_validation_only(tmp_path / "prepared", len(CTX_VAL))
    assert canonical.list_ids(tmp_path / "prepared", "val") == sorted(CTX_VAL)


def test_coco_stuff_target_fetches_val2017_only_and_skips_the_training_maps(mini_coco_stuff_archives, tmp_path,
                                                                             converted):
    www = mini_coco_stuff_archives["coco_val2017"][0].parent
    log: list = []
    head_log: list = []
    with serve_directory(www, log=log, head_log=head_log) as url:
        sources = {n: {"url": url + p.name, "md5": md5 or "none"} for n, (p, md5) in mini_coco_stuff_archives.items()}
        summary = prepare_dataset(_cfg(tmp_path, "coco_stuff", sources), tmp_path / "prepared", tmp_path,
                                  progress=False, splits=EVAL_SPLITS)
    requested = {entry[0] for entry in log + head_log}
    assert "/train2017.zip" not in requested and {"/val2017.zip", "/stuffthingmaps_trainval2017.zip"} <= requested
    assert set(summary["sources"]) == {"coco_val2017", "coco_stuffthingmaps"}
    maps = tmp_path / "cache" / "extracted" / "coco_stuffthingmaps"
    assert (maps / "val2017").is_dir() and not (maps / "train2017").exists()
    assert converted == {"val"}
    _assert_validation_only(tmp_path / "prepared", len(COCO_VAL))


def test_ade20k_150_target_extracts_and_converts_validation_only(tmp_path, converted):
    archives = build_mini_ade20k_150(tmp_path / "www")
    prepare_dataset(_cfg(tmp_path, "ade20k_150", _local(archives)), tmp_path / "prepared", tmp_path, progress=False,
                    splits=EVAL_SPLITS)
    ade = tmp_path / "cache" / "extracted" / "ade20k_challenge" / "ADEChallengeData2016"
    assert (ade / "images" / "validation").is_dir() and (ade / "objectInfo150.txt").is_file()
    assert not (ade / "images" / "training").exists() and not (ade / "annotations" / "training").exists()
    assert converted == {"val"}
    _assert_validation_only(tmp_path / "prepared", len(ADE150_VAL))


def test_ade20k_847_target_extracts_and_converts_validation_only(tmp_path, converted):
    release = build_mini_ade20k_full(tmp_path / "user")  # the user's own copy of the release
    prepare_dataset(_cfg(tmp_path, "ade20k_847", _local(release)), tmp_path / "prepared", tmp_path, progress=False,
                    splits=EVAL_SPLITS)
    ade = tmp_path / "cache" / "extracted" / "ade20k_full" / "ADE20K_2021_17_01"
    assert (ade / "images" / "ADE" / "validation").is_dir() and (ade / "objects.txt").is_file()
    assert not (ade / "images" / "ADE" / "training").exists()
    assert converted == {"val"}
    _assert_validation_only(tmp_path / "prepared", len(ADE_FULL_VAL))


def test_coco_json_target_needs_and_reads_the_val_files_only(tmp_path, converted):
    files = build_mini_coco_json(tmp_path / "user")
    cj = CocoJsonConfig(val_images=str(files["val_images"]), val_annotations=str(files["val_annotations"]),
                        classes=["road", "car", "person"])  # no train_* keys at all
    cfg = _cfg(tmp_path, "coco_json", coco_json=cj)
    assert set(fingerprint_inputs(cfg, tmp_path, progress=False, splits=EVAL_SPLITS)["inputs"]) == {
        "val_images", "val_annotations"}
    prepare_dataset(cfg, tmp_path / "prepared", tmp_path, progress=False, splits=EVAL_SPLITS)
    assert converted == {"val"}
    _assert_validation_only(tmp_path / "prepared", len(canonical.list_ids(tmp_path / "prepared", "val")))


def test_synthetic_target_draws_no_train_image_and_the_same_val_images(tmp_path):
    """The val images do not depend on the train split (one generator per (seed, split, index)), so a
    validation-only target evaluates on exactly the images a both-splits preparation gives."""
    cfg = _cfg(tmp_path, "synthetic", synthetic=SyntheticConfig(world="shifted", train_images=3, val_images=4))
    full, val_only = tmp_path / "full", tmp_path / "val_only"
    prepare_dataset(cfg, full, tmp_path, progress=False)
    summary = prepare_dataset(cfg, val_only, tmp_path, progress=False, splits=EVAL_SPLITS)
    assert summary["splits"] == {"val": 4}
    _assert_validation_only(val_only, 4)
    for sub in ("images/val", "labels/val"):
        a, b = sorted((full / sub).iterdir()), sorted((val_only / sub).iterdir())
        assert [p.name for p in a] == [p.name for p in b] and len(a) == 4
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))
    assert (full / "lists" / "val.txt").read_bytes() == (val_only / "lists" / "val.txt").read_bytes()
    meta_full, meta_val = (json.loads((r / "meta.json").read_text()) for r in (full, val_only))
    assert {**meta_full, "splits": meta_val["splits"]} == meta_val


# --------------------------------------------------------------------------------------------
# Whatever needs a training split refuses a validation-only dataset or extraction
# --------------------------------------------------------------------------------------------


@pytest.fixture
def shifted_target(tmp_path) -> Path:
    cfg = _cfg(tmp_path, "synthetic", synthetic=SyntheticConfig(world="shifted", val_images=3))
    prepare_dataset(cfg, tmp_path / "target", tmp_path, progress=False, splits=EVAL_SPLITS)
    return tmp_path / "target"


def test_training_refuses_a_validation_only_dataset(shifted_target, tmp_path):
    from fixtures.engine import tiny_config

    from ldvc.data.split import make_split
    from ldvc.train.loop import train_segmentor

    assert len(SegmentationFolder(shifted_target, "val")) == 3  # evaluation's reader is fine with it
    with pytest.raises(DatasetError, match="validation-only dataset .*dvc repro download"):
        SegmentationFolder(shifted_target, "train")
    cfg = tiny_config()
    classes = canonical.read_meta(shifted_target)["classes"]
    with pytest.raises(DatasetError, match="validation-only dataset"):
        train_segmentor(cfg, "inductive", make_split(classes, ["yellow"], "synthetic"), shifted_target, None,
                        tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_validate_canonical_accepts_a_validation_only_dataset_only_when_told(shifted_target):
    with pytest.raises(CanonicalFormatError, match="validation-only dataset"):
        canonical.validate_canonical(shifted_target)  # the default: training data, both splits
    assert canonical.validate_canonical(shifted_target, splits=EVAL_SPLITS)["splits"] == {"val": 3}
    canonical.list_path(shifted_target, "train").write_text("000000\n")  # a list meta.json does not record
    with pytest.raises(CanonicalFormatError, match="train.txt exists but .* records only the splits"):
        canonical.validate_canonical(shifted_target, splits=EVAL_SPLITS)


def test_training_data_refuses_a_target_extraction_and_shares_a_complete_one(tmp_path):
    """ADE20K-150 as a target extracts validation only; the download stage of `data` refuses that
    folder as data.extracted_dir, extracts the archive completely into the same place on its own, and
    a target run after that uses the complete extraction without extracting again."""
    archives = build_mini_ade20k_150(tmp_path / "www")
    target = _cfg(tmp_path, "ade20k_150", _local(archives))
    prepare_dataset(target, tmp_path / "target", tmp_path, progress=False, splits=EVAL_SPLITS)
    extracted = tmp_path / "cache" / "extracted" / "ade20k_challenge"
    with pytest.raises(FileNotFoundError, match="validation-only extraction .* set data.extracted_dir to null"):
        prepare_dataset(_cfg(tmp_path, "ade20k_150", extracted_dir=str(extracted)), tmp_path / "data", tmp_path,
                        progress=False)
    summary = prepare_dataset(_cfg(tmp_path, "ade20k_150", _local(archives)), tmp_path / "data", tmp_path,
                              progress=False)
    assert set(summary["splits"]) == {"train", "val"}
    assert (extracted / "ADEChallengeData2016" / "images" / "training").is_dir()
    assert "exclude" not in json.loads((extracted / MARKER).read_text())
    (extracted / "sentinel").write_text("kept")  # gone if the target run extracted again
    prepare_dataset(target, tmp_path / "target", tmp_path, progress=False, splits=EVAL_SPLITS)
    assert (extracted / "sentinel").is_file()


# --------------------------------------------------------------------------------------------
# Relative input paths resolve against the repository root (DVC_ROOT), not the working directory
# --------------------------------------------------------------------------------------------


def test_resolve_sources_anchors_relative_local_archives(tmp_path):
    root = tmp_path / "repo"
    got = resolve_sources({"voc2012": {"url": "archives/voc.tar"}, "sbd": {"url": "file:archives/b.tgz"},
                           "voc2010": {"url": "/abs/v.tar"}, "coco_val2017": {"url": "http://mirror/val2017.zip"}},
                          root)
    assert got["voc2012"].url == str(root / "archives" / "voc.tar")
    assert got["sbd"].url == str(root / "archives" / "b.tgz")
    assert got["voc2010"].url == "/abs/v.tar" and got["coco_val2017"].url == "http://mirror/val2017.zip"
    assert got["voc2012"].filename == "voc.tar" and got["voc2012"].md5 == "6cd6e144f989b92b3379bac3b3de84fd"
    assert resolve_sources({"voc2012": {"url": "archives/voc.tar"}})["voc2012"].url == "archives/voc.tar"


def test_relative_paths_resolve_against_dvc_root_in_an_experiment_copy(mini_voc_archives, tmp_path, monkeypatch):
    """As in `dvc exp run --temp`: the stage runs in .dvc/tmp/exps/<name>/ with DVC_ROOT = the repository."""
    from ldvc.config import repo_root

    repo = tmp_path / "repo"
    (repo / "archives").mkdir(parents=True)
    voc_tar, md5 = mini_voc_archives["voc2012"]
    shutil.copy(voc_tar, repo / "archives" / voc_tar.name)
    workdir = repo / ".dvc" / "tmp" / "exps" / "run1"
    workdir.mkdir(parents=True)
    monkeypatch.setenv("DVC_ROOT", str(repo))
    monkeypatch.chdir(workdir)
    assert repo_root() == repo.resolve()
    cfg = DataConfig(dataset="voc", root="data/cross/voc", cache_dir=".cache/downloads", num_workers=1,
                     sources={"voc2012": {"url": f"archives/{voc_tar.name}", "md5": md5}})
    inputs = fingerprint_inputs(cfg, repo_root(), progress=False, splits=EVAL_SPLITS)
    assert inputs["inputs"]["voc2012"]["path"] == f"archives/{voc_tar.name}"
    summary = prepare_dataset(cfg, Path(cfg.root), repo_root(), progress=False, splits=EVAL_SPLITS)
    assert summary["sources"]["voc2012"]["file"] == str(repo.resolve() / "archives" / voc_tar.name)
    cache = repo / ".cache" / "downloads"
    assert (cache / "extracted" / "voc2012" / MARKER).is_file() and not (workdir / ".cache").exists()
    _assert_validation_only(workdir / "data" / "cross" / "voc", len(VOC_VAL))  # the output: in the working tree

    # data.extracted_dir, relative too: the repository's extraction, found from the experiment's copy
    again = DataConfig(dataset="voc21", root="data/cross/voc21", extracted_dir=".cache/downloads/extracted/voc2012",
                       num_workers=1)
    assert prepare_dataset(again, Path(again.root), repo_root(), progress=False, splits=EVAL_SPLITS)["splits"] == {
        "val": len(VOC_VAL)}
