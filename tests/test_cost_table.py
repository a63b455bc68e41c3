"""The cost table's provenance, its text-encoder share per training step, its evaluation at many
classes, and ONE definition of "the ZegCLIP baseline of a preset" (ldvc/baseline.py) shared by the
benchmarks, the cost rows and the tables' `zegclip` ablation (issue 17 items 8 and 10, issue 18,
issue 20's bounded evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_one_definition_of_the_zegclip_baseline() -> None:
    """benchmarks/setups.py, the cost rows and params.yaml's `zegclip` ablation build the same baseline:
    ZegCLIP's decoder AND no text prompts (its step runs no text encoder)."""
    from benchmarks.setups import paper_config as bench_config
    from ldvc.baseline import ZEGCLIP_BASELINE, is_zegclip_baseline
    from ldvc.config import load_config
    from ldvc.reports.counts import paper_config as cost_config

    for preset in ("voc", "coco_stuff", "context59"):
        bench, cost = bench_config("zegclip", preset), cost_config(preset, "zegclip")
        assert is_zegclip_baseline(bench) and is_zegclip_baseline(cost)
        assert bench.to_dict() == cost.to_dict()
        assert not is_zegclip_baseline(bench_config("lctd", preset))
    ablation = load_config(REPO / "params.yaml").ablation["zegclip"]
    assert ablation == ZEGCLIP_BASELINE  # the tables' baseline rows
    # a zegclip decoder WITH text prompts is not the baseline
    assert not is_zegclip_baseline({"decoder": {"type": "zegclip"}, "prompt": {"text_depth": -1, "text_tokens": 4}})


def test_counted_zegclip_is_its_executed_forward_minus_the_unbuilt_last_layer() -> None:
    """The 110.2 / 123.5 counted against the published 110.4 / 123.9: ZegCLIP executes the analytic count
    plus its prompt_proj (ZiqinZhou66/ZegCLIP models/backbone/img_encoder.py: prompt_proj on every
    layer's prompts) and its last TPN layer's value, attention-weighted sum, output projection and FFN
    (models/decode_heads/decode_seg.py: every TPN_DecoderLayer runs whole; only the last one's attention
    logits become the masks), which our model does not build. Counted = executed - unbuilt."""
    from ldvc.model.flops import zegclip_prompt_proj_gmacs, zegclip_reference_gmacs, zegclip_unbuilt_last_layer_gmacs
    from ldvc.reports.counts import count_paper_model

    for preset, prompts, classes in (("voc", 10, 20), ("coco_stuff", 100, 171)):
        executed = zegclip_reference_gmacs(preset)["total"] + zegclip_prompt_proj_gmacs(prompts)
        counted = count_paper_model(preset, "zegclip").gflops
        assert counted == pytest.approx(executed - zegclip_unbuilt_last_layer_gmacs(classes), abs=0.05)


def _fake_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    import ldvc.reports.counts as cost  # the counting functions the cost table calls when it counts itself

    model = cost.ModelCount(learnable=8_040_000, as_zegclip_counts=13_820_000, gflops=110.25, text_gflops=3.8,
                            window=512, classes=20)
    monkeypatch.setattr(cost, "count_paper_model", lambda preset, method: model)

    def steps(preset: str, before: bool) -> dict:
        ld = cost.StepCount(12200.0, 2598.0, 4196.0 if before else None, 16, 156, 15)
        return {"lctd": ld, "zegclip": cost.StepCount(8665.0, 0.0, None, 16, 156, 15)}

    monkeypatch.setattr(cost, "count_training_steps", steps)


def test_cost_table_provenance_text_share_and_many_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ldvc.reports.cost as cost

    _fake_counts(monkeypatch)
    scaling = tmp_path / "eval_scaling.jsonl"
    recs = [{"benchmark": "eval_scaling", "size": "paper", "classes": 847, "class_chunk": chunk, "mode": mode,
             "image_hw": [512, 683], "window": 512, "stride": 426, "peak_mb": mb, "seconds": sec,
             "images_per_s": 1 / sec, "device": "cpu", "cpu": "AMD EPYC", "same_labels": True}
            for chunk, mode, mb, sec in ((64, "chunked", 421.0, 16.0), (None, "all_classes", 3724.0, 21.8))]
    recs.append({**recs[0], "size": "tiny", "peak_mb": 1.0})  # a tiny-size record is not a paper number
    scaling.write_text("".join(json.dumps(r) + "\n" for r in recs))
    table = cost.cost_table([], gpu_benchmark=tmp_path / "device_check.jsonl")
    assert table.header[-1] == "Peak memory (MiB)" and all(len(r) == len(table.header) for r in table.rows)
    text = [r for r in table.rows if r[0] == cost.GROUP_TEXT]
    coco = {r[1]: r for r in text if r[2] == "COCO-Stuff"}
    assert coco["LDVC, text prompts, prefix per class (before)"][6] == "text 4196 of 13798 per step: 30.4% [C]"
    assert coco["LDVC, text prompts, prefix once per template (after)"][6] == "text 2598 of 12200 per step: 21.3% [C]"
    assert coco["ZegCLIP baseline (no text prompts: embeddings cached)"][6].startswith("text 0 of 8665")
    assert {r[2] for r in text} == {"VOC", "COCO-Stuff", "Context-59"}  # every paper preset
    evals = [r for r in table.rows if r[0] == cost.GROUP_EVAL]
    assert [r[-1] for r in evals] == ["421 [B]", "3724 [B]"]  # chunked first; the tiny record is left out
    notes = " ".join(table.notes)
    for phrase in ("Published [M]", "Inferred (ours, not ZegCLIP's statement)", "get_flops.py", "1024x1024",
                   "nearly cancelling", "not element-wise operations", "At 847 classes: 421 MiB in chunks vs 3724 MiB"):
        assert phrase in notes, phrase
    gone = cost.cost_table([], gpu_benchmark=tmp_path / "nowhere" / "device_check.jsonl")
    assert not [r for r in gone.rows if r[0] == cost.GROUP_EVAL]
    assert "No evaluation-scaling measurement" in " ".join(gone.notes)


def test_text_share_is_counted_from_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """VOC (one template, 15 seen classes): LDVC's step carries its prompted text encoder, the ZegCLIP
    baseline's carries none; both share the image encoder."""
    from ldvc.reports.counts import count_training_steps

    steps = count_training_steps("voc", True)
    ld, zc = steps["lctd"], steps["zegclip"]
    assert zc.text == 0 and 0 < ld.text < ld.text_unshared < 0.01 * ld.total
    assert (ld.batch, ld.classes, ld.templates) == (16, 15, 1) and ld.total > zc.total



def test_the_count_stage_record_is_what_the_report_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """reports/counts.json (the `count` stage) round-trips, and a cost table given it counts nothing
    itself: the report stage, which re-runs after every experiment, never rebuilds ViT-B/16 models."""
    import ldvc.reports.cost as cost
    import ldvc.reports.counts as counts

    model = counts.ModelCount(learnable=8_040_000, as_zegclip_counts=13_820_000, gflops=110.25, text_gflops=3.8,
                              window=512, classes=20)
    step = counts.StepCount(12200.0, 2598.0, None, 16, 15, 1)
    record = counts.PaperCounts(models={("voc", "zegclip"): model}, steps={"voc": {"lctd": step, "zegclip": step}},
                                failures={"LDVC at the voc paper size": "RuntimeError: out of shapes"})
    path = tmp_path / "counts.json"
    counts.write_counts(record, path)
    assert counts.read_counts(path) == record

    def never(*args: object) -> None:
        raise AssertionError("the cost table counted although it was given the count stage's record")

    monkeypatch.setattr(counts, "count_paper_model", never)
    monkeypatch.setattr(counts, "count_training_steps", never)
    table = cost.cost_table([], paper_counts=counts.read_counts(path), gpu_benchmark=tmp_path / "device_check.jsonl")
    voc = {r[1]: r for r in table.rows if r[0] == cost.GROUP_COUNTED and r[2] == "VOC"}
    assert voc["ZegCLIP (counted)"][4:7] == ["13.82 [C]", "8.04 [C]", "110.2 [C]"]
    assert voc["LDVC (counted)"][4:7] == ["-", "-", "-"]
    assert "LDVC at the voc paper size: could not be counted (RuntimeError: out of shapes)" in " ".join(table.notes)
    assert [r[2] for r in table.rows if r[0] == cost.GROUP_TEXT] == ["VOC", "VOC"]  # only what was counted

    path.write_text('{"format": 1, "models": {"voc/zegclip": {"gflops": 1.0}}, "steps": {}}')
    with pytest.raises(counts.CountsError, match=r"counts\.json: malformed counts record .*dvc repro count"):
        counts.read_counts(path)
    with pytest.raises(counts.CountsError, match="not found; re-create it with `dvc repro count`"):
        counts.read_counts(tmp_path / "nowhere.json")
