"""Route attention (ldvc/model/route_attention.py) against dense attention and a naive per-region
reference, forward and backward; routing gets no gradient; bad (grid, regions, topk) fail clearly.
The FlexAttention backend against the block kernel: forward on the CPU (eager and, slow, compiled),
its BlockMask's block lists and mask_mod, the CPU backward refusal; forward + backward and the
fused (not dense) path on CUDA, skipped without a GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ldvc.model.route_attention import (
    RouteAttention,
    flex_available,
    flex_block_ok,
    flex_route_attention,
    from_region_tokens,
    resolve_backend,
    route_attention,
    route_block_mask,
    route_indices,
    routed_block_attention,
    to_region_major,
    to_region_tokens,
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


@pytest.mark.parametrize("backend", ["blocks", "masked"])
@pytest.mark.parametrize("B,h,d,grid,regions,topk", CASES)
def test_matches_naive_reference_forward_and_backward(B, h, d, grid, regions, topk, backend):
    g = torch.Generator().manual_seed(hash((grid, regions, topk)) % 2**31)
    N = grid[0] * grid[1]
    q, k, v = (torch.randn(B, h, N, d, generator=g, requires_grad=True) for _ in range(3))
    grad_out = torch.randn(B, h, N, d, generator=g)
    out = route_attention(q, k, v, grid, regions, topk, backend=backend)
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


# --------------------------------------------------------------------------------------------
# FlexAttention backend
# --------------------------------------------------------------------------------------------

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
needs_flex = pytest.mark.skipif(not flex_available(), reason="this torch has no torch.nn.attention.flex_attention")
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or not flex_available(),
    reason="FlexAttention's fused kernel and its backward need CUDA (flex has no backward on the CPU)",
)
FLEX_CASES = [c for c in CASES if c[5] < c[4] ** 2]  # the dense shortcut never reaches flex


def token_mask(idx: torch.Tensor, grid: tuple[int, int], regions: int) -> torch.Tensor:
    """(B, N, N) bool, row-major tokens: query token i may see key token j (the routing as a mask)."""
    H, W = grid
    N = H * W
    rows, cols = torch.arange(N) // W, torch.arange(N) % W
    region_of = (rows // (H // regions)) * regions + cols // (W // regions)  # (N,)
    routed = torch.zeros(idx.shape[0], regions**2, regions**2, dtype=torch.bool).scatter_(2, idx, True)
    return routed[:, region_of][:, :, region_of]


@needs_flex
@pytest.mark.parametrize("B,h,d,grid,regions,topk", FLEX_CASES)
def test_flex_forward_equals_blocks_and_differs_from_dense(B, h, d, grid, regions, topk):
    g = torch.Generator().manual_seed(7 + topk)
    N = grid[0] * grid[1]
    q, k, v = (torch.randn(B, h, N, d, generator=g) for _ in range(3))
    blocks = route_attention(q, k, v, grid, regions, topk, backend="blocks")
    flex = route_attention(q, k, v, grid, regions, topk, backend="flex")  # eager: the unfused path
    assert (flex - blocks).abs().max() <= 1e-5
    assert (flex - naive_route_attention(q, k, v, grid, regions, topk)).abs().max() <= 1e-5
    # The trap: a BlockMask whose mask_mod ignores the routing gives dense attention without error.
    assert (flex - F.scaled_dot_product_attention(q, k, v)).abs().max() > 1e-3


@needs_flex
@pytest.mark.parametrize("full", [True, False])
def test_block_mask_lists_and_mask_mod_follow_the_routing(full):
    torch.manual_seed(4)
    grid, regions, topk = (8, 8), 4, 3
    q, k = torch.randn(2, 2, 64, 4), torch.randn(2, 2, 64, 4)
    idx = route_indices(q, k, grid, regions, topk)  # (2, 16, 3)
    mask = route_block_mask(idx, 4, full=full)
    routed = torch.zeros(2, 16, 16, dtype=torch.bool).scatter_(2, idx, True)
    # block lists (what the fused kernel reads): exactly the k routed key blocks per query block
    assert torch.equal(mask.to_dense()[:, 0].bool(), routed)
    listed = mask.full_kv_num_blocks if full else mask.kv_num_blocks
    assert listed.eq(topk).all()
    if full:
        assert mask.kv_num_blocks.eq(0).all()  # no partially masked block
    # mask_mod (what the unfused path evaluates per element) in region-major token order
    qi, ki = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    for b in range(2):
        per_token = mask.mask_mod(torch.tensor(b), torch.tensor(0), qi, ki)
        expected = to_region_tokens(token_mask(idx, grid, regions)[b].float()[None, None], grid, regions)
        expected = to_region_tokens(expected.transpose(-1, -2), grid, regions).transpose(-1, -2)
        assert torch.equal(per_token, expected[0, 0].bool())


def test_region_token_order_round_trip():
    x = torch.arange(2 * 3 * 48 * 2, dtype=torch.float32).reshape(2, 3, 48, 2)
    r = to_region_tokens(x, (6, 8), 2)
    assert torch.equal(from_region_tokens(r, (6, 8), 2), x)
    # region-major: the first 12 tokens are region 0 = rows 0-2, columns 0-3
    first = r[0, 0, :12, 0] / 2
    assert first.tolist() == [float(row * 8 + col) for row in range(3) for col in range(4)]
    assert torch.equal(to_region_major(x, (6, 8), 2).permute(0, 2, 1, 3, 4).reshape(2, 3, 48, 2), r)


@needs_flex
def test_flex_refuses_a_cpu_backward_before_calling_flex():
    q, k, v = (torch.randn(1, 2, 64, 4, requires_grad=True) for _ in range(3))
    with pytest.raises(NotImplementedError, match="no backward on the CPU; use backend 'blocks'"):
        route_attention(q, k, v, (8, 8), 4, 2, backend="flex")
    with torch.no_grad():  # forward only is fine
        assert route_attention(q, k, v, (8, 8), 4, 2, backend="flex").shape == (1, 2, 64, 4)
    module = RouteAttention(8, 2, regions=4, topk=2, backend="flex")
    with pytest.raises(NotImplementedError):
        module(torch.randn(1, 64, 8), (8, 8))


def test_backend_choice(monkeypatch):
    monkeypatch.delenv("LDVC_ROUTE_ATTENTION", raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", cpu, (32, 32), 8) == "blocks"
    assert resolve_backend("auto", cpu, (8, 8), 4) == "masked"  # small token maps: dense with the routed mask
    assert resolve_backend("auto", cuda, (32, 32), 8) == ("flex" if flex_available() else "blocks")  # 16 tokens
    assert resolve_backend("auto", cuda, (32, 32), 16) == "blocks"  # 4 tokens per region: too small a tile
    assert resolve_backend("auto", cuda, (30, 30), 5) == "blocks"  # 36 tokens: not a power of two
    assert resolve_backend("blocks", cuda, (32, 32), 8) == "blocks"
    assert [t for t in range(1, 300) if flex_block_ok(t)] == [16, 32, 64, 128, 256]
    monkeypatch.setenv("LDVC_ROUTE_ATTENTION", "flex")
    assert resolve_backend("auto", cpu, (32, 32), 8) == "flex"
    monkeypatch.setenv("LDVC_ROUTE_ATTENTION", "dense")
    with pytest.raises(ValueError, match="LDVC_ROUTE_ATTENTION='dense'"):
        resolve_backend("auto", cpu, (32, 32), 8)
    with pytest.raises(ValueError, match="not one of"):
        RouteAttention(8, 2, 2, 2, backend="fast")


@needs_flex
@pytest.mark.slow
def test_compiled_flex_forward_on_the_cpu_uses_the_block_lists_without_recompiling():
    """Compiled flex reads the block lists (the eager path only evaluates the mask_mod); a new routing
    every call (a new BlockMask and mask_mod closure) must reuse the compiled kernel: a recompile per
    step would be slow and, past dynamo's cache limit, silently fall back to the dense eager path."""
    import torch._dynamo

    torch.manual_seed(5)
    grid, regions, topk = (16, 16), 4, 3
    for i in range(3):
        q, k, v = (torch.randn(1, 2, 256, 16) for _ in range(3))
        blocks = route_attention(q, k, v, grid, regions, topk, backend="blocks")
        with torch._dynamo.config.patch(error_on_recompile=i > 0):
            compiled = flex_route_attention(q, k, v, grid, regions, topk, compiled=True)
        assert (compiled - blocks).abs().max() <= 1e-5


@needs_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_flex_cuda_forward_and_backward_equal_blocks(dtype, tol):
    torch.manual_seed(6)
    grid, regions, topk = (32, 32), 8, 4  # 16 tokens per region: the paper size
    q, k, v = (torch.randn(2, 4, 1024, 32, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    grad_out = torch.randn_like(q)
    results = {}
    for backend in ("blocks", "flex", "flex"):  # flex twice: the second call runs the cached kernel
        out = route_attention(q, k, v, grid, regions, topk, backend=backend)
        results[backend] = (out, *torch.autograd.grad(out, (q, k, v), grad_out))
    assert resolve_backend("auto", q.device, grid, regions) == "flex"
    for a, b in zip(results["flex"], results["blocks"]):
        assert (a.float() - b.float()).abs().max() <= tol * max(1.0, b.float().abs().max().item())
    dense = F.scaled_dot_product_attention(q, k, v)
    assert (results["flex"][0].float() - dense.float()).abs().max() > 1e-2


@needs_cuda
def test_flex_cuda_runs_the_fused_kernel_not_dense_scores():
    """A compiled flex that fell back to the unfused path materialises the (heads, N, N) scores:
    its peak memory shows it (toolchain.md: after a failed backward it stays there silently)."""
    torch.manual_seed(7)
    grid, regions, topk = (64, 64), 8, 4  # 4096 tokens, 64 per region
    q, k, v = (torch.randn(1, 8, 4096, 64, device="cuda", requires_grad=True) for _ in range(3))
    route_attention(q, k, v, grid, regions, topk, backend="flex").sum().backward()  # compile + warm up
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    route_attention(q, k, v, grid, regions, topk, backend="flex").sum().backward()
    torch.cuda.synchronize()
    dense_scores = 8 * 4096 * 4096 * 4  # bytes of one float32 score matrix over all heads
    assert torch.cuda.max_memory_allocated() - base < dense_scores / 4


def test_compiled_flex_past_its_recompile_limit_fails_loudly_or_runs_the_block_kernel(monkeypatch) -> None:
    """No silent slow path: a call signature that would pass dynamo's recompile limit never reaches the
    compiled FlexAttention (past the limit dynamo runs the UNFUSED path, dense scores). Policy "error"
    (the device check) raises naming the signatures; "blocks" (training) runs the exact block kernel,
    warns once and counts it (flex_stats, recorded in the training summary)."""
    import ldvc.model.route_attention as ra

    if not ra.flex_available():
        pytest.skip("this torch has no FlexAttention")
    from torch.nn.attention.flex_attention import flex_attention

    monkeypatch.setattr(ra, "_flex_fn", lambda compiled: flex_attention)  # the CPU stands in for the compiled one
    monkeypatch.setattr(ra, "flex_recompile_limit", lambda: 2)
    grid, regions, topk = (8, 8), 4, 4

    def call(batch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(batch)
        q, k, v = (torch.randn(batch, 2, 64, 8, generator=gen) for _ in range(3))
        with torch.no_grad():
            out = ra.flex_route_attention(q, k, v, grid, regions, topk, compiled=True)
            ref = ra.route_attention(q, k, v, grid, regions, topk, backend="blocks")
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        return out

    for policy in ("error", "blocks"):
        ra.reset_flex_stats()
        ra.set_flex_fallback(policy)
        try:
            call(1), call(2), call(1)  # two signatures: within the limit
            assert ra.flex_stats()["compiled_signatures"] == 2
            if policy == "error":
                with pytest.raises(ra.FlexFallbackError, match="recompile limit"):
                    call(3)
            else:
                with pytest.warns(UserWarning, match="running the exact block kernel"):
                    call(3)
                call(4)
                assert ra.flex_stats()["fallbacks_to_blocks"] == 2 and ra.flex_stats()["compiled_signatures"] == 2
        finally:
            ra.set_flex_fallback(None)
            ra.reset_flex_stats()
