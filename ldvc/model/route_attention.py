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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
    with torch.autocast(device_type=q_blocks.device.type, enabled=False):
        out = _RoutedBlockAttention.apply(
            *(t.to(work).contiguous() for t in (q_blocks, k_blocks, v_blocks)), idx.detach(), scale
        )
    return out.to(dtype)


def route_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grid: tuple[int, int],
    regions: int,
    topk: int,
) -> torch.Tensor:
    """Bi-level routing attention. q, k, v: (B, heads, H*W, head_dim), row-major; returns the same.

    `regions` per side must divide both grid sides; 1 <= topk <= regions^2.
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
    idx = route_indices(q, k, grid, regions, topk)  # (B, S^2, topk), no gradient
    out = routed_block_attention(
        to_region_major(q, grid, regions), to_region_major(k, grid, regions),
        to_region_major(v, grid, regions), idx,
    )  # (B, S^2, heads, T, d)
    return from_region_major(out, grid, regions)


class RouteAttention(nn.Module):
    """Multi-head (route) self-attention over a token map: (B, H*W, dim) -> (B, H*W, dim).

    route=False gives plain dense multi-head self-attention with the same projections and LePE
    (the "no route attention" ablation changes nothing else).
    """

    def __init__(
        self, dim: int, heads: int, regions: int, topk: int, lepe: bool = False, route: bool = True
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
            out = route_attention(q, k, v, grid, self.regions, self.topk)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, N, dim)
        if self.lepe is not None:
            v_map = v.transpose(1, 2).reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, dim, H, W)
            out = out + self.lepe(v_map).flatten(2).transpose(1, 2)
        return self.proj(out)
