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
