"""Stage `inputs` (always runs, cheap): digests of every external input the download stages read
(annotation files, image folders, extracted_dir, local archives, mirror URLs without checksums).

DVC tracks only the files a stage lists; the download stage's external inputs are named by params
and can change without them. This stage records their digests in data/inputs.json (and
data/inputs_cross.json for the cross-dataset targets); the download stages depend on those files,
so an edited input re-runs them and an unchanged one does not. It logs no MLflow run: the download
stage logs the digests it consumed.
"""

from __future__ import annotations

from ldvc.config import load_config, repo_root
from ldvc.data.inputs import fingerprint_inputs
from ldvc.files import write_json_atomic
from ldvc.pipeline import CROSS_INPUTS_FILE, INPUTS_FILE, check_code_tree


def main() -> None:
    check_code_tree()
    cfg = load_config("params.yaml")  # type/range checks only: this stage runs on every `dvc repro`
    root = repo_root()
    write_json_atomic(INPUTS_FILE, fingerprint_inputs(cfg.data, root))
    write_json_atomic(CROSS_INPUTS_FILE,
                      {name: fingerprint_inputs(cfg.cross_target(name), root) for name in sorted(cfg.cross_dataset)})


if __name__ == "__main__":
    main()
