"""Reports: tables rebuilt from a fixture MLflow store and from runs/, checked cell by cell.

The fixture store holds what the pipeline logs (ldvc.* tags, percent metrics, per_class_iou.csv):
LDVC with 2 seeds (inductive + transductive), ZegCLIP and an ablation variant with 1 seed, a
`dvc exp run` experiment (dvc.exp_name on the pipeline parent only, inherited by its children),
an older duplicate run that must be superseded, a FAILED run that must be ignored, and a training
run with a loss history. One store is shared by the module (creating a sqlite store takes seconds).
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
from ldvc.reports.tables import aggregate, format_stat  # noqa: E402

EXPERIMENT = "ldvc"
ABLATION = {"zegclip": {"decoder.type": "zegclip"}, "topk_1": {"decoder.route_topk": 1}}
PER_CLASS = [("red_disk", True), ("blue_square", True), ("green_star", False)]

# (variant, seed, setting, metrics) of the workspace's runs; all on the synthetic world.
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
]
STAGE = {"inductive": "evaluate_inductive", "transductive": "evaluate_transductive"}
EXP_NAME = "exp-topk8"
EXP_METRICS = dict(pAcc=79.9, mIoU=49.0, mIoU_seen=58.8, mIoU_unseen=35.2, hIoU=44.0)
BASE_PARAMS = {"decoder.type": "lctd", "decoder.route_topk": "4", "project.seed": "0"}


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
                  overlays: bool = False) -> str:
        tags = {"ldvc.role": "stage", "ldvc.stage": stage, "ldvc.variant": variant, "ldvc.seed": str(seed),
                "ldvc.setting": setting, "ldvc.dataset": "synthetic",
                "ldvc.decoder": "zegclip" if variant == "zegclip" else "lctd", "mlflow.parentRunId": parent}
        if exp_tag:
            tags["dvc.exp_name"] = exp_tag
        run_id = client.create_run(exp_id, tags=tags).info.run_id
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
        params = {**BASE_PARAMS, **({"decoder.type": "zegclip"} if variant == "zegclip" else {})}
        stage_run(variant, seed, setting, stage, metrics, parent=parent, params=params,
                  overlays=(variant, seed, setting) == ("ldvc", 0, "inductive"))
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
    # A `dvc exp run` experiment: the name is on the pipeline parent, its children inherit it.
    exp_parent = client.create_run(exp_id, tags={"ldvc.role": "pipeline", "dvc.exp_name": EXP_NAME}).info.run_id
    stage_run("ldvc", 0, "inductive", "evaluate_inductive", EXP_METRICS, parent=exp_parent,
              params={**BASE_PARAMS, "decoder.route_topk": "8"})
    client.set_terminated(exp_parent)
    return uri


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same workspace records as runs/<variant>/seed<s>/<setting>/metrics.json (+ logs, overlays)."""
    runs = tmp_path_factory.mktemp("repo") / "runs"
    for variant, seed, setting, metrics in WORKSPACE:
        d = runs / variant / f"seed{seed}" / setting
        d.mkdir(parents=True)
        record = {**metrics, "variant": variant, "seed": seed, "setting": setting, "dataset": "synthetic",
                  "decoder": "lctd", "per_class": _per_class(seed)}
        if variant == "zegclip":  # as evaluation writes it: per-class IoU in a CSV beside metrics.json
            del record["per_class"]
            (d / "per_class_iou.csv").write_text(
                "class_id,class,split,iou,gt_pixels,pred_pixels\n0,red_disk,seen,70.0000,10,12\n"
                "1,blue_square,seen,,0,0\n2,green_star,unseen,30.0000,5,4\n")
        (d / "metrics.json").write_text(json.dumps(record))
    (runs / "ldvc/seed0/inductive/train_log.csv").write_text(
        "step,loss,lr,images_per_s\n" + "".join(f"{s},{5.0 / (s + 1)},{1e-4 * (1 - s / 50)},30\n"
                                                for s in range(0, 50, 5)))
    _write_overlays(runs / "ldvc/seed0/inductive/overlays", ["val_0003", "val_0010"], panels=True)
    _write_overlays(runs / "ldvc/seed1/inductive/overlays", ["val_0003", "val_0010"], panels=True)
    _write_overlays(runs / "ldvc/seed1/transductive/overlays", ["val_0003", "val_0010"], panels=False)
    # ZegCLIP wrote no overlays: its qualitative column is left empty with a note.
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
                                    ablation_overrides=ABLATION, notes=inputs.notes),
            "inputs": inputs, "out": out}


def test_format_mean_std_one_decimal() -> None:
    assert format_stat(aggregate([40.0, 44.0]), "R") == "42.0 ± 2.8 [R]"
    assert format_stat(aggregate([78.44]), "R") == "78.4 [R]"
    assert format_stat(aggregate([float("nan"), 30.0])) == "30.0"  # nan (absent classes) left out
    assert format_stat(aggregate([])) == "-"


def test_main_table_from_mlflow_cell_by_cell(mlflow_report: dict) -> None:
    paths = mlflow_report["result"]["tables"]
    header, md_rows = read_md_table(paths["main_md"])
    csv_header, csv_rows = read_csv_table(paths["main_csv"])
    assert header == csv_header and md_rows == csv_rows  # md and csv hold the same cells
    assert header[:7] == ["Setting", "Method", "Seeds", "VOC pAcc", "VOC mIoU(S)", "VOC mIoU(U)", "VOC hIoU"]
    assert header[-4:] == ["Synthetic pAcc", "Synthetic mIoU(S)", "Synthetic mIoU(U)", "Synthetic hIoU"]
    t = by_method(header, md_rows)
    # Published numbers with source markers; unreported cells are '-'.
    zi = t[("inductive", "ZegCLIP")]
    assert [zi[f"VOC {m}"] for m in ("pAcc", "mIoU(S)", "mIoU(U)", "hIoU")] == [
        "94.6 [P]", "91.9 [P]", "77.8 [P]", "84.3 [P]"]
    assert zi["COCO-Stuff hIoU"] == "40.8 [P]" and zi["Synthetic hIoU"] == "-"
    assert t[("inductive", "LDVC")]["VOC mIoU(U)"] == "82.3 [D]"
    assert t[("inductive", "LDVC")]["COCO-Stuff mIoU(U)"] == "45.0 [D]"
    assert t[("inductive", "LDVC")]["VOC hIoU"] == "-"
    assert t[("inductive", "SPNet")]["VOC hIoU"] == "26.1 [P]" and t[("inductive", "SPNet")]["VOC mIoU(S)"] == "-"
    assert t[("transductive", "Cascade-CLIP")]["COCO-Stuff hIoU"] == "50.0 [P]"
    # Ours: mean ± std over seeds 0, 1 (the superseded run of seed 0 is not averaged in).
    li = t[("inductive", "LDVC (ours)")]
    assert li["Seeds"] == "0, 1"
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
    # Row order: references, then ours (ZegCLIP before LDVC, experiments last), per setting.
    methods = [r[1] for r in md_rows if r[0] == "inductive"]
    assert methods[-3:] == ["ZegCLIP (ours)", "LDVC (ours)", f"LDVC (ours, exp: {EXP_NAME})"]
    assert ("transductive", "ZegCLIP (ours)") not in t and ("inductive", "topk_1") not in t
    # The caption notes say the synthetic rows are not comparable and explain each marker.
    md = paths["main_md"].read_text()
    assert "NOT comparable" in md and "[D] derived" in md and "[R] reproduced" in md
    tex = paths["main_tex"].read_text()
    assert r"81.0 $\pm$ 1.4\textsuperscript{R}" in tex and r"\multicolumn{4}{c}{PASCAL VOC 2012}" in tex
    assert "\n" + r"\multicolumn{3}{c}{} & \multicolumn{4}{c}{PASCAL VOC 2012}" in tex  # groups span all columns
    assert "±" not in tex


def test_ablation_table_from_mlflow_cell_by_cell(mlflow_report: dict) -> None:
    paths = mlflow_report["result"]["tables"]
    header, md_rows = read_md_table(paths["ablation_md"])
    assert (header, md_rows) == read_csv_table(paths["ablation_csv"])
    rows = {r[0]: dict(zip(header, r)) for r in md_rows}
    assert [r[0] for r in md_rows] == ["ldvc (default)", "zegclip", "topk_1", f"ldvc (exp: {EXP_NAME})"]
    d = rows["ldvc (default)"]
    assert d["Changes"] == "none (params.yaml)" and d["Seeds"] == "0, 1" and d["Dataset"] == "Synthetic"
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
    notes = mlflow_report["result"]["notes"]
    assert any("superseded" in n for n in notes)


def test_mlflow_training_curve_and_per_class(mlflow_report: dict) -> None:
    inputs = mlflow_report["inputs"]
    (curve,) = inputs.curves
    assert (curve.variant, curve.seed, curve.setting) == ("ldvc", 0, "inductive")
    assert [r["step"] for r in curve.rows] == [0, 10, 20, 30, 40] and curve.rows[1]["loss"] == pytest.approx(10 / 11)
    rec = next(r for r in inputs.records if r.variant == "ldvc" and r.seed == 1 and r.setting == "inductive")
    assert [(c.name, c.iou, c.seen) for c in rec.per_class] == [
        ("red_disk", 71.0, True), ("blue_square", 51.0, True), ("green_star", 31.0, False)]
    # Overlays logged as an artifact folder are downloaded for the qualitative grid.
    rec0 = next(r for r in inputs.records
                if (r.variant, r.seed, r.setting, r.exp_name) == ("ldvc", 0, "inductive", None))
    assert sorted(p.name for p in rec0.overlay_dir.iterdir()) == ["val_0001.png", "val_0002.png"]
    assert rec.overlay_dir is None


def test_runs_dir_gives_the_same_tables(mlflow_report: dict, runs_dir: Path, tmp_path: Path) -> None:
    inputs = load_runs_dir(runs_dir)
    result = build_reports(inputs.records, tmp_path, figures=False, ablation_overrides=ABLATION)
    for name in ("main", "ablation"):
        header, rows = read_csv_table(result["tables"][f"{name}_csv"])
        m_header, m_rows = read_csv_table(mlflow_report["result"]["tables"][f"{name}_csv"])
        assert header == m_header
        assert rows == [r for r in m_rows if "exp: " not in r[0] + r[1]]  # runs/ has no experiments
        assert read_md_table(result["tables"][f"{name}_md"]) == (header, rows)
    assert result["main"] == mlflow_report["result"]["main"]
    # A variant removed from params.yaml's ablation section (its runs/ folder remains) is left out.
    fewer = build_reports(inputs.records, tmp_path / "fewer", figures=False, ablation_overrides={"zegclip": {}})
    header, rows = read_csv_table(fewer["tables"]["ablation_csv"])
    assert [r[0] for r in rows] == ["ldvc (default)", "zegclip"] and "topk_1" in fewer["notes"][0]


def test_per_class_csv_in_evaluation_format(runs_dir: Path) -> None:
    rec = next(r for r in records_from_runs(runs_dir) if r.variant == "zegclip")
    assert [c.name for c in rec.per_class] == ["red_disk", "blue_square", "green_star"]
    assert [c.seen for c in rec.per_class] == [True, True, False]
    assert rec.per_class[0].iou == 70.0 and math.isnan(rec.per_class[1].iou)  # empty cell: class absent


def test_figures_from_runs_dir(runs_dir: Path, tmp_path: Path) -> None:
    # The report stage's call: records only; the train_log.csv beside each record gives the curves.
    result = build_reports(records_from_runs(runs_dir), tmp_path, ablation_overrides=ABLATION)
    figs = result["figures"]
    assert set(figs) == {"per_class_iou_synthetic_inductive", "per_class_iou_synthetic_transductive",
                         "qualitative_synthetic_inductive", "qualitative_synthetic_transductive",
                         "fragmentation_synthetic", "training_curves"}
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
