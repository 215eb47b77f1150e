"""LensNet (contract §8, §4; issue 6): a deterministic, non-causal, batched, permutation-
equivariant scorer whose scores lie strictly inside (-1, 1), in fp32 and bf16, trainable end to
end (its golden vectors, golden/vectors/lensnet.json, are checked by spec/test_model_vectors.py).

Tolerances: same-shape calls are bitwise equal; different batch shapes may change float32
summation order, so padded-vs-alone and permuted-vs-plain agree to 2e-6 (scores are O(0.1));
bf16 parameters agree with float32 ones to 0.03; the golden vectors hold a float64 reference
and a tolerance wide enough for any CPU's float32.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from spec import strategies as S
from spec.implementation import mc

ROOT = Path(__file__).resolve().parents[1]
D_IN = 24
NET_CFG = mc.LensNetConfig(d_in=D_IN, width=16, n_heads=2, n_latents=3)
WC_CFG = mc.MCConfig(block_size=4, max_lod=2, budget=40, recent_tokens=6)
BATCH_TOL = dict(rtol=0.0, atol=2e-6)
BF16_TOL = 0.03


def make_net(seed: int = 0, dtype: torch.dtype = torch.float32, cfg=NET_CFG):
    """A LensNet initialised from `seed` without touching the global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return mc.LensNet(cfg).to(dtype).eval()


_NETS: dict = {}


def shared_net(dtype: torch.dtype = torch.float32):
    """One net per dtype for read-only specs, called without autograd (hypothesis calls it
    many times)."""
    if dtype not in _NETS:
        _NETS[dtype] = make_net(0, dtype)
    net = _NETS[dtype]

    def score(*args, **kwargs):
        with torch.no_grad():
            return net(*args, **kwargs)

    return score


def snapshot(T: int = 300, seed: int = 0, cfg=WC_CFG, d: int = D_IN):
    """(x [N, d], features [N, 3], wc): a WC snapshot gathered from a tree of random tokens."""
    tree = mc.MegaContextTree(cfg, d)
    tree.append(torch.randn(T, d, generator=torch.Generator().manual_seed(seed)))
    wc = mc.build_working_context(T, cfg)
    return tree.gather(wc), mc.lens_features(wc, T, cfg), wc


def describe(x, features) -> str:
    return f"x.shape={tuple(x.shape)} features={features.tolist()}"


# --- auxiliary features ----------------------------------------------------------------------


@given(S.cases())
def test_lens_features_are_level_log_span_and_log_distance_to_cursor(case):
    """lens_features(wc, T, cfg) is float32 [N, 3]: lod, ln(K**lod), ln(1 + T - end) (§8)."""
    cfg, T, wc = case
    got = mc.lens_features(wc, T, cfg)
    rows = []
    for lod, start in S.entries_of(wc):
        span = S.span(cfg, lod)
        rows.append([lod, np.log(span), np.log1p(T - (start + span))])
    want = torch.tensor(np.array(rows, dtype=np.float64).reshape(len(wc), 3))
    assert got.dtype == torch.float32 and got.shape == (len(wc), 3), (got.dtype, got.shape)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6,
                               msg=lambda m: f"{m}\n{S.describe(cfg, T, wc)}")


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scores_are_bitwise_deterministic_across_calls(dtype):
    """For a fixed seed and WC snapshot, repeated forward passes (and a second net built from
    the same seed) give bitwise identical scores (§8, seed 000 "deterministic forward")."""
    x, f, _ = snapshot()
    net = make_net(0, dtype)
    first = net(x, f)
    for again in (net(x, f), net(x, f), make_net(0, dtype)(x, f)):
        assert torch.equal(first, again), (
            f"{dtype}: max |diff| {(first - again).abs().max().item()} on {describe(x, f)}"
        )


# Run in fresh interpreters (and here): only torch and the implementation under test, so each
# subprocess starts fast. canonical_scores() -> hex bytes of the fp32 and bf16 scores.
CANONICAL_SCORES = """
import torch
from spec.implementation import mc

def canonical_scores():
    cfg = mc.MCConfig(block_size=4, max_lod=2, budget=40, recent_tokens=6)
    tree = mc.MegaContextTree(cfg, 24)
    tree.append(torch.randn(300, 24, generator=torch.Generator().manual_seed(0)))
    wc = mc.build_working_context(300, cfg)
    x, f = tree.gather(wc), mc.lens_features(wc, 300, cfg)
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = mc.LensNet(mc.LensNetConfig(d_in=24, width=16, n_heads=2, n_latents=3))
        with torch.no_grad():
            out.append(net.to(dtype).eval()(x, f).numpy().tobytes().hex())
    return " ".join(out)
"""


def test_scores_are_bitwise_identical_in_two_fresh_processes():
    """Two fresh Python processes with the same thread count (1) compute bitwise identical
    fp32 and bf16 scores for the same seed and WC snapshot, equal to this process's (§8)."""
    code = ("import torch; torch.set_num_threads(1)\n" + CANONICAL_SCORES
            + "\nprint(canonical_scores())")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, f"subprocess failed:\n{err}"
        outs.append(out.strip())
    assert outs[0] == outs[1], f"fresh processes disagree:\n{outs[0]}\n{outs[1]}"
    namespace: dict = {}
    exec(CANONICAL_SCORES, namespace)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = namespace["canonical_scores"]()
    finally:
        torch.set_num_threads(threads)
    assert outs[0] == here, f"subprocess {outs[0]}\nthis process {here}"


# --- what the scores depend on ----------------------------------------------------------------


def test_first_entries_see_the_last_entry():
    """Non-causal: changing only the last entry (vector and features) changes the scores of
    the first entries (the public causal LensNet could not see the recent tail) (§8)."""
    x, f, _ = snapshot()
    net = shared_net()
    before = net(x, f)
    x2, f2 = x.clone(), f.clone()
    x2[-1] = 5.0 * torch.randn(D_IN, generator=torch.Generator().manual_seed(1))
    f2[-1] = torch.tensor([2.0, 2.77, 9.0])
    after = net(x2, f2)
    moved = (after[:4] - before[:4]).abs()
    assert bool((moved > 1e-5).all()), (
        f"first 4 scores moved by {moved.tolist()} when only entry {len(x) - 1} changed"
    )


@given(S.lens_batches(D_IN))
def test_padded_batch_matches_each_sample_alone(batch):
    """A padded batch [B, N] with a mask gives each sample the scores it gets alone; padded
    positions score exactly 0 (§8)."""
    x, f, lengths = batch
    B, N = x.shape[:2]
    mask = torch.arange(N)[None, :] < torch.tensor(lengths)[:, None]
    net = shared_net()
    got = net(x, f, mask=mask)
    assert got.shape == (B, N) and got.dtype == torch.float32, (got.shape, got.dtype)
    for b, n in enumerate(lengths):
        alone = net(x[b, :n], f[b, :n])
        torch.testing.assert_close(got[b, :n], alone, **BATCH_TOL,
                                   msg=lambda m, b=b: f"sample {b} lengths={lengths}: {m}")
        assert bool((got[b, n:] == 0).all()), f"padded scores {got[b, n:].tolist()}"


@given(S.lens_batches(D_IN, max_batch=2), st.sampled_from([float("nan"), float("inf"), 1e30]))
def test_padding_never_influences_real_entries(batch, garbage):
    """Whatever padded entries hold (NaN, inf, huge values, in vectors and features), the real
    entries' scores do not change and every score stays finite (§8). Every sample gets one
    more padded entry at the end, so each example has padding (lens_batches alone gave a
    padded entry in 8 of the ci profile's 50)."""
    x, f, lengths = batch
    x, f = F.pad(x, (0, 0, 0, 1)), F.pad(f, (0, 0, 0, 1))  # [B, N+1, .]: one more padded slot
    N = x.shape[1]
    mask = torch.arange(N)[None, :] < torch.tensor(lengths)[:, None]
    net = shared_net()
    clean = net(x, f, mask=mask)
    x2, f2 = x.clone(), f.clone()
    x2[~mask] = garbage
    f2[~mask] = garbage
    dirty = net(x2, f2, mask=mask)
    assert bool(torch.isfinite(dirty).all()), f"non-finite scores with {garbage} padding"
    torch.testing.assert_close(dirty, clean, **BATCH_TOL,
                               msg=lambda m: f"padding={garbage} lengths={lengths}: {m}")


@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), -float("inf"), 1e30])
@pytest.mark.parametrize("where", ["x", "features", "tail"])
def test_padding_never_reaches_any_gradient(garbage, where):
    """Whatever a padded entry (or a tail gist masked out by tail_mask) holds, every parameter's
    gradient and the real entries' input gradients are those of clean padding, all finite, and
    the padded inputs get exactly zero gradient (§8: padded entries never influence real ones,
    "whatever their values"; a NaN in one padded row must not turn in_proj.weight.grad to NaN).
    """
    x, f, _ = snapshot()
    n = len(x)
    g = torch.Generator().manual_seed(11)
    xs = torch.stack([x, torch.randn(x.shape, generator=g)])  # [2, N, d_in]
    fs = torch.stack([f, f])
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[0, n - 3:] = False  # sample 0: its last 3 entries are padding
    tail = torch.randn(2, 3, D_IN, generator=g)
    tail_mask = torch.tensor([[True, False, True], [True, True, True]])
    weight = torch.randn(2, n, generator=g)

    def grads(x_in, f_in, t_in):
        net = make_net(seed=5)
        x_in, f_in, t_in = (v.clone().requires_grad_(True) for v in (x_in, f_in, t_in))
        scores = net(x_in, f_in, mask=mask, tail=t_in, tail_mask=tail_mask)
        (scores * weight).sum().backward()
        named = {name: p.grad for name, p in net.named_parameters()}
        return scores.detach(), named, (x_in.grad, f_in.grad, t_in.grad)

    clean = grads(xs, fs, tail)
    xd, fd, td = xs.clone(), fs.clone(), tail.clone()
    if where == "x":
        xd[~mask] = garbage
    elif where == "features":
        fd[~mask] = garbage
    else:
        td[~tail_mask] = garbage
    dirty = grads(xd, fd, td)
    torch.testing.assert_close(dirty[0], clean[0], **BATCH_TOL)
    bad = [name for name, gr in dirty[1].items() if gr is None or not torch.isfinite(gr).all()]
    assert not bad, f"{garbage} in padded {where}: non-finite gradient in {bad}"
    for name, gr in dirty[1].items():
        torch.testing.assert_close(gr, clean[1][name], rtol=1e-5, atol=1e-6, msg=lambda m, n=name: (
            f"{garbage} in padded {where} moved {n}.grad: {m}"))
    gx, gf, gt = dirty[2]
    for label, gr, keep in (("x", gx, mask), ("features", gf, mask), ("tail", gt, tail_mask)):
        assert bool(torch.isfinite(gr).all()), f"{garbage} in padded {where}: {label}.grad {gr}"
        assert bool((gr[~keep] == 0).all()), (
            f"padded {label} got gradient {gr[~keep].abs().max().item()} ({garbage} in {where})")


@given(S.lens_batches(D_IN, max_batch=1), st.data())
def test_permuting_entries_permutes_scores(batch, data):
    """Permutation equivariance: permuting entries together with their features permutes the
    scores the same way (no hidden dependence on entry order) (§8)."""
    x, f, lengths = batch
    n = lengths[0]
    x, f = x[0, :n], f[0, :n]
    perm = torch.tensor(data.draw(st.permutations(range(n))), dtype=torch.int64)
    net = shared_net()
    torch.testing.assert_close(net(x[perm], f[perm]), net(x, f)[perm], **BATCH_TOL,
                               msg=lambda m: f"perm={perm.tolist()}: {m}")


def test_tail_gists_condition_scores_and_masked_tail_gists_are_ignored():
    """Tail gists join the slots: passing them changes the scores; a tail gist masked out by
    tail_mask has the same effect as not passing it (§8)."""
    x, f, _ = snapshot()
    g = torch.Generator().manual_seed(2)
    tail = torch.randn(3, D_IN, generator=g)
    net = shared_net()
    plain = net(x, f)
    with_tail = net(x, f, tail=tail)
    assert (with_tail - plain).abs().max() > 1e-4, "tail gists had no effect on the scores"
    masked = net(x[None], f[None], tail=tail[None],
                 tail_mask=torch.tensor([[True, False, True]]))[0]
    two = net(x, f, tail=tail[[0, 2]])
    torch.testing.assert_close(masked, two, **BATCH_TOL)


# --- range, dtypes, gradients -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scores_stay_strictly_inside_minus_one_one(dtype):
    """Scores are float32 and strictly inside (-1, 1) even when the tanh saturates (every
    parameter scaled up 50x, huge inputs): the allocator's thresholds and the targets' +-1
    never coincide with a score (§4, §8)."""
    net = make_net(0, dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(50.0)
    x, f, _ = snapshot()
    for scale in (1.0, 1e4):
        s = net(x * scale, f)
        assert s.dtype == torch.float32, s.dtype
        assert bool((s.abs() < 1).all()), f"{dtype} scale={scale}: max |s| = {s.abs().max()}"
        assert s.abs().max() > 0.999, f"{dtype}: not saturated (max |s| {s.abs().max()})"


def test_bf16_agrees_with_fp32_without_autocast():
    """The same weights in bf16 and fp32 give scores within 0.03 of each other; a bf16 model
    accepts fp32 inputs and an fp32 model bf16 inputs, outside autocast (§8)."""
    x, f, _ = snapshot()
    net32 = make_net(0)
    net16 = copy.deepcopy(net32).to(torch.bfloat16)
    s32 = net32(x, f)
    for got in (net16(x, f), net16(x.bfloat16(), f.bfloat16()), net16(x.double(), f)):
        diff = (got - s32).abs().max().item()
        assert got.dtype == torch.float32 and diff <= BF16_TOL, (
            f"bf16 vs fp32 max |diff| {diff} > {BF16_TOL}; fp32 scores {s32.tolist()}"
        )
    torch.testing.assert_close(net32(x.bfloat16(), f), net32(x.bfloat16().float(), f))


def test_gradient_reaches_every_parameter():
    """One entry's score depends on every LensNet parameter (with tail gists, so the tail path
    counts too): no detached path and no dead parameter (§8).

    In float64, so that a parameter whose gradient is zero analytically (a bias that shifts
    every logit of a softmax alike) shows ~1e-17 of rounding instead of float32's ~1e-9, far
    below the 1e-8 a live parameter must reach."""
    x, f, _ = snapshot()
    net = make_net(0, torch.float64)
    net.train()
    tail = torch.randn(2, D_IN, generator=torch.Generator().manual_seed(3))
    net(x.double(), f.double(), tail=tail.double())[0].backward()
    grads = {name: 0.0 if p.grad is None else p.grad.abs().max().item()
             for name, p in net.named_parameters()}
    dead = {name: g for name, g in grads.items() if not g > 1e-8}
    assert not dead, f"no gradient (max |grad|) reached {dead}; live ones: {grads}"


def test_gradient_matches_finite_differences_for_every_parameter():
    """Training sees the function inference computes: for each parameter, autograd's
    derivative of a weighted score sum along a random direction equals a central difference
    of the forward, in float64 (a path detached from autograd fails here even where other
    paths still give that parameter some gradient) (§8).

    Scores come back as float32, so the difference uses eps = 1e-2 along a unit direction
    (float32 rounding then costs ~1e-5, the O(eps^2) truncation about as much; measured
    <= 1e-4 on derivatives up to 4.6) and a tolerance of 1e-3 relative + 1e-4."""
    x, f, _ = snapshot()
    x, f = x.double(), f.double()
    g = torch.Generator().manual_seed(5)
    tail = torch.randn(2, D_IN, generator=g, dtype=torch.float64)
    weights = torch.randn(len(x), generator=g, dtype=torch.float64)
    net = make_net(0, torch.float64)

    def objective():
        return (net(x, f, tail=tail).double() * weights).sum()

    params = dict(net.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(objective(), list(params.values())),
                     strict=True))
    eps, bad = 1e-2, {}
    for name, p in params.items():
        d = torch.randn(p.shape, generator=g, dtype=p.dtype)
        d /= d.norm()
        with torch.no_grad():
            p.add_(eps * d)
            up = objective().item()
            p.sub_(2 * eps * d)
            down = objective().item()
            p.add_(eps * d)
        numeric, analytic = (up - down) / (2 * eps), float((grads[name] * d).sum())
        if abs(numeric - analytic) > 1e-3 * abs(numeric) + 1e-4:
            bad[name] = (analytic, numeric)
    assert not bad, f"autograd vs central difference (analytic, numeric): {bad}"


def test_inference_sees_every_parameter_update():
    """After an optimizer step (or load_state_dict), the next forward pass - with or without
    autograd, in inference mode too - uses the new weights: no stale precomputed state."""
    x, f, _ = snapshot()
    net = make_net(0)
    with torch.inference_mode():
        before = net(x, f)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(x, f).square().sum().backward()
    opt.step()
    fresh = net(x, f).detach()
    with torch.inference_mode():
        after = net(x, f)
    assert not torch.equal(after, before), "an optimizer step did not change inference scores"
    assert torch.equal(after, fresh), f"stale inference scores: {(after - fresh).abs().max()}"
    net.load_state_dict(make_net(1).state_dict())
    with torch.inference_mode():
        assert torch.equal(net(x, f), make_net(1)(x, f).detach()), "load_state_dict ignored"


def test_empty_working_context_gives_no_scores():
    """N = 0 gives an empty float32 score tensor, and a batch row with no real entry scores
    all zero (no NaN from an empty softmax) (§4)."""
    net = shared_net()
    empty = net(torch.zeros(0, D_IN), torch.zeros(0, 3))
    assert empty.shape == (0,) and empty.dtype == torch.float32, (empty.shape, empty.dtype)
    x, f, _ = snapshot()
    mask = torch.zeros(2, len(x), dtype=torch.bool)
    mask[0] = True
    s = net(x.expand(2, -1, -1), f.expand(2, -1, -1), mask=mask)
    assert bool(torch.isfinite(s).all()) and bool((s[1] == 0).all()), s[1].tolist()


def test_bad_inputs_raise_typed_errors():
    """Wrong widths, shapes and dtypes raise InputError / InputTypeError naming the argument
    (§4): nothing is silently broadcast or trimmed."""
    net = shared_net()
    x, f, _ = snapshot()
    n = len(x)
    bad = [
        (mc.InputError, "x", lambda: net(x[:, :-1], f)),
        (mc.InputError, "features", lambda: net(x, f[:-1])),
        (mc.InputError, "features", lambda: net(x, f[:, :2])),
        (mc.InputTypeError, "x", lambda: net(x.long(), f)),
        (mc.InputTypeError, "mask", lambda: net(x[None], f[None], mask=torch.ones(1, n))),
        (mc.InputError, "mask", lambda: net(x[None], f[None],
                                            mask=torch.ones(1, n + 1, dtype=torch.bool))),
        (mc.InputError, "tail", lambda: net(x, f, tail=torch.zeros(2, D_IN + 1))),
        (mc.InputError, "tail_mask", lambda: net(x, f, tail_mask=torch.ones(2, dtype=bool))),
    ]
    for err, name, call in bad:
        with pytest.raises(err, match=name):
            call()
    with pytest.raises(ValueError, match="width"):
        mc.LensNetConfig(width=10, n_heads=4)


def test_tail_gists_are_the_newest_gists_of_each_level():
    """tail_gists(tree, per_level) returns the newest per_level gists of every level, coarsest
    level first, oldest first within a level (fewer while the history is short) (§8)."""
    cfg = WC_CFG
    tree = mc.MegaContextTree(cfg, 4)
    tree.append(torch.randn(90, 4, generator=torch.Generator().manual_seed(4)))
    got = mc.tail_gists(tree, per_level=2)
    want = torch.cat([tree.level(2)[-2:], tree.level(1)[-2:]])  # T=90: 5 LOD2, 22 LOD1 gists
    assert tree.level(2).shape[0] == 5 and torch.equal(got, want), got.shape
    short = mc.MegaContextTree(cfg, 4)
    short.append(torch.randn(10, 4))
    assert mc.tail_gists(short, per_level=2).shape == (2, 4)  # no LOD2 gist yet, 2 LOD1 gists


# --- cached input projections (contract §10) --------------------------------------------------


def padded_batch_with_tail(seed: int = 3):
    """(x [2, N, d_in], features [2, N, 3], mask, tail [2, 3, d_in], tail_mask): two samples,
    the second with its last 5 entries padded and one tail gist masked."""
    x, f, _ = snapshot()
    g = torch.Generator().manual_seed(seed)
    xb = torch.stack([x, torch.randn(x.shape, generator=g)])
    mask = torch.ones(2, len(x), dtype=torch.bool)
    mask[1, -5:] = False
    tail = torch.randn(2, 3, D_IN, generator=g)
    tail_mask = torch.tensor([[True, True, True], [True, False, True]])
    return xb, f.expand(2, -1, -1), mask, tail, tail_mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_projected_path_gives_the_plain_scores_bitwise(dtype):
    """Scoring `project(x)` with projected=True gives bitwise the scores of scoring x, alone
    and batched with padding and tail gists (the same arithmetic) (§10)."""
    net = make_net(0, dtype)
    x, f, _ = snapshot()
    xb, fb, mask, tail, tail_mask = padded_batch_with_tail()
    cases = {"unbatched": ((x, f), {}),
             "batched": ((xb, fb), dict(mask=mask, tail=tail, tail_mask=tail_mask))}
    with torch.no_grad():
        for name, ((vectors, features), kwargs) in cases.items():
            rows = net.project(vectors)
            assert rows.shape == (*vectors.shape[:-1], NET_CFG.width) and rows.dtype == dtype, (
                name, rows.shape, rows.dtype)
            plain = net(vectors, features, **kwargs)
            cached = net(rows, features, projected=True, **kwargs)
            assert torch.equal(plain, cached), (
                f"{name}: projected path differs by {(plain - cached).abs().max():.3g}")


def test_projected_path_trains_like_the_plain_path():
    """With autograd on, `project` + projected=True gives every parameter the gradient of the
    plain path (to 1e-6; scores are O(0.1)) (§10)."""
    xb, fb, mask, tail, tail_mask = padded_batch_with_tail()
    grads = []
    for projected in (False, True):
        net = make_net(0)
        inputs = net.project(xb) if projected else xb
        scores = net(inputs, fb, mask=mask, tail=tail, tail_mask=tail_mask, projected=projected)
        (scores * torch.linspace(-1, 1, scores.numel()).view_as(scores)).sum().backward()
        grads.append({n: p.grad for n, p in net.named_parameters()})
    bad = {n: None if grads[1][n] is None else float((g - grads[1][n]).abs().max())
           for n, g in grads[0].items()
           if grads[1][n] is None or not torch.allclose(g, grads[1][n], rtol=0, atol=1e-6)}
    assert not bad, f"gradients differ between the plain and the projected path: {bad}"


def test_projected_inputs_are_checked():
    """`project` and projected=True name the argument and the expected width (§4)."""
    net = shared_net()
    x, f, _ = snapshot()
    with pytest.raises(ValueError, match="width"):
        net(x, f, projected=True)  # d_in-wide vectors where projections are expected
    with pytest.raises(ValueError, match="d_in"):
        make_net(0).project(torch.zeros(3, D_IN + 1))
    with pytest.raises(TypeError, match="projected"):
        net(x, f, projected="yes")
