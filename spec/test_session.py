"""MegaContextSession (contract §11): the runtime loop ingest -> gist -> score -> focus -> decode.

Tiny, seeded, random-init models (K=4, a 2-layer TinyGPT of width 16): the rules are about the
loop's bookkeeping and the loss it reports, not about what a trained model predicts.
Tolerance: loss@H through a working context that holds the whole history equals the base's
full-context loss to NLL_ATOL nats/token (float32 forwards of identical inputs and positions).
"""

from __future__ import annotations

import pytest
import torch

from spec.implementation import mc

GPT = mc.TinyGPTConfig(vocab_size=64, n_layer=2, n_head=2, n_embd=16)
CFG = mc.MCConfig(block_size=4, max_lod=2, budget=20, recent_tokens=6, min_residency=1,
                  max_actions=8)
NLL_ATOL = 1e-5
CHUNKS = (1, 3, 4, 7, 2, 9, 5, 16, 1, 6)  # ingest sizes: inside, on and across block edges


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny forwards run single-threaded: on a busy 2-core runner a 2-thread 20x16 matmul
    spin-waits for ~10 ms where one thread takes ~10 us."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_base(seed: int = 0, dim: int = 16):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        cfg = GPT if dim == GPT.n_embd else mc.TinyGPTConfig(vocab_size=64, n_layer=2,
                                                             n_head=2, n_embd=dim)
        return mc.TinyGPT(cfg).eval()


def make_lens(seed: int = 0, d_in: int = 16):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return mc.LensNet(mc.LensNetConfig(d_in=d_in, width=16, n_heads=2, n_latents=2)).eval()


def tokens(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, GPT.vocab_size, (n,), generator=torch.Generator().manual_seed(seed))


def session(policy: str, cfg=CFG, seed: int = 0, base=None, horizon: int = 8):
    return mc.MegaContextSession(cfg, base if base is not None else make_base(),
                                 lensnet=make_lens(), policy=policy, seed=seed, horizon=horizon)


def feed(s, ids, chunks=CHUNKS, check=None, upto=None):
    """Ingest `ids[:upto]` in the given chunk sizes (cycled); the oracle gets the rest of `ids`
    as lookahead."""
    i, k, n = 0, 0, ids.shape[0] if upto is None else upto
    while i < n:
        j = min(i + chunks[k % len(chunks)], n)
        s.ingest(ids[i:j], future=ids[j:] if s.policy == "oracle" else None)
        if check is not None:
            check(s)
        i, k = j, k + 1


@pytest.mark.parametrize("policy", mc.POLICIES)
def test_after_every_ingest_the_wc_is_valid_and_within_budget(policy):
    """After every `ingest`, whatever its length, the WC satisfies every invariant of §3,
    budget included, for the tokens ingested so far (§11)."""
    s = session(policy)
    seen = []

    def check(s):
        s.wc.validate(CFG, s.T)  # raises the broken invariant
        assert len(s.wc) <= CFG.budget, f"N={len(s.wc)} > budget {CFG.budget} at T={s.T}"
        seen.append(s.T)

    feed(s, tokens(118), check=check, upto=110)
    assert seen[-1] == 110 == s.T, f"T={s.T}, ingested 110"


@pytest.mark.parametrize("policy", mc.POLICIES)
def test_refocus_happens_exactly_once_per_completed_block(policy):
    """The WC is refocused once per completed K-token block, at T = K, 2K, ... in order,
    however the tokens were chunked (update-every-K cadence, §11)."""
    s = session(policy)
    feed(s, tokens(110), upto=103)
    at = [r.T for r in s.records if r.kind == "refocus"]
    want = list(range(CFG.block_size, 104, CFG.block_size))
    assert at == want, f"refocus at T={at}, expected {want}"


@pytest.mark.parametrize("policy", mc.POLICIES)
def test_nll_leaves_the_session_untouched(policy):
    """`nll` is teacher-forced scoring only: the WC, the tree (every level), T and the records
    are the same before and after, and asking twice gives the same loss (§11)."""
    s = session(policy)
    ids = tokens(140)
    feed(s, ids, upto=120)
    wc, T, n_rec = s.wc, s.T, len(s.records)
    levels = [s.tree.level(lod).clone() for lod in range(CFG.max_lod + 1)]
    first = s.nll(ids[120:])
    second = s.nll(ids[120:])
    assert s.wc == wc and s.T == T and len(s.records) == n_rec, "session state changed"
    for lod, before in enumerate(levels):
        assert torch.equal(s.tree.level(lod), before), f"tree level {lod} changed"
    assert first == second, f"nll gave {first} then {second}"


@pytest.mark.parametrize("policy", ["window", "recency", "random"])
def test_a_budget_that_holds_the_history_gives_the_full_context_loss(policy):
    """With W_max >= T every policy that keeps raw tokens (window, recency, random scores under
    quiet thresholds) holds the whole history at LOD0, and loss@H equals the base model's NLL
    of the same H tokens with the full context, to NLL_ATOL (§11)."""
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=256, recent_tokens=6,
                      expand_threshold=2.0, collapse_threshold=2.0)
    base = make_base(1)
    ids = tokens(90, seed=3)
    T, H = 70, 20
    s = mc.MegaContextSession(cfg, base, policy=policy, seed=5)
    feed(s, ids[:T])
    assert int(s.wc.lods.max()) == 0 and len(s.wc) == T, f"WC is not the raw history: {s.wc}"
    with torch.no_grad():
        out = base(ids[None, : T + H - 1], targets=ids[None, 1: T + H])
    full = float(out.nll[0, T - 1:].double().mean())
    got = s.nll(ids[T: T + H])
    assert abs(got - full) <= NLL_ATOL, f"session loss@H {got} vs full context {full}"
    assert abs(mc.full_context_nll(base, ids, T, H) - full) <= NLL_ATOL


def test_loss_at_h_depends_on_the_working_context():
    """loss@H is measured through the WC: a session whose budget forces gists scores the same
    horizon differently from one that holds the raw history (a stub returning a fixed or
    full-context loss fails this)."""
    base = make_base(2)
    ids = tokens(120, seed=4)
    big = mc.MegaContextSession(mc.MCConfig(block_size=4, budget=256, recent_tokens=6), base,
                                policy="recency")
    small = session("recency", base=base)
    feed(big, ids[:100])
    feed(small, ids[:100])
    a, b = big.nll(ids[100:]), small.nll(ids[100:])
    assert abs(a - b) > 1e-4, f"full history {a} vs budget {CFG.budget} {b}: identical"


def test_recency_wc_is_the_baseline_at_every_completed_block():
    """The recency policy's WC is `build_working_context(T, cfg)` after every ingest that ends
    on a block edge (§11: the recency baseline of §4)."""
    s = session("recency")
    checked = []

    def check(s):
        if s.T % CFG.block_size == 0:
            want = mc.build_working_context(s.T, CFG)
            assert s.wc == want, f"T={s.T}: {s.wc} != baseline {want}"
            checked.append(s.T)

    feed(s, tokens(160), chunks=(4, 8, 3, 5, 12, 4), check=check)
    assert len(checked) >= 10, f"only {len(checked)} block edges checked"


def test_window_policy_keeps_the_last_w_max_tokens():
    """The window policy holds exactly the last min(T, W_max) tokens at LOD0 and nothing older
    (what a plain model with W_max positions of context sees)."""
    s = session("window")
    feed(s, tokens(77))
    assert s.wc.lods.tolist() == [0] * CFG.budget, f"lods {s.wc.lods.tolist()}"
    assert s.wc.starts.tolist() == list(range(77 - CFG.budget, 77)), s.wc.starts.tolist()


@pytest.mark.parametrize("policy", ["random", "lens"])
def test_same_seed_same_session(policy):
    """Two sessions with the same models, seed and input make the same WCs and records (actions,
    scores); for the random policy a different seed changes the actions."""
    ids = tokens(120, seed=7)
    a, b = session(policy, seed=11), session(policy, seed=11)
    feed(a, ids)
    feed(b, ids)
    assert a.wc == b.wc
    assert [r.actions for r in a.records] == [r.actions for r in b.records]
    for ra, rb in zip(a.records, b.records, strict=True):
        if ra.scores is not None:
            assert torch.equal(ra.scores, rb.scores), f"record {ra.step}: scores differ"
    if policy == "random":
        c = session(policy, seed=12)
        feed(c, ids)
        assert [r.actions for r in a.records] != [r.actions for r in c.records], \
            "seeds 11 and 12 gave the same actions"


def test_records_describe_each_refocus():
    """Every record names T, N, the actions, entries per level and a latency split in ms; the
    actions of the focus-step policies are exactly `focus_step` on the recorded scores."""
    s = session("random")
    feed(s, tokens(120))
    assert s.records, "no records"
    for r in s.records:
        assert sum(r.entries_per_lod) == r.N and r.N <= CFG.budget, r
        for name in ("gather_ms", "lens_ms", "allocator_ms", "base_ms"):
            assert getattr(r, name) >= 0.0, f"{name}={getattr(r, name)}"
        wc, actions = mc.focus_step(r.wc_before, r.scores, r.T, CFG)
        assert actions == r.actions, f"T={r.T}: recorded {r.actions}, focus_step {actions}"
        assert len(wc) == r.N


def test_generate_is_seeded_and_ingests_what_it_samples():
    """`generate(n, temperature, top_k, seed)` returns n tokens, ingests them (T grows by n, the
    WC stays valid) and is reproducible from the seed; top_k=1 is greedy decoding."""
    ids = tokens(50)
    a, b = session("recency"), session("recency")
    feed(a, ids)
    feed(b, ids)
    x = a.generate(9, temperature=0.8, top_k=5, seed=4)
    y = b.generate(9, temperature=0.8, top_k=5, seed=4)
    assert torch.equal(x, y) and x.shape == (9,) and x.dtype == torch.int64
    assert a.T == 59 and torch.equal(a.wc.starts, b.wc.starts)
    a.wc.validate(CFG, a.T)
    g1 = session("recency")
    feed(g1, ids)
    greedy = g1.generate(3, temperature=1.0, top_k=1, seed=0)
    g2 = session("recency")
    feed(g2, ids)
    argmax = g2.generate(3, temperature=0.0, seed=99)
    assert torch.equal(greedy, argmax), f"top_k=1 {greedy.tolist()} vs argmax {argmax.tolist()}"


def test_typed_errors_name_the_argument():
    """Bad input raises a typed error naming what is wrong (§4, §11)."""
    with pytest.raises(mc.ConfigError, match="recent_tokens"):
        mc.MCConfig(block_size=4, budget=5, recent_tokens=6)  # budget below the protected tail
    with pytest.raises(mc.InputError, match="policy"):
        mc.MegaContextSession(CFG, make_base(), policy="greedy")
    with pytest.raises(mc.InputError, match="d_in"):  # LensNet built for another base width
        mc.MegaContextSession(CFG, make_base(dim=32), lensnet=make_lens(d_in=16), policy="lens")
    with pytest.raises(mc.InputError, match="dim"):  # GistNet of another width
        mc.MegaContextSession(CFG, make_base(), gistnet=mc.GistNet(mc.GistNetConfig(
            dim=32, block_size=4, n_heads=2)), policy="recency")
    with pytest.raises(mc.InputError, match="lensnet"):
        mc.MegaContextSession(CFG, make_base(), policy="lens")
    s = session("recency")
    with pytest.raises(mc.InputError, match="T = 0"):
        s.nll(tokens(4))
    with pytest.raises(mc.InputTypeError, match="ids"):
        s.ingest(tokens(4).int())
    with pytest.raises(mc.InputError, match=r"ids\[2\] = 64"):
        s.ingest(torch.tensor([1, 2, 64]))
    s.ingest(tokens(8))
    with pytest.raises(mc.InputError, match="at least 1"):
        s.nll(tokens(0))
    with pytest.raises(mc.InputError, match="horizon H=30"):  # longer than what remains
        mc.policy_nll(CFG, make_base(), tokens(40), 20, 30, "recency")
    with pytest.raises(mc.InputError, match="lookahead"):
        session("oracle").ingest(tokens(8))


def test_lens_policy_scores_from_cached_projections_match_the_plain_path():
    """Policy "lens" scores from the tree's cached LensNet input projections (the default) equal
    the plain path's (cached_projections=False) to 1e-5, so both make the same focus decisions
    (contract §10, §11)."""
    ids = tokens(120, seed=5)
    runs = {}
    for cached in (True, False):
        s = mc.MegaContextSession(CFG, make_base(), lensnet=make_lens(), policy="lens",
                                  cached_projections=cached)
        feed(s, ids)
        runs[cached] = s
    fast, plain = runs[True], runs[False]
    assert fast.wc == plain.wc
    scored = 0
    for rf, rp in zip(fast.records, plain.records, strict=True):
        assert rf.actions == rp.actions, f"record {rf.step}: {rf.actions} vs {rp.actions}"
        if rf.scores is not None and rf.kind == "refocus":
            torch.testing.assert_close(rf.scores, rp.scores, rtol=0, atol=1e-5,
                                       msg=lambda m, r=rf: f"record {r.step}: {m}")
            scored += 1
    assert scored >= 10, f"only {scored} scored refocus steps"
