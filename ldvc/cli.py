"""`ldvc` command line: a small subcommand registry (timm-style: commands are entries, not if-chains).

Adding a command is one `register(...)` call with a function that adds its arguments and one that
runs it (return value = exit status), e.g. for a `preset` command:

    from ldvc.presets import add_preset_arguments, run_preset
    register("preset", "rewrite params.yaml for a paper setup", add_preset_arguments, run_preset)

Commands here: `predict` (any image, any class names), and `train` / `evaluate`, thin wrappers of
`ldvc.train.loop.train_segmentor` / `ldvc.eval.evaluate.evaluate_checkpoint` that can be started
with `accelerate launch [...] -m ldvc train ...` (the DVC stages call the same functions);
`mlflow-sync` logs what stages kept in the pending journal while the tracking server was away
(ldvc/tracking_journal.py, docs/team.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], int]) -> None:
    if name in COMMANDS:
        raise ValueError(f"ldvc subcommand {name!r} registered twice")
    COMMANDS[name] = Command(name, help, add_arguments, run)


# ---------------------------------------------------------------------------------------------- predict


CHECKPOINT_HELP = ("model.pt, checkpoints/iter_XXXXXX.pt or a run folder; or from the MLflow store "
                   "($MLFLOW_TRACKING_URI, else the repository's mlflow.db): a training run id, "
                   "runs:/<run_id>/<path> or models:/<model_id>")


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", type=Path, help="image files (any size, any format PIL reads)")
    p.add_argument("--classes", required=True, help='comma-separated class names, e.g. "cat,dog,grass"')
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: predictions)")
    p.add_argument("--clip-weights", type=Path, default=None,
                   help="CLIP weights file (default: the path recorded in the checkpoint)")
    p.add_argument("--mode", choices=["whole", "slide"], default=None,
                   help="inference mode (default: eval.mode of the checkpoint's config)")


def _predict_run(args: argparse.Namespace) -> int:
    from ldvc.predict import parse_classes, predict

    results = predict(args.images, parse_classes(args.classes), args.checkpoint, args.out, args.clip_weights,
                      args.mode)
    for r in results:
        print(f"{r['image']}: {r['labels']}, {r['overlay']} (classes found: {', '.join(r['classes_found'])})")
    return 0


# ---------------------------------------------------------------------------------------------- train / evaluate


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (default params.yaml)")
    p.add_argument("--setting", choices=["inductive", "transductive"], default="inductive")
    p.add_argument("--split", type=Path, required=True, help="split JSON written by the split stage")
    p.add_argument("--data-root", type=Path, default=None, help="canonical dataset (default: data.root)")
    p.add_argument("--clip-weights", type=Path, default=None,
                   help="CLIP weights file (train default: random init; evaluate default: the file the checkpoint "
                        "recorded, looked up from the cwd, then the repository root)")
    p.add_argument("--out", type=Path, required=True, help="run folder")


def _load(args: argparse.Namespace):
    from ldvc.config import load_config

    cfg = load_config(args.params)
    with open(args.split) as f:
        split = json.load(f)
    return cfg, split, args.data_root or Path(cfg.data.root)


def _train_args(p: argparse.ArgumentParser) -> None:
    _common_args(p)
    p.add_argument("--init-checkpoint", type=Path, default=None,
                   help="transductive: the inductive checkpoint at transductive.init_iter")


def _train_run(args: argparse.Namespace) -> int:
    from ldvc.pipeline import is_main_process
    from ldvc.train.loop import train_segmentor

    cfg, split, root = _load(args)
    summary = train_segmentor(cfg, args.setting, split, root, args.clip_weights, args.out, args.init_checkpoint)
    if is_main_process():  # one summary line, not one per rank glued together by the launcher
        print(json.dumps(summary))
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    _common_args(p)
    p.add_argument("--checkpoint", default=None,
                   help=f"checkpoint to evaluate (default: eval.checkpoint, else OUT/model.pt): {CHECKPOINT_HELP}")


def _evaluate_run(args: argparse.Namespace) -> int:
    from ldvc.checkpoint_uri import resolve_checkpoint, resolve_clip_weights
    from ldvc.eval.evaluate import evaluate_checkpoint
    from ldvc.pipeline import is_main_process
    from ldvc.train.checkpoint import load_checkpoint

    cfg, split, root = _load(args)
    ckpt = resolve_checkpoint(args.checkpoint or cfg.eval.checkpoint or args.out / "model.pt")
    # without --clip-weights: the CLIP the checkpoint was trained with (recorded path, sha256-checked later)
    clip_weights = resolve_clip_weights(load_checkpoint(ckpt)["clip"].get("weights"), ckpt, args.clip_weights)
    metrics = evaluate_checkpoint(cfg, args.setting, split, root, ckpt, clip_weights, args.out)
    if is_main_process():
        print(json.dumps({k: v for k, v in metrics.items() if k != "per_class"}))
    return 0


register("predict", "segment images with any class names", _predict_args, _predict_run)
register("train", "train a segmentor (accelerate launch -m ldvc train ...)", _train_args, _train_run)
register("evaluate", "evaluate a checkpoint on the validation split", _evaluate_args, _evaluate_run)


def _preset_args(p: argparse.ArgumentParser) -> None:
    from ldvc.presets import add_preset_arguments

    add_preset_arguments(p)


def _preset_run(args: argparse.Namespace) -> int:
    from ldvc.presets import run_preset

    return run_preset(args)


register("preset", "rewrite params.yaml for a paper setup (voc, coco_stuff, context59) or the default (synthetic)",
         _preset_args, _preset_run)


def _import_zegclip_args(p: argparse.ArgumentParser) -> None:
    from ldvc.zegclip_import import add_arguments

    add_arguments(p)


def _import_zegclip_run(args: argparse.Namespace) -> int:
    from ldvc.zegclip_import import run

    return run(args)


register("import-zegclip", "convert a released ZegCLIP checkpoint (mmseg .pth) into an ldvc checkpoint",
         _import_zegclip_args, _import_zegclip_run)


# ---------------------------------------------------------------------------------------------- mlflow-sync


def _sync_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="log to this store instead of the one each journal was written for")
    p.add_argument("--list", action="store_true", help="only list the pending records, log nothing")


def _sync_run(args: argparse.Namespace) -> int:
    """Log what stages kept in <repo>/mlflow-pending/ while the tracking server was away (exit 1 while
    the server is still unreachable or a stage is still writing, 0 when nothing is left)."""
    from ldvc.config import repo_root
    from ldvc.tracking_journal import describe, iter_ops, pending_journals, sync

    root = repo_root()
    journals = pending_journals(root)
    if not journals:
        print(f"nothing pending in {root / 'mlflow-pending'}")
        return 0
    if args.list:
        for journal in journals:
            print(journal.name)
            for line in describe([op for _, op in iter_ops(journal)]):
                print(f"    {line}")
        return 0
    report = sync(root, args.tracking_uri)
    left = report.left + report.skipped
    print(f"mlflow-sync: {len(report.synced)} journal(s) logged, {len(left)} left")
    return 1 if left else 0


register("mlflow-sync", "log the MLflow records that stages kept while the tracking server was away",
         _sync_args, _sync_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ldvc", description="LDVC / ZegCLIP zero-shot segmentation")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS.values():
        cmd.add_arguments(sub.add_parser(cmd.name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # user errors (bad path, bad checkpoint, bad classes) as one clear line, not a traceback
        print(f"ldvc {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
