"""Lens-gated attention block (contract §8, seed 004): shift work from attention to the MLP.

Five mechanisms on top of a pre-LayerNorm transformer block, each switchable for ablations:

1. reciprocity: the transposed score matrix Sᵀ (S[i, j] = q_i·k_j / sqrt(D)); no parameters and
   no extra GEMM: Sᵀ[i, j] = q_j·k_i, which for j <= i still reads only positions <= i.
2. discoverability: a per-head column bias d[j] = k_j·u_h, so a key can make itself easy to
   find whatever the query; `u` is [H, D].
3. lens gates: per head, w = softmax(gates[h]) over (std, rec, disc) and
   logits = w_std·S + w_rec·Sᵀ + w_disc·d. The causal mask is applied AFTER mixing: Sᵀ and the
   column bias both carry entries of later keys (j > i), and those are masked like S's.
4. route gate: g = sigmoid(route_raw + route_bias) per block, and
   out = H + g·(H_attn - H) + (1 - g)·(H_mlp - H_attn), i.e. H + g·attn + (1 - g)·mlp.
   `route_raw` is learned; `route_bias` is a buffer that the annealing schedule moves.
5. MLP context (optional): the MLP's hidden pre-activation blends in a projection of the
   attention output: h = (1 - α)·fc(x) + α·ctx_up(ctx_down(a)), low rank E -> R -> mult·E
   (or full rank E -> mult·E, for comparison only).

Parameter arithmetic at the GPT-2 124M shape (12 layers, E = 768, 12 heads of 64):

    discoverability  u        12 x 64 =    768 per layer
    lens gates       gates    12 x 3  =     36 per layer
    route gate       route_raw          =      1 per layer
    mechanisms 1-4                         805 per layer, 9,660 for 12 layers
    low-rank context (R = 128, mult = 4): 768·128 + 128·3072 = 98,304 + 393,216 = 491,520/layer
    full-rank context (mult = 4):         768·3072 = 2,359,296 per layer (4.8x the low rank)

Seed 004 states the 12-layer total of mechanisms 1-4 as 9,444: an addition slip (it rounds
768 x 12 = 9,216 down to "9K" and adds 432 + 12 to 9,000). The per-layer figures give
768 x 12 + 36 x 12 + 12 = 9,660, which is what the specs count from the built modules.

Compute: with the context path off, the only extra matmul is d = K·u (2·B·T·E FLOPs per
layer); Sᵀ is a view and the mixing is elementwise. Attention is written with explicit
matmuls (no fused SDPA kernel, which torch's FLOP counter cannot see) so that claim is
checkable with `torch.utils.flop_counter.FlopCounterMode`.

Route annealing (seed: g ≈ 0.69 until step 2000, linear to ≈ 0.27 at step 10000, constant
after) is linear in the bias, i.e. in logit space: route_bias goes from 0.8 (sigmoid = 0.6900)
to -1.0 (sigmoid = 0.2689); at the midpoint, step 6000, the bias is -0.1 and g = 0.4750 (with
route_raw = 0). A fresh block starts at route_bias = 0.8, so g = 0.69 before any annealing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, InputError, InputTypeError, check_int, check_tensor
from .tiny_gpt import TinyGPT, TinyGPTConfig, apply_rope

CONTEXT_MODES = ("off", "low_rank", "full_rank")
ABLATIONS = {
    # the seed's attention ablations; route gate and context follow the config's other fields
    "baseline": dict(reciprocity=False, discoverability=False, route_gate=False),
    "reciprocity": dict(reciprocity=True, discoverability=False),
    "discoverability": dict(reciprocity=False, discoverability=True),
    "full": dict(reciprocity=True, discoverability=True),
}


@dataclass(frozen=True)
class LensGatedConfig:
    n_embd: int = 768  # E
    n_head: int = 12  # H; head size D = E / H
    mlp_ratio: float = 4.0  # mult: the MLP hidden size is mult·E (must be a whole number)
    bias: bool = True  # biases in the Linear layers, as in GPT-2 (LayerNorms always have one)
    reciprocity: bool = True  # mechanism 1: the Sᵀ term
    discoverability: bool = True  # mechanism 2: the column bias d = K·u
    route_gate: bool = True  # mechanism 4: g = sigmoid(route_raw + route_bias)
    route_bias_init: float = 0.8  # logit of g before annealing: sigmoid(0.8) = 0.690
    context: str = "off"  # mechanism 5: "off", "low_rank" (E -> R -> mult·E) or "full_rank"
    context_rank: int = 128  # R
    context_alpha: float = 0.1  # α: weight of the context projection in the blend

    def __post_init__(self):
        for name in ("n_embd", "n_head", "context_rank"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"LensGatedConfig.{name} must be an int >= 1, got {v!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"LensGatedConfig.n_embd ({self.n_embd}) must be a multiple of "
                f"n_head ({self.n_head})"
            )
        for name in ("reciprocity", "discoverability", "route_gate", "bias"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"LensGatedConfig.{name} must be a bool, got {getattr(self, name)!r}"
                )
        for name in ("mlp_ratio", "route_bias_init", "context_alpha"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"LensGatedConfig.{name} must be a finite number, got {v!r}")
        hidden = self.mlp_ratio * self.n_embd
        if self.mlp_ratio <= 0 or hidden != int(hidden):
            raise ConfigError(
                f"LensGatedConfig.mlp_ratio ({self.mlp_ratio}) times n_embd ({self.n_embd}) "
                f"must be a positive whole number, got {hidden}"
            )
        if not 0 <= self.context_alpha <= 1:
            raise ConfigError(
                f"LensGatedConfig.context_alpha must be in [0, 1], got {self.context_alpha}"
            )
        if self.context not in CONTEXT_MODES:
            raise ConfigError(
                f"LensGatedConfig.context must be one of {CONTEXT_MODES}, got {self.context!r}"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_ratio * self.n_embd)

    @property
    def lens(self) -> bool:
        """Whether the attention has lens gates at all (some mechanism besides S is on)."""
        return self.reciprocity or self.discoverability

    @classmethod
    def ablation(cls, name: str, **overrides) -> LensGatedConfig:
        """The seed's ablations: "baseline" (a standard GPT-2 block), "reciprocity",
        "discoverability", "full"; keyword arguments set the other fields."""
        if name not in ABLATIONS:
            raise ConfigError(f"ablation must be one of {tuple(ABLATIONS)}, got {name!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"LensGatedConfig has no field(s) {unknown}")
        fixed = ABLATIONS[name]
        clash = {k: v for k, v in overrides.items() if k in fixed and v != fixed[k]}
        if clash:
            raise ConfigError(f"ablation {name!r} fixes {fixed}; cannot also set {clash}")
        return cls(**{**overrides, **fixed})


# --- functional core -------------------------------------------------------------------------


def lens_logits(
    q: torch.Tensor, k: torch.Tensor, weights: torch.Tensor, u: torch.Tensor | None,
    reciprocity: bool,
) -> torch.Tensor:
    """Mixed attention logits before the causal mask.

    q, k [B, H, T, D]; weights [H, 3] (w_std, w_rec, w_disc); u [H, D] or None for no
    discoverability term. Returns [B, H, T, T] = w_std·S + w_rec·Sᵀ + w_disc·d with
    S = q·kᵀ / sqrt(D) and d[b, h, :, j] = k[b, h, j]·u[h]. A term that is off is not computed,
    so with neither term the result is exactly S.
    """
    S = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # [B, H, T, T]
    if not reciprocity and u is None:
        return S
    w = weights.to(S.dtype)[None, :, :, None, None]  # [1, H, 3, 1, 1]
    logits = w[:, :, 0] * S
    if reciprocity:
        logits = logits + w[:, :, 1] * S.transpose(-2, -1)  # a view: no GEMM
    if u is not None:
        d = torch.einsum("bhtd,hd->bht", k, u.to(k.dtype))  # [B, H, T]: one value per key
        logits = logits + w[:, :, 2] * d[:, :, None, :]  # a column bias, the same on every row
    return logits


def causal_attention(logits: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Mask keys j > i of logits [B, H, T, T], softmax over keys, mix v [B, H, T, D]."""
    T = logits.shape[-1]
    future = torch.ones(T, T, dtype=torch.bool, device=logits.device).triu(1)  # [T, T]
    att = logits.masked_fill(future, float("-inf")).softmax(dim=-1)
    return att @ v  # [B, H, T, D]


# --- modules ---------------------------------------------------------------------------------


class LensGatedAttention(nn.Module):
    """Causal self-attention with reciprocity, discoverability and per-head softmax lens gates.

    Parameters (the public names): `qkv` Linear E -> 3E (q, k, v concatenated, heads
    contiguous), `proj` Linear E -> E, `u` [H, D] when discoverability is on, `gates` [H, 3]
    when either mechanism is on. A column of `gates` whose mechanism is off gets weight exactly 0
    (and no gradient): `gates` keeps one shape across ablations, so checkpoints move between them.
    """

    def __init__(self, config: LensGatedConfig):
        super().__init__()
        if not isinstance(config, LensGatedConfig):
            raise InputTypeError(f"config must be a LensGatedConfig, got {type(config).__name__}")
        self.config = config
        E, H, D = config.n_embd, config.n_head, config.head_dim
        self.qkv = nn.Linear(E, 3 * E, bias=config.bias)
        self.proj = nn.Linear(E, E, bias=config.bias)
        self.u = nn.Parameter(torch.empty(H, D)) if config.discoverability else None
        if self.u is not None:
            nn.init.normal_(self.u, std=0.02)
        # zeros: every enabled mechanism starts with the same weight
        self.gates = nn.Parameter(torch.zeros(H, 3)) if config.lens else None
        enabled = [True, config.reciprocity, config.discoverability]
        self.register_buffer("_enabled", torch.tensor(enabled), persistent=False)

    def lens_weights(self) -> torch.Tensor:
        """[H, 3] (w_std, w_rec, w_disc) per head: softmax over the enabled mechanisms."""
        H = self.config.n_head
        if self.gates is None:
            return torch.tensor([1.0, 0.0, 0.0], device=self._enabled.device).expand(H, 3)
        return self.gates.masked_fill(~self._enabled, float("-inf")).softmax(dim=-1)

    def _qkv(self, x: torch.Tensor, cos, sin):
        check_tensor("x", x, ndim=3, floating=True)
        B, T, E = x.shape
        if E != self.config.n_embd:
            raise InputError(f"x has feature size {E}, expected n_embd={self.config.n_embd}")
        if (cos is None) != (sin is None):
            raise InputError("cos and sin come together: got only one of them")
        H, D = self.config.n_head, self.config.head_dim
        q, k, v = self.qkv(x).split(E, dim=2)  # 3 x [B, T, E]
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        if cos is not None:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def logits(self, x: torch.Tensor, cos=None, sin=None) -> torch.Tensor:
        """[B, H, T, T] the mixed logits of x [B, T, E], before the causal mask."""
        q, k, _ = self._qkv(x, cos, sin)
        return lens_logits(q, k, self.lens_weights(), self.u, self.config.reciprocity)

    def forward(self, x: torch.Tensor, cos=None, sin=None) -> torch.Tensor:
        """x [B, T, E] -> [B, T, E]; cos, sin: TinyGPT's RoPE tables (None: no rotation)."""
        q, k, v = self._qkv(x, cos, sin)
        logits = lens_logits(q, k, self.lens_weights(), self.u, self.config.reciprocity)
        y = causal_attention(logits, v)  # [B, H, T, D]
        B, H, T, D = y.shape
        return self.proj(y.transpose(1, 2).reshape(B, T, H * D))


class GatedMLP(nn.Module):
    """The block's MLP, E -> mult·E -> GELU -> E, with the optional context path blended into the
    hidden pre-activation: h = (1 - α)·fc_in(x) + α·ctx(c). Parameters: `fc_in`, `fc_out` (the
    names TinyGPT's MLP uses); `ctx_down` E -> R and `ctx_up` R -> mult·E (low rank) or
    `ctx_proj` E -> mult·E (full rank), no biases."""

    def __init__(self, config: LensGatedConfig):
        super().__init__()
        if not isinstance(config, LensGatedConfig):
            raise InputTypeError(f"config must be a LensGatedConfig, got {type(config).__name__}")
        self.config = config
        E, M, R = config.n_embd, config.mlp_hidden, config.context_rank
        self.fc_in = nn.Linear(E, M, bias=config.bias)
        self.fc_out = nn.Linear(M, E, bias=config.bias)
        if config.context == "low_rank":
            self.ctx_down = nn.Linear(E, R, bias=False)
            self.ctx_up = nn.Linear(R, M, bias=False)
        elif config.context == "full_rank":
            self.ctx_proj = nn.Linear(E, M, bias=False)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, E], ctx [B, T, E] (required exactly when the context path is on)."""
        mode = self.config.context
        if (ctx is None) != (mode == "off"):
            need = "needs a ctx tensor" if mode != "off" else "takes no ctx (context='off')"
            raise InputError(f"GatedMLP with context={mode!r} {need}")
        h = self.fc_in(x)  # [B, T, M]
        if ctx is not None:
            check_tensor("ctx", ctx, ndim=3, floating=True)
            if ctx.shape != x.shape:
                raise InputError(f"ctx has shape {tuple(ctx.shape)}, x has {tuple(x.shape)}")
            if mode == "low_rank":
                c = self.ctx_up(self.ctx_down(ctx))  # [B, T, R] -> [B, T, M]
            else:
                c = self.ctx_proj(ctx)  # [B, T, M]
            alpha = self.config.context_alpha
            h = (1 - alpha) * h + alpha * c
        return self.fc_out(F.gelu(h))


class LensGatedBlock(nn.Module):
    """Pre-LayerNorm block: a = attn(ln_1(H)); H_attn = H + a; m = mlp(ln_2(H_attn), ctx=a);
    H_mlp = H_attn + m; with the route gate on, out = H + g·(H_attn - H) + (1 - g)·(H_mlp - H_attn)
    (= H + g·a + (1 - g)·m), otherwise the standard out = H_mlp.

    The MLP's context is the attention output a: the cross-token summary the block has already
    computed (causal, no extra pass), read at full strength even where g down-weights a.
    Public names: `ln_1`, `attn`, `ln_2`, `mlp`, parameter `route_raw` [1] (init 0) and
    buffer `route_bias` [1] (init `route_bias_init`; moved by `apply_route_annealing`).
    """

    def __init__(self, config: LensGatedConfig):
        super().__init__()
        if not isinstance(config, LensGatedConfig):
            raise InputTypeError(f"config must be a LensGatedConfig, got {type(config).__name__}")
        self.config = config
        E = config.n_embd
        self.ln_1 = nn.LayerNorm(E)
        self.attn = LensGatedAttention(config)
        self.ln_2 = nn.LayerNorm(E)
        self.mlp = GatedMLP(config)
        if config.route_gate:
            self.route_raw = nn.Parameter(torch.zeros(1))
            self.register_buffer("route_bias", torch.full((1,), float(config.route_bias_init)))
        else:
            self.route_raw = None

    def route_gate(self) -> torch.Tensor:
        """[1] g = sigmoid(route_raw + route_bias): the attention share (1 without a gate)."""
        if self.route_raw is None:
            return torch.ones(1, device=self.ln_1.weight.device)
        return torch.sigmoid(self.route_raw + self.route_bias)

    def forward(self, x: torch.Tensor, cos=None, sin=None) -> torch.Tensor:
        """x [B, T, E] -> [B, T, E]; cos, sin: TinyGPT's RoPE tables (None: no rotation)."""
        check_tensor("x", x, ndim=3, floating=True)
        a = self.attn(self.ln_1(x), cos, sin)  # [B, T, E]
        h_attn = x + a
        ctx = a if self.config.context != "off" else None
        m = self.mlp(self.ln_2(h_attn), ctx)  # [B, T, E]
        if self.route_raw is None:
            return h_attn + m
        g = self.route_gate().to(x.dtype)
        return x + g * a + (1 - g) * m


# --- route annealing -------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteAnnealing:
    """The route bias as a function of the training step: `start_bias` until `start_step`,
    linear to `end_bias` at `end_step`, constant after. Defaults: sigmoid(0.8) = 0.690 ->
    sigmoid(-1.0) = 0.269, from step 2000 to step 10000 (seed 004)."""

    start_step: int = 2000
    end_step: int = 10000
    start_bias: float = 0.8
    end_bias: float = -1.0

    def __post_init__(self):
        for name in ("start_step", "end_step"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"RouteAnnealing.{name} must be an int >= 0, got {v!r}")
        if self.end_step <= self.start_step:
            raise ConfigError(
                f"RouteAnnealing.end_step ({self.end_step}) must be > start_step "
                f"({self.start_step})"
            )
        for name in ("start_bias", "end_bias"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"RouteAnnealing.{name} must be a finite number, got {v!r}")


def route_bias_at(step: int, schedule: RouteAnnealing = RouteAnnealing()) -> float:
    """The route bias at training step `step` (an int >= 0); g = sigmoid(route_raw + bias)."""
    step = check_int("step", step, minimum=0)
    if not isinstance(schedule, RouteAnnealing):
        raise InputTypeError(f"schedule must be a RouteAnnealing, got {type(schedule).__name__}")
    s = schedule
    frac = min(max((step - s.start_step) / (s.end_step - s.start_step), 0.0), 1.0)
    return s.start_bias + frac * (s.end_bias - s.start_bias)


@torch.no_grad()
def apply_route_annealing(
    model: nn.Module, step: int, schedule: RouteAnnealing = RouteAnnealing()
) -> float:
    """Set `route_bias` of every route-gated `LensGatedBlock` in `model` to the schedule's
    value at `step` (the learned `route_raw` is left alone); returns that bias. A model with no
    route gate raises InputError rather than silently doing nothing."""
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be an nn.Module, got {type(model).__name__}")
    bias = route_bias_at(step, schedule)
    blocks = [
        m for m in model.modules() if isinstance(m, LensGatedBlock) and m.route_raw is not None
    ]
    if not blocks:
        raise InputError(
            f"model ({type(model).__name__}) has no route-gated LensGatedBlock to anneal"
        )
    for block in blocks:
        block.route_bias.fill_(bias)
    return bias


# --- TinyGPT with lens-gated blocks ----------------------------------------------------------

SHAPE_FIELDS = ("n_embd", "n_head", "mlp_ratio")  # taken from the TinyGPTConfig


def lens_gated_block_factory(
    ablation: str = "full", **options
) -> Callable[[TinyGPTConfig, int], LensGatedBlock]:
    """A `TinyGPTConfig.block_factory` that builds `LensGatedBlock`s.

    The block's shape (n_embd, n_head, mlp_ratio) comes from the TinyGPT config; `ablation`
    and `options` set the other `LensGatedConfig` fields. `bias` defaults to False, as in
    TinyGPT's own block, so the "baseline" ablation has TinyGPT's exact parameter names and
    count (and loads its state dict).
    """
    taken = sorted(set(options) & set(SHAPE_FIELDS))
    if taken:
        raise ConfigError(f"{taken} come from the TinyGPTConfig; do not pass them as options")
    options = {"bias": False, **options}
    LensGatedConfig.ablation(ablation, **options)  # fail here, not at the first layer built

    def make_block(cfg: TinyGPTConfig, layer_index: int) -> LensGatedBlock:
        shape = dict(n_embd=cfg.n_embd, n_head=cfg.n_head, mlp_ratio=cfg.mlp_ratio)
        return LensGatedBlock(LensGatedConfig.ablation(ablation, **shape, **options))

    return make_block


def lens_gated_tiny_gpt(cfg: TinyGPTConfig, ablation: str = "full", **options) -> TinyGPT:
    """A `TinyGPT` whose every block is a `LensGatedBlock` (see `lens_gated_block_factory`)."""
    if not isinstance(cfg, TinyGPTConfig):
        raise InputTypeError(f"cfg must be a TinyGPTConfig, got {type(cfg).__name__}")
    if cfg.block_factory is not None:
        raise ConfigError(
            f"cfg.block_factory is already set ({cfg.block_factory!r}); lens_gated_tiny_gpt "
            f"supplies its own"
        )
    return TinyGPT(replace(cfg, block_factory=lens_gated_block_factory(ablation, **options)))
