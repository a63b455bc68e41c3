"""Route attention (ldvc/model/route_attention.py) against dense attention and a naive per-region
reference, forward and backward; routing gets no gradient; bad (grid, regions, topk) fail clearly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ldvc.model.route_attention import (
    RouteAttention,
    route_attention,
    route_indices,
    routed_block_attention,
    to_region_major,
)

torch.set_num_threads(1)


def naive_route_attention(q, k, v, grid, regions, topk):
    """Textbook BiFormer, one query region at a time (no reordering tricks, no online softmax)."""
    B, h, N, d = q.shape
    H, W = grid
    rh, rw = H // regions, W // regions
    rows, cols = torch.arange(N) // W, torch.arange(N) % W
    region_of = (rows // rh) * regions + cols // rw  # (N,) region of each row-major token
    R = regions * regions
    with torch.no_grad():  # routing: region means, affinity summed over heads and channels
        q_mean = torch.stack([q[:, :, region_of == r].mean(dim=2) for r in range(R)], dim=2)  # (B, h, R, d)
        k_mean = torch.stack([k[:, :, region_of == r].mean(dim=2) for r in range(R)], dim=2)
        affinity = torch.einsum("bhrd,bhsd->brs", q_mean, k_mean)  # (B, R, R)
        chosen = affinity.topk(topk, dim=-1).indices  # (B, R, topk)
    out = torch.zeros_like(q)
    for b in range(B):
        for r in range(R):
            q_tok = (region_of == r).nonzero().squeeze(1)
            k_tok = torch.isin(region_of, chosen[b, r]).nonzero().squeeze(1)
            scores = q[b][:, q_tok] @ k[b][:, k_tok].transpose(-1, -2) * d**-0.5  # (h, |q|, |k|)
            out[b][:, q_tok] = scores.softmax(dim=-1) @ v[b][:, k_tok]
    return out


CASES = [  # (batch, heads, head_dim, grid, regions, topk)
    (2, 3, 5, (8, 8), 4, 3),
    (1, 2, 8, (6, 12), 3, 2),  # non-square grid and non-square regions
    (2, 2, 4, (4, 8), 2, 1),
    (1, 4, 6, (8, 4), 4, 7),
    (1, 2, 4, (6, 6), 2, 4),  # topk = S^2: dense shortcut
]


@pytest.mark.parametrize("B,h,d,grid,regions,topk", CASES)
def test_matches_naive_reference_forward_and_backward(B, h, d, grid, regions, topk):
    g = torch.Generator().manual_seed(hash((grid, regions, topk)) % 2**31)
    N = grid[0] * grid[1]
    q, k, v = (torch.randn(B, h, N, d, generator=g, requires_grad=True) for _ in range(3))
    grad_out = torch.randn(B, h, N, d, generator=g)
    out = route_attention(q, k, v, grid, regions, topk)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    ref = naive_route_attention(q, k, v, grid, regions, topk)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out)
    assert out.shape == (B, h, N, d)
    assert (out - ref).abs().max() <= 1e-5
    for a, b in zip(grads, ref_grads):
        assert (a - b).abs().max() <= 1e-5


@pytest.mark.parametrize("grid,regions", [((8, 8), 4), ((6, 12), 3)])
def test_all_regions_is_dense_attention(grid, regions):
    torch.manual_seed(0)
    N, R = grid[0] * grid[1], regions * regions
    q, k, v = (torch.randn(2, 2, N, 8, requires_grad=True) for _ in range(3))
    dense = F.scaled_dot_product_attention(q, k, v)
    dense_grads = torch.autograd.grad(dense.square().sum(), (q, k, v))
    # Public function (dense shortcut) ...
    out = route_attention(q, k, v, grid, regions, R)
    assert (out - dense).abs().max() <= 1e-5
    # ... and the routed kernel itself, with every region routed to every region.
    idx = torch.arange(R).expand(2, R, R)
    blocks = routed_block_attention(*(to_region_major(t, grid, regions) for t in (q, k, v)), idx)
    dense_blocks = to_region_major(dense, grid, regions)
    assert (blocks - dense_blocks).abs().max() <= 1e-5
    grads = torch.autograd.grad(blocks.square().sum(), (q, k, v))
    for a, b in zip(grads, dense_grads):
        assert (a - b).abs().max() <= 1e-5


def test_kernel_gradcheck_float64():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 4, 2, 3, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    idx = torch.tensor([[[0, 2], [3, 1], [1, 1], [2, 0]]])  # (B, R, K); a repeated region too
    assert torch.autograd.gradcheck(lambda a, b, c: routed_block_attention(a, b, c, idx), (q, k, v))


def test_routing_gets_no_gradient():
    torch.manual_seed(2)
    grid, regions, topk = (8, 8), 4, 2
    q, k, v = (torch.randn(1, 2, 64, 4, requires_grad=True) for _ in range(3))
    idx = route_indices(q, k, grid, regions, topk)
    assert not idx.requires_grad and idx.grad_fn is None
    # The gradient is that of attention under a FIXED mask: adding to q/k a term that only moves the
    # region means (hence the routing scores) through a detached path changes nothing.
    out = route_attention(q, k, v, grid, regions, topk)
    g1 = torch.autograd.grad(out.sum(), (q, k, v))
    mask = torch.zeros(64, 64, dtype=torch.bool)
    region_of = (torch.arange(64) // 8 // 2) * regions + (torch.arange(64) % 8) // 2
    for r in range(regions * regions):
        mask[region_of == r] = torch.isin(region_of, idx[0, r])
    masked = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    g2 = torch.autograd.grad(masked.sum(), (q, k, v))
    for a, b in zip(g1, g2):
        assert (a - b).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "grid,regions,topk,message",
    [((8, 8), 3, 2, "do not divide"), ((6, 8), 4, 2, "do not divide"), ((8, 8), 4, 17, "topk = 17"),
     ((8, 8), 4, 0, "topk = 0")],
)
def test_bad_configuration_fails_clearly(grid, regions, topk, message):
    q = torch.randn(1, 2, grid[0] * grid[1], 4)
    with pytest.raises(ValueError, match=message):
        route_attention(q, q, q, grid, regions, topk)


def test_module_route_all_regions_equals_plain_attention_with_lepe():
    torch.manual_seed(3)
    routed = RouteAttention(16, 2, regions=2, topk=4, lepe=True)
    plain = RouteAttention(16, 2, regions=2, topk=4, lepe=True, route=False)
    plain.load_state_dict(routed.state_dict())
    x = torch.randn(2, 24, 16)
    out = routed(x, (4, 6))
    assert out.shape == (2, 24, 16)
    assert (out - plain(x, (4, 6))).abs().max() <= 1e-5
    sparse = RouteAttention(16, 2, regions=2, topk=1, lepe=True)
    sparse.load_state_dict(routed.state_dict())
    assert (sparse(x, (4, 6)) - out).abs().max() > 1e-3  # routing to 1 of 4 regions changes the result
    with pytest.raises(ValueError, match="do not form"):
        routed(x, (5, 5))
