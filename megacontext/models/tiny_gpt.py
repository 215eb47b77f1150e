"""`TinyGPT`: a small decoder that reads input embeddings at explicit RoPE positions (contract §8).

A working context mixes raw tokens and gists, so the base model must accept (a) embeddings
instead of token ids and (b) explicit, possibly non-integer positions: a token sits at its own
index, a gist at its span centre `start + span // 2` (`WorkingContext.positions`). Attention is
causal in *entry order*; positions only enter through the rotary embedding, which makes every
attention logit depend on position differences alone (shifting all positions by a constant
leaves the logits unchanged).

Block contract (issue 7 swaps the block through `TinyGPTConfig.block_factory`):

    block = block_factory(config, layer_index)   # an nn.Module
    y = block(x, cos, sin)                       # x [B, T, E] -> y [B, T, E], same dtype
    # cos, sin: [B, 1, T, head_dim // 2] in x's dtype, built once per forward from the
    # positions; rotate a [B, H, T, head_dim] query/key with `apply_rope(q, cos, sin)`.

The block owns its residual connections and norms; `TinyGPT` adds the embedding input, the
final norm and the (tied) language-model head.

LoRA (`TinyGPT.add_lora`): every `nn.Linear` whose attribute name is in `targets` is wrapped in
a `LoRALinear`; the up-projection starts at zero, so adding adapters leaves outputs unchanged,
and the base weights are frozen so only the adapters train.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, InputError, InputTypeError, check_int, check_tensor

BlockFactory = Callable[["TinyGPTConfig", int], nn.Module]


@dataclass(frozen=True)
class TinyGPTConfig:
    vocab_size: int = 256
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    mlp_ratio: int = 4
    rope_base: float = 10_000.0
    # (config, layer_index) -> block with forward(x, cos, sin); None: the standard `Block`
    block_factory: BlockFactory | None = None

    def __post_init__(self):
        for name, minimum in (("vocab_size", 1), ("n_layer", 1), ("n_head", 1), ("n_embd", 2),
                              ("mlp_ratio", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ConfigError(f"TinyGPTConfig.{name} must be an int >= {minimum}, got {v!r}")
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ConfigError(
                f"TinyGPTConfig: n_embd={self.n_embd} must split into n_head={self.n_head} heads "
                f"of even size (RoPE rotates pairs of features)"
            )
        if not (isinstance(self.rope_base, int | float) and self.rope_base > 1):
            raise ConfigError(f"TinyGPTConfig.rope_base must be > 1, got {self.rope_base!r}")
        if self.block_factory is not None and not callable(self.block_factory):
            raise ConfigError(
                f"TinyGPTConfig.block_factory must be callable, got {self.block_factory!r}"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


class TinyGPTOutput(NamedTuple):
    logits: torch.Tensor  # [B, T, V] in the model's dtype
    nll: torch.Tensor | None  # [B, T] float32, -log p(target); 0 where the target is -1


# --- rotary position embedding ----------------------------------------------------------------


def rope_tables(positions: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype):
    """cos, sin [B, 1, T, head_dim // 2] for positions [B, T] (int or float).

    Angles are computed in float64: at position 1e6 a float32 angle is off by ~0.06 rad, which
    would break "only position differences matter" long before the model does.
    """
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64,
                                      device=positions.device) / head_dim)  # [hd/2]
    angles = positions.to(torch.float64)[:, None, :, None] * inv_freq  # [B, 1, T, hd/2]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs (i, i + hd/2) of x [B, H, T, hd] by the position angles."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


# --- the standard block ---------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TinyGPTConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x, cos, sin):
        B, T, E = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # [B, H, T, hd]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, hd]
        return self.proj(y.transpose(1, 2).reshape(B, T, E))


class MLP(nn.Module):
    def __init__(self, cfg: TinyGPTConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd, bias=False)
        self.fc_out = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.fc_out(F.gelu(self.fc_in(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then + mlp(ln(x))."""

    def __init__(self, cfg: TinyGPTConfig, layer_index: int = 0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.ln_1(x), cos, sin)
        return x + self.mlp(self.ln_2(x))


# --- LoRA ---------------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / r) * up(down(x)); `up` starts at zero so y == base(x) at first."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        self.base = base
        self.rank = rank
        self.scale = (alpha if alpha is not None else rank) / rank
        dev, dt = base.weight.device, base.weight.dtype
        self.down = nn.Parameter(torch.empty(rank, base.in_features, device=dev, dtype=dt))
        self.up = nn.Parameter(torch.zeros(base.out_features, rank, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))

    def forward(self, x):
        return self.base(x) + self.scale * F.linear(F.linear(x, self.down), self.up)


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters (down, up) of every LoRALinear inside `module`."""
    return [p for m in module.modules() if isinstance(m, LoRALinear) for p in (m.down, m.up)]


# --- the model ----------------------------------------------------------------------------


class TinyGPT(nn.Module):
    def __init__(self, cfg: TinyGPTConfig):
        super().__init__()
        if not isinstance(cfg, TinyGPTConfig):
            raise InputTypeError(f"cfg must be a TinyGPTConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        make_block = cfg.block_factory if cfg.block_factory is not None else Block
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(make_block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.wte.weight.dtype

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] (int64) -> input embeddings [B, T, E]."""
        check_tensor("tokens", tokens, dtype=torch.int64)
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.cfg.vocab_size):
            bad = int(((tokens < 0) | (tokens >= self.cfg.vocab_size)).flatten().nonzero()[0])
            raise InputError(
                f"tokens.flatten()[{bad}] = {int(tokens.flatten()[bad])} is outside "
                f"[0, vocab_size={self.cfg.vocab_size})"
            )
        return self.wte(tokens)

    def forward(
        self,
        inputs: torch.Tensor,
        positions: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> TinyGPTOutput:
        """Logits (and per-position NLL if `targets` is given) for a batch of sequences.

        inputs: token ids [B, T] (int64) or embeddings [B, T, E] (any float dtype; cast to the
            model's dtype), e.g. the gathered vectors of a working context.
        positions: [B, T] or [T], integer or float (gist span centres); default 0..T-1.
        targets: [B, T] int64 next-token ids; -1 marks "no target" (its nll is 0).
        """
        check_tensor("inputs", inputs)
        x = inputs if inputs.is_floating_point() else self.embed(inputs)
        check_tensor("inputs", x, ndim=3)
        B, T, E = x.shape
        if E != self.cfg.n_embd:
            raise InputError(f"inputs has feature size {E}, expected n_embd={self.cfg.n_embd}")
        x = x.to(self.dtype)
        positions = self._check_positions(positions, B, T).to(x.device)
        cos, sin = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_base, x.dtype)
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.lm_head(self.ln_f(x))  # [B, T, V]
        nll = None if targets is None else self.per_position_nll(logits, targets)
        return TinyGPTOutput(logits, nll)

    def _check_positions(self, positions, B: int, T: int) -> torch.Tensor:
        if positions is None:
            return torch.arange(T, dtype=torch.int64, device=self.lm_head.weight.device
                                ).expand(B, T)
        check_tensor("positions", positions)
        if positions.shape not in ((T,), (B, T)):
            raise InputError(
                f"positions has shape {tuple(positions.shape)}, expected ({T},) or ({B}, {T})"
            )
        if positions.dtype == torch.bool or positions.is_complex():
            raise InputTypeError(f"positions must be an integer or float tensor, got "
                                 f"{positions.dtype}")
        if positions.is_floating_point():
            check_tensor("positions", positions, finite=True)
        return positions.expand(B, T)

    def per_position_nll(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """[B, T] float32 -log softmax(logits)[target]; 0 where target == -1."""
        check_tensor("targets", targets, dtype=torch.int64)
        if targets.shape != logits.shape[:2]:
            raise InputError(f"targets has shape {tuple(targets.shape)}, expected "
                             f"{tuple(logits.shape[:2])}")
        V = logits.shape[-1]
        bad = (targets < -1) | (targets >= V)
        if bool(bad.any()):
            i = int(bad.flatten().nonzero()[0])
            raise InputError(f"targets.flatten()[{i}] = {int(targets.flatten()[i])} is outside "
                             f"[0, {V}) and not -1")
        return F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-1,
                               reduction="none")

    def add_lora(
        self,
        rank: int,
        targets: Sequence[str] = ("qkv", "proj"),  # the attention projections
        alpha: float | None = None,
        freeze_base: bool = True,
    ) -> list[str]:
        """Wrap every nn.Linear named in `targets` (attribute name) in a LoRALinear of `rank`.

        Returns the qualified names wrapped. With `freeze_base`, every non-LoRA parameter stops
        requiring gradients. The up-projection starts at zero: outputs are unchanged.
        """
        rank = check_int("rank", rank, minimum=1)
        targets = set(targets)
        found = [
            (parent, name, child)
            for parent in self.modules()
            for name, child in parent.named_children()
            if name in targets and isinstance(child, nn.Linear)
        ]
        if not found:
            raise InputError(f"targets {sorted(targets)} name no nn.Linear in the model")
        qualified = {id(m): n for n, m in self.named_modules()}
        wrapped = []
        for parent, name, child in found:
            wrapped.append(f"{qualified[id(parent)]}.{name}".lstrip("."))
            setattr(parent, name, LoRALinear(child, rank, alpha))
        if freeze_base:
            adapters = {id(p) for p in lora_parameters(self)}
            for p in self.parameters():
                p.requires_grad_(id(p) in adapters)
        return wrapped
