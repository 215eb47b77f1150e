"""Lens-gated attention block (contract §8, seed 004): what each mechanism computes, causality with
every mechanism on, the softmax lens gates, the route gate, the MLP context blend, gradients,
the TinyGPT integration and typed errors.

The public names used here (`qkv`, `proj`, `u`, `gates`, `route_raw`, `route_bias`, `ln_1`,
`attn`, `ln_2`, `mlp`, `fc_in`, `fc_out`, `ctx_down`, `ctx_up`, `ctx_proj`) are part of the
contract: a port exposes its parameters under the same names so these specs can read them.
The parameter and FLOP arithmetic and the annealing schedule are in test_lens_gated_arithmetic.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from spec import strategies as S
from spec.implementation import mc

INF = float("inf")
STD_ONLY, REC_ONLY, DISC_ONLY = (0.0, -INF, -INF), (-INF, 0.0, -INF), (-INF, -INF, 0.0)
seeds = st.integers(0, 2**16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def randomize(module, seed: int, scale: float = 0.5):
    """Overwrite every parameter with seeded noise, so no mechanism sits at its neutral init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


def set_gates(attn, row):
    with torch.no_grad():
        attn.gates.copy_(torch.tensor(row).expand_as(attn.gates))


def heads(t, n_head):
    """[B, T, E] -> [B, H, T, D]."""
    B, T, E = t.shape
    return t.view(B, T, n_head, E // n_head).transpose(1, 2)


def q_k_v(attn, x):
    E, H = x.shape[-1], attn.config.n_head
    return [heads(t, H) for t in attn.qkv(x).split(E, dim=2)]


def plain_causal_attention(attn, x):
    """Standard causal softmax attention with attn's own qkv and proj weights."""
    q, k, v = q_k_v(attn, x)
    B, H, T, D = q.shape
    s = (q @ k.transpose(-2, -1)) / math.sqrt(D)
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -INF)
    y = s.softmax(dim=-1) @ v
    return attn.proj(y.transpose(1, 2).reshape(B, T, H * D))


def block_parts(block, x):
    """(a, H_attn, m, H_mlp) of a pre-LN block, from its own submodules."""
    a = block.attn(block.ln_1(x))
    h_attn = x + a
    m = block.mlp(block.ln_2(h_attn), a if block.config.context != "off" else None)
    return a, h_attn, m, h_attn + m


def inputs(cfg, seed, T, B=2):
    return torch.randn(B, T, cfg.n_embd, generator=torch.Generator().manual_seed(seed))


# --- attention logits ------------------------------------------------------------------------


@given(S.lens_gated_configs(), seeds, st.integers(1, 8))
def test_standard_gate_alone_is_plain_causal_attention(cfg, seed, T):
    """With w_std = 1 (the baseline ablation, or gates that give the other mechanisms weight 0)
    the attention equals plain causal softmax attention with the same weights (§8)."""
    attn = randomize(mc.LensGatedAttention(cfg), seed)
    if attn.gates is not None:
        set_gates(attn, STD_ONLY)
    w = attn.lens_weights()
    expected_w = torch.tensor([[1.0, 0.0, 0.0]] * cfg.n_head)
    assert torch.equal(w, expected_w), f"lens weights {w.tolist()} with gates {STD_ONLY}; {cfg}"
    x = inputs(cfg, seed + 1, T)
    got, want = attn(x), plain_causal_attention(attn, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5,
                               msg=lambda m: f"{m}\ncfg={cfg} seed={seed} T={T}")


def causal_weights(logits):
    """Attention weights softmax_j(logits[i, j]) over the keys j <= i of [B, H, T, T] logits:
    what the logits mean. Logits that differ by a per-row constant (a row max subtracted, a bias
    centred over the visible keys) give the same weights, so the specs compare these (§8)."""
    T = logits.shape[-1]
    return logits.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -INF).softmax(-1)


def assert_same_attention(got, want, msg):
    """Logits equal modulo a per-row constant over the visible keys, i.e. equal weights."""
    torch.testing.assert_close(causal_weights(got), causal_weights(want), rtol=1e-5, atol=1e-6,
                               msg=lambda m: f"{m}\n{msg}")


@given(S.lens_gated_configs(reciprocity=True), seeds, st.integers(1, 8))
def test_reciprocity_term_is_exactly_the_transpose_of_S(cfg, seed, T):
    """The reciprocity logits (w_rec = 1) are Sᵀ, where S = q·kᵀ/sqrt(D) are the standard
    logits (w_std = 1): Sᵀ[i, j] = q_j·k_i, no new projection (§8, seed 004 mechanism 1).
    Compared modulo a per-row constant (as attention weights over the visible keys)."""
    attn = randomize(mc.LensGatedAttention(cfg), seed)
    x = inputs(cfg, seed + 1, T)
    q, k, _ = q_k_v(attn, x)
    s = q @ k.transpose(-2, -1) / math.sqrt(cfg.head_dim)
    set_gates(attn, STD_ONLY)
    assert_same_attention(attn.logits(x), s, f"S is not q·kᵀ/sqrt(D); cfg={cfg} seed={seed}")
    set_gates(attn, REC_ONLY)
    assert_same_attention(attn.logits(x), s.transpose(-2, -1),
                          f"reciprocity logits are not Sᵀ; cfg={cfg} seed={seed} T={T}")


@given(S.lens_gated_configs(discoverability=True), seeds, st.integers(1, 8))
def test_discoverability_is_a_per_key_column_bias(cfg, seed, T):
    """The discoverability logits (w_disc = 1) are d[j] = k_j·u_h: one value per key, the same
    for every query row (§8, seed 004 mechanism 2); compared modulo a per-row constant."""
    attn = randomize(mc.LensGatedAttention(cfg), seed)
    x = inputs(cfg, seed + 1, T)
    set_gates(attn, DISC_ONLY)
    _, k, _ = q_k_v(attn, x)
    d = torch.einsum("bhjd,hd->bhj", k, attn.u)  # [B, H, T]
    assert_same_attention(attn.logits(x), d[:, :, None, :].expand(-1, -1, T, -1),
                          f"d != K·u as a column bias; cfg={cfg} seed={seed} T={T}")


@given(S.lens_gated_configs(), seeds, st.integers(1, 6))
def test_logits_mix_the_three_terms_with_the_lens_weights(cfg, seed, T):
    """logits = w_std·S + w_rec·Sᵀ + w_disc·d with (w_std, w_rec, w_disc) = lens_weights()[h]
    per head, modulo a per-row constant; a mechanism that is switched off contributes nothing
    (§8)."""
    attn = randomize(mc.LensGatedAttention(cfg), seed, scale=1.0)
    x = inputs(cfg, seed + 1, T)
    q, k, _ = q_k_v(attn, x)
    s = q @ k.transpose(-2, -1) / math.sqrt(cfg.head_dim)
    w = attn.lens_weights()[None, :, :, None, None]  # [1, H, 3, 1, 1]
    want = w[:, :, 0] * s
    if cfg.reciprocity:
        want = want + w[:, :, 1] * s.transpose(-2, -1)
    if cfg.discoverability:
        want = want + w[:, :, 2] * torch.einsum("bhjd,hd->bhj", k, attn.u)[:, :, None, :]
    assert_same_attention(attn.logits(x), want, f"cfg={cfg} seed={seed} T={T}")


@given(S.lens_gated_configs(), st.lists(st.floats(-30, 30), min_size=3, max_size=3))
def test_lens_gates_are_a_softmax_per_head(cfg, row):
    """lens_weights()[h] = softmax(gates[h]) over the enabled mechanisms: non-negative, summing
    to 1 per head, exactly 0 for a mechanism that is off (§8, seed 004 mechanism 3)."""
    attn = mc.LensGatedAttention(cfg)
    enabled = torch.tensor([True, cfg.reciprocity, cfg.discoverability])
    if attn.gates is None:
        assert not (cfg.reciprocity or cfg.discoverability), f"no gates although {cfg}"
        want = torch.tensor([[1.0, 0.0, 0.0]] * cfg.n_head)
    else:
        assert attn.gates.shape == (cfg.n_head, 3), f"gates shape {tuple(attn.gates.shape)}"
        gates = torch.tensor(row) + torch.arange(cfg.n_head)[:, None] * torch.tensor([0, 1, -1])
        with torch.no_grad():
            attn.gates.copy_(gates)
        want = gates.masked_fill(~enabled, -INF).softmax(dim=-1)
    w = attn.lens_weights()
    assert w.shape == (cfg.n_head, 3)
    torch.testing.assert_close(w, want, msg=lambda m: f"{m}\ngates row={row} cfg={cfg}")
    torch.testing.assert_close(w.sum(dim=-1), torch.ones(cfg.n_head), atol=1e-6, rtol=0)
    assert bool((w >= 0).all()) and bool((w[:, ~enabled] == 0).all()), f"w={w.tolist()} {cfg}"


# --- causality -------------------------------------------------------------------------------


@given(S.lens_gated_configs(reciprocity=True, discoverability=True, route_gate=True)
       | S.lens_gated_configs(), seeds, st.integers(2, 10), st.data())
def test_no_future_leakage_with_every_mechanism_on(cfg, seed, T, data):
    """Changing the tokens after position i leaves every block output at positions <= i
    bitwise unchanged, with reciprocity, discoverability, the route gate and any context path
    on (and under any other switches): Sᵀ and the column bias d carry later keys, and the
    causal mask after mixing removes them (§8). Bitwise: a bias centred with a mean over all
    keys (future ones included) moves past outputs at rounding level only (~2.6e-6)."""
    i = data.draw(st.integers(0, T - 2), label="i")
    block = randomize(mc.LensGatedBlock(cfg), seed)
    x = inputs(cfg, seed + 1, T)
    later = x.clone()
    later[:, i + 1:] = torch.randn(later[:, i + 1:].shape,
                                   generator=torch.Generator().manual_seed(seed + 2)) * 3
    before, after = block(x)[:, : i + 1], block(later)[:, : i + 1]
    assert torch.equal(after, before), (
        f"outputs at <= i={i} moved by {(after - before).abs().max().item()} when tokens > i "
        f"changed; cfg={cfg} seed={seed} T={T}")


# --- route gate and MLP context --------------------------------------------------------------


@given(S.lens_gated_configs(route_gate=True), seeds, st.integers(1, 6), st.floats(-3, 3))
def test_route_gate_splits_the_block_between_attention_and_mlp(cfg, seed, T, bias):
    """out = H + g·(H_attn - H) + (1 - g)·(H_mlp - H_attn) with g = sigmoid(route_raw +
    route_bias), H_attn = H + attn(ln_1(H)), H_mlp = H_attn + mlp(ln_2(H_attn)) (seed 004
    mechanism 4)."""
    block = randomize(mc.LensGatedBlock(cfg), seed)
    with torch.no_grad():
        block.route_bias.fill_(bias)
    g = torch.sigmoid(block.route_raw + block.route_bias)
    torch.testing.assert_close(block.route_gate(), g, msg=lambda m: f"{m}\nroute_gate(); {cfg}")
    x = inputs(cfg, seed + 1, T)
    _, h_attn, _, h_mlp = block_parts(block, x)
    want = x + g * (h_attn - x) + (1 - g) * (h_mlp - h_attn)
    torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-5,
                               msg=lambda m: f"{m}\ng={g.item()} cfg={cfg} seed={seed} T={T}")


@given(S.lens_gated_configs(route_gate=False), seeds, st.integers(1, 6))
def test_without_route_gate_the_block_is_a_standard_pre_ln_block(cfg, seed, T):
    """With the route gate off the block is x + a + m: H_mlp, the standard pre-LN residual
    (the "baseline" ablation is a standard GPT-2 block)."""
    block = randomize(mc.LensGatedBlock(cfg), seed)
    assert block.route_raw is None, f"route_raw exists with route_gate=False: {cfg}"
    x = inputs(cfg, seed + 1, T)
    *_, h_mlp = block_parts(block, x)
    torch.testing.assert_close(block(x), h_mlp, msg=lambda m: f"{m}\ncfg={cfg} seed={seed}")


@pytest.mark.parametrize("context", ["off", "low_rank", "full_rank"])
@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0])
def test_mlp_context_path_blends_into_the_hidden_layer(context, alpha):
    """GatedMLP(x, c) = fc_out(gelu((1 - α)·fc_in(x) + α·ctx(c))) with ctx = ctx_up∘ctx_down
    (low rank E -> R -> mult·E) or ctx_proj (full rank); with the context off it is the plain
    MLP fc_out(gelu(fc_in(x))) (seed 004 mechanism 5). The blend sits before the activation:
    contract §8 states this choice (a post-activation blend is a different function)."""
    cfg = mc.LensGatedConfig(n_embd=8, n_head=2, context=context, context_rank=3,
                             context_alpha=alpha)
    mlp = randomize(mc.GatedMLP(cfg), seed=3)
    g = torch.Generator().manual_seed(4)
    x, c = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    h = mlp.fc_in(x)
    if context == "low_rank":
        h = (1 - alpha) * h + alpha * mlp.ctx_up(mlp.ctx_down(c))
        assert mlp.ctx_down.out_features == 3 and mlp.ctx_up.out_features == 32
    elif context == "full_rank":
        h = (1 - alpha) * h + alpha * mlp.ctx_proj(c)
    got = mlp(x, c if context != "off" else None)
    torch.testing.assert_close(got, mlp.fc_out(F.gelu(h)),
                               msg=lambda m: f"{m}\ncontext={context} alpha={alpha}")


def test_block_feeds_the_attention_output_to_the_mlp_context():
    """In a block with the context path on, the MLP's context is the attention output a."""
    cfg = mc.LensGatedConfig(n_embd=8, n_head=2, context="low_rank", context_rank=2,
                             context_alpha=0.5)
    block = randomize(mc.LensGatedBlock(cfg), seed=5)
    x = inputs(cfg, 6, 5)
    a = block.attn(block.ln_1(x))
    m_with_a = block.mlp(block.ln_2(x + a), a)
    m_with_x = block.mlp(block.ln_2(x + a), x)
    g = block.route_gate()
    torch.testing.assert_close(block(x), x + g * a + (1 - g) * m_with_a)
    assert not torch.allclose(m_with_a, m_with_x), "the context input makes no difference"


# --- gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize("context", ["low_rank", "full_rank"])
def test_every_mechanism_receives_gradient(context):
    """With every mechanism on, a loss on the block output gives a finite, non-zero gradient to
    each lens gate (every head, every column), to u in every head, to route_raw and to the
    context projections (§8).

    In float64 with a 1e-8 floor: a gradient that is zero analytically (u feeding a bias that
    is the same on every key of a row) shows ~1e-7 of float32 rounding, which `!= 0` accepts."""
    cfg = mc.LensGatedConfig(n_embd=12, n_head=3, context=context, context_rank=2,
                             context_alpha=0.3)
    block = randomize(mc.LensGatedBlock(cfg), seed=7).double()
    x = inputs(cfg, 8, 6).double()
    weight = torch.randn(x.shape, generator=torch.Generator().manual_seed(9)).double()
    (block(x) * weight).sum().backward()
    ctx = ["mlp.ctx_down.weight", "mlp.ctx_up.weight"] if context == "low_rank" \
        else ["mlp.ctx_proj.weight"]
    params = dict(block.named_parameters())
    for name in ["attn.gates", "attn.u", "route_raw", *ctx]:
        grad = params[name].grad
        assert grad is not None, f"{name} got no gradient"
        assert bool(torch.isfinite(grad).all()), f"{name}.grad not finite: {grad}"
        per_row = grad.abs().reshape(grad.shape[0], -1).sum(dim=-1) if grad.ndim > 1 else grad
        assert bool((per_row.abs() > 1e-8).all()), f"{name}.grad has a zero row: {grad}"
    assert bool((params["attn.gates"].grad.abs() > 1e-8).all()), (
        f"a lens gate got zero gradient: {params['attn.gates'].grad}")


# --- TinyGPT with lens-gated blocks ----------------------------------------------------------


TINY = dict(vocab_size=64, n_layer=2, n_head=2, n_embd=16)


def tiny_inputs(seed, B=2, T=9):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, TINY["vocab_size"], (B, T), generator=g)
    positions = torch.rand(B, T, generator=g).mul(40).cumsum(dim=1)  # gist-like: non-integer
    return tokens, positions


def test_baseline_lens_gated_tiny_gpt_is_the_standard_tiny_gpt():
    """The "baseline" ablation builds a TinyGPT with exactly the standard block's parameters
    (same names and count: it loads the standard model's state dict strictly) and the same
    logits, RoPE positions included."""
    cfg = mc.TinyGPTConfig(**TINY)
    torch.manual_seed(0)
    std = mc.TinyGPT(cfg)
    lens = mc.lens_gated_tiny_gpt(cfg, "baseline")
    assert all(isinstance(b, mc.LensGatedBlock) for b in lens.blocks), list(lens.blocks)
    lens.load_state_dict(std.state_dict(), strict=True)
    tokens, positions = tiny_inputs(1)
    for offset in (0, 2**24 + 0.5, 2**31 - 2**10):  # positions far beyond float32's integers
        pos = positions.double() + offset
        torch.testing.assert_close(lens(tokens, pos).logits, std(tokens, pos).logits,
                                   rtol=1e-5, atol=1e-5, msg=lambda m, o=offset: f"{m}\n+{o}")


def test_lens_gated_tiny_gpt_with_standard_gate_alone_matches_tiny_gpt():
    """Full lens mechanisms without a route gate, with gates set to w_std = 1: the only new
    parameters are u and gates per block, and the logits are the standard TinyGPT's."""
    cfg = mc.TinyGPTConfig(**TINY)
    torch.manual_seed(0)
    std = mc.TinyGPT(cfg)
    lens = mc.lens_gated_tiny_gpt(cfg, "full", route_gate=False)
    result = lens.load_state_dict(std.state_dict(), strict=False)
    new = {f"blocks.{i}.attn.{n}" for i in range(cfg.n_layer) for n in ("u", "gates")}
    assert set(result.missing_keys) == new and not result.unexpected_keys, result
    for block in lens.blocks:
        set_gates(block.attn, STD_ONLY)
    tokens, positions = tiny_inputs(2)
    torch.testing.assert_close(lens(tokens, positions).logits, std(tokens, positions).logits,
                               rtol=1e-5, atol=1e-5)


@given(seeds, S.position_shifts(), st.booleans())
def test_lens_gated_tiny_gpt_logits_depend_only_on_position_differences(seed, shift, fractional):
    """In a lens-gated TinyGPT with reciprocity, the route gate and the context path on, adding
    one constant (up to 2**31) to every RoPE position (int64, or float64 with fractional
    parts) moves no logit by more than 1e-4 (§8: RoPE is relative, and Sᵀ[i, j] = q_j·k_i is
    still a function of the difference of the two positions). Discoverability is off: its
    column bias d[j] = k_j·u reads the rotated key, so it depends on absolute positions by
    construction (a shift of 1 moves logits by ~0.4; see contract §8)."""
    cfg = mc.TinyGPTConfig(**TINY)
    model = randomize(mc.lens_gated_tiny_gpt(cfg, "reciprocity", context="low_rank",
                                             context_rank=2, context_alpha=0.5), 1, scale=0.5)
    tokens, _ = tiny_inputs(seed)
    g = torch.Generator().manual_seed(seed + 1)
    positions = torch.randint(1, 40, tokens.shape, generator=g).cumsum(1)
    if fractional:
        positions = positions.double() + 0.5
    with torch.no_grad():
        base = model(tokens, positions).logits
        moved = model(tokens, S.shifted(positions, shift)).logits
    err = (moved - base).abs().max().item()
    assert err <= 1e-4, f"shift={shift} moved logits by {err} (limit 1e-4); seed={seed}"


@given(seeds, st.integers(0, 7), st.sampled_from(["low_rank", "full_rank"]))
def test_lens_gated_tiny_gpt_is_causal_in_entry_order(seed, i, context):
    """In a lens-gated TinyGPT with every mechanism on (RoPE at explicit positions), the logits
    at entries <= i do not depend on the inputs or positions of entries > i: bitwise equal."""
    cfg = mc.TinyGPTConfig(**TINY)
    model = randomize(mc.lens_gated_tiny_gpt(cfg, "full", context=context, context_rank=2,
                                             context_alpha=0.5), seed, scale=0.3)
    tokens, positions = tiny_inputs(seed + 1)
    tokens2, positions2 = tokens.clone(), positions.clone()
    tokens2[:, i + 1:] = (tokens2[:, i + 1:] + 1) % cfg.vocab_size
    positions2[:, i + 1:] += 7.5
    before = model(tokens, positions).logits[:, : i + 1]
    after = model(tokens2, positions2).logits[:, : i + 1]
    assert torch.equal(after, before), (
        f"logits at <= i={i} moved by {(after - before).abs().max().item()}; seed={seed} "
        f"context={context}")


# --- typed errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("n_embd", 0), ("n_head", 5), ("n_head", 0), ("mlp_ratio", 0.0), ("mlp_ratio", 1.001),
        ("context", "lowrank"), ("context_rank", 0), ("context_alpha", 1.5),
        ("context_alpha", float("nan")), ("route_bias_init", float("inf")),
        ("reciprocity", "yes"),
    ],
)
def test_invalid_lens_gated_config_raises_value_error_naming_it(field, value):
    """An impossible LensGatedConfig field raises ValueError naming the field and the value."""
    with pytest.raises(ValueError, match=field) as info:
        mc.LensGatedConfig(**{"n_embd": 8, "n_head": 2, field: value})
    assert str(value) in str(info.value) or repr(value) in str(info.value), str(info.value)


def test_ablation_presets_and_their_errors():
    """The seed's ablations map to mechanism switches; an unknown ablation, or an option that
    contradicts the ablation, raises ValueError instead of being silently overridden."""
    got = {name: (c.reciprocity, c.discoverability)
           for name in ("baseline", "reciprocity", "discoverability", "full")
           for c in [mc.LensGatedConfig.ablation(name, n_embd=8, n_head=2)]}
    want = {"baseline": (False, False), "reciprocity": (True, False),
            "discoverability": (False, True), "full": (True, True)}
    assert got == want, got
    assert not mc.LensGatedConfig.ablation("baseline").route_gate
    with pytest.raises(ValueError, match="bogus"):
        mc.LensGatedConfig.ablation("bogus")
    with pytest.raises(ValueError, match="reciprocity"):
        mc.LensGatedConfig.ablation("baseline", reciprocity=True)
    with pytest.raises(ValueError, match="n_embd"):
        mc.lens_gated_tiny_gpt(mc.TinyGPTConfig(**TINY), n_embd=32)


def test_bad_inputs_raise_typed_errors():
    """Wrong shapes, dtypes and missing context raise InputError/InputTypeError naming the
    argument; a model without route gates cannot be annealed silently."""
    cfg = mc.LensGatedConfig(n_embd=8, n_head=2, context="low_rank", context_rank=2)
    attn, mlp, block = mc.LensGatedAttention(cfg), mc.GatedMLP(cfg), mc.LensGatedBlock(cfg)
    with pytest.raises(mc.InputError, match="x"):
        attn(torch.randn(5, 8))
    with pytest.raises(mc.InputError, match="n_embd=8"):
        attn(torch.randn(1, 5, 6))
    with pytest.raises(mc.InputTypeError, match="x"):
        block(torch.ones(1, 5, 8, dtype=torch.int64))
    with pytest.raises(mc.InputError, match="ctx"):
        mlp(torch.randn(1, 5, 8))
    with pytest.raises(mc.InputError, match="ctx"):
        mlp(torch.randn(1, 5, 8), torch.randn(1, 4, 8))
    with pytest.raises(TypeError, match="config"):
        mc.LensGatedBlock(mc.TinyGPTConfig(**TINY))
    with pytest.raises(ValueError, match="route"):
        mc.apply_route_annealing(torch.nn.Sequential(mc.LensGatedBlock(
            mc.LensGatedConfig(n_embd=8, n_head=2, route_gate=False))), step=10)


# --- switched-off mechanisms, fresh from construction, on every construction path ------------

FRESH_CFG = dict(n_embd=12, n_head=3)
SWITCHES = {  # ablation name -> (reciprocity, discoverability) it leaves on
    "baseline": (False, False), "reciprocity": (True, False),
    "discoverability": (False, True), "full": (True, True),
}


def construction_paths(ablation: str, **options):
    """Every public way to build a lens-gated block with `ablation`'s switches (and `options`):
    the config constructor, LensGatedConfig.ablation, the block factory, and a block of
    lens_gated_tiny_gpt; all fresh, nothing set after construction."""
    rec, disc = SWITCHES[ablation]
    flags = dict(reciprocity=rec, discoverability=disc)
    if ablation == "baseline":
        flags["route_gate"] = False
    tiny = mc.TinyGPTConfig(vocab_size=16, n_layer=2, n_head=FRESH_CFG["n_head"],
                            n_embd=FRESH_CFG["n_embd"], mlp_ratio=4)
    yield "LensGatedConfig", mc.LensGatedBlock(
        mc.LensGatedConfig(**FRESH_CFG, **flags, **options))
    yield "LensGatedConfig.ablation", mc.LensGatedBlock(
        mc.LensGatedConfig.ablation(ablation, **FRESH_CFG, **options))
    yield "lens_gated_block_factory", mc.lens_gated_block_factory(ablation, **options)(tiny, 0)
    yield "lens_gated_tiny_gpt", mc.lens_gated_tiny_gpt(tiny, ablation, **options).blocks[1]


def sharpen(block, seed):
    """Scale up the projections (not gates, u or the route gate: they stay as constructed) so
    attention is far from uniform and a wrong mixture shows; float64 throughout."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith(("qkv.weight", "proj.weight", "fc_in.weight", "fc_out.weight")):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return block.double()


def reference_attention(attn, x, rec: bool, disc: bool):
    """softmax(causal(w_std·S + [w_rec·Sᵀ] + [w_disc·d]))·v with the module's own qkv, proj, u
    and lens weights; a mechanism that is off is absent (no term at all)."""
    q, k, v = q_k_v(attn, x)
    B, H, T, D = q.shape
    s = (q @ k.transpose(-2, -1)) / math.sqrt(D)
    if rec or disc:
        w = attn.lens_weights().to(x.dtype)[None, :, :, None, None]
        logits = w[:, :, 0] * s
        if rec:
            logits = logits + w[:, :, 1] * s.transpose(-2, -1)
        if disc:
            logits = logits + w[:, :, 2] * torch.einsum("bhjd,hd->bhj", k, attn.u)[:, :, None]
    else:
        logits = s
    logits = logits.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -INF)
    y = logits.softmax(dim=-1) @ v
    return attn.proj(y.transpose(1, 2).reshape(B, T, H * D))


@pytest.mark.parametrize("ablation", list(SWITCHES))
def test_switched_off_mechanisms_are_absent_fresh_from_every_constructor(ablation):
    """Fresh from construction (no gate set by hand), on every construction path, a mechanism
    that is off takes lens weight exactly 0 and the attention is exactly the computation
    without it; the "baseline" ablation's attention is plain causal softmax attention and its
    block is the plain pre-LN block x + a + mlp(ln_2(x + a)) (§8: "a mechanism switched off
    must leave exactly the plain block"). Float64, tolerance 1e-12 (the two sides round
    differently, e.g. /sqrt(D) against ·(1/sqrt(D)))."""
    rec, disc = SWITCHES[ablation]
    x = torch.randn(2, 7, FRESH_CFG["n_embd"], generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    tol = dict(rtol=1e-12, atol=1e-12)
    for path, block in construction_paths(ablation):
        block = sharpen(block, seed=4)
        w = block.attn.lens_weights()
        off = torch.tensor([False, not rec, not disc])
        assert bool((w[:, off] == 0).all()), (
            f"{path}, {ablation}: switched-off mechanisms take lens weight {w.tolist()}")
        torch.testing.assert_close(w.sum(dim=-1).double(), torch.ones(w.shape[0],
                                   dtype=torch.float64), rtol=0, atol=1e-6)
        h = block.ln_1(x)
        a = block.attn(h)
        torch.testing.assert_close(a, reference_attention(block.attn, h, rec, disc), **tol,
                                   msg=lambda m, p=path: f"{m}\n{p}, {ablation}: attention")
        if ablation == "baseline":
            torch.testing.assert_close(a, plain_causal_attention(block.attn, h), **tol,
                                       msg=lambda m, p=path: f"{m}\n{p}: not plain attention")
            mlp = block.mlp.fc_out(F.gelu(block.mlp.fc_in(block.ln_2(x + a))))
            torch.testing.assert_close(block(x), x + a + mlp, **tol,
                                       msg=lambda m, p=path: f"{m}\n{p}: not the plain block")


@pytest.mark.parametrize("path", ["LensGatedConfig", "LensGatedConfig.ablation",
                                  "lens_gated_block_factory", "lens_gated_tiny_gpt"])
def test_route_gate_and_context_off_fresh_from_every_constructor(path):
    """route_gate=False and context="off", fresh on every construction path: the block is
    x + a + m with the plain MLP m = fc_out(gelu(fc_in(ln_2(x + a)))) (no 0.69 share, no
    context projection), whatever the lens mechanisms (§8)."""
    block = dict(construction_paths("full", route_gate=False, context="off"))[path]
    block = sharpen(block, seed=6)
    assert block.route_raw is None, f"{path}: route_raw exists with route_gate=False"
    x = torch.randn(2, 5, FRESH_CFG["n_embd"], generator=torch.Generator().manual_seed(7),
                    dtype=torch.float64)
    a = block.attn(block.ln_1(x))
    mlp = block.mlp.fc_out(F.gelu(block.mlp.fc_in(block.ln_2(x + a))))
    torch.testing.assert_close(block(x), x + a + mlp, rtol=1e-12, atol=1e-12,
                               msg=lambda m: f"{m}\n{path}: not x + a + plain mlp")


def test_annealing_leaves_blocks_without_a_route_gate_alone():
    """apply_route_annealing moves only route-gated blocks: a block built without a route gate
    in the same model computes bit for bit what it did before, and stays the plain block
    (§8; a schedule that also scaled ungated blocks passed every per-block spec)."""
    gated = mc.LensGatedBlock(mc.LensGatedConfig(**FRESH_CFG))
    plain = mc.LensGatedBlock(mc.LensGatedConfig.ablation("baseline", **FRESH_CFG))
    model = torch.nn.Sequential(gated, plain)
    x = torch.randn(2, 5, FRESH_CFG["n_embd"], generator=torch.Generator().manual_seed(8))
    before_plain, before_gated = plain(x), gated(x)
    mc.apply_route_annealing(model, step=9_000)
    assert torch.equal(plain(x), before_plain), "annealing changed a block without route gate"
    assert not torch.equal(gated(x), before_gated), "annealing did not move the gated block"
    a = plain.attn(plain.ln_1(x))
    torch.testing.assert_close(plain(x), x + a + plain.mlp(plain.ln_2(x + a)))
