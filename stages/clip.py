"""Stage `clip`: the CLIP weights every later stage uses.

`clip.pretrained: pipeline` contrastively pre-trains the small synthetic CLIP on generated
image-caption pairs naming all classes (its zero-shot accuracy is the stage's metric); an open_clip
tag or a local file is resolved and recorded (path + sha256) instead.
"""

from __future__ import annotations

from pathlib import Path

from ldvc.config import repo_root
from ldvc.files import write_json_atomic
from ldvc.model.clip_activation import resolve_activation
from ldvc.model.clip_weights import resolve_weights
from ldvc.pipeline import CLIP_DIR, CLIP_RECORD, METRICS, load_stage_config
from ldvc.tracking import stage_run


def main() -> None:
    cfg = load_stage_config()
    metrics: dict[str, float] = {}
    with stage_run("clip", cfg, record_to=CLIP_DIR / "mlflow_run.json") as run:
        if cfg.clip.pretrained == "pipeline":
            from ldvc.train.clip_pretrain import pretrain_clip

            weights = CLIP_DIR / "clip.safetensors"
            activation, reason = resolve_activation(cfg.clip.model, "pipeline", cfg.clip.activation)
            metrics = pretrain_clip(cfg.clip.model, cfg.clip.pretrain, cfg.data.image_size,
                                    cfg.project.seed, weights, log=run.log_metrics, activation=activation)
            record = {"model": cfg.clip.model, "pretrained": "pipeline", "path": str(weights),
                      **resolve_weights(cfg.clip.model, str(weights), Path.cwd())}
            record["path"] = str(weights)  # keep it relative: experiments run in other directories
        else:
            record = {"model": cfg.clip.model, "pretrained": cfg.clip.pretrained,
                      **resolve_weights(cfg.clip.model, cfg.clip.pretrained, repo_root())}
            # before anything uses them: the activation these weights were trained with, or an error
            activation, reason = resolve_activation(cfg.clip.model, cfg.clip.pretrained, cfg.clip.activation,
                                                    record["path"], record["sha256"])
        record.update(activation=activation, activation_reason=reason)
        print(f"[clip] {cfg.clip.model}: {activation} ({reason})", flush=True)
        run.log_metrics(metrics)
        run.set_tags({"clip.sha256": record.get("sha256", ""), "clip.path": record.get("path", ""),
                      "clip.activation": activation})
        write_json_atomic(CLIP_RECORD, record)
        write_json_atomic(METRICS / "clip.json", {k: round(float(v), 3) for k, v in metrics.items()})


if __name__ == "__main__":
    main()
