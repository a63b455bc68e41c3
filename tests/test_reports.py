"""Reports: tables rebuilt from a fixture MLflow store and from runs/, checked cell by cell.

The fixture store holds what the pipeline logs (ldvc.* tags incl. the protocol tags, percent
metrics, per_class_iou.csv, sometimes metrics.json): LDVC with 2 seeds (inductive + transductive),
ZegCLIP and an ablation variant with 1 seed, the fully supervised variant, cross-dataset
evaluations of LDVC on the shifted synthetic world, `dvc exp run` experiments (dvc.exp_name on the
pipeline parent only, inherited by its children): one changing route_topk, one on VOC that deviates
from the voc protocol next to a conformant ZegCLIP on VOC, an imported ZegCLIP checkpoint evaluated
in the "ldvc" variant (only its metrics.json artifact says zegclip / imported), one evaluated with
the unseen vocabulary; open-vocabulary evaluations of the fully supervised variant on the wide
synthetic world (2 seeds, one logged without a metrics.json artifact) and, in an experiment, on
ADE20K-150 off its protocol; an older duplicate run that must be superseded, a FAILED run that must be
ignored, and a training run with a loss history. One store is shared by the module (creating a
sqlite store takes seconds). runs/ holds the same workspace records.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ldvc.reports import (  # noqa: E402
    ReportError,
    build_reports,
    load_mlflow,
    load_runs_dir,
    records_from_runs,
)
from ldvc.reports.__main__ import main as reports_main  # noqa: E402
from ldvc.reports.counts import read_counts  # noqa: E402
from ldvc.reports.tables import aggregate, format_stat  # noqa: E402

# The `count` stage's committed record (reports/counts.json): the tables here read it as the report
# stage does, instead of building ViT-B/16 models again (tests/test_cost_table.py counts live).
PAPER_COUNTS = Path(__file__).resolve().parents[1] / "reports" / "counts.json"

EXPERIMENT = "ldvc"
ABLATION = {"zegclip": {"decoder.type": "zegclip"}, "topk_1": {"decoder.route_topk": 1},
            "fully_supervised": {"split": {"unseen": []}}}
PER_CLASS = [("red_disk", True), ("blue_square", True), ("green_star", False)]

# (variant, seed, setting, metrics) of the workspace's runs; all on the synthetic world (cross: its
# shifted world).
FULL = dict(frag_components_gt=3.1, frag_small_share_gt=4.0, total_params=5_000_000)
WORKSPACE = [
    ("ldvc", 0, "inductive", dict(pAcc=80.0, mIoU=50.0, mIoU_seen=60.0, mIoU_unseen=30.0, hIoU=40.0,
                                  frag_components_pred=5.2, frag_small_share_pred=12.0,
                                  learnable_params=412_345, train_images_per_s=30.0, **FULL)),
    ("ldvc", 1, "inductive", dict(pAcc=82.0, mIoU=52.0, mIoU_seen=62.0, mIoU_unseen=33.0, hIoU=44.0,
                                  frag_components_pred=5.6, frag_small_share_pred=14.0,
                                  learnable_params=412_345, train_images_per_s=34.0, **FULL)),
    ("ldvc", 0, "transductive", dict(pAcc=85.0, mIoU=57.0, mIoU_seen=63.0, mIoU_unseen=50.0, hIoU=55.8)),
    ("ldvc", 1, "transductive", dict(pAcc=86.0, mIoU=58.0, mIoU_seen=64.0, mIoU_unseen=52.0, hIoU=57.0)),
    ("zegclip", 0, "inductive", dict(pAcc=78.4, mIoU=45.0, mIoU_seen=59.3, mIoU_unseen=21.7, hIoU=31.8,
                                     frag_components_pred=7.9, frag_small_share_pred=21.0,
                                     learnable_params=600_000, train_images_per_s=41.0, **FULL)),
    ("topk_1", 0, "inductive", dict(pAcc=79.0, mIoU=48.0, mIoU_seen=59.9, mIoU_unseen=28.0, hIoU=38.2,
                                    frag_components_pred=6.1, frag_small_share_pred=15.5,
                                    learnable_params=412_345, train_images_per_s=33.3, **FULL)),
    ("fully_supervised", 0, "fully_supervised", dict(pAcc=90.0, mIoU=80.0, mIoU_seen=85.0, mIoU_unseen=75.0,
                                                     hIoU=79.7, frag_components_pred=4.0, frag_small_share_pred=9.0,
                                                     learnable_params=412_345, train_images_per_s=31.0, **FULL)),
    ("ldvc", 0, "cross", dict(pAcc=60.0, mIoU=40.0, mIoU_seen=40.0, hIoU=float("nan"))),
    ("ldvc", 1, "cross", dict(pAcc=62.0, mIoU=44.0, mIoU_seen=44.0, hIoU=float("nan"))),
]
STAGE = {"inductive": "evaluate_inductive", "transductive": "evaluate_transductive", "cross": "evaluate_cross"}
# Open-vocabulary evaluations of the fully supervised variant (setting open_vocab): the workspace's on
# the wide synthetic world, 9 of its 21 classes never in the training vocabulary.
WIDE_NOVEL = ["green triangle", "purple circle", "striped blue square", "dotted red triangle", "dotted red circle",
              "striped yellow triangle", "striped yellow square", "dotted teal triangle", "dotted teal circle"]
OPEN_VOCAB = [
    (0, dict(pAcc=70.0, mIoU=40.0, mIoU_seen=50.0, mIoU_unseen=20.0, hIoU=28.6)),
    (1, dict(pAcc=72.0, mIoU=44.0, mIoU_seen=52.0, mIoU_unseen=24.0, hIoU=32.8)),
]
OV_COUNTS = dict(num_classes=21, num_training_classes=18, num_novel_classes=9)


def open_vocab_identity(seed: int) -> dict:
    """What the evaluate_open_vocab stage writes beside the metrics (annotate_metrics + its extras)."""
    return dict(variant="fully_supervised", seed=seed, setting="open_vocab", dataset="synthetic_wide",
                decoder="lctd", imported=False, vocabulary="all", calibrated=False, device="cpu",
                protocol="synthetic", protocol_conformant=True, protocol_deviations={}, protocol_deviations_text="",
                cross_target="wide", target_section="open_vocab", source_dataset="synthetic",
                clip_model="ldvc-tiny-vit", image_size=64, novel_classes=WIDE_NOVEL, **OV_COUNTS)
EXP_NAME = "exp-topk8"
EXP_METRICS = dict(pAcc=79.9, mIoU=49.0, mIoU_seen=58.8, mIoU_unseen=35.2, hIoU=44.0)
BASE_PARAMS = {"decoder.type": "lctd", "decoder.route_topk": "4", "project.seed": "0"}
CROSS_PARAMS = {"cross_dataset.shifted.synthetic.world": "shifted"}
VOC_DEVIATIONS = {"train.batch_size": {"value": 8, "protocol": 16}, "train.iters": {"value": 2000, "protocol": 20000}}
VOC_DEVIATIONS_TEXT = "train.batch_size=8 (protocol: 16), train.iters=2000 (protocol: 20000)"


def identity(variant: str, setting: str) -> dict:
    """The self-describing fields annotate_metrics writes into a workspace metrics.json."""
    ident = dict(protocol="synthetic", protocol_conformant=True, protocol_deviations={},
                 protocol_deviations_text="", decoder="zegclip" if variant == "zegclip" else "lctd", imported=False,
                 vocabulary="all", calibrated=setting == "inductive", device="cpu")
    if setting == "fully_supervised":  # what the pipeline records for the upper bound: split.unseen differs
        ident.update(protocol_conformant=False, protocol_deviations={"split.unseen": {"value": [],
                                                                                      "protocol": "default"}},
                     protocol_deviations_text="split.unseen=[] (protocol: default)")
    if setting == "cross":
        ident.update(cross_target="shifted", source_dataset="synthetic")
    return ident


def protocol_tags(ident: dict) -> dict:
    return {"ldvc.protocol": ident["protocol"], "ldvc.protocol_conformant": str(ident["protocol_conformant"]).lower(),
            "ldvc.protocol_deviations": ident["protocol_deviations_text"]}


def _per_class(seed: int) -> list[dict]:
    return [{"class": name, "iou": 70.0 - 20 * i + seed, "seen": seen} for i, (name, seen) in enumerate(PER_CLASS)]


def _write_overlays(folder: Path, ids: list[str], panels: bool) -> None:
    """<id>.png (a composite, 3 panels wide) and, with `panels`, <id>_image/_gt/_pred.png."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (32, 96, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        if panels:
            for suffix, grey in (("_image", 200), ("_gt", 60), ("_pred", 120)):
                Image.fromarray(np.full((32, 32, 3), grey, np.uint8)).save(folder / f"{i}{suffix}.png")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=(root / "mlartifacts").as_uri())

    def stage_run(variant: str, seed: int, setting: str, stage: str, metrics: dict, *, parent: str,
                  params: dict | None = None, status: str = "FINISHED", exp_tag: str | None = None,
                  overlays: bool = False, tags: dict | None = None, metrics_json: dict | None = None) -> str:
        all_tags = {"ldvc.role": "stage", "ldvc.stage": stage, "ldvc.variant": variant, "ldvc.seed": str(seed),
                    "ldvc.setting": setting, "ldvc.dataset": "synthetic",
                    "ldvc.decoder": "zegclip" if variant == "zegclip" else "lctd", "mlflow.parentRunId": parent,
                    **(tags or {})}
        if exp_tag:
            all_tags["dvc.exp_name"] = exp_tag
        run_id = client.create_run(exp_id, tags=all_tags).info.run_id
        for k, v in metrics.items():
            client.log_metric(run_id, k, v)
        for k, v in (params or BASE_PARAMS).items():
            client.log_param(run_id, k, v)
        csv_path = root / "per_class_iou.csv"
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["class", "iou", "seen"])
            w.writeheader()
            w.writerows(_per_class(seed))
        client.log_artifact(run_id, str(csv_path))
        if metrics_json is not None:
            (root / "metrics.json").write_text(json.dumps(metrics_json))
            client.log_artifact(run_id, str(root / "metrics.json"))
        if overlays:
            _write_overlays(root / "overlays", ["val_0001", "val_0002"], panels=False)
            client.log_artifacts(run_id, str(root / "overlays"), "overlays")
        client.set_terminated(run_id, status)
        time.sleep(0.01)  # distinct start times: the newest duplicate must win
        return run_id

    parent = client.create_run(exp_id, tags={"ldvc.role": "pipeline", "ldvc.pipeline_id": "p0"}).info.run_id
    # An older evaluation of ldvc seed 0 inductive, superseded by the one logged below.
    stage_run("ldvc", 0, "inductive", "evaluate_inductive", dict(pAcc=1.0, mIoU_seen=1.0, mIoU_unseen=1.0,
                                                                  hIoU=1.0), parent=parent)
    for variant, seed, setting, metrics in WORKSPACE:
        stage = STAGE[setting] if variant == "ldvc" else "ablation"
        params = {**BASE_PARAMS, **({"decoder.type": "zegclip"} if variant == "zegclip" else {}),
                  **(CROSS_PARAMS if setting == "cross" else {})}
        ident = identity(variant, setting)
        tags = {**protocol_tags(ident), **({"ldvc.cross_target": "shifted"} if setting == "cross" else {})}
        stage_run(variant, seed, setting, stage, metrics, parent=parent, params=params, tags=tags,
                  overlays=(variant, seed, setting) == ("ldvc", 0, "inductive"))
    # Open-vocabulary evaluations: seed 0 with its metrics.json artifact, seed 1 from tags and params only.
    for seed, metrics in OPEN_VOCAB:
        ident = open_vocab_identity(seed)
        stage_run("fully_supervised", seed, "open_vocab", "evaluate_open_vocab", {**metrics, **OV_COUNTS},
                  parent=parent, tags={**protocol_tags(ident), "ldvc.open_vocab_target": "wide",
                                       "ldvc.target_dataset": "synthetic_wide"},
                  metrics_json={**metrics, **ident} if seed == 0 else None)
    # A crashed ablation run: ignored.
    stage_run("topk_16", 0, "inductive", "ablation", dict(hIoU=99.0), parent=parent, status="FAILED")
    # A training run with a loss history (the training curve from MLflow).
    train = client.create_run(exp_id, tags={"ldvc.role": "stage", "ldvc.stage": "train_inductive",
                                            "ldvc.variant": "ldvc", "ldvc.seed": "0",
                                            "ldvc.setting": "inductive", "mlflow.parentRunId": parent})
    for step in range(0, 50, 10):
        client.log_metric(train.info.run_id, "loss", 10.0 / (step + 1), step=step)
        client.log_metric(train.info.run_id, "lr", 1e-4, step=step)
    client.set_terminated(train.info.run_id)
    client.set_terminated(parent)
    synthetic_ok = protocol_tags(identity("ldvc", "inductive"))

    def experiment(name: str) -> str:  # a `dvc exp run`: the name is on the pipeline parent only
        return client.create_run(exp_id, tags={"ldvc.role": "pipeline", "dvc.exp_name": name}).info.run_id

    exp_parent = experiment(EXP_NAME)
    stage_run("ldvc", 0, "inductive", "evaluate_inductive", EXP_METRICS, parent=exp_parent,
              params={**BASE_PARAMS, "decoder.route_topk": "8"}, tags=synthetic_ok)
    # On VOC: LDVC trained off-protocol (2 seeds) next to a conformant ZegCLIP.
    voc_parent = experiment("exp-voc")
    voc_bad = {"ldvc.dataset": "voc", "ldvc.protocol": "voc", "ldvc.protocol_conformant": "false",
               "ldvc.protocol_deviations": VOC_DEVIATIONS_TEXT}
    for seed, (s, u, h) in enumerate([(90.0, 70.0, 78.8), (92.0, 72.0, 80.8)]):
        stage_run("ldvc", seed, "inductive", "evaluate_inductive",
                  dict(pAcc=93.0, mIoU=85.0, mIoU_seen=s, mIoU_unseen=u, hIoU=h), parent=voc_parent, tags=voc_bad)
    stage_run("zegclip", 0, "inductive", "ablation", dict(pAcc=94.5, mIoU=88.0, mIoU_seen=91.7, mIoU_unseen=77.5,
                                                            hIoU=84.0), parent=voc_parent,
              tags={"ldvc.dataset": "voc", "ldvc.protocol": "voc", "ldvc.protocol_conformant": "true",
                    "ldvc.protocol_deviations": ""})
    # ZegCLIP's released checkpoint evaluated in the "ldvc" variant: the tags say lctd (the stage's
    # config), only the metrics.json artifact says what was evaluated.
    release = dict(pAcc=94.6, mIoU=88.9, mIoU_seen=91.8, mIoU_unseen=77.9, hIoU=84.3)
    stage_run("ldvc", 0, "inductive", "evaluate_inductive", release, parent=experiment("exp-release"),
              tags={"ldvc.dataset": "voc", "ldvc.protocol": "voc"},
              metrics_json={**release, "variant": "ldvc", "seed": 0, "setting": "inductive", "dataset": "voc",
                            "decoder": "zegclip", "imported": True, "protocol": "voc", "protocol_conformant": True,
                            "protocol_deviations": {}, "protocol_deviations_text": "", "vocabulary": "all",
                            "calibrated": True, "images_per_s": 5.0, "eval_seconds": 289.8, "device": "cuda:0"})
    # A COCO-Stuff-trained every-class model on ADE20K-150, off its protocol (fewer iterations).
    ade = dict(pAcc=60.0, mIoU=33.0, mIoU_seen=35.0, mIoU_unseen=25.0, hIoU=29.2, num_classes=150,
               num_training_classes=171, num_novel_classes=60)
    stage_run("fully_supervised", 0, "open_vocab", "evaluate_open_vocab", ade, parent=experiment("exp-ov-coco"),
              tags={"ldvc.dataset": "coco_stuff", "ldvc.open_vocab_target": "A-150",
                    "ldvc.target_dataset": "ade20k_150", "ldvc.protocol": "open_vocab"},
              metrics_json={**ade, **open_vocab_identity(0), "dataset": "ade20k_150", "cross_target": "A-150",
                            "source_dataset": "coco_stuff", "clip_model": "ViT-B-16", "image_size": 512,
                            "novel_classes": [f"ade class {i}" for i in range(60)], "protocol": "open_vocab",
                            "protocol_conformant": False,
                            "protocol_deviations": {"train.iters": {"value": 4000, "protocol": 80000}},
                            "protocol_deviations_text": "train.iters=4000 (protocol: 80000)"})
    # Evaluated with the unseen vocabulary (eval.vocabulary is a logged param).
    stage_run("ldvc", 0, "inductive", "evaluate_inductive", dict(pAcc=70.0, mIoU=61.0, mIoU_unseen=61.0),
              parent=experiment("exp-unseen"), params={**BASE_PARAMS, "eval.vocabulary": "unseen"}, tags=synthetic_ok)
    return uri


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same workspace records as runs/<variant>/seed<s>/<setting>/metrics.json and
    runs/cross/<target>/seed<s>/metrics.json (+ logs, overlays, one checkpoint)."""
    runs = tmp_path_factory.mktemp("repo") / "runs"
    for variant, seed, setting, metrics in WORKSPACE:
        cross = setting == "cross"
        d = runs / "cross" / "shifted" / f"seed{seed}" if cross else runs / variant / f"seed{seed}" / setting
        d.mkdir(parents=True)
        record = {**metrics, "variant": variant, "seed": seed, "setting": setting,
                  "dataset": "synthetic_shifted" if cross else "synthetic",
                  "per_class": _per_class(seed), **identity(variant, setting),
                  "images_per_s": 100.0 + seed, "eval_seconds": 2.0, "checkpoint": f"runs/{variant}/seed{seed}/"
                  f"{'inductive' if cross else setting}/model.pt"}
        if variant == "zegclip":  # as evaluation writes it: per-class IoU in a CSV beside metrics.json
            del record["per_class"]
            (d / "per_class_iou.csv").write_text(
                "class_id,class,split,iou,gt_pixels,pred_pixels\n0,red_disk,seen,70.0000,10,12\n"
                "1,blue_square,seen,,0,0\n2,green_star,unseen,30.0000,5,4\n")
        (d / "metrics.json").write_text(json.dumps(record))
    for seed, metrics in OPEN_VOCAB:
        d = runs / "open_vocab" / "wide" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({**metrics, **open_vocab_identity(seed)}))
        # as evaluation writes it: the novel classes are the split's "unseen" part
        (d / "per_class_iou.csv").write_text(
            "class_id,class,split,iou,gt_pixels,pred_pixels\n0,striped teal,seen,60.0000,10,12\n"
            "1,dotted red circle,unseen,10.0000,5,4\n2,green triangle,unseen,35.0000,5,6\n")
    (runs / "ldvc/seed0/inductive/train_log.csv").write_text(
        "step,loss,lr,images_per_s\n" + "".join(f"{s},{5.0 / (s + 1)},{1e-4 * (1 - s / 50)},30\n"
                                                for s in range(0, 50, 5)))
    _write_overlays(runs / "ldvc/seed0/inductive/overlays", ["val_0003", "val_0010"], panels=True)
    _write_overlays(runs / "ldvc/seed1/inductive/overlays", ["val_0003", "val_0010"], panels=True)
    _write_overlays(runs / "ldvc/seed1/transductive/overlays", ["val_0003", "val_0010"], panels=False)
    # ZegCLIP wrote no overlays: its qualitative column is left empty with a note.
    # The checkpoint of ldvc seed 0 inductive (the repository's params.yaml as its config, no
    # weights: the cost table only reads the config and the class names).
    import torch

    from ldvc.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "params.yaml").to_dict()
    torch.save({"model": {}, "step": 0, "config": cfg, "class_names": [n for n, _ in PER_CLASS], "clip": {}},
               runs / "ldvc/seed0/inductive/model.pt")
    return runs


def read_md_table(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
    return split[0], split[2:]  # header, (separator), rows


def read_csv_table(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def by_method(header: list[str], rows: list[list[str]]) -> dict[tuple[str, str], dict[str, str]]:
    return {(r[0], r[1]): dict(zip(header, r)) for r in rows}


@pytest.fixture(scope="module")
def mlflow_report(store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    inputs = load_mlflow(store, EXPERIMENT)
    out = tmp_path_factory.mktemp("reports_mlflow")
    return {"result": build_reports(inputs.records, out, curves=inputs.curves, figures=False,
                                    ablation_overrides=ABLATION, notes=inputs.notes,
                                    paper_counts=read_counts(PAPER_COUNTS)),
            "inputs": inputs, "out": out}



def test_format_mean_std_one_decimal() -> None:
    assert format_stat(aggregate([40.0, 44.0]), "R") == "42.0 ± 2.8 [R]"
    assert format_stat(aggregate([78.44]), "R*") == "78.4 [R*]"
    assert format_stat(aggregate([float("nan"), 30.0])) == "30.0"  # nan (absent classes) left out
    assert format_stat(aggregate([])) == "-"


def test_main_table_from_mlflow_cell_by_cell(mlflow_report: dict) -> None:
    paths = mlflow_report["result"]["tables"]
    header, md_rows = read_md_table(paths["main_md"])
    csv_header, csv_rows = read_csv_table(paths["main_csv"])
    assert header == csv_header and md_rows == csv_rows  # md and csv hold the same cells
    assert header[:8] == ["Setting", "Method", "Seeds", "Protocol", "VOC pAcc", "VOC mIoU(S)", "VOC mIoU(U)",
                          "VOC hIoU"]
    # Every reference dataset is a column group, then the datasets of our records (not the cross targets).
    assert [h[: -len(" pAcc")] for h in header if h.endswith(" pAcc")] == ["VOC", "COCO-Stuff", "Context-59",
                                                                         "Synthetic"]
    t = by_method(header, md_rows)
    # Published numbers with source markers; unreported cells are '-'.
    zi = t[("inductive", "ZegCLIP")]
    assert [zi[f"VOC {m}"] for m in ("pAcc", "mIoU(S)", "mIoU(U)", "hIoU")] == [
        "94.6 [P]", "91.9 [P]", "77.8 [P]", "84.3 [P]"]
    assert zi["COCO-Stuff hIoU"] == "40.8 [P]" and zi["Synthetic hIoU"] == "-" and zi["Protocol"] == "published"
    assert t[("inductive", "LDVC")]["VOC mIoU(U)"] == "82.3 [D]"
    assert t[("inductive", "LDVC")]["COCO-Stuff mIoU(U)"] == "45.0 [D]"
    assert t[("inductive", "LDVC")]["VOC hIoU"] == "-"
    assert t[("inductive", "SPNet")]["VOC hIoU"] == "26.1 [P]" and t[("inductive", "SPNet")]["VOC mIoU(S)"] == "-"
    assert t[("transductive", "Cascade-CLIP")]["COCO-Stuff hIoU"] == "50.0 [P]"
    # Cascade-CLIP on Context-59: README S / U, hIoU derived by us (2SU/(S+U)).
    ci, ct = t[("inductive", "Cascade-CLIP")], t[("transductive", "Cascade-CLIP")]
    assert [ci[f"Context-59 {m}"] for m in ("pAcc", "mIoU(S)", "mIoU(U)", "hIoU")] == [
        "-", "55.9 [M]", "47.2 [M]", "51.2 [D]"]
    assert [ct[f"Context-59 {m}"] for m in ("mIoU(S)", "mIoU(U)", "hIoU")] == ["56.4 [M]", "55.0 [M]", "55.7 [D]"]
    # Ours: mean ± std over seeds 0, 1 (the superseded run of seed 0 is not averaged in).
    li = t[("inductive", "LDVC (ours)")]
    assert li["Seeds"] == "0, 1" and li["Protocol"] == "synthetic"
    assert [li[f"Synthetic {m}"] for m in ("pAcc", "mIoU(S)", "mIoU(U)", "hIoU")] == [
        "81.0 ± 1.4 [R]", "61.0 ± 1.4 [R]", "31.5 ± 2.1 [R]", "42.0 ± 2.8 [R]"]
    assert li["VOC hIoU"] == "-"
    lt = t[("transductive", "LDVC (ours)")]
    assert [lt[f"Synthetic {m}"] for m in ("pAcc", "mIoU(S)", "mIoU(U)", "hIoU")] == [
        "85.5 ± 0.7 [R]", "63.5 ± 0.7 [R]", "51.0 ± 1.4 [R]", "56.4 ± 0.8 [R]"]
    zo = t[("inductive", "ZegCLIP (ours)")]
    assert zo["Seeds"] == "0" and zo["Synthetic hIoU"] == "31.8 [R]" and zo["Synthetic pAcc"] == "78.4 [R]"
    # The dvc experiment is an extra row, labelled by its name (inherited from the parent run).
    ex = t[("inductive", f"LDVC (ours, exp: {EXP_NAME})")]
    assert ex["Synthetic mIoU(U)"] == "35.2 [R]" and ex["Seeds"] == "0"
    # Row order: references, then ours (ZegCLIP before LDVC, experiments by name last), per setting.
    methods = [r[1] for r in md_rows if r[0] == "inductive"]
    assert methods[-7:] == [
        "ZegCLIP (ours)", "LDVC (ours)", "ZegCLIP (released checkpoint, our evaluation, exp: exp-release)",
        f"LDVC (ours, exp: {EXP_NAME})", "LDVC (ours, exp: exp-unseen) (unseen vocabulary)",
        "ZegCLIP (ours, exp: exp-voc)", "LDVC (ours, exp: exp-voc)"]
    assert ("transductive", "ZegCLIP (ours)") not in t and ("inductive", "topk_1") not in t
    # The caption names the vocabulary; the notes say the synthetic rows are not comparable and explain each marker.
    md = paths["main_md"].read_text()
    assert "every class of the dataset is a candidate at test time, eval.vocabulary = all" in md
    assert "NOT comparable" in md and "[D] derived" in md and "[R] reproduced" in md and "[M] read from" in md
    assert "CLIP-RC: fully supervised: uyzhang/CLIP-RC README.md" in md and "lines 37 (VOC) and 40" in md
    tex = paths["main_tex"].read_text()
    assert r"81.0 $\pm$ 1.4\textsuperscript{R}" in tex and r"\multicolumn{4}{c}{PASCAL VOC 2012}" in tex
    assert "\n" + r"\multicolumn{4}{c}{} & \multicolumn{4}{c}{PASCAL VOC 2012}" in tex  # groups span all columns
    assert r"\multicolumn{4}{c}{PASCAL Context-59}" in tex
    assert "±" not in tex


def test_protocol_marks_in_md_csv_and_tex(mlflow_report: dict) -> None:
    """A deviating VOC row is [R*] with a footnote listing its deviations in every format; a conformant
    one beside it is [R]; an imported checkpoint is labelled by what it is, not by its variant."""
    paths = mlflow_report["result"]["tables"]
    for reader, key in ((read_md_table, "main_md"), (read_csv_table, "main_csv")):
        header, rows = reader(paths[key])
        t = by_method(header, rows)
        bad = t[("inductive", "LDVC (ours, exp: exp-voc)")]
        assert [bad[f"VOC {m}"] for m in ("pAcc", "mIoU(S)", "mIoU(U)", "hIoU")] == [
            "93.0 ± 0.0 [R*]", "91.0 ± 1.4 [R*]", "71.0 ± 1.4 [R*]", "79.8 ± 1.4 [R*]"]
        # The csv holds no notes: its Protocol cell names the deviating keys and the note number.
        assert bad["Protocol"] == "voc, deviates in train.batch_size, train.iters (note 1)"
        good = t[("inductive", "ZegCLIP (ours, exp: exp-voc)")]
        assert good["VOC hIoU"] == "84.0 [R]" and good["Protocol"] == "voc"
        # metrics.json says zegclip + imported although the run's tags say lctd (the stage config's decoder).
        rel = t[("inductive", "ZegCLIP (released checkpoint, our evaluation, exp: exp-release)")]
        assert rel["VOC hIoU"] == "84.3 [R]" and rel["Protocol"] == "voc"
        # No reproduced cell of a deviating record is unmarked: every [R] row is conformant.
        for row in rows:
            if "deviates" in row[3]:
                assert all(c.endswith("[R*]") for c in row[4:] if c != "-")
    footnote = ("(1) inductive, LDVC (ours, exp: exp-voc): VOC, seeds 0, 1, protocol voc: "
                "train.batch_size=8 (protocol: 16), train.iters=2000 (protocol: 20000)")
    md = paths["main_md"].read_text()
    assert footnote in md and "[R*] reproduced by this pipeline with deviations" in md
    assert "(released checkpoint, our evaluation): a checkpoint imported" in md
    tex = paths["main_tex"].read_text()
    assert r"93.0 $\pm$ 0.0\textsuperscript{R*}" in tex and r"84.0\textsuperscript{R}" in tex
    assert r"train.batch\_size=8 (protocol: 16), train.iters=2000 (protocol: 20000)" in tex
    # The ablation table names the protocol of every row and the deviations of the deviating ones.
    header, rows = read_md_table(paths["ablation_md"])
    abl = {r[0]: dict(zip(header, r)) for r in rows}
    assert abl["ldvc (exp: exp-voc)"]["Protocol"] == "voc, deviates in train.batch_size, train.iters (note 1)"
    assert "train.iters=2000 (protocol: 20000)" in paths["ablation_md"].read_text()


def test_fully_supervised_block_and_vocabulary_label(mlflow_report: dict) -> None:
    header, rows = read_md_table(mlflow_report["result"]["tables"]["main_md"])
    t = by_method(header, rows)
    block = "fully supervised (upper bound, not zero-shot)"
    assert [r[1] for r in rows if r[0] == block] == ["ZegCLIP", "CLIP-RC", "LDVC (ours, variant fully_supervised)"]
    z = t[(block, "ZegCLIP")]
    assert [z[f"VOC {m}"] for m in ("pAcc", "mIoU(S)", "mIoU(U)", "hIoU")] == [
        "96.3 [M]", "92.4 [M]", "90.9 [M]", "91.6 [M]"]
    assert [z[f"COCO-Stuff {m}"] for m in ("pAcc", "mIoU(S)", "mIoU(U)", "hIoU")] == [
        "69.9 [M]", "40.7 [M]", "63.2 [M]", "49.6 [M]"]
    c = t[(block, "CLIP-RC")]
    assert [c[f"VOC {m}"] for m in ("pAcc", "hIoU")] == ["97.1 [M]", "93.7 [M]"]
    assert [c[f"COCO-Stuff {m}"] for m in ("pAcc", "mIoU(S)", "mIoU(U)", "hIoU")] == [
        "70.8 [M]", "42.9 [M]", "64.1 [M]", "51.4 [M]"]
    # Ours: split.unseen = [] is the setting itself, so the row is conformant ([R]) and says why.
    ours = t[(block, "LDVC (ours, variant fully_supervised)")]
    assert ours["Synthetic hIoU"] == "79.7 [R]" and ours["Synthetic mIoU(U)"] == "75.0 [R]"
    assert ours["Protocol"] == "synthetic, every class seen (split.unseen by definition)"
    # The unseen-vocabulary evaluation is its own, labelled row (never averaged with the generalised one).
    uv = t[("inductive", "LDVC (ours, exp: exp-unseen) (unseen vocabulary)")]
    assert uv["Synthetic mIoU(U)"] == "61.0 [R]" and uv["Synthetic hIoU"] == "-"
    md = mlflow_report["result"]["tables"]["main_md"].read_text()
    assert "(unseen vocabulary): evaluated with only the unseen class names" in md
    # The ablation table labels the upper bound as such.
    a_header, a_rows = read_md_table(mlflow_report["result"]["tables"]["ablation_md"])
    fs = next(dict(zip(a_header, r)) for r in a_rows if r[0].startswith("fully_supervised"))
    assert fs["Variant"] == "fully_supervised (fully supervised upper bound, not zero-shot)"
    assert fs["Changes"] == "split.unseen=[]" and fs["hIoU"] == "79.7"


def test_cross_table(mlflow_report: dict) -> None:
    paths = mlflow_report["result"]["tables"]
    header, rows = read_md_table(paths["cross_md"])
    assert (header, rows) == read_csv_table(paths["cross_csv"])
    assert header == ["Source", "Method", "Seeds", "Protocol", "Synthetic-shifted pAcc", "Synthetic-shifted mIoU"]
    assert rows == [["Synthetic", "LDVC (ours)", "0, 1", "synthetic", "61.0 ± 1.4 [R]", "42.0 ± 2.8 [R]"]]
    md = paths["cross_md"].read_text()
    assert "could not be found in a citable source" in md and "NOT comparable" in md
    tex = paths["cross_tex"].read_text()
    assert r"\multicolumn{2}{c}{Synthetic, shifted world (ours) [shifted]}" in tex
    assert mlflow_report["result"]["cross"] == {"shifted": pytest.approx(
        {"pAcc": 61.0, "pAcc_std": 1.4142, "mIoU": 42.0, "mIoU_std": 2.8284})}


def test_ablation_table_from_mlflow_cell_by_cell(mlflow_report: dict) -> None:
    paths = mlflow_report["result"]["tables"]
    header, md_rows = read_md_table(paths["ablation_md"])
    assert (header, md_rows) == read_csv_table(paths["ablation_csv"])
    assert header[:5] == ["Variant", "Changes", "Protocol", "Dataset", "Seeds"]
    rows = {r[0]: dict(zip(header, r)) for r in md_rows}
    assert [r[0] for r in md_rows] == [
        "ldvc (default)", "zegclip", "topk_1", "fully_supervised (fully supervised upper bound, not zero-shot)",
        "ldvc (exp: exp-release) (released ZegCLIP checkpoint, our evaluation)", f"ldvc (exp: {EXP_NAME})",
        "ldvc (exp: exp-unseen) (unseen vocabulary)", "ldvc (exp: exp-voc)", "zegclip (exp: exp-voc)"]
    d = rows["ldvc (default)"]
    assert d["Changes"] == "none (params.yaml)" and d["Seeds"] == "0, 1" and d["Dataset"] == "Synthetic"
    assert d["Protocol"] == "synthetic"
    assert [d[c] for c in ("mIoU(S)", "mIoU(U)", "hIoU")] == ["61.0 ± 1.4", "31.5 ± 2.1", "42.0 ± 2.8"]
    assert d["Components/img (pred)"] == "5.4 ± 0.3" and d["Components/img (GT)"] == "3.1 ± 0.0"
    assert d["Small-fragment % (pred)"] == "13.0 ± 1.4" and d["Small-fragment % (GT)"] == "4.0 ± 0.0"
    assert d["Learnable params (M)"] == "0.41" and d["Total params (M)"] == "5.00"
    assert d["Train images/s"] == "32.0 ± 2.8"
    z = rows["zegclip"]
    assert z["Changes"] == "decoder.type=zegclip" and z["hIoU"] == "31.8" and z["Learnable params (M)"] == "0.60"
    assert rows["topk_1"]["Changes"] == "decoder.route_topk=1" and rows["topk_1"]["Train images/s"] == "33.3"
    # The experiment's changes are its params that differ from the workspace LDVC run.
    ex = rows[f"ldvc (exp: {EXP_NAME})"]
    assert ex["Changes"] == "decoder.route_topk=8" and ex["hIoU"] == "44.0" and ex["Train images/s"] == "-"
    assert "topk_16" not in rows  # the FAILED run


def test_summary_for_metrics_json(mlflow_report: dict) -> None:
    summary = mlflow_report["result"]["main"]
    assert summary["inductive"] == pytest.approx({
        "pAcc": 81.0, "pAcc_std": 1.4142, "mIoU_seen": 61.0, "mIoU_seen_std": 1.4142,
        "mIoU_unseen": 31.5, "mIoU_unseen_std": 2.1213, "hIoU": 42.0, "hIoU_std": 2.8284})
    assert summary["transductive"]["hIoU"] == pytest.approx(56.4)
    assert set(summary) == {"inductive", "transductive"}  # cross records are not averaged in
    ablation = mlflow_report["result"]["ablation"]
    assert set(ablation) == {"ldvc", "zegclip", "topk_1", "fully_supervised"}
    assert ablation["fully_supervised"]["hIoU"] == pytest.approx(79.7)
    notes = mlflow_report["result"]["notes"]
    assert any("superseded" in n for n in notes)


def test_mlflow_training_curve_and_per_class(mlflow_report: dict) -> None:
    inputs = mlflow_report["inputs"]
    (curve,) = inputs.curves
    assert (curve.variant, curve.seed, curve.setting) == ("ldvc", 0, "inductive")
    assert [r["step"] for r in curve.rows] == [0, 10, 20, 30, 40] and curve.rows[1]["loss"] == pytest.approx(10 / 11)
    rec = next(r for r in inputs.records if r.variant == "ldvc" and r.seed == 1 and r.setting == "inductive"
               and r.exp_name is None)
    assert [(c.name, c.iou, c.seen) for c in rec.per_class] == [
        ("red_disk", 71.0, True), ("blue_square", 51.0, True), ("green_star", 31.0, False)]
    # Overlays logged as an artifact folder are downloaded for the qualitative grid.
    rec0 = next(r for r in inputs.records
                if (r.variant, r.seed, r.setting, r.exp_name) == ("ldvc", 0, "inductive", None))
    assert sorted(p.name for p in rec0.overlay_dir.iterdir()) == ["val_0001.png", "val_0002.png"]
    assert rec.overlay_dir is None


def test_mlflow_record_fields(mlflow_report: dict) -> None:
    """Tags, params and the metrics.json artifact all reach the record; the artifact wins over the tags."""
    records = mlflow_report["inputs"].records
    cross = next(r for r in records if r.setting == "cross" and r.seed == 0)
    assert (cross.dataset, cross.cross_target, cross.source_dataset) == ("synthetic_shifted", "shifted", "synthetic")
    released = next(r for r in records if r.exp_name == "exp-release")
    assert (released.decoder, released.imported, released.device) == ("zegclip", True, "cuda:0")
    assert released.metrics["eval_images_per_s"] == 5.0 and "train_images_per_s" not in released.metrics
    assert next(r for r in records if r.exp_name == "exp-unseen").vocabulary == "unseen"
    bad = next(r for r in records if r.exp_name == "exp-voc" and r.variant == "ldvc")
    assert bad.protocol_status == "deviating" and list(bad.deviations()) == ["train.batch_size", "train.iters"]
    fully = next(r for r in records if r.setting == "fully_supervised")
    assert fully.protocol_conformant is False and fully.protocol_status == "conformant"
    assert fully.exempt_deviations == ["split.unseen"]


def test_runs_dir_gives_the_same_tables(mlflow_report: dict, runs_dir: Path, tmp_path: Path) -> None:
    inputs = load_runs_dir(runs_dir)
    result = build_reports(inputs.records, tmp_path, figures=False, ablation_overrides=ABLATION,
                           paper_counts=read_counts(PAPER_COUNTS))
    for name in ("main", "ablation", "cross", "open_vocab"):
        header, rows = read_csv_table(result["tables"][f"{name}_csv"])
        m_header, m_rows = read_csv_table(mlflow_report["result"]["tables"][f"{name}_csv"])
        assert header == m_header
        assert rows == [r for r in m_rows if "exp: " not in r[0] + r[1]]  # runs/ has no experiments
        assert read_md_table(result["tables"][f"{name}_md"]) == (header, rows)
    for key in ("main", "ablation", "cross", "open_vocab"):
        assert result[key] == mlflow_report["result"][key]
    # metrics.json's own fields: the evaluation speed is images_per_s, the training one train_images_per_s.
    rec = next(r for r in inputs.records if (r.variant, r.seed, r.setting) == ("ldvc", 1, "inductive"))
    assert rec.metrics["eval_images_per_s"] == 101.0 and rec.metrics["train_images_per_s"] == 34.0
    assert (rec.protocol, rec.protocol_status, rec.device, rec.calibrated) == ("synthetic", "conformant", "cpu", True)
    assert sorted((r.cross_target, r.seed) for r in inputs.records if r.setting == "cross") == [
        ("shifted", 0), ("shifted", 1)]
    # A variant removed from params.yaml's ablation section (its runs/ folder remains) is left out,
    # and so is a cross target removed from cross_dataset.
    fewer = build_reports(inputs.records, tmp_path / "fewer", figures=False, ablation_overrides={"zegclip": {}},
                          cross_targets=[], count_models=False)
    header, rows = read_csv_table(fewer["tables"]["ablation_csv"])
    assert [r[0] for r in rows] == ["ldvc (default)", "zegclip"] and "topk_1" in fewer["notes"][0]
    assert read_csv_table(fewer["tables"]["cross_csv"])[1] == [] and "['shifted']" in fewer["notes"][1]
    assert fewer["cross"] == {}


def test_unrecorded_protocol_is_marked_and_legacy_speed_is_training(tmp_path: Path) -> None:
    """A metrics.json written before the protocol fields existed: [R?], never a plain [R]; its
    images_per_s (no eval_seconds) was the training speed."""
    d = tmp_path / "runs" / "ldvc" / "seed0" / "inductive"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"dataset": "voc", "pAcc": 90.0, "mIoU_seen": 80.0,
                                                "mIoU_unseen": 60.0, "hIoU": 68.6, "images_per_s": 12.0}))
    (rec,) = records_from_runs(tmp_path / "runs")
    assert rec.protocol_status == "unknown" and rec.metrics["train_images_per_s"] == 12.0
    assert "eval_images_per_s" not in rec.metrics
    result = build_reports([rec], tmp_path / "out", figures=False, count_models=False)
    header, rows = read_csv_table(result["tables"]["main_csv"])
    row = by_method(header, rows)[("inductive", "LDVC (ours)")]
    assert row["VOC hIoU"] == "68.6 [R?]" and row["Protocol"] == "protocol not recorded"
    md = result["tables"]["main_md"].read_text()
    assert "[R?] reproduced by this pipeline, protocol conformance not recorded" in md
    (d / "metrics.json").write_text(json.dumps({"dataset": "voc", "hIoU": 1.0, "protocol_deviations": ["x"]}))
    with pytest.raises(ReportError, match="'protocol_deviations' must map each key"):
        records_from_runs(tmp_path / "runs")


def test_per_class_csv_in_evaluation_format(runs_dir: Path) -> None:
    rec = next(r for r in records_from_runs(runs_dir) if r.variant == "zegclip")
    assert [c.name for c in rec.per_class] == ["red_disk", "blue_square", "green_star"]
    assert [c.seen for c in rec.per_class] == [True, True, False]
    assert rec.per_class[0].iou == 70.0 and math.isnan(rec.per_class[1].iou)  # empty cell: class absent


def test_figures_from_runs_dir(runs_dir: Path, tmp_path: Path) -> None:
    # The report stage's call: records only; the train_log.csv beside each record gives the curves.
    result = build_reports(records_from_runs(runs_dir), tmp_path, ablation_overrides=ABLATION,
                           paper_counts=read_counts(PAPER_COUNTS))
    figs = result["figures"]
    assert set(figs) == {"per_class_iou_synthetic_inductive", "per_class_iou_synthetic_transductive",
                         "qualitative_synthetic_inductive", "qualitative_synthetic_transductive",
                         "fragmentation_synthetic", "training_curves", "open_vocab_synthetic_wide"}
    for path in figs.values():
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.png"))  # atomic writes
    notes = result["notes"]
    assert any("inductive): zegclip has no overlays" in n for n in notes)
    # Transductive overlays are composites only (evaluation's image | GT | prediction figure).
    assert any("transductive): overlays hold no separate" in n for n in notes)
    assert not any("inductive): overlays hold no separate" in n for n in notes)
    # Grid sizes follow the mode: 2 rows x 4 panels (inductive) vs 2 rows x 1 wide composite.
    with Image.open(figs["qualitative_synthetic_inductive"]) as a, \
            Image.open(figs["qualitative_synthetic_transductive"]) as b:
        assert a.width > b.width


def test_cli_from_mlflow_and_from_runs(store: str, runs_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"project:\n  mlflow_experiment: {EXPERIMENT}\nablation:\n"
                      "  zegclip: {decoder.type: zegclip}\n  topk_1: {decoder.route_topk: 1}\n")
    out = tmp_path / "out"
    assert reports_main(["--from-mlflow", "--tracking-uri", store, "--out", str(out), "--params", str(params),
                         "--no-figures"]) == 0
    header, rows = read_csv_table(out / "tables" / "main.csv")
    assert by_method(header, rows)[("inductive", f"LDVC (ours, exp: {EXP_NAME})")]["Synthetic hIoU"] == "44.0 [R]"
    assert read_csv_table(out / "tables" / "ablation.csv")[1][2][1] == "decoder.route_topk=1"
    assert reports_main(["--runs-dir", str(runs_dir), "--out", str(tmp_path / "o2"), "--params", str(params),
                         "--no-figures"]) == 0
    assert "main_csv" in capsys.readouterr().out


def test_bad_inputs_fail_clearly(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert reports_main(["--runs-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "run the pipeline first" in capsys.readouterr().err
    with pytest.raises(ReportError, match="'typo' not found.*experiments there: .*'ldvc'"):
        load_mlflow(store, "typo")
    with pytest.raises(ReportError, match="no MLflow store"):
        load_mlflow(f"sqlite:///{tmp_path}/missing.db")
    assert not (tmp_path / "missing.db").exists()
    bad = tmp_path / "runs" / "ldvc" / "seed0" / "inductive"
    bad.mkdir(parents=True)
    (bad / "metrics.json").write_text('{"dataset": "synthetic", "hIoU": "high"}')
    with pytest.raises(ReportError, match="metrics.json: 'hIoU' must be a number"):
        load_runs_dir(tmp_path / "runs")
    (bad / "metrics.json").write_text('{"hIoU": 1.0}')
    with pytest.raises(ReportError, match="missing \\['dataset'\\]"):
        load_runs_dir(tmp_path / "runs")
    with pytest.raises(ReportError, match="no evaluation records"):
        build_reports([], tmp_path / "o")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------
# Cost table
# --------------------------------------------------------------------------------------------


def _number(cell: str) -> float:
    return float(cell.split(" ")[0])


def test_cost_table_reference_and_paper_size_counts(mlflow_report: dict) -> None:
    """Published efficiency and ZegCLIP / LDVC counted at the paper size on the meta device: ZegCLIP's
    count lands within 1.5% of its reported 110.4 (VOC) / 123.9 (COCO-Stuff) GFLOPs and 13.8M / 14.6M."""
    paths = mlflow_report["result"]["tables"]
    header, rows = read_md_table(paths["cost_md"])
    assert (header, rows) == read_csv_table(paths["cost_csv"])
    t = {(r[0], r[1], r[2]): dict(zip(header, r)) for r in rows}
    gflops, fps = "GFLOPs", "Images/s (FPS)"
    as_zegclip, used = "Learnable params (M), as ZegCLIP counts", "Learnable params (M), used by the forward"
    pub = t[("published", "ZegCLIP", "VOC")]
    assert (pub[as_zegclip], pub[gflops], pub[fps], pub["Hardware / device"]) == (
        "13.8 [M]", "110.4 [M]", "9.0 [M]", "1x GTX 1080 Ti")
    assert t[("published", "ZegCLIP", "COCO-Stuff")][gflops] == "123.9 [M]"
    for dataset, reported_g, reported_m in (("VOC", 110.4, 13.8), ("COCO-Stuff", 123.9, 14.6)):
        z = t[("counted, paper size", "ZegCLIP (counted)", dataset)]
        assert z[gflops].endswith("[C]") and _number(z[gflops]) == pytest.approx(reported_g, rel=0.015)
        assert _number(z[as_zegclip]) == pytest.approx(reported_m, abs=0.06)
        assert _number(z[used]) < _number(z[as_zegclip])  # ZegCLIP's checkpoint carries unused tensors
        ld = t[("counted, paper size", "LDVC (counted)", dataset)]
        assert ld[as_zegclip] == ld[used] and _number(ld[gflops]) > _number(z[gflops])  # route attention costs
        assert z[fps] == "-" and ld[fps] == "-"
    md = paths["cost_md"].read_text()
    assert "No GPU measurement exists" in md and "fvcore" in md and "[C] counted by this pipeline" in md
    # MLflow records have no checkpoint here: their GFLOPs are '-' and the notes say why.
    runs = [r for r in rows if r[0] == "this pipeline's runs"]
    assert runs and all(r[header.index(gflops)] == "-" for r in runs)
    assert "their checkpoint file is not available here" in md


def test_cost_table_runs_rows_and_gpu_benchmark(runs_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ldvc.reports.cost import count_run

    monkeypatch.chdir(tmp_path)  # relative checkpoint names must not find a real run of the working directory

    gpu = tmp_path / "benchmarks_gpu.json"
    gpu.write_text(json.dumps([{"benchmark": "throughput", "model": "vitb16", "decoder": "zegclip",
                                "eval_slide_images_per_s": 20.04, "gpu": "NVIDIA H200", "date": "2026-01-01"},
                               {"benchmark": "throughput", "model": "small", "decoder": "lctd",
                                "eval_slide_images_per_s": 99.0}]))
    records = records_from_runs(runs_dir)
    result = build_reports(records, tmp_path / "out", figures=False, ablation_overrides=ABLATION, gpu_benchmark=gpu,
                           paper_counts=read_counts(PAPER_COUNTS))
    header, rows = read_csv_table(result["tables"]["cost_csv"])
    t = {(r[0], r[1], r[2]): dict(zip(header, r)) for r in rows}
    z = t[("counted, paper size", "ZegCLIP (counted)", "VOC")]
    assert z["Images/s (FPS)"] == "20.0 [B]" and z["Hardware / device"].startswith("NVIDIA H200")
    assert t[("counted, paper size", "LDVC (counted)", "VOC")]["Images/s (FPS)"] == "-"
    # The run whose checkpoint exists is counted at its own size (params.yaml: 64 px, whole-image inference).
    ldvc = t[("this pipeline's runs", "LDVC (ours), seeds 0, 1", "Synthetic (inductive)")]
    counted = count_run(next(r for r in records if (r.variant, r.seed, r.setting) == ("ldvc", 0, "inductive")))
    assert ldvc["Input"] == f"{counted.window}x{counted.window} window" == "64x64 window"
    assert ldvc["GFLOPs"] == f"{counted.gflops:.2f} [C]" and counted.gflops > 0
    assert ldvc["Learnable params (M), used by the forward"] == "0.41 [R]"
    assert ldvc["Images/s (FPS)"] == "100.5 ± 0.7 [R]" and ldvc["Hardware / device"] == "cpu"
    fully = t[("this pipeline's runs", "LDVC (ours, variant fully_supervised), seed 0",
               "Synthetic (fully supervised)")]
    assert fully["GFLOPs"] == "-" and fully["Images/s (FPS)"] == "100.0 [R]"
    assert "NVIDIA H200" in result["tables"]["cost_md"].read_text()


def test_cost_table_survives_counting_failures(runs_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import ldvc.reports.cost as cost
    import ldvc.reports.counts as counts

    def broken(*args: object) -> None:
        raise RuntimeError("no such preset")

    monkeypatch.setattr(counts, "count_paper_model", broken)
    bad_gpu = tmp_path / "benchmarks_gpu.json"
    bad_gpu.write_text("not json {")
    table = cost.cost_table(records_from_runs(runs_dir), gpu_benchmark=bad_gpu)
    counted = [r for r in table.rows if r[0] == "counted, paper size"]
    assert len(counted) == 4 and all(c == "-" for r in counted for c in r[4:8])
    notes = " ".join(table.notes)
    assert "ZegCLIP at the voc paper size: could not be counted (RuntimeError: no such preset)" in notes
    assert f"GPU benchmark {bad_gpu} could not be read" in notes
    off = cost.cost_table(records_from_runs(runs_dir), count=False)
    assert "counting was switched off" in " ".join(off.notes)


def test_variant_named_cross_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "runs" / "cross" / "seed0" / "inductive"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"dataset": "synthetic", "hIoU": 1.0}))
    with pytest.raises(ReportError, match="variant named 'cross' collides with runs/cross/"):
        load_runs_dir(tmp_path / "runs")


def test_gpu_benchmark_reads_the_device_checks_records(tmp_path: Path) -> None:
    """benchmarks/gpu.py writes `gpu_slide_fps` records: the cost table takes their float32 FPS."""
    from ldvc.reports.cost import read_gpu_benchmark

    path = tmp_path / "benchmarks_gpu.json"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"benchmark": "gpu_slide_fps", "decoder": "zegclip", "fps_fp32": 31.5, "fps_bf16": 60.0, "dataset": "voc",
         "gpu": "NVIDIA H200"},
        {"benchmark": "gpu_train_step", "decoder": "lctd", "images_per_s": 100.0},
    ]) + "\n")
    speeds = read_gpu_benchmark(path)
    assert set(speeds) == {("voc", "zegclip")} and speeds[("voc", "zegclip")].fps == 31.5
    assert speeds[("voc", "zegclip")].hardware == "NVIDIA H200"


# --------------------------------------------------------------------------------------------
# Open-vocabulary table
# --------------------------------------------------------------------------------------------

OV_FIXED = ["Method", "Training set", "CLIP", "Resolution", "CLIP fine-tuned", "Seeds", "Protocol"]
OV_TARGETS = ["A-847", "PC-459", "A-150", "PC-59", "PAS-20", "PAS-21"]


def test_open_vocab_published_numbers_are_the_cited_ones() -> None:
    """The published rows, pinned to their sources:
    - CAT-Seg (B): cvlab-kaist/CAT-Seg README.md at commit 6d3a188af95165147fe2f34a8237fa7d2633e784,
      lines 90-97 ('CAT-Seg (B)', ViT-B/16: 12.0 19.0 31.8 57.5 94.6 77.3 under A-847, PC-459, A-150,
      PC-59, PAS-20, PAS-20b); configs/vitb_384.yaml lines 30 (CLIP_FINETUNE "attention") and 39 (384 crops).
    - DeOP: CongHan0808/DeOP README.md at commit 614454c8734f6dd82679b909f697cb241e6538be, line 33, the image
      resources/results-crossdataset.jpg, row 'DeOP (ours)': VOC-20 91.7, PC-59 48.8, A-150 22.9, PC-459 9.4,
      A-847 7.1 (trained on COCO-Stuff-156).
    SAN, FC-CLIP (ViT-B/16), zsseg and ZegFormer print no such number in a source we could read: no row."""
    from ldvc.reports.reference import OPEN_VOCAB_REFERENCES, OPEN_VOCAB_TARGETS

    assert list(OPEN_VOCAB_TARGETS.values()) == OV_TARGETS
    refs = {r.method: {OPEN_VOCAB_TARGETS[d]: (v.value, v.source) for d, v in r.values.items()}
            for r in OPEN_VOCAB_REFERENCES}
    assert refs == {
        "CAT-Seg (B)": {"A-847": (12.0, "README"), "PC-459": (19.0, "README"), "A-150": (31.8, "README"),
                        "PC-59": (57.5, "README"), "PAS-20": (94.6, "README"), "PAS-21": (77.3, "README")},
        "DeOP": {"A-847": (7.1, "README"), "PC-459": (9.4, "README"), "A-150": (22.9, "README"),
                 "PC-59": (48.8, "README"), "PAS-20": (91.7, "README")},
    }
    cat = next(r for r in OPEN_VOCAB_REFERENCES if r.method == "CAT-Seg (B)")
    assert "6d3a188" in cat.note and "lines 90-97" in cat.note and "PAS-20b" in cat.note
    assert cat.clip_finetuned.startswith("yes") and "384" in cat.resolution
    deop = next(r for r in OPEN_VOCAB_REFERENCES if r.method == "DeOP")
    assert "614454c" in deop.note and "156" in deop.training and deop.clip_finetuned.startswith("no")


def test_open_vocab_table_published_rows_ours_and_marks(mlflow_report: dict) -> None:
    paths = mlflow_report["result"]["tables"]
    header, rows = read_md_table(paths["open_vocab_md"])
    assert (header, rows) == read_csv_table(paths["open_vocab_csv"])
    assert header == OV_FIXED + OV_TARGETS + ["Synthetic-wide"]
    table = {r[0]: dict(zip(header, r)) for r in rows}
    assert list(table) == ["DeOP", "CAT-Seg (B)", "LDVC (ours, fully_supervised)",
                           "LDVC (ours, fully_supervised, exp: exp-ov-coco)"]
    cat = table["CAT-Seg (B)"]
    assert [cat[t] for t in OV_TARGETS] == ["12.0 [M]", "19.0 [M]", "31.8 [M]", "57.5 [M]", "94.6 [M]", "77.3 [M]"]
    assert cat["Protocol"] == "published" and cat["Synthetic-wide"] == "-" and cat["Training set"].startswith("COCO")
    assert [table["DeOP"][t] for t in OV_TARGETS] == ["7.1 [M]", "9.4 [M]", "22.9 [M]", "48.8 [M]", "91.7 [M]", "-"]
    ours = table["LDVC (ours, fully_supervised)"]
    assert ours["Synthetic-wide"] == "42.0 ± 2.8 [R]" and all(ours[t] == "-" for t in OV_TARGETS)
    assert (ours["Training set"], ours["CLIP"], ours["Resolution"], ours["Seeds"]) == (
        "Synthetic (ours) (18 classes)", "ldvc-tiny-vit", "64x64", "0, 1")
    assert ours["CLIP fine-tuned"].startswith("no") and ours["Protocol"] == "synthetic"
    coco = table["LDVC (ours, fully_supervised, exp: exp-ov-coco)"]
    assert coco["A-150"] == "33.0 [R*]" and coco["Synthetic-wide"] == "-"
    assert coco["Protocol"] == "open_vocab, deviates in train.iters (note 1)" and coco["Resolution"] == "512x512"
    md = paths["open_vocab_md"].read_text()
    for text in ("[M] read from the method's public README", "[R] reproduced", "[R*] reproduced",
                 "9 of 21 classes never in its training vocabulary (dotted red circle, dotted red triangle",
                 "mIoU 22.0 ± 2.8 on them, 51.0 ± 1.4 on the others", "No row for SAN, FC-CLIP, zsseg or ZegFormer",
                 "(1) LDVC (ours, fully_supervised, exp: exp-ov-coco): ADE20K-150, seed 0, protocol open_vocab: "
                 "train.iters=4000 (protocol: 80000)", "NOT comparable",
                 "still departs from upstream: docs/deviations.md#open_vocab, docs/deviations.md#synthetic."):
        assert text in md, text
    assert not any(r[0].startswith(("SAN", "FC-CLIP", "zsseg", "ZegFormer")) for r in rows)
    tex = paths["open_vocab_tex"].read_text()
    assert r"12.0\textsuperscript{M}" in tex and r"33.0\textsuperscript{R*}" in tex
    assert r"\multicolumn{7}{c}{mIoU}" in tex
    assert mlflow_report["result"]["open_vocab"] == {"wide": pytest.approx(
        {"mIoU": 42.0, "mIoU_std": 2.8284, "pAcc": 71.0, "pAcc_std": 1.4142, "mIoU_base": 51.0,
         "mIoU_base_std": 1.4142, "mIoU_novel": 22.0, "mIoU_novel_std": 2.8284})}


def test_open_vocab_records_from_runs_and_mlflow(mlflow_report: dict, runs_dir: Path, tmp_path: Path) -> None:
    """runs/open_vocab/<target>/seed<s>/ is read as setting open_vocab (the layout names target and seed); an
    MLflow run without a metrics.json artifact gets its target and dataset from its tags."""
    records = [r for r in load_runs_dir(runs_dir).records if r.setting == "open_vocab"]
    assert sorted((r.cross_target, r.seed, r.dataset) for r in records) == [
        ("wide", 0, "synthetic_wide"), ("wide", 1, "synthetic_wide")]
    rec = records[0]
    assert rec.novel_classes == WIDE_NOVEL and rec.metrics["num_training_classes"] == 18
    assert [(c.name, c.seen) for c in rec.per_class] == [("striped teal", True), ("dotted red circle", False),
                                                         ("green triangle", False)]
    assert rec.protocol_status == "conformant" and (rec.clip_model, rec.image_size) == ("ldvc-tiny-vit", 64)
    bare = next(r for r in mlflow_report["inputs"].records if r.setting == "open_vocab" and r.seed == 1)
    assert (bare.dataset, bare.cross_target, bare.source_dataset, bare.vocabulary) == (
        "synthetic_wide", "wide", "synthetic", "all")
    # the directory layout alone says setting / target / seed
    d = tmp_path / "runs" / "open_vocab" / "PC-59" / "seed3"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"variant": "fully_supervised", "dataset": "context59", "mIoU": 5.0}))
    (only,) = load_runs_dir(tmp_path / "runs").records
    assert (only.setting, only.cross_target, only.seed) == ("open_vocab", "PC-59", 3)


def test_open_vocab_stale_targets_and_figure(runs_dir: Path, tmp_path: Path) -> None:
    records = records_from_runs(runs_dir)
    stale = build_reports(records, tmp_path / "stale", figures=False, ablation_overrides=ABLATION,
                          open_vocab_targets=["other"], count_models=False)
    assert any("left out open_vocab targets no longer in params.yaml's open_vocab.targets: ['wide']" in n
               for n in stale["notes"])
    assert stale["open_vocab"] == {} and [r[0] for r in read_csv_table(stale["tables"]["open_vocab_csv"])[1]] == [
        "DeOP", "CAT-Seg (B)"]
    # The figure: one panel, novel classes coloured apart (orange bars) beside the trained ones (blue).
    from ldvc.reports.figures import SEEN_COLOR, UNSEEN_COLOR, open_vocab_figure

    path = open_vocab_figure([r for r in records if r.setting == "open_vocab"], tmp_path / "ov.png")
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
    for colour in (SEEN_COLOR, UNSEEN_COLOR):
        want = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(rgb.astype(int) - want).sum(axis=1) < 6).sum() > 200, colour
    # hundreds of classes: bars without names, each group sorted
    from ldvc.reports.records import ClassIoU

    many = [ClassIoU(f"c{i}", float(i % 97), i % 3 != 0) for i in range(847)]
    big = records_from_runs(runs_dir)[0]
    big.per_class, big.setting, big.dataset, big.cross_target = many, "open_vocab", "ade20k_847", "A-847"
    with Image.open(open_vocab_figure([big], tmp_path / "big.png")) as im:
        assert im.width < 2000  # not one named bar per class
