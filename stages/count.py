"""Stage `count`: the cost table's paper-size counts (ldvc/reports/counts.py), once per code change.

ZegCLIP's baseline and LDVC at the VOC / COCO-Stuff presets' paper size (parameters, GFLOPs per
512x512 window) and one training step of each paper preset (the text encoder's share), built with
random weights on the meta device; written to reports/counts.json, which the report stage reads.
It reads no params: what it counts depends only on the code and the presets (its DVC deps), so an
experiment never re-runs it.
"""

from __future__ import annotations

from ldvc.pipeline import REPORTS, load_stage_config
from ldvc.reports.counts import COUNTS_FILE, count_paper, write_counts
from ldvc.tracking import stage_run

OUT = REPORTS / COUNTS_FILE


def main() -> None:
    cfg = load_stage_config()
    with stage_run("count", cfg, record_to=REPORTS / "count_run.json") as run:
        counts = count_paper(progress=True)
        write_counts(counts, OUT)
        for (preset, method), c in counts.models.items():
            run.log_metrics({f"{preset}.{method}.gflops": c.gflops, f"{preset}.{method}.learnable": c.learnable})
        for preset, steps in counts.steps.items():
            run.log_metrics({f"{preset}.step.text_share": steps["lctd"].share})
        run.log_artifact(OUT)
        for what, why in counts.failures.items():
            print(f"[count] {what}: could not be counted ({why})")
        print(f"[count] {len(counts.models)} models, {len(counts.steps)} training steps counted -> {OUT}")


if __name__ == "__main__":
    main()
