"""Published reference numbers for the main table, each tagged with where it came from.

Source: /work/shared/reference/protocol.md, "Reference numbers" and "What LDVC claims". The
numbers are percentages with one decimal, as printed by the papers. Every number carries a
source tag so a reader can tell a published number from one we derived or reproduced:

- ``paper``: printed in the method's own paper (the older baselines' hIoU values are the ones the
  ZegCLIP paper reports for them);
- ``derived``: not printed anywhere, computed by us from a stated claim (LDVC's unseen mIoU =
  ZegCLIP's + the "+4.5 VOC / +3.6 COCO-Stuff" gains of the LDVC abstract, assuming the gain is
  over ZegCLIP; our assumption);
- ``README``: read from a public repository's README (none of protocol.md's numbers is; kept so a
  number added later can say so);
- ``reproduced``: measured by this pipeline (only rows built from records, never here).

Our choice: LDVC's transductive claim ("about the same as prior art") is a sentence, not a number,
so it becomes a table note rather than a row of guessed values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCES: tuple[str, ...] = ("paper", "derived", "README", "reproduced")
# One-letter cell markers; the legend is printed under every table.
SOURCE_MARKERS: dict[str, str] = {"paper": "P", "derived": "D", "README": "M", "reproduced": "R"}
SOURCE_LEGEND: dict[str, str] = {
    "paper": "published in the method's paper",
    "derived": "derived by us from the LDVC abstract's stated gains over ZegCLIP (not printed)",
    "README": "read from the method's public README",
    "reproduced": "reproduced by this pipeline",
}

# Table columns, in the paper's order; keys are the metric names our evaluation logs.
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("pAcc", "pAcc"),
    ("mIoU_seen", "mIoU(S)"),
    ("mIoU_unseen", "mIoU(U)"),
    ("hIoU", "hIoU"),
)
SETTINGS: tuple[str, ...] = ("inductive", "transductive")
# Dataset keys (ldvc.dataset tag / data.dataset) -> column-group titles; reference datasets first.
DATASET_TITLES: dict[str, str] = {
    "voc": "PASCAL VOC 2012",
    "coco_stuff": "COCO-Stuff 164k",
    "synthetic": "Synthetic (ours)",
    "coco_json": "COCO-JSON (user data)",
}
REFERENCE_DATASETS: tuple[str, ...] = ("voc", "coco_stuff")


@dataclass(frozen=True)
class RefValue:
    """One published (or derived) percentage and its source tag."""

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


def _p(s: float, u: float, h: float, pacc: float | None = None) -> dict[str, RefValue]:
    """mIoU(S) / mIoU(U) / hIoU (and pAcc when printed) as published in the method's paper."""
    out = {"mIoU_seen": RefValue(s), "mIoU_unseen": RefValue(u), "hIoU": RefValue(h)}
    if pacc is not None:
        out["pAcc"] = RefValue(pacc)
    return out


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
        "ZegCLIP", "inductive", {"voc": _p(91.9, 77.8, 84.3, 94.6), "coco_stuff": _p(40.2, 41.4, 40.8, 62.0)}
    ),
    ReferenceRow("CLIP-RC", "inductive", {"voc": _p(92.8, 84.4, 88.4), "coco_stuff": _p(40.9, 41.6, 41.2)}),
    ReferenceRow(
        "Cascade-CLIP", "inductive", {"voc": _p(92.5, 83.0, 87.5), "coco_stuff": _p(41.2, 43.4, 42.3)}
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
    ReferenceRow("ZegCLIP", "transductive", {"voc": _p(92.3, 89.9, 91.1), "coco_stuff": _p(40.7, 59.9, 48.5)}),
    ReferenceRow("CLIP-RC", "transductive", {"voc": _p(93.9, 92.2, 93.0), "coco_stuff": _p(42.0, 60.8, 49.7)}),
    ReferenceRow(
        "Cascade-CLIP", "transductive", {"voc": _p(93.6, 93.2, 93.4), "coco_stuff": _p(41.7, 62.5, 50.0)}
    ),
)

# Said in the paper but not a number: printed under the main table.
REFERENCE_NOTES: tuple[str, ...] = (
    "LDVC transductive: the paper states results 'about the same as prior art' without a number we "
    "could cite, so no LDVC reference row is listed there.",
)


def reference_rows(setting: str) -> list[ReferenceRow]:
    """The reference rows of one setting, in table order."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; use one of {SETTINGS}")
    return [r for r in REFERENCE_ROWS if r.setting == setting]
