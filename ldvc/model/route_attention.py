"""Route attention: BiFormer's bi-level routing attention (Zhu et al., CVPR 2023), as LDVC uses it
in the self-attention of its decoder to find "visual consensus" (protocol.md, "Route attention").

Semantics (exactly BiFormer's):
1. the H x W token map is split into S x S regions;
2. queries and keys are mean-pooled per region, region affinity A = Q_r K_r^T summed over heads
   and channels -> (B, S^2, S^2);
3. each query region keeps its top-k key regions; the routing is NOT differentiated (detached);
4. each token takes softmax attention (scale head_dim^-0.5) over the tokens of its k routed regions.
5. optional LePE: a depth-wise conv on V added to the output (module only).

Our implementation choices (not BiFormer's code):
- BiFormer gathers k copies of K/V per query region (memory grows k-fold, slow backward). Here the
  tokens are reordered region-major and a custom autograd Function loops over the k routed
  regions with an online (flash-style) softmax, gathering ONE key/value block per step. It saves
  only q, k, v, the routing index, the output and the log-sum-exp; the backward recomputes the
  score blocks and scatter-adds key/value gradients (index_add_, deterministic on CPU and, with
  torch.use_deterministic_algorithms, on CUDA). Half-precision inputs (autocast) are computed in float32.
- topk == S^2 routes every region to every region: it is dense attention, computed with
  scaled_dot_product_attention directly (same result, faster).
- LePE uses a 3x3 depth-wise conv (BiFormer's models use 5x5; the task fixes 3x3).
- The module has no attention dropout (the routed kernel has none); decoders apply dropout to the
  sub-layer outputs instead.

Two exact kernels, one semantics (`route_attention(..., backend=...)`):
- "blocks": the custom autograd Function above; any device, any region size. The CPU kernel.
- "flex": torch.nn.attention.flex_attention over the region-major token sequence with a
  BlockMask built from the routing: block size = T tokens per region, each query block lists its
  k routed key blocks - as FULL blocks on CUDA (no per-element masking inside the fused kernel),
  as partial blocks on the CPU (torch 2.14's compiled CPU template fails to build with full
  blocks) - and the mask_mod tests block membership, so every path that evaluates the mask per
  element (the unfused eager path, partial blocks) computes the same routed attention. A
  BlockMask from block lists with the default no-op mask_mod silently computes DENSE attention
  on the unfused path (toolchain.md, "Measured traps"); tests compare flex against "blocks" and
  against dense for that reason.
  On CUDA it runs through one torch.compile'd flex_attention (fused forward and backward).
  No silent slow path: that compiled function is shape-static (`dynamic=False`), so every new
  (shape, dtype, grad mode, autocast state) is one more compilation, and at dynamo's recompile
  limit dynamo would fall back to the UNFUSED eager path (dense scores, many times the memory)
  with a warning only. A guard counts the distinct call signatures; a call that would pass the
  limit never reaches the compiled function: with the policy "error" (the device check,
  `set_flex_fallback("error")` or LDVC_FLEX_FALLBACK=error) it raises `FlexFallbackError` naming
  the signatures, with "blocks" (the default) it runs the exact block kernel instead, warns once,
  and counts it in `flex_stats()`, which a training run records in its summary. The evaluation
  pads its window batches to one fixed size (ldvc/eval/inference.py) so that it adds at most one
  signature per dtype.
  FlexAttention has no backward on the CPU, and after one failed backward a compiled flex
  function keeps running the unfused dense path: the flex backend therefore refuses CPU inputs
  that need a gradient (before calling flex), and the GPU check (benchmarks/gpu.py) verifies the
  fused path by its memory (dense scores would show). Numerics: flex computes in the inputs'
  dtype (bf16 under autocast, float32 accumulation inside the kernel) where "blocks" upcasts to
  float32, so bf16 results differ by bf16 round-off (same routing, same attention).
- "masked": dense scaled_dot_product_attention with a boolean (N x N) mask built from the
  routing (key token allowed iff its region is among its query's region's k routed regions):
  the same softmax over the same keys, so the same result, at dense cost. For small token maps
  (the embedded CPU default: 8x8 tokens, 4x4 regions of 4 tokens) the block kernel's per-region
  Python loop costs more than the whole dense product; measured on the 2-core CPU: the LCTD
  training step 10% faster. Never used above MASKED_MAX_TOKENS tokens (memory grows as N^2).
- "auto" (default): flex on CUDA when the region size suits its kernel (a power of two >= 16
  tokens, e.g. 16 at 512 px with 8x8 regions); else masked for token maps of at most
  MASKED_MAX_TOKENS tokens; else blocks. The environment variable
  LDVC_ROUTE_ATTENTION=blocks|flex|masked overrides auto (to compare, or to step around a torch
  whose flex kernel fails).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

BACKENDS = ("auto", "blocks", "flex", "masked")
MASKED_MAX_TOKENS = 256  # dense N x N masks only for small token maps
ENV_BACKEND = "LDVC_ROUTE_ATTENTION"


def _region_shape(grid: tuple[int, int], regions: int, topk: int) -> tuple[int, int]:
    """Validate (grid, regions, topk) before any work; return the region size (rh, rw)."""
    H, W = grid
    if regions <= 0:
        raise ValueError(f"route attention: regions per side must be positive, got {regions}")
    if H % regions or W % regions:
        raise ValueError(
            f"route attention: {regions} regions per side do not divide the {H}x{W} token grid; "
            f"choose decoder.route_regions among the common divisors of {H} and {W}"
        )
    if not 1 <= topk <= regions * regions:
        raise ValueError(
            f"route attention: topk = {topk} must be between 1 and the number of regions "
            f"{regions}^2 = {regions * regions}; lower decoder.route_topk"
        )
    return H // regions, W // regions


def to_region_major(x: torch.Tensor, grid: tuple[int, int], regions: int) -> torch.Tensor:
    """(B, heads, H*W, d) row-major tokens -> (B, S^2, heads, T, d) with T = tokens per region."""
    B, h, N, d = x.shape
    H, W = grid
    S = regions
    rh, rw = H // S, W // S
    x = x.reshape(B, h, S, rh, S, rw, d).permute(0, 2, 4, 1, 3, 5, 6)  # (B, S, S, h, rh, rw, d)
    return x.reshape(B, S * S, h, rh * rw, d)


def from_region_major(x: torch.Tensor, grid: tuple[int, int], regions: int) -> torch.Tensor:
    """Inverse of `to_region_major`: (B, S^2, heads, T, d) -> (B, heads, H*W, d)."""
    B, R, h, T, d = x.shape
    H, W = grid
    S = regions
    rh, rw = H // S, W // S
    x = x.reshape(B, S, S, h, rh, rw, d).permute(0, 3, 1, 4, 2, 5, 6)  # (B, h, S, rh, S, rw, d)
    return x.reshape(B, h, H * W, d)


@torch.no_grad()
def route_indices(
    q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int], regions: int, topk: int
) -> torch.Tensor:
    """Region-level routing: (B, S^2, topk) indices of the key regions each query region keeps.

    Computed under no_grad: the routing is a discrete choice and receives no gradient (BiFormer).
    """
    B, h, N, d = q.shape
    H, W = grid
    S = regions
    rh, rw = H // S, W // S
    # Region means, heads and channels flattened: the affinity sums over both.
    q_r = q.detach().float().reshape(B, h, S, rh, S, rw, d).mean(dim=(3, 5))  # (B, h, S, S, d)
    k_r = k.detach().float().reshape(B, h, S, rh, S, rw, d).mean(dim=(3, 5))
    q_r = q_r.permute(0, 2, 3, 1, 4).reshape(B, S * S, h * d)  # (B, S^2, h*d)
    k_r = k_r.permute(0, 2, 3, 1, 4).reshape(B, S * S, h * d)
    affinity = q_r @ k_r.transpose(1, 2)  # (B, S^2, S^2)
    return torch.topk(affinity, topk, dim=-1).indices  # (B, S^2, topk)


class _RoutedBlockAttention(torch.autograd.Function):
    """Exact attention of each query region over its routed key regions, one block at a time.

    q, k, v: (B, R, heads, T, d) region-major, float32/64, contiguous; idx: (B, R, K) routed regions.
    """

    @staticmethod
    def forward(ctx, q, k, v, idx, scale: float):  # type: ignore[override]
        B, R, h, T, d = q.shape
        K = idx.shape[-1]
        # Flat block index into k.view(B*R, ...): block r of image b is row b*R + r.
        flat = (idx + torch.arange(B, device=idx.device).view(B, 1, 1) * R).reshape(B * R, K)
        k_rows = k.view(B * R, h, T, d)
        v_rows = v.view(B * R, h, T, d)
        qs = q * scale
        m = l = acc = None
        for j in range(K):
            rows = flat[:, j]
            k_j = k_rows.index_select(0, rows).view(B, R, h, T, d)  # ONE key block per query region
            v_j = v_rows.index_select(0, rows).view(B, R, h, T, d)
            s = qs @ k_j.transpose(-1, -2)  # (B, R, h, T, T)
            s_max = s.amax(dim=-1, keepdim=True)  # (B, R, h, T, 1)
            if m is None:
                m = s_max
                p = s.sub_(m).exp_()
                l = p.sum(dim=-1, keepdim=True)
                acc = p @ v_j  # (B, R, h, T, d)
            else:
                m_new = torch.maximum(m, s_max)
                corr = (m - m_new).exp_()  # rescales what was accumulated under the old maximum
                p = s.sub_(m_new).exp_()
                l = l.mul_(corr).add_(p.sum(dim=-1, keepdim=True))
                acc = acc.mul_(corr).add_(p @ v_j)
                m = m_new
        out = acc.div_(l)
        lse = m.add_(l.log_())  # (B, R, h, T, 1) log-sum-exp of the scaled scores
        ctx.save_for_backward(q, k, v, flat, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, flat, out, lse = ctx.saved_tensors
        scale = ctx.scale
        B, R, h, T, d = q.shape
        K = flat.shape[-1]
        grad_out = grad_out.contiguous()
        # delta_i = sum_j P_ij dP_ij = dO_i . O_i (the softmax-backward correction, FlashAttention)
        delta = (grad_out * out).sum(dim=-1, keepdim=True)  # (B, R, h, T, 1)
        k_rows = k.view(B * R, h, T, d)
        v_rows = v.view(B * R, h, T, d)
        qs = q * scale
        dq = torch.zeros_like(q)
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        dk_rows = dk.view(B * R, h, T, d)
        dv_rows = dv.view(B * R, h, T, d)
        for j in range(K):
            rows = flat[:, j]
            k_j = k_rows.index_select(0, rows).view(B, R, h, T, d)
            v_j = v_rows.index_select(0, rows).view(B, R, h, T, d)
            p = (qs @ k_j.transpose(-1, -2)).sub_(lse).exp_()  # (B, R, h, T, T) recomputed probs
            dv_rows.index_add_(0, rows, (p.transpose(-1, -2) @ grad_out).view(B * R, h, T, d))
            ds = (grad_out @ v_j.transpose(-1, -2)).sub_(delta).mul_(p)  # dS = P * (dP - delta)
            dq.add_(ds @ k_j)
            dk_rows.index_add_(0, rows, (ds.transpose(-1, -2) @ qs).view(B * R, h, T, d))
        dq.mul_(scale)
        return dq, dk, dv, None, None


def routed_block_attention(
    q_blocks: torch.Tensor, k_blocks: torch.Tensor, v_blocks: torch.Tensor, idx: torch.Tensor
) -> torch.Tensor:
    """Attention over given routed regions, region-major in and out: (B, R, heads, T, d).

    The kernel under `route_attention` (exposed so it can be tested without the dense shortcut).
    """
    dtype = q_blocks.dtype
    # Half precision is upcast: the online softmax statistics need float32.
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    scale = q_blocks.shape[-1] ** -0.5
    # autocast has no meta device (FLOP counting runs on meta, ldvc/model/flops.py)
    device_type = "cpu" if q_blocks.device.type == "meta" else q_blocks.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        out = _RoutedBlockAttention.apply(
            *(t.to(work).contiguous() for t in (q_blocks, k_blocks, v_blocks)), idx.detach(), scale
        )
    return out.to(dtype)


# --------------------------------------------------------------------------------------------
# FlexAttention path
# --------------------------------------------------------------------------------------------


def to_region_tokens(x: torch.Tensor, grid: tuple[int, int], regions: int) -> torch.Tensor:
    """(B, heads, H*W, d) row-major -> (B, heads, H*W, d) region-major (region r = tokens r*T .. r*T+T-1)."""
    B, h, N, d = x.shape
    H, W = grid
    S = regions
    x = x.reshape(B, h, S, H // S, S, W // S, d).permute(0, 1, 2, 4, 3, 5, 6)  # (B, h, S, S, rh, rw, d)
    return x.reshape(B, h, N, d)


def from_region_tokens(x: torch.Tensor, grid: tuple[int, int], regions: int) -> torch.Tensor:
    """Inverse of `to_region_tokens`."""
    B, h, N, d = x.shape
    H, W = grid
    S = regions
    x = x.reshape(B, h, S, S, H // S, W // S, d).permute(0, 1, 2, 4, 3, 5, 6)  # (B, h, S, rh, S, rw, d)
    return x.reshape(B, h, N, d)


def flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def flex_block_ok(tokens_per_region: int) -> bool:
    """Whether the fused (Triton) flex kernel can use one region as its tile: a power of two >= 16."""
    t = tokens_per_region
    return t >= 16 and t & (t - 1) == 0


def route_block_mask(idx: torch.Tensor, tokens_per_region: int, full: bool | None = None):  # -> BlockMask
    """The BlockMask of a routing idx (B, R, k): query block r attends to key blocks idx[b, r].

    Block size = one region (region-major token order). full=True (default on CUDA) lists the
    routed blocks as FULL blocks, which the fused kernel computes without evaluating the mask;
    full=False lists them as partial blocks, masked per element (the CPU's compiled flex kernel
    fails to build when full blocks are given: torch 2.14 C++ template error). Either way the
    mask_mod checks block membership, so the unfused path - which ignores the block lists and
    evaluates the mask per element - is exact too.
    """
    from torch.nn.attention.flex_attention import BlockMask

    B, R, k = idx.shape
    T = tokens_per_region
    full = idx.device.type == "cuda" if full is None else full
    routed = torch.zeros(B, R, R, dtype=torch.bool, device=idx.device).scatter_(2, idx, True)  # (B, R, R)
    # Key blocks, routed ones first (the kernel reads the first `num` of each row).
    order = routed.to(torch.int8).argsort(dim=-1, descending=True, stable=True).to(torch.int32)
    order = order.unsqueeze(1).contiguous()  # (B, 1, R, R): one mask for every head
    num = torch.full((B, 1, R), k, dtype=torch.int32, device=idx.device)

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return routed[b, q_idx // T, kv_idx // T]

    lengths = (R * T, R * T)
    if full:
        # no partially masked blocks: every routed block is computed whole
        return BlockMask.from_kv_blocks(torch.zeros_like(num), order, num, order, BLOCK_SIZE=T, mask_mod=mask_mod,
                                        seq_lengths=lengths)
    return BlockMask.from_kv_blocks(num, order, BLOCK_SIZE=T, mask_mod=mask_mod, seq_lengths=lengths)


_COMPILED_FLEX: Callable | None = None
FLEX_FALLBACK_ENV = "LDVC_FLEX_FALLBACK"
FLEX_POLICIES = ("blocks", "error")
_FLEX_STATE: dict = {"signatures": [], "fallbacks": 0, "policy": None, "warned": False}


class FlexFallbackError(RuntimeError):
    """The compiled FlexAttention would pass dynamo's recompile limit (and fall back to the unfused path)."""


def set_flex_fallback(policy: str | None) -> None:
    """What a call past the recompile limit does: "blocks" (exact block kernel, counted, warned once)
    or "error" (raise FlexFallbackError); None: LDVC_FLEX_FALLBACK, else "blocks"."""
    if policy is not None and policy not in FLEX_POLICIES:
        raise ValueError(f"flex fallback policy {policy!r} is not one of {FLEX_POLICIES}")
    _FLEX_STATE["policy"] = policy


def _flex_policy() -> str:
    policy = _FLEX_STATE["policy"] or os.environ.get(FLEX_FALLBACK_ENV, "").strip() or "blocks"
    if policy not in FLEX_POLICIES:
        raise ValueError(f"{FLEX_FALLBACK_ENV}={policy!r}: use one of {FLEX_POLICIES}")
    return policy


def flex_recompile_limit() -> int:
    """Dynamo's recompile limit for one function (torch renamed cache_size_limit to recompile_limit)."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 8


def flex_stats() -> dict:
    """Signatures the compiled flex function was called with, the limit, and the calls that ran the
    block kernel instead (see the module docstring)."""
    return {"compiled_signatures": len(_FLEX_STATE["signatures"]), "recompile_limit": flex_recompile_limit(),
            "fallbacks_to_blocks": _FLEX_STATE["fallbacks"], "signatures": list(_FLEX_STATE["signatures"])}


def reset_flex_stats() -> None:
    _FLEX_STATE["signatures"].clear()
    _FLEX_STATE["fallbacks"] = 0
    _FLEX_STATE["warned"] = False


def _flex_signature(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tokens_per_region: int, topk: int) -> str:
    """What the compiled (shape-static) flex function recompiles for: shapes, dtype, device, whether
    a gradient is recorded, the autocast state, the region size and the routing width."""
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    autocast = torch.is_autocast_enabled(q.device.type) if q.device.type in ("cuda", "cpu") else False
    tf32 = q.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32  # a global state dynamo may guard
    return (f"{tuple(q.shape)} {str(q.dtype).removeprefix('torch.')} {q.device} grad={grad} autocast={autocast} "
            f"tf32={tf32} T={tokens_per_region} k={topk}")


def _admit_compiled_call(signature: str) -> bool:
    """Whether a call of this signature may run the compiled flex function (see the module docstring)."""
    seen = _FLEX_STATE["signatures"]
    if signature in seen:
        return True
    if len(seen) < flex_recompile_limit():
        seen.append(signature)
        return True
    message = (f"compiled FlexAttention: a new call signature ({signature}) after {len(seen)} compiled ones "
               f"{seen} would pass dynamo's recompile limit ({flex_recompile_limit()}), past which it runs the "
               f"UNFUSED path (dense scores). Keep batch shapes fixed (the evaluation pads its window batches)")
    if _flex_policy() == "error":
        raise FlexFallbackError(message)
    _FLEX_STATE["fallbacks"] += 1
    if not _FLEX_STATE["warned"]:
        _FLEX_STATE["warned"] = True
        warnings.warn(message + "; running the exact block kernel for such calls (counted in flex_stats())",
                      stacklevel=3)
    return False


def _flex_fn(compiled: bool) -> Callable:
    """flex_attention, compiled once per process (the fused kernel) or eager (the unfused path,
    which materialises the scores: fine for CPU tests, never for training)."""
    global _COMPILED_FLEX
    from torch.nn.attention.flex_attention import flex_attention

    if not compiled or torch.compiler.is_compiling():
        return flex_attention  # inside a compiled model dynamo fuses it with the rest
    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX


def flex_route_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int], regions: int,
                         topk: int, idx: torch.Tensor | None = None, compiled: bool | None = None) -> torch.Tensor:
    """Route attention through FlexAttention; q, k, v (B, heads, H*W, d) row-major -> the same.

    `idx` (B, S^2, topk) reuses a routing (default: computed by `route_indices`). `compiled`
    (default: on CUDA) runs the torch.compile'd flex_attention. CPU inputs must not need a
    gradient (no flex backward on the CPU; a failed one would also leave a compiled flex on its
    dense fallback). Computes in the inputs' dtype (bf16 under autocast on CUDA).
    """
    rh, rw = _region_shape(grid, regions, topk)
    T = rh * rw
    if q.device.type != "cuda" and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise NotImplementedError(
            "route attention: FlexAttention has no backward on the CPU; use backend 'blocks' there "
            "(route_attention's 'auto' does)"
        )
    if q.device.type == "cuda" and not flex_block_ok(T):
        raise ValueError(
            f"route attention: {T} tokens per region ({rh}x{rw}) do not suit the fused flex kernel (a power of "
            f"two >= 16 is needed); use backend 'blocks' or other decoder.route_regions"
        )
    if idx is None:
        idx = route_indices(q, k, grid, regions, topk)  # (B, S^2, topk), no gradient
    compiled = q.device.type == "cuda" if compiled is None else compiled
    if compiled and not torch.compiler.is_compiling() and not _admit_compiled_call(_flex_signature(q, k, v, T, topk)):
        out = routed_block_attention(to_region_major(q, grid, regions), to_region_major(k, grid, regions),
                                     to_region_major(v, grid, regions), idx)  # exact, bounded memory
        return from_region_major(out, grid, regions)
    block_mask = route_block_mask(idx, T)
    kwargs = {}
    if q.device.type == "cuda" and T < 128:
        # One region per kernel tile, pinned: torch 2.14 shrinks its default 128/64 tiles to a smaller
        # sparse block size by itself, older releases (the GPU machine has 2.11) may reject the mask.
        kwargs["kernel_options"] = {name: T for name in ("BLOCK_M", "BLOCK_N", "BLOCK_M1", "BLOCK_N1", "BLOCK_M2",
                                                         "BLOCK_N2")}
    qr, kr, vr = (to_region_tokens(t, grid, regions) for t in (q, k, v))  # (B, heads, N, d) region-major
    out = _flex_fn(compiled)(qr, kr, vr, block_mask=block_mask, **kwargs)
    return from_region_tokens(out, grid, regions)


def resolve_backend(backend: str, device: torch.device, grid: tuple[int, int], regions: int) -> str:
    """'auto' -> 'flex' on CUDA when flex is importable and the region size suits it, else 'blocks'
    (LDVC_ROUTE_ATTENTION overrides 'auto'); explicit names are returned as they are."""
    if backend not in BACKENDS:
        raise ValueError(f"route attention backend {backend!r} is not one of {BACKENDS}")
    if backend != "auto":
        return backend
    forced = os.environ.get(ENV_BACKEND, "").strip()
    if forced:
        if forced not in ("blocks", "flex", "masked"):
            raise ValueError(f"{ENV_BACKEND}={forced!r}: use blocks, flex or masked")
        return forced
    tokens = (grid[0] // regions) * (grid[1] // regions)
    if device.type == "cuda" and flex_available() and flex_block_ok(tokens):
        return "flex"
    if grid[0] * grid[1] <= MASKED_MAX_TOKENS:
        return "masked"
    return "blocks"


def routed_mask(idx: torch.Tensor, grid: tuple[int, int], regions: int) -> torch.Tensor:
    """(B, 1, N, N) bool in row-major token order: query token i may attend to key token j iff
    j's region is one of the k regions routed to i's region (idx: (B, S^2, k))."""
    H, W = grid
    S = regions
    rows = torch.arange(H, device=idx.device) // (H // S)
    cols = torch.arange(W, device=idx.device) // (W // S)
    region = (rows[:, None] * S + cols[None, :]).reshape(-1)  # (N,) region of each token
    B = idx.shape[0]
    allowed = torch.zeros(B, S * S, S * S, dtype=torch.bool, device=idx.device)  # (B, query region, key region)
    allowed.scatter_(2, idx, True)
    return allowed[:, region][:, :, region].unsqueeze(1)  # (B, 1, N, N)


# --------------------------------------------------------------------------------------------
# Public entry point and module
# --------------------------------------------------------------------------------------------


def route_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grid: tuple[int, int],
    regions: int,
    topk: int,
    backend: str = "auto",
) -> torch.Tensor:
    """Bi-level routing attention. q, k, v: (B, heads, H*W, head_dim), row-major; returns the same.

    `regions` per side must divide both grid sides; 1 <= topk <= regions^2. `backend`: "auto"
    (flex on CUDA, blocks elsewhere), "blocks" or "flex" (module docstring); all give the same result.
    """
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            f"route attention: q, k, v must share the shape (B, heads, H*W, head_dim); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    H, W = grid
    if q.shape[2] != H * W:
        raise ValueError(f"route attention: {q.shape[2]} tokens do not form the {H}x{W} grid")
    _region_shape(grid, regions, topk)
    if topk == regions * regions:
        # Every query region routes to every key region: plain dense attention.
        return F.scaled_dot_product_attention(q, k, v)
    chosen = resolve_backend(backend, q.device, grid, regions)
    if chosen == "flex":
        return flex_route_attention(q, k, v, grid, regions, topk)
    idx = route_indices(q, k, grid, regions, topk)  # (B, S^2, topk), no gradient
    if chosen == "masked":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=routed_mask(idx, grid, regions))
    out = routed_block_attention(
        to_region_major(q, grid, regions), to_region_major(k, grid, regions),
        to_region_major(v, grid, regions), idx,
    )  # (B, S^2, heads, T, d)
    return from_region_major(out, grid, regions)


class RouteAttention(nn.Module):
    """Multi-head (route) self-attention over a token map: (B, H*W, dim) -> (B, H*W, dim).

    route=False gives plain dense multi-head self-attention with the same projections and LePE
    (the "no route attention" ablation changes nothing else). `backend` picks the exact kernel
    (`route_attention`); it changes no parameter and no result.
    """

    def __init__(
        self, dim: int, heads: int, regions: int, topk: int, lepe: bool = False, route: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"RouteAttention: dim {dim} is not divisible by heads {heads}")
        if not 1 <= topk <= regions * regions:
            raise ValueError(
                f"RouteAttention: topk = {topk} must be between 1 and regions^2 = {regions * regions}"
            )
        self.heads = heads
        self.regions = regions
        self.topk = topk
        self.route = route
        if backend not in BACKENDS:
            raise ValueError(f"RouteAttention: backend {backend!r} is not one of {BACKENDS}")
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # LePE: locally-enhanced positional encoding, a depth-wise conv on V (BiFormer).
        self.lepe = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim) if lepe else None

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        H, W = grid
        if N != H * W:
            raise ValueError(f"RouteAttention: {N} tokens do not form the {H}x{W} grid")
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, d)
        if self.route:
            out = route_attention(q, k, v, grid, self.regions, self.topk, self.backend)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, N, dim)
        if self.lepe is not None:
            v_map = v.transpose(1, 2).reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, dim, H, W)
            out = out + self.lepe(v_map).flatten(2).transpose(1, 2)
        return self.proj(out)
