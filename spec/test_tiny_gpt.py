"""TinyGPT (contract §8; issue 6): a small decoder over input embeddings at explicit (integer or
float) RoPE positions, causal in entry order, with per-position NLL, LoRA adapters on chosen
projections and a swappable block (`TinyGPTConfig.block_factory`, for issue 7).

Tolerance: RoPE makes every attention logit a function of position differences; in float32 a
shift of all positions by up to 2**31 moves the logits by at most SHIFT_ATOL (the rotation
angles are computed in float64 and rounded once to float32).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spec import strategies as S
from spec.implementation import mc

CFG = mc.TinyGPTConfig(vocab_size=50, n_layer=2, n_head=2, n_embd=16)
T = 12
SHIFT_ATOL = 1e-4


def make_model(seed: int = 0, cfg=CFG, dtype: torch.dtype = torch.float32, sharp: bool = False):
    """A seeded model; `sharp` scales every weight matrix up 10x so attention is peaked and
    positions visibly matter (at the usual 0.02 init attention is nearly uniform)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = mc.TinyGPT(cfg)
    if sharp:
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 2:
                    p.mul_(10.0)
    return model.to(dtype).eval()


_MODEL = {}


def shared_model():
    if not _MODEL:
        _MODEL[0] = make_model(0, sharp=True)
    return _MODEL[0]


def batch(seed: int, B: int = 2, n: int = T):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, CFG.vocab_size, (B, n), generator=g)
    return tokens, torch.randn(B, n, CFG.n_embd, generator=g)


@given(st.integers(0, 2**31 - 1), S.position_shifts(), st.booleans())
def test_shifting_every_position_leaves_logits_unchanged(seed, shift, fractional):
    """RoPE is relative: adding the same constant (integer or fractional, up to 2**31) to every
    position moves no logit by more than 1e-4 in float32, for integer (int64) positions and for
    float (float64) positions such as gist span centres (§8)."""
    model = shared_model()
    _, x = batch(seed)
    g = torch.Generator().manual_seed(seed + 1)
    steps = torch.randint(1, 40, (2, T), generator=g).cumsum(1)
    positions = steps.double() + 0.5 if fractional else steps  # sorted, like a WC's positions
    with torch.no_grad():
        base = model(x, positions).logits
        moved = model(x, S.shifted(positions, shift)).logits
    err = (moved - base).abs().max().item()
    assert err <= SHIFT_ATOL, f"shift={shift} moved logits by {err}; positions={positions[0]}"


def test_positions_matter():
    """Positions are used, fractional parts included: changing the gaps between positions
    changes the logits, and so does moving the later half by half a position (a model that
    ignores its positions would pass the shift spec trivially; one that truncates float
    positions to integers would pass it too, since a shift keeps every fractional part) (§8)."""
    model = shared_model()
    _, x = batch(1)
    dense = torch.arange(T)
    spread = torch.arange(T) * 37 + 0.5
    diff = (model(x, dense).logits - model(x, spread).logits).abs().max().item()
    assert diff > 1e-3, f"logits moved by only {diff} when positions spread out"
    half = dense + (torch.arange(T) >= T // 2) * 0.5  # 0, 1, .., 5, 6.5, 7.5, ..
    diff = (model(x, dense).logits - model(x, half).logits).abs().max().item()
    assert diff > 1e-3, f"logits moved by only {diff} when positions {half.tolist()} gained .5"


def test_default_positions_are_zero_to_t_minus_one_and_tokens_equal_their_embeddings():
    """positions=None means 0..T-1 (a [T] tensor broadcasts over the batch), and feeding token
    ids equals feeding model.embed(tokens)."""
    model = shared_model()
    tokens, _ = batch(2)
    a = model(tokens).logits
    torch.testing.assert_close(model(tokens, torch.arange(T)).logits, a, rtol=0, atol=0)
    torch.testing.assert_close(model(model.embed(tokens), torch.arange(T).expand(2, T)).logits,
                               a, rtol=0, atol=0)


@pytest.mark.parametrize("cut", [1, 7, T - 1])
def test_causal_in_entry_order(cut):
    """Logits at entry t depend only on entries 0..t: changing later entries (or their
    positions) leaves every earlier logit bitwise unchanged (§8). Bitwise, not to a tolerance:
    a leak through a statistic over all keys (a bias centred with a mean over future keys)
    moves past outputs by rounding only (~1e-6), which a tolerance accepts half the time."""
    model = shared_model()
    _, x = batch(3)
    pos = torch.arange(T) * 2.0
    base = model(x, pos).logits
    x2, pos2 = x.clone(), pos.clone()
    x2[:, cut:] = torch.randn(2, T - cut, CFG.n_embd) * 3
    pos2[cut:] += 100.5
    changed = model(x2, pos2).logits
    diff = (changed[:, :cut] - base[:, :cut]).abs().max().item()
    assert torch.equal(changed[:, :cut], base[:, :cut]), (
        f"logits before entry {cut} moved by {diff} when entries >= {cut} changed")
    assert (changed[:, cut:] - base[:, cut:]).abs().max() > 1e-4


def test_per_position_nll():
    """nll[b, t] = -log softmax(logits[b, t])[targets[b, t]] in float32; a target of -1 gives
    nll 0 at that position (§8)."""
    model = shared_model()
    tokens, _ = batch(4)
    targets = tokens.roll(-1, dims=1)
    targets[:, -1] = -1
    out = model(tokens, targets=targets)
    logp = torch.log_softmax(out.logits.float(), dim=-1)
    want = -logp[:, :-1].gather(-1, targets[:, :-1, None])[..., 0]
    assert out.nll.shape == (2, T) and out.nll.dtype == torch.float32
    torch.testing.assert_close(out.nll[:, :-1], want, rtol=1e-6, atol=1e-6)
    assert bool((out.nll[:, -1] == 0).all()), out.nll[:, -1]


def test_bf16_model_takes_fp32_embeddings_without_autocast():
    """A bf16 TinyGPT accepts float32 embeddings and float positions outside autocast and
    agrees with its float32 twin to 0.05 in the logits."""
    m32 = make_model(5)
    m16 = make_model(5, dtype=torch.bfloat16)
    _, x = batch(5)
    pos = torch.arange(T) + 0.5
    l32, l16 = m32(x, pos).logits, m16(x, pos).logits
    assert l16.dtype == torch.bfloat16
    assert (l16.float() - l32).abs().max() < 0.05


# --- LoRA -----------------------------------------------------------------------------------


@pytest.mark.parametrize("targets", [("qkv", "proj"), ("qkv",), ("fc_in", "fc_out")])
def test_lora_starts_as_identity_and_trains_alone(targets):
    """add_lora(r) on the named projections leaves every output bitwise unchanged (zero-
    initialised up-projection); with the base frozen, a backward pass gives gradients to the
    LoRA parameters only (§8)."""
    model = make_model(6)
    tokens, _ = batch(6)
    before = model(tokens).logits
    wrapped = model.add_lora(4, targets=targets)
    assert len(wrapped) == CFG.n_layer * len(targets), wrapped
    assert torch.equal(model(tokens).logits, before), "adding LoRA changed the outputs"
    lora = {id(p) for p in mc.lora_parameters(model)}
    assert len(lora) == 2 * len(wrapped)
    model.train()
    model(tokens, targets=tokens.roll(-1, 1)).nll.mean().backward()
    for name, p in model.named_parameters():
        if id(p) in lora:
            assert p.grad is not None, f"LoRA parameter {name} got no gradient"
        else:
            assert not p.requires_grad and p.grad is None, f"frozen {name} got a gradient"
    assert any(bool((p.grad != 0).any()) for p in mc.lora_parameters(model))


def test_lora_update_changes_outputs_and_rank_bounds_the_change():
    """After one step on the adapters the outputs move, and each adapted weight moved by a
    matrix of rank <= r."""
    model = make_model(7)
    tokens, _ = batch(7)
    before = model(tokens).logits
    model.add_lora(2)
    opt = torch.optim.SGD(mc.lora_parameters(model), lr=0.5)
    for _ in range(2):  # step 1 moves `up` off zero; step 2 then moves `down` as well
        opt.zero_grad()
        model(tokens, targets=tokens.roll(-1, 1)).nll.mean().backward()
        opt.step()
    assert (model(tokens).logits - before).abs().max() > 1e-5
    for m in model.modules():
        if isinstance(m, mc.LoRALinear):
            delta = m.up @ m.down
            assert torch.linalg.matrix_rank(delta.detach()) <= 2


def test_lora_rejects_unknown_targets_and_bad_rank():
    """add_lora raises InputError for targets naming no Linear and for rank < 1 (§4)."""
    model = make_model(8)
    with pytest.raises(mc.InputError, match="targets"):
        model.add_lora(2, targets=("nope",))
    with pytest.raises(mc.InputError, match="rank"):
        model.add_lora(0)


# --- the block contract (issue 7 plugs in here) ------------------------------------------------


def test_block_factory_builds_every_block():
    """TinyGPTConfig.block_factory(config, layer_index) builds each block; a block is called
    as block(x [B, T, E], cos, sin) and its output feeds the next block."""
    calls, seen = [], []

    class Doubling(torch.nn.Module):
        def __init__(self, cfg, i):
            super().__init__()
            calls.append(i)
            self.scale = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, x, cos, sin):
            seen.append((tuple(x.shape), tuple(cos.shape), tuple(sin.shape)))
            return x * self.scale

    cfg = mc.TinyGPTConfig(vocab_size=50, n_layer=3, n_head=2, n_embd=16,
                           block_factory=Doubling)
    model = mc.TinyGPT(cfg)
    assert calls == [0, 1, 2]
    _, x = batch(9)
    model(x, torch.arange(T))
    assert len(seen) == 3 and all(s[0] == (2, T, 16) for s in seen), seen
    assert seen[0][1] == seen[0][2] and seen[0][1][-1] == 16 // 2 // 2, seen[0]


def test_bad_inputs_raise_typed_errors():
    """Wrong widths, position shapes, non-finite positions and out-of-range tokens or targets
    raise InputError / InputTypeError naming the argument (§4)."""
    model = shared_model()
    tokens, x = batch(10)
    cases = [
        (mc.InputError, "inputs", lambda: model(x[..., :-1])),
        (mc.InputError, "positions", lambda: model(x, torch.arange(T + 1))),
        (mc.InputError, "positions", lambda: model(x, torch.full((T,), float("nan")))),
        (mc.InputTypeError, "positions", lambda: model(x, torch.ones(T, dtype=torch.bool))),
        (mc.InputError, "tokens", lambda: model(tokens + CFG.vocab_size)),
        (mc.InputError, "targets", lambda: model(tokens, targets=tokens - 100)),
    ]
    for err, name, call in cases:
        with pytest.raises(err, match=name):
            call()
    with pytest.raises(ValueError, match="n_head"):
        mc.TinyGPTConfig(n_embd=12, n_head=8)
