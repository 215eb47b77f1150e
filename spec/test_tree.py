"""MegaContextTree (contract §8): append-only ingest, each gist computed exactly once when its
span completes, no gist for a partial span, mean pooling by default, gather in WC order."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spec import strategies as S
from spec.implementation import mc

D = 8


def counting_mean():
    calls = []

    def gist_fn(children, lod):
        calls.append((lod, children.shape[0]))
        return children.mean(dim=1)

    return gist_fn, calls


@given(S.configs(max_levels=3), st.lists(st.integers(0, 40), min_size=1, max_size=8),
       st.integers(0, 2**16))
def test_each_gist_is_computed_once(cfg, chunks, seed):
    """Over any sequence of appends, level l holds T // K**l gists and the gist function was
    asked for exactly that many LOD-l gists in total (none recomputed, none skipped)."""
    gist_fn, calls = counting_mean()
    tree = mc.MegaContextTree(cfg, D, gist_fn=gist_fn)
    g = torch.Generator().manual_seed(seed)
    for n in chunks:
        tree.append(torch.randn(n, D, generator=g))
        T = tree.num_tokens
        for lod in range(1, cfg.max_lod + 1):
            made = sum(b for lvl, b in calls if lvl == lod)
            want = T // S.span(cfg, lod)
            assert made == want, f"LOD{lod}: gist_fn made {made} gists, T={T} needs {want}; " \
                f"calls={calls} chunks={chunks} cfg={cfg}"
            assert tree.level(lod).shape == (want, D), "a partial span must have no gist"
    assert tree.num_tokens == sum(chunks)


@given(S.configs(max_levels=3), st.integers(0, 200), st.integers(0, 2**16))
def test_default_gist_is_mean_of_children(cfg, T, seed):
    """By default an LOD-l gist is the mean of its K LOD-(l-1) children."""
    tree = mc.MegaContextTree(cfg, D)
    x = torch.randn(T, D, generator=torch.Generator().manual_seed(seed))
    tree.append(x)
    assert torch.equal(tree.level(0), x)
    K = cfg.block_size
    for lod in range(1, cfg.max_lod + 1):
        children = tree.level(lod - 1)
        n = children.shape[0] // K
        expected = children[: n * K].reshape(n, K, D).mean(dim=1)
        torch.testing.assert_close(tree.level(lod), expected, rtol=1e-6, atol=1e-6)


@given(S.cases(), st.integers(0, 2**16))
def test_gather_returns_each_entrys_vector_in_order(case, seed):
    """gather(wc)[i] is the level-lods[i] vector at index starts[i] // span."""
    cfg, T, wc = case
    tree = mc.MegaContextTree(cfg, D)
    tree.append(torch.randn(T, D, generator=torch.Generator().manual_seed(seed)))
    got = tree.gather(wc)
    assert got.shape == (len(wc), D)
    for i, (lod, start) in enumerate(S.entries_of(wc)):
        want = tree.level(lod)[start // S.span(cfg, lod)]
        assert torch.equal(got[i], want), f"entry {i} ({lod}, {start}): {S.describe(cfg, T, wc)}"


def test_save_load_round_trip(tmp_path):
    """A saved tree loads with the same config and vectors, and keeps ingesting."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=6)
    tree = mc.MegaContextTree(cfg, D)
    g = torch.Generator().manual_seed(0)
    tree.append(torch.randn(37, D, generator=g))
    tree.save(tmp_path / "tree.pt")
    loaded = mc.MegaContextTree.load(tmp_path / "tree.pt")
    assert loaded.cfg == cfg and loaded.num_tokens == 37
    for lod in range(3):
        assert torch.equal(loaded.level(lod), tree.level(lod))
    more = torch.randn(30, D, generator=g)
    tree.append(more)
    loaded.append(more)
    for lod in range(3):
        assert torch.equal(loaded.level(lod), tree.level(lod))


@pytest.mark.parametrize(
    "x,error,needle",
    [
        (torch.zeros(4), ValueError, "x"),
        (torch.zeros(4, D + 1), ValueError, "dim"),
        (torch.zeros(4, D, dtype=torch.float64), TypeError, "dtype"),
        (torch.zeros(4, D, dtype=torch.int64), TypeError, "x"),
        (torch.full((4, D), float("nan")), ValueError, "finite"),
    ],
)
def test_append_rejects_bad_embeddings(x, error, needle):
    tree = mc.MegaContextTree(mc.MCConfig(block_size=4, max_lod=2, budget=64), D)
    with pytest.raises(error, match=needle):
        tree.append(x)
    assert tree.num_tokens == 0, "a rejected append must not change the tree"


def test_gather_rejects_wc_for_another_history():
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=6)
    tree = mc.MegaContextTree(cfg, D)
    tree.append(torch.zeros(10, D))
    with pytest.raises(mc.CoverageError):
        tree.gather(mc.build_working_context(12, cfg))


# --- cached LensNet projections (contract §10) ------------------------------------------------

LENS_CFG = mc.LensNetConfig(d_in=D, width=8, n_heads=2, n_latents=2)
PROJ_TOL = 1e-6  # fp32: the cache projects a level in one GEMM, gather-then-project the WC rows


def lens(seed: int) -> mc.LensNet:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return mc.LensNet(LENS_CFG).eval()


@given(S.configs(max_levels=3), st.lists(st.integers(1, 60), min_size=1, max_size=3),
       st.integers(0, 2**16))
def test_cached_projections_equal_projecting_the_gathered_vectors(cfg, chunks, seed):
    """After any sequence of appends and gathers, gather(wc, lensnet=net) equals
    net.project(gather(wc)) (to 1e-6 in fp32: rows may be projected in GEMMs of other shapes),
    and so do the scores computed from them (§10)."""
    tree, net = mc.MegaContextTree(cfg, D), lens(0)
    g = torch.Generator().manual_seed(seed)
    for n in chunks:
        tree.append(torch.randn(n, D, generator=g))
        T = tree.num_tokens
        wc = mc.build_working_context(T, cfg)
        with torch.no_grad():
            got, want = tree.gather(wc, lensnet=net), net.project(tree.gather(wc))
            f = mc.lens_features(wc, T, cfg)
            scores = net(got, f, projected=True), net(tree.gather(wc), f)
        assert got.shape == (len(wc), LENS_CFG.width), got.shape
        assert torch.allclose(got, want, rtol=0, atol=PROJ_TOL), (
            f"T={T}: cached projections differ by {(got - want).abs().max():.3g}")
        assert torch.allclose(*scores, rtol=0, atol=1e-5), (
            f"T={T}: scores differ by {(scores[0] - scores[1]).abs().max():.3g}")


def test_cached_projections_follow_every_weight_update():
    """The cache never serves projections made under other weights: after an in-place
    optimizer step (in inference mode too), load_state_dict, an in-place edit under no_grad,
    a dtype change, or for another LensNet, gather(wc, lensnet=net) equals
    net.project(gather(wc)) under the current weights (§10)."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=40, recent_tokens=6)
    tree = mc.MegaContextTree(cfg, D)
    tree.append(torch.randn(300, D, generator=torch.Generator().manual_seed(0)))
    wc = mc.build_working_context(300, cfg)
    f = mc.lens_features(wc, 300, cfg)
    net = lens(0)
    served = []

    def check(net, what, tol=PROJ_TOL, mode=torch.no_grad):
        with mode():
            got, want = tree.gather(wc, lensnet=net), net.project(tree.gather(wc))
        assert got.dtype == want.dtype and torch.allclose(got.float(), want.float(), rtol=0,
                                                          atol=tol), (
            f"{what}: stale projections, off by {(got.float() - want.float()).abs().max():.3g}")
        if served:
            assert not torch.allclose(got.float(), served[-1].float(), rtol=0, atol=1e-3), (
                f"{what}: the update did not change the projections (the check is void)")
        served.append(got)

    check(net, "first use")
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(tree.gather(wc), f).square().sum().backward()
    opt.step()
    check(net, "after an optimizer step", mode=torch.inference_mode)
    net.load_state_dict(lens(1).state_dict())
    check(net, "after load_state_dict")
    with torch.no_grad():
        net.in_proj.weight.mul_(-2.0)
    check(net, "after an in-place edit under no_grad")
    check(lens(2), "for another LensNet")
    check(net.to(torch.bfloat16), "after .to(bfloat16)", tol=2e-2)


def test_gathered_projections_are_differentiable_while_training():
    """With autograd on and trainable weights, gather(wc, lensnet=net) is net.project of the
    gathered vectors with its graph: the input projection receives a gradient (§10)."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=40, recent_tokens=6)
    tree = mc.MegaContextTree(cfg, D)
    tree.append(torch.randn(100, D, generator=torch.Generator().manual_seed(0)))
    wc = mc.build_working_context(100, cfg)
    net = lens(0)
    scores = net(tree.gather(wc, lensnet=net), mc.lens_features(wc, 100, cfg), projected=True)
    scores.sum().backward()
    grad = net.in_proj.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0, "no gradient reached in_proj"


def test_gather_rejects_a_lensnet_that_is_not_one():
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=6)
    tree = mc.MegaContextTree(cfg, D)
    tree.append(torch.zeros(10, D))
    with pytest.raises(TypeError, match="lensnet"):
        tree.gather(mc.build_working_context(10, cfg), lensnet=object())


@pytest.mark.parametrize("lod", [1, 2])
def test_mean_gist_is_the_mean_of_the_children_and_the_default_gist(lod):
    """`mean_gist(children [B, K, D], lod)` is the arithmetic mean over the K children, [B, D],
    and a tree built without a gist function stores exactly those gists at every level (§8.1)."""
    g = torch.Generator().manual_seed(lod)
    children = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    got = mc.mean_gist(children, lod)
    want = children.sum(dim=1) / 4
    assert got.shape == (3, 5), got.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=4)
    tree = mc.MegaContextTree(cfg, 5)
    x = torch.randn(40, 5, generator=g)
    tree.append(x)
    torch.testing.assert_close(tree.level(1), x.view(10, 4, 5).mean(dim=1))
    torch.testing.assert_close(tree.level(2), tree.level(1)[:8].view(2, 4, 5).mean(dim=1))
