"""Learned text prompts on another dataset's templates (cross-dataset and open-vocabulary targets).

ZegCLIP's cross-dataset configs evaluate each target with THAT dataset's text embeddings
(configs/cross_dataset/coco-to-voc.py: voc12_single.npy, "a photo of a {}"; coco-to-context.py:
context_multi.npy, 15 templates), so a target's class texts are its own templates formatted with its
own names. A model without text prompts (the ZegCLIP baseline) simply encodes them. LDVC's deep text
prompts, however, are learned PER TRAINING TEMPLATE and replace the last hidden states of the
template's prefix, the words before the class name (ldvc/model/text_encoder.py). Our rule (the paper
is silent; it never evaluates on other templates):
- a target template takes the learned prompts of the training template with the SAME prefix (the
  learned positions are prefix tokens, so they transfer exactly); among several, the identical
  template first, else the first training template with that prefix ("a photo of a {}" takes those
  of "a photo of a {}.");
- a target template whose prefix no training template has keeps the frozen encoder's states there,
  i.e. plain CLIP text for that template (which is what the learned prompts were initialised from);
- which target template got which training template's prompts is returned and recorded with the
  evaluation, so a reader sees how much of the learned text side was used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PROMPT_KEY = "text_encoder.prompts.{}"


def prefix(template: str) -> str:
    """The words before the class name: the positions the learned text prompts replace."""
    return template.split("{}")[0]


def match_templates(source: Sequence[str], target: Sequence[str]) -> list[int | None]:
    """For each target template, the index of the training template whose prompts it uses (or None)."""
    out: list[int | None] = []
    for t in target:
        if t in source:
            out.append(list(source).index(t))
            continue
        same = [i for i, s in enumerate(source) if prefix(s) == prefix(t)]
        out.append(same[0] if same else None)
    return out


def transfer_prompts(model: nn.Module, state: dict[str, torch.Tensor],
                     source_templates: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """`state` (a checkpoint's learnable tensors, trained with `source_templates`) rewritten for `model`,
    whose text encoder was built with other templates; returns (state, [{template, prompts_from}]).

    Target templates without a learned counterpart keep the model's own (frozen-encoder) states."""
    text = model.text_encoder
    target = list(text.templates)
    learnable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    new = {k: v for k, v in state.items() if not k.startswith("text_encoder.prompts.")}
    report = []
    for j, (template, i) in enumerate(zip(target, match_templates(source_templates, target))):
        key = PROMPT_KEY.format(j)
        src = PROMPT_KEY.format(i) if i is not None else None
        if key not in learnable:  # no learnable positions (a template starting with the class name)
            report.append({"template": template, "prompts_from": None})
            continue
        if src is not None and src in state and state[src].shape == learnable[key].shape:
            new[key] = state[src]
            report.append({"template": template, "prompts_from": source_templates[i]})
        else:
            new[key] = learnable[key].detach().clone()
            report.append({"template": template, "prompts_from": None})
    return new, report
