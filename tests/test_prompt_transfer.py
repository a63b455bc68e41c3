"""LDVC's learned text prompts on a target dataset's own templates (ldvc/model/prompt_transfer.py).

ZegCLIP evaluates each cross-dataset target with that dataset's embeddings (configs/cross_dataset/
coco-to-voc.py: voc12_single.npy = "a photo of a {}", no full stop). LDVC's prompts are learned per
training template and replace the prefix before the class name, so a target template with the same
prefix can use them exactly; the others keep plain CLIP text.
"""

from __future__ import annotations

import torch

from ldvc.model.clip_loader import create_clip, tokenizer
from ldvc.model.prompt_transfer import match_templates, transfer_prompts
from ldvc.model.text_encoder import PromptedTextEncoder

SOURCE = ["a photo of a {}.", "This is a photo of a {}.", "a {} in the scene."]
TARGET = ["a photo of a {}", "There is a {} in the scene", "This is a photo of a {}.", "{} in the scene"]


def test_templates_match_by_prefix_identical_first():
    assert match_templates(SOURCE, TARGET) == [0, None, 1, None]
    assert match_templates(["a photo of a {}.", "a photo of a {} in the scene."],
                           ["a photo of a {} in the scene."]) == [1]


class _Model(torch.nn.Module):
    def __init__(self, text: PromptedTextEncoder) -> None:
        super().__init__()
        self.text_encoder = text


def test_transferred_prompts_reproduce_the_trained_text_side_and_plain_clip_elsewhere():
    torch.manual_seed(0)
    clip = create_clip("ldvc-tiny-vit")
    tok = tokenizer("ldvc-tiny-vit")
    names = ["red", "striped blue"]
    trained = PromptedTextEncoder(clip, tok, names, SOURCE, prompt_tokens=2)
    with torch.no_grad():
        for p in trained.prompts:
            p.add_(torch.randn_like(p) * 0.5)  # "learned": away from their initial states
    state = {k: v for k, v in _Model(trained).state_dict().items() if k.startswith("text_encoder.prompts.")}
    target = PromptedTextEncoder(clip, tok, names, TARGET, prompt_tokens=2)
    plain = PromptedTextEncoder(clip, tok, names, TARGET, prompt_tokens=0)
    model = _Model(target)
    new, report = transfer_prompts(model, state, SOURCE)
    assert [r["prompts_from"] for r in report] == ["a photo of a {}.", None, "This is a photo of a {}.", None]
    model.load_state_dict({**model.state_dict(), **new})
    with torch.no_grad():
        per_target = [target._encode_template(t, torch.arange(2)) for t in range(len(TARGET))]
        per_plain = [plain._encode_template(t, torch.arange(2)) for t in range(len(TARGET))]
        per_trained = [trained._encode_template(t, torch.arange(2)) for t in range(len(SOURCE))]
    # "This is a photo of a {}." is the trained template itself: identical embeddings
    torch.testing.assert_close(per_target[2], per_trained[1])
    # the learned prefix moves "a photo of a {}" away from plain CLIP; unmatched templates stay plain CLIP
    assert not torch.allclose(per_target[0], per_plain[0], atol=1e-4)
    torch.testing.assert_close(per_target[1], per_plain[1])
    torch.testing.assert_close(per_target[3], per_plain[3])
