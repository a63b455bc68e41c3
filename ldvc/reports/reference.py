"""Published reference numbers for the report tables, each tagged with where it came from.

Sources: /work/shared/reference/protocol.md ("Reference numbers", "What LDVC claims") and the
public READMEs named in the notes (read at the commits given there). Numbers are percentages
(or M parameters, GFLOPs, FPS) with one decimal, as printed. Every number carries a source tag so
a reader can tell a published number from one we derived, counted or reproduced:

- ``paper``: printed in the method's own paper (the older baselines' hIoU values are the ones the
  ZegCLIP paper reports for them);
- ``derived``: not printed anywhere, computed by us; the row's note says how (LDVC's unseen mIoU =
  ZegCLIP's + the "+4.5 VOC / +3.6 COCO-Stuff" gains of the LDVC abstract, assuming the gain is
  over ZegCLIP; Cascade-CLIP's PASCAL Context-59 hIoU = 2SU/(S+U) of its README's S and U);
- ``README``: read from a public repository's README (file, line and commit in the notes);
- ``counted``: counted by this pipeline from a model definition (cost table only, never here);
- ``benchmark``: measured by this pipeline's GPU benchmark (cost table only, never here);
- ``reproduced``: measured by this pipeline (rows built from records only, never here).

Our choices:
- LDVC's transductive claim ("about the same as prior art") is a sentence, not a number, so it
  becomes a table note rather than a row of guessed values.
- A README number is added where the paper's number is not in protocol.md (pAcc of ZegCLIP /
  CLIP-RC, Cascade-CLIP on Context-59, the fully supervised rows, ZegCLIP's efficiency); where a
  README and the paper disagree (ZegCLIP COCO-Stuff inductive mIoU(U): paper 41.4, README 41.1)
  the paper's number is kept and the disagreement is a note.
- No cross-dataset reference row: ZegCLIP's README gives the commands (COCO-Stuff -> VOC /
  Context) but no numbers, and we found no citable source for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCES: tuple[str, ...] = ("paper", "derived", "README", "counted", "benchmark", "reproduced")
# One-letter cell markers; the legend of the markers a table uses is printed under it. The
# reproduced marker has two variants for the record's protocol status (ldvc/protocol.py).
SOURCE_MARKERS: dict[str, str] = {
    "paper": "P",
    "derived": "D",
    "README": "M",
    "counted": "C",
    "benchmark": "B",
    "reproduced": "R",
    "reproduced_deviating": "R*",
    "reproduced_unknown": "R?",
}
SOURCE_LEGEND: dict[str, str] = {
    "paper": "published in the method's paper",
    "derived": "derived by us, not printed anywhere (how: see the notes)",
    "README": "read from the method's public README (file, line and commit in the notes)",
    "counted": "counted by this pipeline from the model definition (ldvc/model/flops.py, param_count.py; "
               "no weights needed)",
    "benchmark": "measured by this pipeline's GPU benchmark (benchmarks/throughput.py, random weights: speed does "
                 "not depend on them)",
    "reproduced": "reproduced by this pipeline, conformant to the row's protocol (presets/<protocol>.yaml)",
    "reproduced_deviating": "reproduced by this pipeline with deviations from the row's protocol, listed in the "
                            "notes: not comparable with published numbers as is",
    "reproduced_unknown": "reproduced by this pipeline, protocol conformance not recorded (a record written before "
                          "ldvc recorded it): re-run its evaluation",
}

# Table columns, in the paper's order; keys are the metric names our evaluation logs.
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("pAcc", "pAcc"),
    ("mIoU_seen", "mIoU(S)"),
    ("mIoU_unseen", "mIoU(U)"),
    ("hIoU", "hIoU"),
)
# Cross-dataset evaluations: every target class is "seen", so only these two mean something.
CROSS_METRIC_COLUMNS: tuple[tuple[str, str], ...] = (("pAcc", "pAcc"), ("mIoU", "mIoU"))
ZERO_SHOT_SETTINGS: tuple[str, ...] = ("inductive", "transductive")
SETTINGS: tuple[str, ...] = ZERO_SHOT_SETTINGS + ("fully_supervised",)  # the main table's blocks
SETTING_TITLES: dict[str, str] = {
    "inductive": "inductive",
    "transductive": "transductive",
    "fully_supervised": "fully supervised (upper bound, not zero-shot)",
}
# Dataset labels (metrics.json "dataset" / ldvc.pipeline.dataset_label) -> column-group titles;
# reference datasets first.
DATASET_TITLES: dict[str, str] = {
    "voc": "PASCAL VOC 2012",
    "coco_stuff": "COCO-Stuff 164k",
    "context59": "PASCAL Context-59",
    "voc21": "PASCAL VOC 2012 with background",
    "context60": "PASCAL Context-60",
    "context459": "PASCAL Context-459",
    "ade20k_150": "ADE20K-150",
    "ade20k_847": "ADE20K-847",
    "synthetic": "Synthetic (ours)",
    "synthetic_shifted": "Synthetic, shifted world (ours)",
    "synthetic_wide": "Synthetic, wide world (ours)",
    "coco_json": "COCO-JSON (user data)",
}
REFERENCE_DATASETS: tuple[str, ...] = ("voc", "coco_stuff", "context59")

# Where the README numbers were read (repository, commit).
ZEGCLIP_README = "ZiqinZhou66/ZegCLIP README.md (commit 9ba4bb5, 2023-05-11)"
CLIP_RC_README = "uyzhang/CLIP-RC README.md (commit 68927c1, 2024-07-10)"
CASCADE_README = "HVision-NKU/Cascade-CLIP README.md (commit dadf40d, 2024-08-15)"


@dataclass(frozen=True)
class RefValue:
    """One published (or derived) number and its source tag."""

    value: float
    source: str = "paper"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; use one of {SOURCES}")


@dataclass(frozen=True)
class ReferenceRow:
    """A reference method in one setting: dataset -> metric -> RefValue (missing = not reported)."""

    method: str
    setting: str
    values: dict[str, dict[str, RefValue]] = field(default_factory=dict)
    note: str = ""


def _p(s: float, u: float, h: float, pacc: float | None = None, pacc_source: str = "paper") -> dict[str, RefValue]:
    """mIoU(S) / mIoU(U) / hIoU as published in the method's paper (pAcc with its own source)."""
    out = {"mIoU_seen": RefValue(s), "mIoU_unseen": RefValue(u), "hIoU": RefValue(h)}
    if pacc is not None:
        out["pAcc"] = RefValue(pacc, pacc_source)
    return out


def _m(pacc: float | None, s: float, u: float, h: float | None = None) -> dict[str, RefValue]:
    """A README row: pAcc / mIoU(S) / mIoU(U) / hIoU; a missing hIoU is derived as 2SU/(S+U)."""
    out = {"mIoU_seen": RefValue(s, "README"), "mIoU_unseen": RefValue(u, "README")}
    out["hIoU"] = RefValue(h, "README") if h is not None else RefValue(round(harmonic_mean(s, u), 1), "derived")
    if pacc is not None:
        out["pAcc"] = RefValue(pacc, "README")
    return out


def harmonic_mean(s: float, u: float) -> float:
    """hIoU = 2SU/(S+U), as the ZS3 papers compute it."""
    return 2 * s * u / (s + u) if s + u else 0.0


def _h(voc: float, coco: float) -> dict[str, dict[str, RefValue]]:
    """Older baselines: only the inductive hIoU, as the ZegCLIP paper reports it."""
    return {"voc": {"hIoU": RefValue(voc)}, "coco_stuff": {"hIoU": RefValue(coco)}}


_OLDER = "inductive hIoU as reported in the ZegCLIP paper"

REFERENCE_ROWS: tuple[ReferenceRow, ...] = (
    # ---- inductive -------------------------------------------------------------------------
    ReferenceRow("SPNet", "inductive", _h(26.1, 14.0), _OLDER),
    ReferenceRow("ZS3Net", "inductive", _h(28.7, 15.0), _OLDER),
    ReferenceRow("CaGNet", "inductive", _h(39.7, 18.2), _OLDER),
    ReferenceRow("SIGN", "inductive", _h(41.7, 20.9), _OLDER),
    ReferenceRow("ZegFormer", "inductive", _h(73.3, 34.8), _OLDER),
    ReferenceRow("zsseg", "inductive", _h(77.5, 37.8), _OLDER),
    ReferenceRow(
        "ZegCLIP", "inductive", {"voc": _p(91.9, 77.8, 84.3, 94.6), "coco_stuff": _p(40.2, 41.4, 40.8, 62.0)},
        f"inductive: the paper's numbers; {ZEGCLIP_README} line 49 prints COCO-Stuff mIoU(U) 41.1 (the paper "
        "41.4, kept here)",
    ),
    ReferenceRow(
        "CLIP-RC", "inductive",
        {"voc": _p(92.8, 84.4, 88.4, 95.8, "README"), "coco_stuff": _p(40.9, 41.6, 41.2, 63.1, "README")},
        f"inductive pAcc from {CLIP_RC_README} lines 35 (VOC) and 38 (COCO-Stuff)",
    ),
    ReferenceRow(
        "Cascade-CLIP", "inductive",
        {"voc": _p(92.5, 83.0, 87.5), "coco_stuff": _p(41.2, 43.4, 42.3), "context59": _m(None, 55.9, 47.2)},
        f"inductive PASCAL Context-59 mIoU(S) / mIoU(U) from {CASCADE_README} line 59 (mean of several runs, "
        "± 0.5 / ± 1.0); hIoU derived by us as 2SU/(S+U)",
    ),
    ReferenceRow(
        "LDVC",
        "inductive",
        {
            "voc": {"mIoU_unseen": RefValue(77.8 + 4.5, "derived")},
            "coco_stuff": {"mIoU_unseen": RefValue(41.4 + 3.6, "derived")},
        },
        "LDVC mIoU(U) = ZegCLIP + the abstract's +4.5 (VOC) / +3.6 (COCO-Stuff), assuming the gain is "
        "over ZegCLIP",
    ),
    # ---- transductive ----------------------------------------------------------------------
    ReferenceRow(
        "ZegCLIP", "transductive",
        {"voc": _p(92.3, 89.9, 91.1, 96.2, "README"), "coco_stuff": _p(40.7, 59.9, 48.5, 69.2, "README")},
        f"transductive pAcc from {ZEGCLIP_README} lines 47 (VOC) and 50 (COCO-Stuff)",
    ),
    ReferenceRow(
        "CLIP-RC", "transductive",
        {"voc": _p(93.9, 92.2, 93.0, 97.0, "README"), "coco_stuff": _p(42.0, 60.8, 49.7, 69.9, "README")},
        f"transductive pAcc from {CLIP_RC_README} lines 36 (VOC) and 39 (COCO-Stuff)",
    ),
    ReferenceRow(
        "Cascade-CLIP", "transductive",
        {"voc": _p(93.6, 93.2, 93.4), "coco_stuff": _p(41.7, 62.5, 50.0), "context59": _m(None, 56.4, 55.0)},
        f"transductive PASCAL Context-59 mIoU(S) / mIoU(U) from {CASCADE_README} line 60 (mean of several "
        "runs, ± 0.5 / ± 1.0); hIoU derived by us as 2SU/(S+U)",
    ),
    # ---- fully supervised (every class seen in training; the zero-shot partition for S/U) ----
    ReferenceRow(
        "ZegCLIP", "fully_supervised",
        {"voc": _m(96.3, 92.4, 90.9, 91.6), "coco_stuff": _m(69.9, 40.7, 63.2, 49.6)},
        f"fully supervised: {ZEGCLIP_README} lines 48 (VOC) and 51 (COCO-Stuff), mean of several runs",
    ),
    ReferenceRow(
        "CLIP-RC", "fully_supervised",
        {"voc": _m(97.1, 94.1, 93.4, 93.7), "coco_stuff": _m(70.8, 42.9, 64.1, 51.4)},
        f"fully supervised: {CLIP_RC_README} lines 37 (VOC) and 40 (COCO-Stuff)",
    ),
)

# Said in the paper but not a number: printed under the main table.
REFERENCE_NOTES: tuple[str, ...] = (
    "LDVC transductive: the paper states results 'about the same as prior art' without a number we "
    "could cite, so no LDVC reference row is listed there.",
)
CROSS_REFERENCE_NOTE = (
    "No reference row: ZegCLIP's published cross-dataset numbers (COCO-Stuff -> PASCAL VOC / PASCAL Context, "
    "configs/cross_dataset/coco-to-{voc,context}.py) could not be found in a citable source (its README gives "
    "the commands only), so none is listed."
)


def reference_rows(setting: str) -> list[ReferenceRow]:
    """The reference rows of one setting, in table order."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; use one of {SETTINGS}")
    return [r for r in REFERENCE_ROWS if r.setting == setting]


# --------------------------------------------------------------------------------------------
# Efficiency (cost table)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostReference:
    """A method's published efficiency on one dataset: learnable params (M), GFLOPs, FPS."""

    method: str
    dataset: str
    learnable_params_m: RefValue
    gflops: RefValue
    fps: RefValue
    hardware: str


COST_REFERENCES: tuple[CostReference, ...] = (
    CostReference("ZegCLIP", "voc", RefValue(13.8, "README"), RefValue(110.4, "README"), RefValue(9.0, "README"),
                  "1x GTX 1080 Ti"),
    CostReference("ZegCLIP", "coco_stuff", RefValue(14.6, "README"), RefValue(123.9, "README"),
                  RefValue(6.7, "README"), "1x GTX 1080 Ti"),
)


# --------------------------------------------------------------------------------------------
# Open-vocabulary transfer (open_vocab table): trained on COCO-Stuff, evaluated on other datasets'
# full vocabularies. Only rows whose numbers were found in a citable source with a ViT-B/16 CLIP.
# --------------------------------------------------------------------------------------------

# Target columns: dataset label (ldvc.pipeline.dataset_label of the target) -> the name the
# open-vocabulary papers print (SAN: ADE-847 / PC-459 / ADE-150 / PC-59 / VOC; CAT-Seg: A-847,
# PC-459, A-150, PC-59, PAS-20, PAS-20b; FC-CLIP: A-847, PC-459, A-150, PC-59, PAS-21, PAS-20), in
# CAT-Seg's order: the largest vocabulary first.
OPEN_VOCAB_TARGETS: dict[str, str] = {
    "ade20k_847": "A-847",
    "context459": "PC-459",
    "ade20k_150": "A-150",
    "context59": "PC-59",
    "voc": "PAS-20",
    "voc21": "PAS-21",
}
OPEN_VOCAB_METRIC: tuple[str, str] = ("mIoU", "mIoU")

CAT_SEG_README = "cvlab-kaist/CAT-Seg README.md (commit 6d3a188, 2024-04-11)"
DEOP_README = "CongHan0808/DeOP README.md (commit 614454c, 2024-02-16)"


@dataclass(frozen=True)
class OpenVocabReference:
    """A method's published open-vocabulary mIoU per target (dataset label -> RefValue) and the
    protocol facts a reader needs to compare it (from its configs and code, cited in `note`)."""

    method: str
    values: dict[str, RefValue]
    training: str  # training set and its classes
    clip: str  # CLIP (and any other backbone)
    resolution: str  # training crop / test size
    clip_finetuned: str  # whether the CLIP weights were trained
    note: str


OPEN_VOCAB_REFERENCES: tuple[OpenVocabReference, ...] = (
    OpenVocabReference(
        "DeOP",
        {"ade20k_847": RefValue(7.1, "README"), "context459": RefValue(9.4, "README"),
         "ade20k_150": RefValue(22.9, "README"), "context59": RefValue(48.8, "README"),
         "voc": RefValue(91.7, "README")},
        training="COCO-Stuff-156 (the 156 seen classes, not all 171)",
        clip="ViT-B/16 (+ ResNet-101c mask branch)",
        resolution="640x640 training crops",
        clip_finetuned="no (frozen; prompt tokens trained)",
        note=f"{DEOP_README} line 33, the image resources/results-crossdataset.jpg (cross-dataset table, row "
             "'DeOP (ours)', columns VOC-20, PC-59, A-150, PC-459, A-847; backbone R101c, training set "
             "COCO-Stuff-156); CLIP ViT-B/16: configs/pcontext-59/cross_dataset_test_only.yaml line 16; frozen "
             "except its learned positions / deep prompt embeddings: mask_former/modeling/clip_adapter/utils.py "
             "lines 186-191; 640x640 crops: configs/coco-stuff-164k-171/Base-COCOStuff164K-171.yaml line 44, "
             "which its COCO-Stuff-156 configs inherit. Trained without the 15 unseen classes of the ZS3 split",
    ),
    OpenVocabReference(
        "CAT-Seg (B)",
        {"ade20k_847": RefValue(12.0, "README"), "context459": RefValue(19.0, "README"),
         "ade20k_150": RefValue(31.8, "README"), "context59": RefValue(57.5, "README"),
         "voc": RefValue(94.6, "README"), "voc21": RefValue(77.3, "README")},
        training="COCO-Stuff (171 classes)",
        clip="ViT-B/16",
        resolution="384x384 training crops",
        clip_finetuned="yes (attention query/value projections)",
        note=f"{CAT_SEG_README} lines 90-97 (row 'CAT-Seg (B)', CLIP ViT-B/16); 384x384 crops, 80k iterations, "
             "batch 4, CLIP_FINETUNE 'attention': configs/vitb_384.yaml lines 30, 39, 44, 47; the fine-tuned "
             "weights are the q_proj / v_proj of CLIP's attention layers: cat_seg/cat_seg_model.py lines 62-67. "
             "Its PAS-20b (our PAS-21 column) scores the background as a 21st class, as PAS-21 does, but prompts "
             "it with 39 PASCAL-Context class names (datasets/voc20b.json) instead of the word 'background'",
    ),
)

OPEN_VOCAB_REFERENCE_NOTE = (
    "No row for SAN, FC-CLIP, zsseg or ZegFormer: SAN's README (MendelXu/SAN, commit e19262d) prints no numbers "
    "and its paper's table (arXiv 2302.12242) could not be read from this project's sources (its repository's "
    "training log resources/san_vit_b_16.log holds evaluations made during training, not the published table, so "
    "it is not used); FC-CLIP (bytedance/fc-clip README, commit 2b0bbe2, lines 36-171) publishes ResNet and "
    "ConvNeXt-Large CLIP backbones only, no ViT-B/16; the zsseg (MendelXu/zsseg.baseline, commit d77c3af) and "
    "ZegFormer (dingjiansw101/ZegFormer, commit 8cb9e8f) READMEs print no numbers and their papers' tables could "
    "not be read here. DeOP's README also prints a 'SimBase' (zsseg) row; it is not zsseg's own publication and "
    "is not used. Numbers are never filled in from memory."
)
