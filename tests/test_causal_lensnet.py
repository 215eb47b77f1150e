"""CausalLensNet, the reference's causal-vs-non-causal ablation (contract §8.3, §16.2): entry n's
score reads only entries 0..n and no tail gists, it is LensNet's architecture on each prefix,
and a trainer run with `[lensnet].causal = true` trains and scores with it."""

from __future__ import annotations

import pytest
import torch

from megacontext.errors import InputError
from megacontext.models.causal_lensnet import CausalLensNet
from megacontext.models.lensnet import LensNet, LensNetConfig, lens_tail
from megacontext.training import cycle
from spec.test_training import tiny


def case(seed: int = 0, dtype=torch.float64):
    torch.manual_seed(seed)
    net = LensNet(LensNetConfig(d_in=12, width=16, n_heads=4, n_latents=3)).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.4)
    x = torch.randn(2, 20, 12, dtype=dtype)
    f = torch.randn(2, 20, 3, dtype=dtype)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 14:] = False
    return net, CausalLensNet.from_lensnet(net), x, f, mask


def test_entry_n_scores_as_lensnet_on_the_prefix_up_to_n():
    """Causal score of entry n == LensNet (tail=None, same weights) on entries[:n + 1]."""
    net, causal, x, f, mask = case()
    got = causal(x, f, mask)
    for n in range(x.shape[1]):
        want = net(x[:, : n + 1], f[:, : n + 1], mask[:, : n + 1])[:, n]
        assert torch.allclose(got[:, n], want, atol=1e-6), (
            f"entry {n}: causal {got[:, n].tolist()} != LensNet on the prefix {want.tolist()}; "
            f"reproduce: tests/test_causal_lensnet.py case(seed=0)")


def test_no_entry_depends_on_a_later_one_while_lensnet_does():
    net, causal, x, f, mask = case(1)
    later = x.clone()
    later[:, 10:] = torch.randn_like(later[:, 10:]) * 5
    before, after = causal(x, f, mask), causal(later, f, mask)
    assert torch.equal(before[:, :10], after[:, :10]), (before[:, :10] - after[:, :10]).abs().max()
    assert not torch.allclose(before[0, 10:], after[0, 10:])
    # the non-causal reference: the first entry reads the last ones
    assert not torch.allclose(net(x, f, mask)[:, :10], net(later, f, mask)[:, :10])


def test_padded_entries_never_reach_real_scores_or_gradients():
    _, causal, x, f, mask = case(2)
    causal.float()
    x, f = x.float().requires_grad_(), f.float()
    poisoned = x.detach().clone()
    poisoned[1, 14:] = float("nan")
    clean = causal(x, f, mask)
    dirty = causal(poisoned.requires_grad_(), f, mask)
    assert torch.equal(clean, dirty), (clean - dirty).abs().max()
    assert (dirty[1, 14:] == 0).all()
    dirty.sum().backward()
    unused = {n for n, p in causal.named_parameters() if p.grad is None}
    assert unused == {"tail_embed"}, unused  # it marks tail slots, which a causal net has none of
    bad = [n for n, p in causal.named_parameters()
           if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad}"


def test_projected_rows_and_bf16_match_the_plain_path():
    net, causal, x, f, mask = case(3, torch.float32)
    want = causal(x, f, mask)
    assert torch.allclose(causal(causal.project(x), f, mask, projected=True), want, atol=1e-6)
    bf16 = CausalLensNet.from_lensnet(net).to(torch.bfloat16)
    assert (bf16(x, f, mask) - want).abs().max() < 0.03


def test_a_tail_is_an_input_error_and_lens_tail_gives_none():
    net, causal, x, f, mask = case()
    with pytest.raises(InputError, match="tail"):
        causal(x, f, mask, tail=x[:, :2])
    with pytest.raises(InputError, match="tail"):
        causal(x, f, mask, tail_mask=mask[:, :2])
    assert causal.reads_tail is False and net.reads_tail is True
    assert lens_tail(causal, tree=None) is None  # never touches the tree
    assert set(causal.state_dict()) == set(net.state_dict())


def test_the_trainer_trains_a_causal_lensnet_when_configured(tmp_path):
    assert tiny().lensnet.causal is False  # the default: the non-causal reference
    cfg = tiny(lensnet={"width": 16, "n_heads": 2, "n_latents": 2, "causal": True})
    result = cycle.train(cfg, tmp_path / "run")
    lens = result.models.lensnet
    assert type(lens) is CausalLensNet
    lens_phases = [p for p in result.phases if p.phase.module == "lensnet"]
    assert lens_phases and all(p.steps > 0 for p in lens_phases), result.phases
    init = cycle.build_models(cfg, cycle.split_windows(
        cfg.data.source, cfg.seed, cfg.data.synthetic_bytes, cfg.data.val_fraction,
        cfg.history + cfg.horizon)[0]).lensnet
    moved = [k for k, v in lens.state_dict().items() if not torch.equal(v, init.state_dict()[k])]
    assert moved, "the causal LensNet's weights did not move in training"
