"""Lens-gated attention arithmetic (contract §8, seed 004): parameter counts at the GPT-2 124M
shape counted from the built modules, compute neutrality counted in matmul FLOPs, and the
route-annealing schedule.

Parameter counts build the modules on torch's meta device: shapes and `numel` are real, no
memory is allocated, so the full 12-layer GPT-2 shape costs nothing (construction only: no spec
runs a forward pass on the meta device). Seed 004 states the
12-layer total of mechanisms 1-4 as 9,444; its own per-layer figures give 9,660 (the seed
rounded 9,216 down to "9K" before adding 432 + 12).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from spec.implementation import mc

GPT2 = dict(n_embd=768, n_head=12)  # 12 heads of 64
N_LAYER = 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gpt2_blocks(**options):
    with torch.device("meta"):
        return [mc.LensGatedBlock(mc.LensGatedConfig(**GPT2, **options)) for _ in range(N_LAYER)]


def count(blocks, suffix: str) -> list[int]:
    """Per block: parameters whose name ends with `suffix`, summed over numel."""
    return [sum(p.numel() for n, p in b.named_parameters() if n.endswith(suffix)) for b in blocks]


def total(modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


# --- parameters ------------------------------------------------------------------------------


def test_mechanism_parameters_at_gpt2_124m_shape():
    """At 12 layers, E = 768, 12 heads of 64: reciprocity 0, discoverability 768, lens gates 36,
    route gate 1 parameter per layer; 9,660 in all for mechanisms 1-4 (not the seed's 9,444),
    which is exactly what the full lens adds over the baseline (a standard block)."""
    full = gpt2_blocks()
    base = gpt2_blocks(reciprocity=False, discoverability=False, route_gate=False)
    per_layer = {"attn.u": 768, "attn.gates": 36, "route_raw": 1}
    for suffix, want in per_layer.items():
        got = count(full, suffix)
        assert got == [want] * N_LAYER, f"{suffix}: {got} per layer, seed 004 says {want}"
    mechanisms = sum(sum(count(full, s)) for s in per_layer)
    assert mechanisms == 9_660, f"mechanisms 1-4 total {mechanisms}, expected 768x12+36x12+12"
    assert total(full) - total(base) == 9_660, (
        f"full lens {total(full)} - baseline {total(base)} = {total(full) - total(base)}")
    rec_only = gpt2_blocks(discoverability=False, route_gate=False)
    assert total(rec_only) - total(base) == 36 * N_LAYER, (
        "reciprocity itself must add no parameter beyond the lens gates: "
        f"{total(rec_only) - total(base)}")


def test_lens_gated_tiny_gpt_adds_exactly_the_mechanism_parameters():
    """A lens-gated TinyGPT at the GPT-2 124M shape has 9,660 parameters more than the standard
    TinyGPT of the same config, and exactly as many with the baseline ablation."""
    cfg = mc.TinyGPTConfig(vocab_size=50257, n_layer=N_LAYER, n_head=12, n_embd=768)
    with torch.device("meta"):
        std = mc.TinyGPT(cfg)
        full = mc.lens_gated_tiny_gpt(cfg)
        base = mc.lens_gated_tiny_gpt(cfg, "baseline")
    assert total([full]) - total([std]) == 9_660, f"{total([full])} - {total([std])}"
    assert total([base]) == total([std]), f"baseline {total([base])} != standard {total([std])}"


def test_context_parameters_at_gpt2_124m_shape():
    """Low-rank context (R = 128, mult = 4): ctx_down E·R = 98,304 and ctx_up R·4E = 393,216,
    491,520 per layer; full rank: E·4E = 2,359,296 per layer, 4.8x the low rank; each is
    exactly what the path adds to a block."""
    off, low = gpt2_blocks(), gpt2_blocks(context="low_rank", context_rank=128, mlp_ratio=4.0)
    full = gpt2_blocks(context="full_rank", mlp_ratio=4.0)
    got = (count(low, "ctx_down.weight"), count(low, "ctx_up.weight"))
    assert got == ([98_304] * N_LAYER, [393_216] * N_LAYER), f"ctx_down, ctx_up per layer {got}"
    assert count(full, "ctx_proj.weight") == [2_359_296] * N_LAYER, count(full, "ctx_proj.weight")
    assert total(low) - total(off) == 491_520 * N_LAYER == 5_898_240, total(low) - total(off)
    assert total(full) - total(off) == 2_359_296 * N_LAYER == 28_311_552, total(full) - total(off)
    ratio = 2_359_296 / 491_520
    assert ratio == 4.8, ratio


# --- compute neutrality ----------------------------------------------------------------------


def matmul_flops(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def plain_block(block, x):
    """A standard pre-LN block with `block`'s own weights, attention written with matmuls."""
    B, T, E = x.shape
    H = block.config.n_head
    attn = block.attn
    q, k, v = (t.view(B, T, H, E // H).transpose(1, 2)
               for t in attn.qkv(block.ln_1(x)).split(E, dim=2))
    s = (q @ k.transpose(-2, -1)) / math.sqrt(E // H)
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), -math.inf)
    a = attn.proj((s.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, E))
    h = x + a
    return h + block.mlp.fc_out(F.gelu(block.mlp.fc_in(block.ln_2(h))))


def test_compute_neutral_at_gpt2_shape():
    """With the context path off, a full lens-gated block (all of mechanisms 1-4) at E = 768,
    12 heads, T = 1024 costs within 1% of the matmul FLOPs of a plain block of the same shape.

    Counted by forward passes on the CPU (no meta-device forward is required of an
    implementation) at T = 8, 16 and 24: matmul FLOPs are a·T + b·T² exactly (projections and
    MLP linear in T, the two attention GEMMs quadratic), so two counts fix a and b, the third
    checks the fit, and the polynomial gives the count at T = 1024."""
    block = mc.LensGatedBlock(mc.LensGatedConfig(**GPT2))
    g = torch.Generator().manual_seed(0)

    def counts(T):
        x = torch.randn(1, T, 768, generator=g)
        return matmul_flops(block, x), matmul_flops(plain_block, block, x)

    at = {T: counts(T) for T in (8, 16, 24)}
    fits = []
    for side in (0, 1):
        f8, f16, f24 = (at[T][side] for T in (8, 16, 24))
        b = (f16 - 2 * f8) / (16 * 16 - 2 * 8 * 8)  # f(T) = a·T + b·T²
        a = (f8 - b * 64) / 8
        assert a * 24 + b * 24 * 24 == f24, f"FLOPs not a·T + b·T²: {at}"
        fits.append(a * 1024 + b * 1024 * 1024)
    lens, plain = fits
    assert plain <= lens <= 1.01 * plain, (
        f"lens-gated block {lens:,.0f} FLOPs vs plain {plain:,.0f} at T=1024 "
        f"(ratio {lens / plain:.5f}, limit 1.01); counted {at}")


def test_only_extra_matmul_is_the_discoverability_dot_product():
    """At a small real shape (B=2, T=32, E=64, 4 heads), where one extra T×T GEMM would cost
    ~10%, the full lens block's matmul FLOPs are the plain block's plus exactly 2·B·T·E, the
    d = K·u dot products; reciprocity and mixing add none."""
    cfg = mc.LensGatedConfig(n_embd=64, n_head=4)
    block = mc.LensGatedBlock(cfg)
    x = torch.randn(2, 32, 64, generator=torch.Generator().manual_seed(0))
    lens, plain = matmul_flops(block, x), matmul_flops(plain_block, block, x)
    assert lens - plain == 2 * 2 * 32 * 64, f"extra FLOPs {lens - plain:,} (lens {lens:,}, " \
        f"plain {plain:,}); expected 2·B·T·E = {2 * 2 * 32 * 64:,}"
    no_disc = mc.LensGatedBlock(mc.LensGatedConfig(n_embd=64, n_head=4, discoverability=False))
    assert matmul_flops(no_disc, x) == plain, "reciprocity alone must add no matmul FLOPs"


@pytest.mark.parametrize("context", ["low_rank", "full_rank"])
def test_context_path_costs_exactly_its_projections(context):
    """The context path adds exactly its GEMMs: 2·B·T·(E·R + R·M) (low rank) or 2·B·T·E·M
    (full rank), M = mult·E; nothing else changes."""
    B, T, E, R, M = 2, 8, 32, 4, 128
    off = mc.LensGatedBlock(mc.LensGatedConfig(n_embd=E, n_head=4, mlp_ratio=4.0))
    on = mc.LensGatedBlock(mc.LensGatedConfig(n_embd=E, n_head=4, mlp_ratio=4.0,
                                              context=context, context_rank=R))
    x = torch.randn(B, T, E, generator=torch.Generator().manual_seed(0))
    extra = matmul_flops(on, x) - matmul_flops(off, x)
    want = 2 * B * T * (E * R + R * M) if context == "low_rank" else 2 * B * T * E * M
    assert extra == want, f"{context}: extra FLOPs {extra:,}, expected {want:,}"


# --- route annealing -------------------------------------------------------------------------

SCHEDULE = {  # step: (route bias, g = sigmoid(bias) with route_raw = 0)
    0: (0.8, 0.68997448),
    2_000: (0.8, 0.68997448),
    6_000: (-0.1, 0.47502081),
    10_000: (-1.0, 0.26894142),
    20_000: (-1.0, 0.26894142),
}


@pytest.mark.parametrize("step", sorted(SCHEDULE))
def test_route_annealing_schedule_values(step):
    """Route bias 0.8 (g = 0.690) until step 2000, linear in the bias (logit space) to -1.0
    (g = 0.269) at step 10000, constant after; at step 6000 the bias is -0.1, g = 0.4750.
    These are the numbers contract §8 states: it follows seed 004's prose schedule ("g ≈ 0.69
    ... 0.69 → 0.27 ... g ≈ 0.27"), not its code's (g ≈ 0.90 at bias 0, bias to -3.2), for the
    reason given there; the default `RouteAnnealing()` is that schedule."""
    bias, gate = SCHEDULE[step]
    got = mc.route_bias_at(step)
    assert got == pytest.approx(bias, abs=1e-12), f"route_bias_at({step}) = {got}, want {bias}"
    g = 1 / (1 + math.exp(-got))
    assert g == pytest.approx(gate, abs=1e-8), f"step {step}: g = {g}, want {gate}"


@given(st.integers(0, 30_000), st.integers(0, 30_000))
def test_route_annealing_is_flat_then_linear_then_flat(a, b):
    """The bias never rises with the step, is constant outside [2000, 10000] and moves by
    (0.8 - (-1.0)) / 8000 per step inside it."""
    a, b = min(a, b), max(a, b)
    fa, fb = mc.route_bias_at(a), mc.route_bias_at(b)
    assert fb <= fa, f"bias rose from {fa} at step {a} to {fb} at step {b}"
    lo, hi = min(max(a, 2000), 10000), min(max(b, 2000), 10000)
    assert fa - fb == pytest.approx(1.8 * (hi - lo) / 8000, abs=1e-9), (a, b, fa, fb)


def test_fresh_block_starts_at_the_schedule_start():
    """A new route-gated block has route_raw = 0 and route_bias = 0.8: g = sigmoid(0.8) ≈ 0.69
    before any annealing, the schedule's value at step 0."""
    block = mc.LensGatedBlock(mc.LensGatedConfig(n_embd=8, n_head=2))
    g = block.route_gate().item()
    assert g == pytest.approx(1 / (1 + math.exp(-mc.route_bias_at(0))), abs=1e-6), g
    assert round(g, 2) == 0.69, g


@pytest.mark.parametrize("step", [0, 5_000, 12_000])
def test_apply_route_annealing_moves_the_bias_of_every_block(step):
    """apply_route_annealing sets every block's route_bias to route_bias_at(step) and leaves the
    learned route_raw alone: g = sigmoid(route_raw + bias) in every block of a lens-gated
    TinyGPT."""
    model = mc.lens_gated_tiny_gpt(mc.TinyGPTConfig(vocab_size=32, n_layer=3, n_head=2,
                                                    n_embd=8))
    raws = [0.3, -0.7, 1.1]
    with torch.no_grad():
        for block, raw in zip(model.blocks, raws, strict=True):
            block.route_raw.fill_(raw)
    bias = mc.apply_route_annealing(model, step)
    assert bias == mc.route_bias_at(step)
    for i, (block, raw) in enumerate(zip(model.blocks, raws, strict=True)):
        assert block.route_raw.item() == pytest.approx(raw), f"block {i} route_raw changed"
        want = 1 / (1 + math.exp(-(raw + bias)))
        assert block.route_gate().item() == pytest.approx(want, abs=1e-6), (
            f"block {i}: g = {block.route_gate().item()}, want sigmoid({raw} + {bias}) = {want}")


def test_schedule_rejects_bad_steps_and_schedules():
    """A negative or non-integer step, or a schedule that ends before it starts, raises a typed
    error naming it."""
    with pytest.raises(ValueError, match="step"):
        mc.route_bias_at(-1)
    with pytest.raises(TypeError, match="step"):
        mc.route_bias_at(2.5)
    with pytest.raises(ValueError, match="end_step"):
        mc.RouteAnnealing(start_step=100, end_step=100)
    custom = mc.RouteAnnealing(start_step=0, end_step=10, start_bias=2.0, end_bias=0.0)
    assert mc.route_bias_at(5, custom) == pytest.approx(1.0)
