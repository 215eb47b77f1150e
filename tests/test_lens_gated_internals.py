"""Internals of megacontext.models.lens_gated that are not part of the spec contract: the functional
core (lens_logits, causal_attention), dtypes, state-dict layout, LoRA interplay, the factory."""

import pytest
import torch
import torch.nn.functional as F

import megacontext as mc
from megacontext.models.lens_gated import causal_attention, lens_logits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def qk(seed=0, B=2, H=3, T=5, D=4):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, D, generator=g) for _ in range(3))


def test_lens_logits_without_mechanisms_is_exactly_scaled_qk():
    q, k, _ = qk()
    got = lens_logits(q, k, torch.zeros(3, 3), None, reciprocity=False)
    assert torch.equal(got, (q @ k.transpose(-2, -1)) * (1 / 2.0))


def test_lens_logits_weights_are_per_head():
    q, k, _ = qk(1)
    u = torch.randn(3, 4)
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    got = lens_logits(q, k, w, u, reciprocity=True)
    s = (q @ k.transpose(-2, -1)) / 2
    torch.testing.assert_close(got[:, 0], s[:, 0])
    torch.testing.assert_close(got[:, 1], s[:, 1].transpose(-2, -1))
    d = torch.einsum("btd,d->bt", k[:, 2], u[2])
    torch.testing.assert_close(got[:, 2], d[:, None, :].expand(-1, 5, -1))


def test_causal_attention_matches_sdpa():
    q, k, v = qk(2)
    logits = (q @ k.transpose(-2, -1)) / 2
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(causal_attention(logits, v), want, rtol=1e-5, atol=1e-6)


def test_bf16_block_runs_and_stays_bf16():
    cfg = mc.LensGatedConfig(n_embd=16, n_head=2, context="low_rank", context_rank=4)
    block = mc.LensGatedBlock(cfg).to(torch.bfloat16)
    x = torch.randn(2, 6, 16, dtype=torch.bfloat16)
    y = block(x)
    assert y.dtype == torch.bfloat16 and bool(torch.isfinite(y).all())
    ref = mc.LensGatedBlock(cfg)
    ref.load_state_dict({k: v.float() for k, v in block.state_dict().items()})
    torch.testing.assert_close(y.float(), ref(x.float()), rtol=0.05, atol=0.05)


def test_state_dict_holds_parameters_and_route_bias_only():
    block = mc.LensGatedBlock(mc.LensGatedConfig(n_embd=8, n_head=2))
    keys = set(block.state_dict())
    assert "route_bias" in keys and "attn._enabled" not in keys
    assert {"attn.u", "attn.gates", "route_raw"} <= keys


def test_disabled_mechanism_column_gets_no_gradient():
    cfg = mc.LensGatedConfig(n_embd=8, n_head=2, discoverability=False)
    attn = mc.LensGatedAttention(cfg)
    with torch.no_grad():
        attn.gates.normal_()
    attn(torch.randn(1, 5, 8)).square().sum().backward()
    assert bool((attn.gates.grad[:, 2] == 0).all()), attn.gates.grad
    assert bool((attn.gates.grad[:, :2] != 0).all()), attn.gates.grad


def test_lora_on_a_lens_gated_tiny_gpt_wraps_the_attention_projections_only():
    cfg = mc.TinyGPTConfig(vocab_size=32, n_layer=2, n_head=2, n_embd=8)
    model = mc.lens_gated_tiny_gpt(cfg, context="low_rank", context_rank=2)
    tokens = torch.randint(0, 32, (1, 6))
    before = model(tokens).logits
    wrapped = model.add_lora(rank=2)
    assert sorted(wrapped) == sorted(f"blocks.{i}.attn.{n}" for i in range(2)
                                     for n in ("qkv", "proj")), wrapped
    torch.testing.assert_close(model(tokens).logits, before)


def test_factory_validates_options_before_building():
    with pytest.raises(ValueError, match="context"):
        mc.lens_gated_block_factory(context="sideways")
    cfg = mc.TinyGPTConfig(vocab_size=32, n_layer=1, n_head=2, n_embd=8,
                           block_factory=mc.lens_gated_block_factory())
    with pytest.raises(ValueError, match="block_factory"):
        mc.lens_gated_tiny_gpt(cfg)
    model = mc.TinyGPT(cfg)
    assert isinstance(model.blocks[0], mc.LensGatedBlock)
    assert model.blocks[0].config.n_embd == 8 and model.blocks[0].config.bias is False


def test_annealing_a_bf16_model_keeps_dtype():
    model = mc.lens_gated_tiny_gpt(mc.TinyGPTConfig(vocab_size=32, n_layer=2, n_head=2,
                                                    n_embd=8)).to(torch.bfloat16)
    bias = mc.apply_route_annealing(model, 6000)
    for block in model.blocks:
        assert block.route_bias.dtype == torch.bfloat16
        assert block.route_bias.item() == pytest.approx(bias, abs=1e-2)
