"""Internals of the models (megacontext.models.lensnet, .gistnet, .tiny_gpt) that are not contract:
LensNet's absorbed attention equals the plain formulation, its in-place inference path equals
the autograd path, RoPE tables are float64-accurate, LoRA wiring."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from megacontext.controller.config import MCConfig
from megacontext.models.gistnet import GistNet, GistNetConfig
from megacontext.models.lensnet import LensNet, LensNetConfig, tail_gists
from megacontext.models.tiny_gpt import LoRALinear, TinyGPT, TinyGPTConfig, apply_rope, rope_tables
from megacontext.models.tree import MegaContextTree


def plain_lensnet(net, x, features, mask, tail, tail_mask):
    """LensNet written the plain way: per-entry q/k/v/o projections, torch's own attention."""
    cfg = net.cfg
    d, H = cfg.width, cfg.n_heads
    B, N, _ = x.shape
    h = net.in_proj(x) + net.feat_proj(features)
    hn = net.norm_entries(h).masked_fill(~mask[..., None], 0.0)
    slots = torch.cat([net.latents.expand(B, -1, -1), net.in_proj(tail) + net.tail_embed], 1)

    def mha(attn, q_in, kv_in, key_ok):
        def split(t):
            return t.view(B, -1, H, d // H).transpose(1, 2)

        q, k, v = split(attn.q(q_in)), split(attn.k(kv_in)), split(attn.v(kv_in))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_ok[:, None, None, :])
        return attn.o(y.transpose(1, 2).reshape(B, -1, d))

    slots = slots + mha(net.read, net.norm_read(slots), hn, mask)
    slots = slots + net.slot_mlp(net.norm_slot_mlp(slots))
    slot_ok = torch.cat([torch.ones(B, cfg.n_latents, dtype=torch.bool), tail_mask], 1)
    z = h + mha(net.write, hn, net.norm_write(slots), slot_ok)
    return torch.tanh(net.head(net.norm_out(z))[..., 0]).masked_fill(~mask, 0.0)


def random_lens_case(dtype=torch.float64):
    torch.manual_seed(0)
    net = LensNet(LensNetConfig(d_in=12, width=16, n_heads=4, n_latents=3)).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.4)
    x = torch.randn(2, 30, 12, dtype=dtype)
    f = torch.randn(2, 30, 3, dtype=dtype)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 21:] = False
    tail = torch.randn(2, 3, 12, dtype=dtype)
    tail_mask = torch.tensor([[True, True, False], [False, True, True]])
    return net, (x, f, mask, tail, tail_mask)


def test_absorbed_attention_equals_the_plain_formulation():
    net, args = random_lens_case(torch.float64)
    got = net(*args)
    want = plain_lensnet(net, *args)
    assert got.dtype == torch.float32  # scores always come back as float32
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)


def test_gradients_equal_those_of_the_plain_formulation():
    """Training sees the same function: every parameter's gradient through the absorbed and
    folded forward (derive() runs under autograd) equals the plain formulation's."""
    net, args = random_lens_case(torch.float64)
    params = [p for _, p in net.named_parameters()]
    weights = torch.randn(args[0].shape[:2], dtype=torch.float64,
                          generator=torch.Generator().manual_seed(1))
    got = torch.autograd.grad((net(*args).double() * weights).sum(), params)
    want = torch.autograd.grad((plain_lensnet(net, *args) * weights).sum(), params)
    for (name, _), g, w in zip(net.named_parameters(), got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_inference_path_equals_autograd_path_bitwise():
    """The in-place residual used without autograd must not change a single bit."""
    net, args = random_lens_case(torch.float32)
    with_grad = net(*args)
    with torch.inference_mode():
        fast = net(*args)
    with torch.no_grad():
        slow_ctx = net(*args)
    assert torch.equal(with_grad.detach(), fast) and torch.equal(fast, slow_ctx)


def test_bf16_slot_math_runs_in_float32():
    """A bf16 LensNet computes slot-side products in float32 (no bf16 GEMMs on S rows)."""
    net, (x, f, mask, tail, tail_mask) = random_lens_case(torch.float32)
    net16 = LensNet(net.cfg).to(torch.bfloat16)
    net16.load_state_dict(net.state_dict())
    s = net16(x, f, mask, tail, tail_mask)
    assert s.dtype == torch.float32 and (s - net(x, f, mask, tail, tail_mask)).abs().max() < 0.1


def test_rope_tables_are_float64_accurate_far_from_zero():
    positions = torch.tensor([[1e6, 1e6 + 0.5, 123456789.0]])
    cos, sin = rope_tables(positions, head_dim=8, base=10_000.0, dtype=torch.float32)
    inv = [10_000.0 ** (-i / 8) for i in range(0, 8, 2)]
    for t, p in enumerate(positions[0].tolist()):
        for i, f in enumerate(inv):
            assert abs(cos[0, 0, t, i].item() - math.cos(p * f)) < 1e-7
            assert abs(sin[0, 0, t, i].item() - math.sin(p * f)) < 1e-7


def test_apply_rope_is_a_rotation():
    x = torch.randn(1, 2, 5, 8, dtype=torch.float64)
    cos, sin = rope_tables(torch.arange(5.0)[None] * 3.3, 8, 10_000.0, torch.float64)
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))


def test_add_lora_wraps_only_the_named_projections_with_scale_alpha_over_r():
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(vocab_size=20, n_layer=2, n_head=2, n_embd=8))
    wrapped = model.add_lora(4, alpha=8.0)
    assert wrapped == ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.attn.qkv",
                       "blocks.1.attn.proj"]
    adapters = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(adapters) == 4 and all(m.scale == 2.0 for m in adapters)
    assert not model.wte.weight.requires_grad and model.lm_head.weight is model.wte.weight


def test_gistnet_per_level_weights_are_separate_copies():
    shared = GistNet(GistNetConfig(dim=8, block_size=4, n_heads=2, levels=3))
    split = GistNet(GistNetConfig(dim=8, block_size=4, n_heads=2, levels=3, shared=False))
    n_shared = sum(p.numel() for p in shared.encoders.parameters())
    assert len(split.encoders) == 3 and split.level_embed is None
    assert sum(p.numel() for p in split.parameters()) == 3 * n_shared


def test_tail_gists_with_zero_per_level_is_empty():
    tree = MegaContextTree(MCConfig(block_size=4, max_lod=2, budget=64, recent_tokens=4), 6)
    tree.append(torch.randn(40, 6))
    assert tail_gists(tree, 0).shape == (0, 6)
    assert tail_gists(tree, 100).shape == (2 + 10, 6)


def test_derived_cache_follows_parameter_changes():
    """Inference reuses the parameter-derived tensors until a parameter changes in place, is
    reloaded or moves to another dtype; the cached path equals the fresh (autograd) path."""
    net, args = random_lens_case(torch.float32)
    with torch.inference_mode():
        first = net(*args)
        assert net._derived_cache is not None
        again = net(*args)
    assert torch.equal(first, again) and torch.equal(first, net(*args).detach())
    with torch.no_grad():
        net.head.bias += 0.5
    with torch.inference_mode():
        moved = net(*args)
    assert not torch.equal(moved, first) and torch.equal(moved, net(*args).detach())
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["latents"] += 1.0
    net.load_state_dict(state)
    with torch.no_grad():
        reloaded = net(*args)
    assert torch.equal(reloaded, net(*args).detach()) and not torch.equal(reloaded, moved)
    net16 = net.to(torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(net16(*args), net16(*args).detach())


def test_tree_projects_every_node_once_while_the_weights_stand_still():
    """The tree's projection cache calls LensNet.project only on nodes it has not projected
    under the current key: over many gathers and appends, rows projected == nodes in the tree;
    a weight update reprojects each node once more (contract §10)."""
    cfg = MCConfig(block_size=4, max_lod=2, budget=40, recent_tokens=6)
    tree = MegaContextTree(cfg, 8)
    net = LensNet(LensNetConfig(d_in=8, width=8, n_heads=2, n_latents=2)).eval()
    projected = []
    plain_project = net.project
    net.project = lambda x: projected.append(x.shape[0]) or plain_project(x)
    g = torch.Generator().manual_seed(0)
    from megacontext import build_working_context

    def nodes():
        return sum(tree.level(lod).shape[0] for lod in range(cfg.max_lod + 1))

    with torch.no_grad():
        for n in (5, 60, 1, 200, 7):
            tree.append(torch.randn(n, 8, generator=g))
            for _ in range(3):
                tree.gather(build_working_context(tree.num_tokens, cfg), lensnet=net)
        assert sum(projected) == nodes(), (sum(projected), nodes())
        net.in_proj.weight.add_(1.0)
        tree.gather(build_working_context(tree.num_tokens, cfg), lensnet=net)
    assert sum(projected) == 2 * nodes(), (sum(projected), nodes())
