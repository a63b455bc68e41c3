"""`ldvc predict`: any image, any class names -> label map PNG + overlay with legend."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from fixtures.engine import REPO, fresh_checkpoint, tiny_setup
from PIL import Image


def test_predict_any_classes_in_process(tmp_path):
    from ldvc.predict import parse_classes, predict

    cfg, split, _, _, _ = tiny_setup(tmp_path)
    ckpt = fresh_checkpoint(cfg, split, tmp_path / "model.pt")
    rng = np.random.default_rng(0)
    img = tmp_path / "wide.jpg"
    Image.fromarray(rng.integers(0, 255, (50, 90, 3), dtype=np.uint8)).save(img)
    names = parse_classes(" cat, dog ,grass ")
    assert names == ["cat", "dog", "grass"]
    res = predict([img], names, ckpt, tmp_path / "out", mode="slide")
    labels = np.asarray(Image.open(res[0]["labels"]))
    assert labels.shape == (50, 90)  # the original size, not the model's input size
    assert labels.max() < 3 and set(res[0]["classes_found"]) <= set(names)
    assert Image.open(res[0]["overlay"]).size[0] > 90
    with pytest.raises(ValueError, match="more than once"):
        parse_classes("cat,cat")


def test_predict_command_line(tmp_path):
    cfg, split, root, _, _ = tiny_setup(tmp_path)
    ckpt = fresh_checkpoint(cfg, split, tmp_path / "model.pt")
    image = next((root / "images" / "val").iterdir())
    cmd = [sys.executable, "-m", "ldvc", "predict", str(image), "--classes", "red,striped blue,yellow",
           "--checkpoint", str(ckpt), "--out", str(tmp_path / "pred")]
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "pred" / f"{image.stem}_labels.png").exists()
    assert (tmp_path / "pred" / f"{image.stem}_overlay.png").exists()
    bad = subprocess.run(cmd[:5] + ["--classes", " , "] + cmd[7:], cwd=REPO, capture_output=True, text=True,
                         env=env, timeout=300)
    assert bad.returncode == 2 and "--classes is empty" in bad.stderr
