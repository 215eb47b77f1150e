"""Every config class (contract §4, §6, §8): each validation limit holds at the limit and fails
one step past it, and a size is never silently truncated: a non-integer size is either honoured
exactly (the lens-gated MLP ratio: mult·E hidden units, whatever mult) or rejected with a
ValueError naming the field and the value.

A size that int() truncates builds a different model than the one asked for (seed 004's MLP
ratio 2.5 at width 8 silently gave 16 hidden units instead of 20) and every behavioural spec
still passes, because the smaller model keeps every property.
"""

import math

import pytest
import torch

from spec.implementation import mc

TINY_SHAPE = dict(vocab_size=16, n_layer=1, n_head=2, n_embd=8)
LENS_SHAPE = dict(n_embd=8, n_head=2)
TINIEST = 5e-324  # the smallest positive double: "one step" past 0 for a real-valued field


def config_classes():
    """(class, base kwargs, integer size fields) for every config class with sizes."""
    return [
        (mc.MCConfig, {}, ["block_size", "max_lod", "budget", "recent_tokens",
                           "min_residency", "max_actions"]),
        (mc.GistNetConfig, dict(dim=8, block_size=4, n_heads=2),
         ["dim", "block_size", "n_layers", "n_heads", "mlp_ratio", "levels"]),
        (mc.LensNetConfig, dict(d_in=8, width=8, n_heads=2),
         ["d_in", "width", "n_heads", "n_latents", "slot_mlp_ratio"]),
        (mc.TinyGPTConfig, TINY_SHAPE, ["vocab_size", "n_layer", "n_head", "n_embd",
                                        "mlp_ratio"]),
        (mc.LensGatedConfig, LENS_SHAPE, ["n_embd", "n_head", "context_rank"]),
        (mc.RouteAnnealing, {}, ["start_step", "end_step"]),
    ]


SIZE_CASES = [(cls, base, field) for cls, base, names in config_classes() for field in names]


@pytest.mark.parametrize("cls,base,field", SIZE_CASES,
                         ids=[f"{c.__name__}.{f}" for c, _, f in SIZE_CASES])
@pytest.mark.parametrize("value", [2.5, 4.75])
def test_non_integer_size_is_rejected_naming_the_field(cls, base, field, value):
    """An integer size given as a non-integer (2.5, 4.75) raises ValueError or TypeError whose
    message names the field and the value; it is never truncated to 2 or 4."""
    kwargs = {**base, field: value}
    with pytest.raises((ValueError, TypeError), match=field) as info:
        cls(**kwargs)
    assert repr(value) in str(info.value) or str(value) in str(info.value), str(info.value)


@pytest.mark.parametrize("ratio,width,hidden", [(2.5, 8, 20), (1.5, 6, 9), (0.125, 8, 1),
                                                (4.0, 8, 32), (3, 4, 12)])
def test_lens_gated_mlp_ratio_is_honoured_exactly(ratio, width, hidden):
    """mlp_ratio·n_embd hidden units exactly, for any ratio that gives a whole number (2.5 at
    width 8 is 20, not 16): fc_in is E -> M, fc_out M -> E and the context path ends at M
    (seed 004 "MLP expansion ratios 2.5:1, 4:1, 5:1")."""
    cfg = mc.LensGatedConfig(n_embd=width, n_head=2, mlp_ratio=ratio, context="low_rank",
                             context_rank=2)
    mlp = mc.GatedMLP(cfg)
    shapes = (tuple(mlp.fc_in.weight.shape), tuple(mlp.fc_out.weight.shape),
              tuple(mlp.ctx_up.weight.shape))
    assert shapes == ((hidden, width), (width, hidden), (hidden, 2)), (
        f"mlp_ratio={ratio} at n_embd={width}: fc_in, fc_out, ctx_up weights {shapes}, "
        f"expected {hidden} hidden units")
    block = mc.LensGatedBlock(cfg)
    x = torch.randn(1, 3, width, generator=torch.Generator().manual_seed(0))
    assert block(x).shape == x.shape


@pytest.mark.parametrize("ratio,width", [(2.3, 4), (1.001, 8), (0.1, 4)])
def test_lens_gated_mlp_ratio_that_gives_no_whole_size_is_rejected(ratio, width):
    """mlp_ratio·n_embd that is not a whole number (9.2, 8.008, 0.4) raises ValueError naming
    mlp_ratio and the value, instead of rounding it to some size."""
    with pytest.raises(ValueError, match="mlp_ratio") as info:
        mc.LensGatedConfig(n_embd=width, n_head=2, mlp_ratio=ratio)
    assert str(ratio) in str(info.value), str(info.value)


# --- validation limits: the extreme valid value, and one step past it ------------------------

LIMITS = [
    # (class, base kwargs, field, valid at the limit, one step past it)
    (mc.LensGatedConfig, LENS_SHAPE, "context_alpha", 0.0, -TINIEST),
    (mc.LensGatedConfig, LENS_SHAPE, "context_alpha", 1.0, math.nextafter(1.0, 2.0)),
    (mc.LensGatedConfig, LENS_SHAPE, "context_rank", 1, 0),
    (mc.LensGatedConfig, dict(n_head=1), "n_embd", 1, 0),
    (mc.LensGatedConfig, dict(n_embd=4), "n_head", 4, 3),  # E must split into whole heads
    (mc.LensGatedConfig, LENS_SHAPE, "mlp_ratio", 0.125, 0.0),  # 1 hidden unit; 0 units
    (mc.RouteAnnealing, dict(end_step=1), "start_step", 0, -1),
    (mc.RouteAnnealing, dict(start_step=7), "end_step", 8, 7),
    (mc.TinyGPTConfig, dict(n_head=1), "n_embd", 2, 1),
    (mc.TinyGPTConfig, dict(n_embd=4), "n_head", 2, 4),  # heads of even size (RoPE pairs)
    (mc.TinyGPTConfig, {}, "vocab_size", 1, 0),
    (mc.TinyGPTConfig, {}, "n_layer", 1, 0),
    (mc.TinyGPTConfig, {}, "mlp_ratio", 1, 0),
    (mc.TinyGPTConfig, {}, "rope_base", math.nextafter(1.0, 2.0), 1.0),
    (mc.LensNetConfig, {}, "d_in", 1, 0),
    (mc.LensNetConfig, dict(n_heads=1), "width", 1, 0),
    (mc.LensNetConfig, dict(width=6), "n_heads", 6, 4),  # width must split into whole heads
    (mc.LensNetConfig, {}, "n_latents", 1, 0),
    (mc.LensNetConfig, {}, "slot_mlp_ratio", 1, 0),
    (mc.GistNetConfig, dict(dim=8), "n_layers", 0, -1),
    (mc.GistNetConfig, dict(dim=8), "block_size", 1, 0),
    (mc.GistNetConfig, dict(dim=8), "levels", 1, 0),
    (mc.GistNetConfig, dict(dim=8, n_heads=1), "mlp_ratio", 1, 0),
    (mc.LensLossWeights, {}, "temperature", TINIEST, 0.0),
    (mc.LensLossWeights, {}, "target_scale", TINIEST, 0.0),
    (mc.LensLossWeights, {}, "eps", TINIEST, 0.0),
    (mc.LensLossWeights, {}, "reg", 0.0, -TINIEST),
    (mc.LensLossWeights, {}, "margin", 0.0, -TINIEST),
    (mc.LensLossWeights, {}, "collapse_weight", 0.0, -TINIEST),
]


@pytest.mark.parametrize("cls,base,field,ok,bad", LIMITS,
                         ids=[f"{c.__name__}.{f}={ok!r}|{bad!r}" for c, _, f, ok, bad in LIMITS])
def test_limit_is_valid_and_one_step_past_it_is_not(cls, base, field, ok, bad):
    """The extreme valid value constructs and is kept as given; one step past it (one integer,
    one double ulp, the smallest positive double) raises ValueError naming the field and the
    value."""
    cfg = cls(**{**base, field: ok})
    assert getattr(cfg, field) == ok, f"{cls.__name__}.{field}={ok!r} became {getattr(cfg, field)}"
    with pytest.raises(ValueError, match=field) as info:
        cls(**{**base, field: bad})
    assert repr(bad) in str(info.value) or str(bad) in str(info.value), str(info.value)
