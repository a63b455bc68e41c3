"""Stage `inputs_open_vocab` (always runs, cheap): digests of every external input the
prepare_open_vocab stages read (a local ADE20K release for A-847, mirror URLs without checksums, ...)
into data/inputs_open_vocab.json, as the `inputs` stage does for the training data and the
cross-dataset targets: an edited input re-runs its prepare stage, an unchanged one does not. It
logs no MLflow run (the prepare stages log the digests they consumed)."""

from __future__ import annotations

from ldvc.config import ConfigError, check_open_vocab_model, load_config, repo_root
from ldvc.data.inputs import fingerprint_inputs
from ldvc.files import write_json_atomic
from ldvc.pipeline import SECTIONS, check_code_tree


def main() -> None:
    check_code_tree()
    cfg = load_config("params.yaml")  # type/range checks only: this stage runs on every `dvc repro`
    try:  # the first open-vocabulary stage to run: the every-class model they need is checked here first
        check_open_vocab_model(cfg)
    except ConfigError as err:
        raise ConfigError(f"params.yaml: {err}") from None
    root = repo_root()
    section = SECTIONS["open_vocab"]
    write_json_atomic(section.inputs_file, {name: fingerprint_inputs(cfg.target(section.key, name), root)
                                            for name in sorted(cfg.open_vocab.targets)})


if __name__ == "__main__":
    main()
