"""Frozen CLIP text encoder with deep learnable text prompts and template ensembles.

Implements the text side of LDVC's vision-language prompt tuning (protocol.md, "What LDVC claims":
deep learnable prompts in the text encoder, initialised from the text encoder's own per-layer
states for a hand-crafted prompt) and ZegCLIP's class embeddings (one template for VOC, the mean of
15 L2-normalised template embeddings, renormalised, for COCO-Stuff).

Our concrete choices (the paper gives no formula):
- For each template, the learnable tokens are the LAST min(text_tokens, m) context tokens before
  the class name, m = the number of tokens of the template's prefix ("a photo of a" -> m = 4).
  In each of the first `prompt_depth` layers (-1 = all) the hidden states at those positions are
  REPLACED by learnable vectors (deep prompts, MaPLe-style); layer 0's prompts replace the token +
  positional embedding. Beyond `prompt_depth` the states travel on unchanged.
- Initialisation: the layer-input hidden states of those positions when the frozen encoder reads
  the template. The text transformer is causal, so those states do not depend on the class name:
  before training, every class embedding equals the frozen encoder's embedding of
  template.format(class) exactly. Templates own separate prompts (initialised from their own states).
- Because attention is causal and the embedding is pooled at the end-of-text token, positions after
  the last end-of-text token are cut off before the transformer (an exact speed-up).
- Without prompts (text_tokens or text_depth 0), the class embeddings are computed once and cached.
  With prompts, embeddings computed with autograd off are cached too and reused until a prompt
  tensor changes (in-place version counter), so evaluation does not re-run the text encoder.
- A class name that does not fit the context length (the tiny CLIP has 16 tokens) is an error,
  never a silent truncation.
- The forward has no data-dependent Python control flow (no `.item()`), so `torch.compile` traces
  it without graph breaks: the truncation length is fixed per template at construction (the
  longest prompt of any class), and the class-id checks and the embedding cache run only in eager
  mode (skipped while compiling).
- The class-id range check reads values (a host synchronisation on a GPU): it runs once per ids
  tensor (the training loop passes the same tensor every step) and again only when that tensor
  is modified in place (its version counter), never once per step.
- Shared causal prefix (`share_prefix`, default on; exact): the text transformer is causal, so
  the hidden states of the positions BEFORE the class name (start-of-text, the template's prefix
  "a photo of a", and the learnable prompts, which replace states inside that prefix) do not
  depend on the class, in every layer. They are computed ONCE per template (batch 1) instead of
  once per class; only the positions from the class name on run per class, their attention
  reading the shared prefix's keys and values through each block's own attention
  (`block.attention(q_x, k_x, v_x, attn_mask)`, open_clip's ResidualAttentionBlock API), with the
  causal mask's rows of those positions. Same function, fewer FLOPs: at the COCO-Stuff preset
  (156 seen classes x 15 templates with gradients every step) the prefix is 4-6 of the 7-12
  tokens of a prompt. Only the order of floating-point sums differs (tests compare embeddings with
  the full computation, prompts on, training and evaluation). A text tower whose blocks lack that
  API (a custom block) falls back to the full computation (`shares_prefix` says which ran).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _text_tower(clip_model: nn.Module) -> dict:
    """The text-tower pieces of an open_clip CLIP (flat attributes) or CustomTextCLIP (`.text`)."""
    text = getattr(clip_model, "text", None)
    src = text if text is not None else clip_model
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    missing = [n for n in needed if not hasattr(src, n)]
    if missing:
        raise TypeError(
            f"PromptedTextEncoder needs an open_clip CLIP text tower; {type(src).__name__} lacks {missing}"
        )
    if text is not None and getattr(text, "cls_emb", None) is not None:
        raise TypeError("PromptedTextEncoder does not support text towers with a CLS token (CoCa)")
    attn_mask = getattr(src, "attn_mask", None)
    if attn_mask is None:
        raise TypeError(
            "PromptedTextEncoder needs a causal text transformer (attn_mask is None): the prompt "
            "initialisation relies on the prefix states not depending on the class name"
        )
    pool_type = text.pool_type if text is not None else getattr(clip_model, "text_pool_type", "argmax")
    if pool_type not in ("argmax", "eos"):
        raise TypeError(f"PromptedTextEncoder supports argmax/eos pooling, not {pool_type!r}")
    eos_id = text.eos_id if text is not None else getattr(clip_model, "text_eos_id", None)
    return {
        "token_embedding": src.token_embedding,
        "positional_embedding": src.positional_embedding,
        "transformer": src.transformer,
        "ln_final": src.ln_final,
        "text_projection": src.text_projection,
        "attn_mask": attn_mask,
        "pool_type": pool_type,
        "eos_id": eos_id,
    }


def _shareable(block: nn.Module) -> bool:
    """A block with open_clip's ResidualAttentionBlock API (separate query and key/value inputs)."""
    return all(hasattr(block, n) for n in ("attention", "ln_1", "ln_2", "mlp", "ls_1", "ls_2")) \
        and not hasattr(block, "ln_1_kv")


class PromptedTextEncoder(nn.Module):
    """class ids -> L2-normalised class embeddings (C', D), template-ensembled, with deep prompts."""

    def __init__(
        self,
        clip_model: nn.Module,
        tokenizer: Callable[..., torch.Tensor],
        class_names: Sequence[str],
        templates: Sequence[str] = ("a photo of a {}.",),
        prompt_tokens: int = 0,
        prompt_depth: int = -1,
        share_prefix: bool = True,
    ) -> None:
        super().__init__()
        if not class_names:
            raise ValueError("PromptedTextEncoder needs at least one class name")
        if not templates or any(t.count("{}") != 1 for t in templates):
            raise ValueError(f"templates must be a non-empty list of strings with one '{{}}': {list(templates)}")
        if prompt_tokens < 0:
            raise ValueError(f"text prompt tokens must be >= 0, got {prompt_tokens}")
        tower = _text_tower(clip_model)
        self.token_embedding = tower["token_embedding"]
        self.positional_embedding = tower["positional_embedding"]  # (L, width), shared with CLIP
        self.transformer = tower["transformer"]
        self.ln_final = tower["ln_final"]
        self.text_projection = tower["text_projection"]
        self.pool_type = tower["pool_type"]
        self.eos_id = tower["eos_id"]
        self.register_buffer("attn_mask", tower["attn_mask"].clone(), persistent=False)  # (L, L) causal
        for p in self.parameters():
            p.requires_grad_(False)
        self.transformer.eval()

        layers = len(self.transformer.resblocks)
        if prompt_depth == -1:
            prompt_depth = layers
        if not 0 <= prompt_depth <= layers:
            raise ValueError(
                f"text prompt depth {prompt_depth} is outside 0..{layers} (the text encoder's layers); "
                f"use -1 for all layers or 0 for none"
            )
        self.class_names = list(class_names)
        self.templates = list(templates)
        self.context_length = self.positional_embedding.shape[0]
        self.width = self.positional_embedding.shape[1]
        self.prompt_depth = prompt_depth if prompt_tokens > 0 else 0

        ids, spans = [], []
        for template in self.templates:
            tokens, span = self._tokenize(tokenizer, template, prompt_tokens)
            ids.append(tokens)
            spans.append(span if self.prompt_depth > 0 else (span[1], span[1]))
        # per template: the causal prefix before the class name (start-of-text + the template's
        # prefix tokens), whose states do not depend on the class
        self.prefix_lengths = [span[1] for span in spans]
        self.register_buffer("token_ids", torch.stack(ids), persistent=False)  # (templates, C, L)
        ends = torch.stack([self._eot_positions(t) for t in ids])  # (templates, C)
        self.register_buffer("eot", ends, persistent=False)
        # causal attention + pooling at the end token: positions after the longest prompt never matter
        self.lengths = [int(e.max()) + 1 for e in ends]
        self.spans = spans  # per template: [start, end) of the learnable positions
        self.prompts = nn.ParameterList(
            [self._make_prompt(self._initial_states(t, s)) for t, s in enumerate(spans)]
        )  # per template (depth, k, width)
        self._cache: torch.Tensor | None = None
        self._cache_key: tuple | None = None
        self._checked_ids: torch.Tensor | None = None  # the last class-id tensor whose values were checked
        self._checked_version = -1
        self.shares_prefix = share_prefix and all(_shareable(b) for b in self.transformer.resblocks)

    # ---- construction -----------------------------------------------------------------------

    def _tokenize(self, tokenizer, template: str, prompt_tokens: int) -> tuple[torch.Tensor, tuple[int, int]]:
        L = self.context_length
        texts = [template.format(name) for name in self.class_names]
        # Tokenise with room to spare: a text whose end token lands past L would be truncated.
        long = tokenizer(texts, context_length=L + 64)  # (C, L + 64)
        ends = self._eot_positions(long)
        too_long = [t for t, e in zip(texts, ends.tolist()) if e >= L]
        if too_long:
            raise ValueError(
                f"{len(too_long)} prompt(s) exceed the text context length {L} of this CLIP, e.g. "
                f"{too_long[0]!r}: shorten the class names or templates, or use a CLIP with a longer context"
            )
        tokens = long[:, :L].contiguous()
        prefix = template.split("{}")[0]
        prefix_ids = tokenizer([prefix], context_length=L + 64)[0]
        m = int(self._eot_positions(prefix_ids[None])[0]) - 1  # context tokens between SOT and class
        if m > 0 and not bool((tokens[:, 1 : 1 + m] == prefix_ids[1 : 1 + m]).all()):
            raise ValueError(
                f"template {template!r}: the tokens before the class name change with the class "
                f"(BPE merges across the boundary); end the prefix with a space"
            )
        k = min(prompt_tokens, m)
        return tokens, (1 + m - k, 1 + m)

    @staticmethod
    def _make_prompt(states: torch.Tensor) -> nn.Parameter:
        return nn.Parameter(states, requires_grad=states.numel() > 0)

    def _eot_positions(self, ids: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "eos":
            return (ids == self.eos_id).int().argmax(dim=-1)
        return ids.argmax(dim=-1)  # CLIP: the end-of-text token has the largest id

    @torch.no_grad()
    def _initial_states(self, template_index: int, span: tuple[int, int]) -> torch.Tensor:
        """(depth, k, width): the frozen encoder's layer-input states at the learnable positions."""
        start, end = span
        if end == start:
            # Kept as an empty slot so prompts[t] indexes by template; _make_prompt freezes it
            # (a trainable parameter that never gets a gradient would upset DDP).
            return torch.empty(self.prompt_depth, 0, self.width)
        ids = self.token_ids[template_index, :1, :end]  # any class: causal prefix states ignore it
        x = self._embed(ids)
        states = []
        for i, block in enumerate(self.transformer.resblocks[: self.prompt_depth]):
            states.append(x[0, start:end].clone())
            if i < self.prompt_depth - 1:
                x = self._block(block, x)
        return torch.stack(states).float()

    # ---- forward ----------------------------------------------------------------------------

    def train(self, mode: bool = True) -> PromptedTextEncoder:
        super().train(mode)
        self.transformer.eval()  # frozen CLIP: never in training mode
        return self

    @property
    def has_prompts(self) -> bool:
        return any(p.numel() > 0 for p in self.prompts)

    def _cast_dtype(self) -> torch.dtype:
        if hasattr(self.transformer, "get_cast_dtype"):
            return self.transformer.get_cast_dtype()
        return self.positional_embedding.dtype

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        dtype = self._cast_dtype()
        x = self.token_embedding(ids).to(dtype)  # (C', L', width)
        return x + self.positional_embedding[: ids.shape[1]].to(dtype)

    def _block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        mask = self.attn_mask[:L, :L]  # (L', L') causal, additive -inf
        if getattr(self.transformer, "batch_first", True):
            return block(x, attn_mask=mask)
        return block(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)

    def _pool(self, x: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """(C', L', width) final states -> (C', D) L2-normalised embeddings at the end-of-text positions."""
        x = self.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), ends]  # (C', width)
        if isinstance(self.text_projection, nn.Linear):
            pooled = self.text_projection(pooled)
        elif self.text_projection is not None:
            pooled = pooled @ self.text_projection
        return F.normalize(pooled.float(), dim=-1)  # (C', D)

    def _encode_template_shared(self, t: int, class_ids: torch.Tensor) -> torch.Tensor:
        """`_encode_template` with the class-independent causal prefix computed once (module docstring)."""
        L, P = self.lengths[t], self.prefix_lengths[t]
        ids = self.token_ids[t, :, P:L].index_select(0, class_ids)  # (C', L' - P): class name onwards
        ends = self.eot[t].index_select(0, class_ids) - P  # (C',) end token, suffix positions
        dtype = self._cast_dtype()
        prefix = self._embed(self.token_ids[t, :1, :P])  # (1, P, width): the same for every class
        x = self.token_embedding(ids).to(dtype) + self.positional_embedding[P:L].to(dtype)  # (C', S, width)
        start, end = self.spans[t]
        prompts = self.prompts[t]
        batch_first = getattr(self.transformer, "batch_first", True)
        blocks = self.transformer.resblocks
        suffix_mask = self.attn_mask[P:L, :L]  # (S, P + S): causal rows of the suffix positions
        for i, block in enumerate(blocks):
            if i < self.prompt_depth and end > start:
                prefix = torch.cat([prefix[:, :start], prompts[i].to(prefix.dtype).unsqueeze(0), prefix[:, end:]],
                                   dim=1)
            # keys/values: the shared prefix (normalised once, broadcast) followed by each class's suffix
            q = block.ln_1(x)  # (C', S, width)
            kv = torch.cat([block.ln_1(prefix).expand(x.shape[0], -1, -1), q], dim=1)  # (C', P + S, width)
            if batch_first:
                attn = block.attention(q_x=q, k_x=kv, v_x=kv, attn_mask=suffix_mask)
            else:
                attn = block.attention(q_x=q.transpose(0, 1), k_x=kv.transpose(0, 1), v_x=kv.transpose(0, 1),
                                       attn_mask=suffix_mask).transpose(0, 1)
            x = x + block.ls_1(attn)
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
            if i < len(blocks) - 1:  # the last layer's prefix states are never read
                prefix = self._block(block, prefix)  # (1, P, width)
        return self._pool(x, ends)

    def _encode_template(self, t: int, class_ids: torch.Tensor) -> torch.Tensor:
        if self.shares_prefix:
            return self._encode_template_shared(t, class_ids)
        return self._encode_template_full(t, class_ids)

    def _encode_template_full(self, t: int, class_ids: torch.Tensor) -> torch.Tensor:
        """Every position of every class's prompt through every layer (the reference computation)."""
        ids = self.token_ids[t, :, : self.lengths[t]].index_select(0, class_ids)  # (C', L')
        ends = self.eot[t].index_select(0, class_ids)  # (C',)
        x = self._embed(ids)  # (C', L', width)
        start, end = self.spans[t]
        prompts = self.prompts[t]
        for i, block in enumerate(self.transformer.resblocks):
            if i < self.prompt_depth and end > start:
                p = prompts[i].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)  # (C', k, width)
                x = torch.cat([x[:, :start], p, x[:, end:]], dim=1)
            x = self._block(block, x)
        return self._pool(x, ends)

    def _encode(self, class_ids: torch.Tensor) -> torch.Tensor:
        per_template = torch.stack([self._encode_template(t, class_ids) for t in range(len(self.templates))])
        return F.normalize(per_template.mean(dim=0), dim=-1)  # (C', D) ensemble, renormalised

    def _already_checked(self, given: object) -> bool:
        """The same ids tensor as the last checked one, unmodified since (no value read needed)."""
        return (given is self._checked_ids and isinstance(given, torch.Tensor)
                and given._version == self._checked_version)

    def _cache_state(self) -> tuple:
        # Changes whenever a prompt or a CLIP weight is updated in place (optimiser step,
        # load_state_dict) or moved to another device.
        return tuple((p._version, p.data_ptr()) for p in self.parameters()) + (self.token_ids.device,)

    def forward(self, class_ids: torch.Tensor | None = None) -> torch.Tensor:
        """class_ids (C',) long into `class_names` (None = all) -> (C', D) normalised embeddings."""
        device = self.token_ids.device
        C = len(self.class_names)
        compiling = torch.compiler.is_compiling()
        if class_ids is None:
            class_ids = torch.arange(C, device=device)
        else:
            given = class_ids
            class_ids = torch.as_tensor(class_ids, dtype=torch.long, device=device).reshape(-1)
            checkable = not compiling and class_ids.device.type != "meta"  # meta: FLOP counting, no values
            if checkable and not self._already_checked(given):
                if class_ids.numel() == 0 or int(class_ids.min()) < 0 or int(class_ids.max()) >= C:
                    raise ValueError(f"class_ids must be non-empty indices in 0..{C - 1}, got {class_ids.tolist()}")
                if isinstance(given, torch.Tensor):  # held, so its memory cannot be reused by other ids
                    self._checked_ids, self._checked_version = given, given._version
        cacheable = not self.has_prompts or not torch.is_grad_enabled()
        if compiling or not cacheable:
            return self._encode(class_ids)
        key = self._cache_state()
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                self._cache = self._encode(torch.arange(C, device=device))
            self._cache_key = key
        return self._cache.index_select(0, class_ids)
