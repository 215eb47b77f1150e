"""Counterfactual ΔNLL labels (contract §12) and their Parquet tables.

Tiny seeded random-init models (K=4). Tolerance: a variant's loss@H computed in a padded batch
and alone agree to DELTA_ATOL nats/token (float32 forwards; right padding is invisible to a
causal model, so in practice they agree far more closely).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spec.implementation import mc

GPT = mc.TinyGPTConfig(vocab_size=64, n_layer=2, n_head=2, n_embd=16)
CFG = mc.MCConfig(block_size=4, max_lod=2, budget=28, recent_tokens=6, min_residency=0)
DELTA_ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny forwards run single-threaded (see spec/test_session.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_base(seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = mc.TinyGPT(GPT).eval()
    with torch.no_grad():  # sharper attention: the context visibly matters
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(8.0)
    return model


def tokens(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, GPT.vocab_size, (n,), generator=torch.Generator().manual_seed(seed))


def snapshot(T: int = 150, H: int = 12, seed: int = 0, policy: str = "random"):
    """(base, session at T, future[H]) with a WC that mixes tokens, LOD1 and LOD2 gists."""
    base, ids = make_base(seed), tokens(T + H, seed)
    s = mc.MegaContextSession(CFG, base, policy=policy, seed=seed)
    for i in range(0, T, 5):
        s.ingest(ids[i: min(i + 5, T)])
    return base, s, ids[T:]


def direct_loss(base, tree, wc, T, future) -> float:
    """loss@H of one WC by a plain, unbatched forward (the reference)."""
    x = torch.cat([tree.gather(wc), base.embed(future[:-1])])[None]
    pos = torch.cat([wc.positions(CFG).double(), torch.arange(T, T + future.shape[0] - 1,
                                                              dtype=torch.float64)])[None]
    with torch.no_grad():
        logits = base(x, positions=pos).logits[0, len(wc) - 1:]
    return float(torch.nn.functional.cross_entropy(logits.float(), future).double())


def apply(wc, cand):
    """The variant WC of a candidate, built from the WC arrays (independently of the labeler)."""
    lods, starts = wc.lods.numpy(), wc.starts.numpy()
    K, r = CFG.block_size, cand.row
    if cand.kind == "expand":
        child = CFG.span(cand.lod - 1)
        mid_l = np.full(K, cand.lod - 1)
        mid_s = cand.start + child * np.arange(K)
        return mc.WorkingContext.from_numpy(np.r_[lods[:r], mid_l, lods[r + 1:]],
                                            np.r_[starts[:r], mid_s, starts[r + 1:]])
    return mc.WorkingContext.from_numpy(np.r_[lods[:r], cand.lod + 1, lods[r + K:]],
                                        np.r_[starts[:r], cand.start, starts[r + K:]])


def test_delta_nll_is_variant_loss_minus_snapshot_loss():
    """ΔNLL(action) = loss@H(variant) − loss@H(snapshot), with the variant's loss computed by a
    plain forward of its own WC: the sign convention and the variant construction (§12)."""
    base, s, future = snapshot()
    lab = mc.label_snapshot(base, s.tree, s.wc, s.T, future, CFG)
    assert {c.kind for c in lab.candidates} == {"expand", "collapse"}, lab.candidates
    ref0 = direct_loss(base, s.tree, s.wc, s.T, future)
    assert abs(lab.base_nll - ref0) <= DELTA_ATOL, f"base_nll {lab.base_nll} vs {ref0}"
    for c, d in zip(lab.candidates, lab.delta_nll.tolist(), strict=True):
        v = apply(s.wc, c)
        v.validate(mc.MCConfig(block_size=4, max_lod=2, budget=10**6, recent_tokens=6), s.T)
        ref = direct_loss(base, s.tree, v, s.T, future) - ref0
        assert abs(d - ref) <= DELTA_ATOL, f"{c}: ΔNLL {d} vs reference {ref}"
    assert lab.delta_nll.abs().max() > 1e-4, "every ΔNLL is ~0: the variants changed nothing"


def test_batched_equals_one_at_a_time():
    """Padded batches of variants give the same ΔNLL as one variant per forward (§12)."""
    base, s, future = snapshot(seed=1)
    many = mc.label_snapshot(base, s.tree, s.wc, s.T, future, CFG, batch_size=64)
    one = mc.label_snapshot(base, s.tree, s.wc, s.T, future, CFG, batch_size=1)
    odd = mc.label_snapshot(base, s.tree, s.wc, s.T, future, CFG, batch_size=3)
    assert many.candidates == one.candidates == odd.candidates
    for other in (one, odd):
        err = (many.delta_nll - other.delta_nll).abs().max().item()
        assert err <= DELTA_ATOL, f"batched vs batch_size={other}: max |Δ| {err}"


def test_expanding_a_gist_over_raw_tokens_recovers_the_full_context_loss():
    """On a WC that is the raw history except one LOD1 gist, expanding that gist gives back
    exactly the raw history, so base_nll + ΔNLL(expand) is the full-context loss (§12)."""
    base, ids = make_base(2), tokens(60, seed=2)
    T, H = 44, 16
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=6)
    tree = mc.MegaContextTree(cfg, GPT.n_embd)
    with torch.no_grad():
        tree.append(base.embed(ids[:T]))
    lods = np.zeros(T - 3, dtype=np.int64)
    lods[8] = 1  # the gist over tokens [8, 12)
    starts = np.r_[np.arange(8), 8, np.arange(12, T)]
    wc = mc.WorkingContext.from_numpy(lods, starts)
    lab = mc.label_snapshot(base, tree, wc, T, ids[T: T + H], cfg)
    (i,) = [k for k, c in enumerate(lab.candidates) if c.kind == "expand"]
    full = mc.full_context_nll(base, ids, T, H)
    got = lab.base_nll + float(lab.delta_nll[i])
    assert abs(got - full) <= DELTA_ATOL, f"after expand {got} vs full context {full}"
    assert abs(lab.base_nll - full) > 1e-4, "the gist did not change the loss: a vacuous toy"
    assert lab.expand_gain[8] == -lab.delta_nll[i]


def test_illegal_actions_are_never_measured_and_nan_marks_only_the_unmeasured():
    """Every structurally legal action is measured (no max_candidates) and nothing else: LOD0
    entries never get an expand gain, entries outside every collapsible group never get a
    collapse loss; a value is NaN exactly where no action was measured, and a group's
    collapse loss is the same on all K members (§6, §12)."""
    base, s, future = snapshot(seed=3)
    lab = mc.label_snapshot(base, s.tree, s.wc, s.T, future, CFG)
    expand_ok, group_id = mc.legal_actions(s.wc, s.T, CFG)
    measured_gain = ~torch.isnan(lab.expand_gain)
    measured_loss = ~torch.isnan(lab.collapse_loss)
    assert torch.equal(measured_gain, expand_ok), "expand gains measured != legal expands"
    assert torch.equal(measured_loss, group_id >= 0), "collapse losses measured != groups"
    assert int(expand_ok.sum()) > 0 and int((group_id >= 0).sum()) > 0, "toy has no actions"
    for g in group_id.unique().tolist():
        if g >= 0:
            vals = lab.collapse_loss[group_id == g]
            assert bool((vals == vals[0]).all()), f"group {g} members disagree: {vals}"
    n_legal = int(expand_ok.sum()) + int(group_id.max()) + 1
    assert len(lab.candidates) == n_legal


def test_sampled_candidates_leave_the_rest_nan():
    """With more legal actions than max_candidates, a seeded sample of exactly that many is
    measured, the same for the same seed; everything else stays NaN, so the targets of
    `lens_targets_from_utilities` mask it out (§12)."""
    base, s, future = snapshot(seed=4)
    full = mc.label_snapshot(base, s.tree, s.wc, s.T, future, CFG)
    m = len(full.candidates) // 2
    a = mc.label_snapshot(base, s.tree, s.wc, s.T, future, CFG, max_candidates=m, seed=9)
    b = mc.label_snapshot(base, s.tree, s.wc, s.T, future, CFG, max_candidates=m, seed=9)
    assert len(a.candidates) == m and a.candidates == b.candidates
    assert set(a.candidates) <= set(full.candidates)
    n_measured = int((~torch.isnan(a.expand_gain)).sum()) + \
        int((~torch.isnan(a.collapse_loss)).sum()) // CFG.block_size
    assert n_measured == m, f"{n_measured} values for {m} sampled actions"
    _, mask = mc.lens_targets_from_utilities(s.wc, a.expand_gain, a.collapse_loss, s.T, CFG,
                                             price=0.01)
    _, full_mask = mc.lens_targets_from_utilities(s.wc, full.expand_gain, full.collapse_loss,
                                                  s.T, CFG, price=0.01)
    assert int(mask.sum()) < int(full_mask.sum()), "sampling masked nothing out"


def test_tables_read_back_to_bit_identical_targets(tmp_path):
    """A snapshot's labels written to Parquet and read back give bit-identical utilities and
    targets, with the versioned schema's columns (§12)."""
    base, s, future = snapshot(seed=5)
    lab = mc.label_snapshot(base, s.tree, s.wc, s.T, future, CFG)
    n_legal = len(lab.candidates)
    mc.write_snapshot_labels(tmp_path, lab, future, run_id="r1", snapshot_id=3,
                             source="toy", policy="random", base_sha256="b" * 64,
                             gistnet_sha256="mean", n_legal=n_legal)
    (back,) = mc.read_labels(tmp_path, CFG)
    assert back.snapshot_id == 3 and back.T == s.T and back.wc == s.wc
    assert torch.equal(back.future, future) and back.base_nll == lab.base_nll
    for name in ("expand_gain", "collapse_loss"):
        a, b = getattr(lab, name), getattr(back, name)
        assert torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(
            a.nan_to_num(7.0), b.nan_to_num(7.0)), f"{name} changed on the round trip"
    t1, m1 = mc.lens_targets_from_utilities(s.wc, lab.expand_gain, lab.collapse_loss, s.T, CFG,
                                            price=0.003)
    t2, m2 = mc.lens_targets_from_utilities(back.wc, back.expand_gain, back.collapse_loss,
                                            back.T, CFG, price=0.003)
    assert torch.equal(t1, t2) and torch.equal(m1, m2)
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "labels" / "00000003.parquet")
    want = {"run_id", "snapshot_id", "T", "H", "lod", "start", "action", "delta_nll",
            "base_nll", "policy", "base_sha256", "gistnet_sha256", "created_at",
            "schema_version"}
    assert want <= set(table.column_names), sorted(want - set(table.column_names))
    assert table.num_rows == len(lab.candidates)
    assert set(table.column("schema_version").to_pylist()) == {mc.LABEL_SCHEMA_VERSION}


def test_best_variant_mode():
    """Best-variant mode: V seeded focus variants (variant 0 is the snapshot), one loss@H each,
    targets from `lens_targets_from_best` against the lowest-loss variant and weights from
    `variant_weights`; the best variant itself gets no target (§6, §12)."""
    base, s, future = snapshot(seed=6)
    bv = mc.best_variant_labels(base, s.tree, s.wc, s.T, future, CFG, n_variants=6, seed=2)
    again = mc.best_variant_labels(base, s.tree, s.wc, s.T, future, CFG, n_variants=6, seed=2)
    assert len(bv.variants) == 6 and bv.variants[0] == s.wc
    assert all(a == b for a, b in zip(bv.variants, again.variants, strict=True))
    assert bv.best == int(torch.argmin(bv.losses))
    for v, loss in zip(bv.variants, bv.losses.tolist(), strict=True):
        v.validate(CFG, s.T)
        assert abs(loss - direct_loss(base, s.tree, v, s.T, future)) <= DELTA_ATOL
    assert not bool(bv.masks[bv.best].any()), "the best variant has targets against itself"
    assert torch.equal(bv.weights, mc.variant_weights(bv.losses))
    assert any(bool(m.any()) for m in bv.masks), "no variant got a target"
    assert not math.isnan(float(bv.losses.sum()))


def test_labeler_rejects_bad_input():
    """A tree that does not hold T tokens, an empty horizon, tokens outside the vocabulary and
    a bad max_candidates raise typed errors naming the argument."""
    base, s, future = snapshot(T=40)
    with pytest.raises(mc.InputError, match="T=39"):
        mc.label_snapshot(base, s.tree, s.wc, 39, future, CFG)
    with pytest.raises(mc.InputError, match="future"):
        mc.label_snapshot(base, s.tree, s.wc, s.T, future[:0], CFG)
    with pytest.raises(mc.InputError, match=r"future\[0\] = 99"):
        mc.label_snapshot(base, s.tree, s.wc, s.T, torch.tensor([99]), CFG)
    with pytest.raises(mc.InputError, match="max_candidates"):
        mc.label_snapshot(base, s.tree, s.wc, s.T, future, CFG, max_candidates=0)
