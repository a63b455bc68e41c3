#!/usr/bin/env bash
# Fetch the wheels the GPU check (benchmarks/gpu.py) needs but the GPU machine lacks, into .whl/.
#
#   bash benchmarks/gpu_wheels.sh            # on a machine with a package index (this one)
#
# Why: the GPU machine has torch, accelerate, timm, torchvision, numpy, pillow, pyyaml,
# safetensors, huggingface_hub, tqdm ... but NOT open_clip_torch, and it reaches no package index
# (toolchain.md). benchmarks/gpu.py installs these wheels from .whl/ (pip install --no-index
# --no-deps --target .whl/site-<python>) when `import open_clip` fails. .whl/ is gitignored but
# travels with the working tree, which must stay under 64 MiB: this script fails above 32 MiB.
#
# What: open_clip_torch itself and what it imports at `import open_clip` that the GPU machine
# lacks: ftfy (its tokenizer) -> wcwidth (ftfy's), regex (the tokenizer's pattern; a compiled
# wheel, so one per CPython version in GPU_PYTHON_VERSIONS, default 3.10 to 3.14, and per CPU in
# GPU_ARCHS, default x86_64 and aarch64, since neither is known here); plus ruamel.yaml (pure Python; ldvc.config reads
# params.yaml and the presets with it). open_clip's other imports (torch, torchvision, timm,
# huggingface_hub, safetensors, tqdm, numpy) are on the GPU machine; transformers, nltk and fsspec
# are optional imports it skips when missing. The versions are the ones installed in this
# project's environment (.venv), so the GPU check runs the same open_clip as the tests.
# Our choices: --no-deps everywhere (nothing else may sneak in), binary wheels only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=.whl
mkdir -p "$OUT"
version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
PURE="open_clip_torch==$(version open_clip_torch) ftfy==$(version ftfy) wcwidth==$(version wcwidth) ruamel.yaml==$(version ruamel.yaml)"
REGEX="regex==$(version regex)"
fetch() {  # fetch ARCH PYVER REQUIREMENT...: binary wheels for manylinux on ARCH and CPython PYVER
    local arch=$1 pyver=$2
    shift 2
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$OUT" --python-version "$pyver" \
        --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" "$@"
}
for arch in ${GPU_ARCHS:-x86_64 aarch64}; do  # the GPU machine's CPU is not known here either
    # shellcheck disable=SC2086  # PURE is a list of requirements; pure wheels come once, wcwidth per arch
    fetch "$arch" 3.11 $PURE
    for v in ${GPU_PYTHON_VERSIONS:-3.10 3.11 3.12 3.13 3.14}; do
        # the pinned regex, else the newest one built for that Python (regex dropped 3.10 in 2026)
        fetch "$arch" "$v" "$REGEX" 2>/dev/null || fetch "$arch" "$v" regex \
            || echo "gpu_wheels: no regex wheel for Python $v on $arch (skipped)" >&2
    done
done
size_kib=$(du -sk "$OUT" | cut -f1)
ls -1 "$OUT"/*.whl
echo "gpu_wheels: $(ls "$OUT"/*.whl | wc -l) wheels, ${size_kib} KiB in $OUT"
if [ "$size_kib" -gt $((32 * 1024)) ]; then
    echo "gpu_wheels: $OUT is over 32 MiB; the working tree must stay under 64 MiB" >&2
    exit 1
fi
