"""GistNet (contract §8; issue 6): K vectors -> 1 gist with a small non-causal transformer and
learned-query pooling; the gist depends on every child, shared or per-level weights, batched,
dtype-preserving, trainable, and a drop-in gist function for MegaContextTree.

Tolerances: batched vs one-at-a-time agree to 1e-5 (float32 summation order may differ with the
batch size); "different" means a max |difference| above 1e-3 where gists are O(0.1..1).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spec.implementation import mc

D, K = 16, 4
DIFFERENT = 1e-3


def make_gistnet(seed: int = 0, dtype: torch.dtype = torch.float32, **cfg):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        cfg = mc.GistNetConfig(**{"dim": D, "block_size": K, "n_heads": 2, **cfg})
        return mc.GistNet(cfg).to(dtype).eval()


_NETS: dict = {}


def shared_gistnet(shared: bool = True):
    """One net per mode for read-only specs, called without autograd."""
    if shared not in _NETS:
        _NETS[shared] = make_gistnet(0, shared=shared)
    net = _NETS[shared]

    def gist(children, lod):
        with torch.no_grad():
            return net(children, lod)

    return gist


def blocks(seed: int, B: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(B, K, D, generator=torch.Generator().manual_seed(seed)) * scale


@given(st.integers(0, 2**31 - 1), st.sampled_from([0.1, 1.0, 10.0]), st.booleans())
def test_different_blocks_give_different_gists(seed, scale, shared):
    """Two different blocks never share a gist, and changing any single child changes the gist:
    a pooling that ignores its input (a constant learned query) or reads one position fails
    (§8)."""
    net = shared_gistnet(shared)
    x = blocks(seed, 2, scale)
    g = net(x, 1)
    gap = (g[0] - g[1]).abs().max().item()
    assert gap > DIFFERENT * scale, f"two random blocks (seed={seed}, scale={scale}) share a " \
        f"gist: max |diff| {gap}"
    nudge = torch.randn(D, generator=torch.Generator().manual_seed(seed + 1)) * scale
    y = x[:1].repeat(K, 1, 1)  # block k: child k nudged
    y[torch.arange(K), torch.arange(K)] += nudge
    moved = (net(y, 1) - g[:1]).abs().amax(dim=1)
    assert bool((moved > DIFFERENT * scale).all()), (
        f"nudging child k moved the gist by {moved.tolist()} (seed={seed}, scale={scale})"
    )


@pytest.mark.parametrize("net_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])
def test_output_shape_and_dtype(net_dtype, in_dtype):
    """children [B, K, D] -> gists [B, D] in the children's dtype, whatever the net's dtype
    (inputs are cast, no autocast needed) (§8)."""
    net = make_gistnet(0, net_dtype)
    for B in (1, 5):
        g = net(blocks(1, B).to(in_dtype), 1)
        assert g.shape == (B, D) and g.dtype == in_dtype, (B, g.shape, g.dtype)
        assert bool(torch.isfinite(g).all())


@pytest.mark.parametrize("shared", [True, False])
def test_gradient_reaches_every_parameter(shared):
    """A loss on LOD1 and LOD2 gists sends a non-zero gradient to every parameter, with shared
    and with per-level weights (§8).

    In float64 with a 1e-8 floor: a parameter whose gradient is zero analytically (a key bias
    shifts every logit of a softmax alike) shows ~1e-9 of rounding in float32, which a plain
    `!= 0` accepts; in float64 it shows ~1e-17."""
    net = make_gistnet(0, torch.float64, shared=shared)
    net.train()
    (net(blocks(2, 3).double(), 1).square().sum()
     + net(blocks(3, 3).double(), 2).square().sum()).backward()
    grads = {n: 0.0 if p.grad is None else p.grad.abs().max().item()
             for n, p in net.named_parameters()}
    dead = {n: g for n, g in grads.items() if not g > 1e-8}
    assert not dead, f"shared={shared}: no gradient (max |grad|) reached {dead}; all: {grads}"


@pytest.mark.parametrize("shared", [True, False])
def test_levels_are_told_apart(shared):
    """lod selects the level: the same children give different LOD1 and LOD2 gists, and with
    per-level weights training one level leaves the other's gists unchanged (§8)."""
    net = make_gistnet(0, shared=shared)
    x = blocks(4, 2)
    g1, g2 = net(x, 1), net(x, 2)
    assert (g1 - g2).abs().max() > DIFFERENT, f"shared={shared}: LOD1 and LOD2 gists coincide"
    if not shared:
        net.train()
        net(x, 1).sum().backward()
        with torch.no_grad():
            for p in net.parameters():
                if p.grad is not None:
                    p -= 0.1 * p.grad
        assert torch.equal(net(x, 2), g2), "a LOD1 update changed LOD2 gists (weights shared?)"


def test_batched_equals_one_block_at_a_time():
    """Gists are computed independently per block: a batch gives each block its own gist."""
    net = shared_gistnet()
    x = blocks(5, 6)
    whole = net(x, 1)
    for b in range(6):
        torch.testing.assert_close(whole[b:b + 1], net(x[b:b + 1], 1), rtol=1e-5, atol=1e-5)


def test_plugs_into_the_tree_as_its_gist_function():
    """MegaContextTree(cfg, D, gist_fn=gistnet) builds LOD1 gists with lod=1 from tokens and
    LOD2 gists with lod=2 from LOD1 gists (§8)."""
    cfg = mc.MCConfig(block_size=K, max_lod=2, budget=64, recent_tokens=4)
    net = shared_gistnet()
    tree = mc.MegaContextTree(cfg, D, gist_fn=net)
    g = torch.Generator().manual_seed(6)
    for n in (7, 30, 3, 41):  # spans complete across appends
        tree.append(torch.randn(n, D, generator=g))
    lod0, lod1, lod2 = tree.level(0), tree.level(1), tree.level(2)
    assert lod1.shape == (81 // K, D) and lod2.shape == (81 // K**2, D)
    with torch.no_grad():
        torch.testing.assert_close(lod1, net(lod0[: lod1.shape[0] * K].reshape(-1, K, D), 1),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lod2, net(lod1[: lod2.shape[0] * K].reshape(-1, K, D), 2),
                                   rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise_typed_errors():
    """A block of the wrong size or width, a level outside 1..levels, or integer children raise
    InputError / InputTypeError naming the argument (§4)."""
    net = shared_gistnet()
    with pytest.raises(mc.InputError, match="children"):
        net(torch.zeros(2, K + 1, D), 1)
    with pytest.raises(mc.InputError, match="children"):
        net(torch.zeros(2, K, D - 1), 1)
    with pytest.raises(mc.InputTypeError, match="children"):
        net(torch.zeros(2, K, D, dtype=torch.int64), 1)
    for lod in (0, 3):
        with pytest.raises(mc.InputError, match="lod"):
            net(torch.zeros(2, K, D), lod)
    with pytest.raises(ValueError, match="dim"):
        mc.GistNetConfig(dim=10, n_heads=4)
