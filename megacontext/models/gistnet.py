"""`GistNet`: compress K vectors into one gist (contract §8).

    h    = children + pos[k] (+ level embedding when levels share weights)     [B, K, D]
    h    = n_layers x non-causal pre-norm transformer block over the K vectors
    gist = W_o . softmax_k(q_j . k_jk) v_jk, per head j, with learned queries q  [B, D]

One set of weights (`shared=True`, with a learned level embedding telling the levels apart)
or one per level builds LOD1 from LOD0 and LOD2 from LOD1. `forward(children, lod)` is the
`MegaContextTree` gist-function signature, so a GistNet plugs straight into the tree:
`MegaContextTree(cfg, dim, gist_fn=GistNet(GistNetConfig(dim=dim, block_size=K)))`.
The model runs in its parameter dtype; the gist comes back in the children's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, InputError, InputTypeError, check_int, check_tensor


@dataclass(frozen=True)
class GistNetConfig:
    dim: int = 768  # D: the width of the tree's vectors (the base model's embedding width)
    block_size: int = 32  # K: vectors per gist
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: int = 2
    levels: int = 2  # gist levels served: LOD1 .. LOD`levels`
    shared: bool = True  # one set of weights for every level (else one per level)

    def __post_init__(self):
        for name, minimum in (("dim", 1), ("block_size", 1), ("n_layers", 0), ("n_heads", 1),
                              ("mlp_ratio", 1), ("levels", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ConfigError(f"GistNetConfig.{name} must be an int >= {minimum}, got {v!r}")
        if self.dim % self.n_heads:
            raise ConfigError(
                f"GistNetConfig: dim={self.dim} is not divisible by n_heads={self.n_heads}"
            )
        if not isinstance(self.shared, bool):
            raise ConfigError(f"GistNetConfig.shared must be a bool, got {self.shared!r}")


class EncoderBlock(nn.Module):
    """Pre-norm transformer block with full (non-causal) self-attention over one block."""

    def __init__(self, cfg: GistNetConfig):
        super().__init__()
        D = cfg.dim
        self.n_heads = cfg.n_heads
        self.ln_1 = nn.LayerNorm(D)
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)
        self.ln_2 = nn.LayerNorm(D)
        self.fc_in = nn.Linear(D, cfg.mlp_ratio * D)
        self.fc_out = nn.Linear(cfg.mlp_ratio * D, D)

    def forward(self, x):  # [B, K, D] -> [B, K, D]
        B, K, D = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(B, K, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # [B, H, K, D/H]
        x = x + self.proj(y.transpose(1, 2).reshape(B, K, D))
        return x + self.fc_out(F.gelu(self.fc_in(self.ln_2(x))))


class GistEncoder(nn.Module):
    """K vectors -> 1: position embedding, encoder blocks, learned-query attention pooling."""

    def __init__(self, cfg: GistNetConfig):
        super().__init__()
        D, H = cfg.dim, cfg.n_heads
        self.n_heads = H
        self.pos = nn.Parameter(torch.randn(cfg.block_size, D) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_pool = nn.LayerNorm(D)
        self.query = nn.Parameter(torch.randn(H, D // H) * 0.02)  # one learned query per head
        self.kv = nn.Linear(D, 2 * D)
        self.out = nn.Linear(D, D)

    def forward(self, x):  # [B, K, D] -> [B, D]
        B, K, D = x.shape
        h = x + self.pos
        for block in self.blocks:
            h = block(h)
        k, v = self.kv(self.ln_pool(h)).view(B, K, 2, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        q = self.query[None, :, None, :].expand(B, -1, 1, -1)  # [B, H, 1, D/H]
        pooled = F.scaled_dot_product_attention(q, k, v)  # [B, H, 1, D/H]
        return self.out(pooled.reshape(B, D))


class GistNet(nn.Module):
    """Compresses K vectors into one gist (contract §8.2).

    `GistNet(cfg: GistNetConfig | None = None)`; `cfg` defaults to `GistNetConfig()` (dim=768,
    block_size=32, n_layers=2, n_heads=4, mlp_ratio=2, levels=2, shared=True); anything else
    than a GistNetConfig raises InputTypeError. A position embedding, `n_layers` non-causal
    pre-norm transformer blocks over the K children, then learned-query attention pooling (one
    query per head). With `shared=True` one set of weights serves every level, told apart by a
    learned level embedding; otherwise each level has its own encoder.

    `forward(children [B, K, D], lod: int = 1)` returns gists [B, D] in the children's dtype
    (the model runs in its parameter dtype); `lod` in [1, levels] is the level being built
    (LOD1 from tokens, LOD2 from LOD1 gists). This is the `MegaContextTree` gist-function
    signature: `MegaContextTree(cfg, D, gist_fn=GistNet(...))`. A block of the wrong size or
    width, a level out of range or integer children raise InputError / InputTypeError.
    """

    def __init__(self, cfg: GistNetConfig | None = None):
        super().__init__()
        cfg = GistNetConfig() if cfg is None else cfg
        if not isinstance(cfg, GistNetConfig):
            raise InputTypeError(f"cfg must be a GistNetConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        n_encoders = 1 if cfg.shared else cfg.levels
        self.encoders = nn.ModuleList(GistEncoder(cfg) for _ in range(n_encoders))
        # With shared weights the levels are told apart by a learned embedding.
        self.level_embed = (nn.Parameter(torch.randn(cfg.levels, cfg.dim) * 0.02) if cfg.shared
                            else None)
        self.apply(self._init_weights)
        for encoder in self.encoders:  # pooling keeps unit scale: gists sit among token vectors
            nn.init.normal_(encoder.kv.weight, std=cfg.dim**-0.5)
            nn.init.normal_(encoder.out.weight, std=cfg.dim**-0.5)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoders[0].out.weight.dtype

    def forward(self, children: torch.Tensor, lod: int = 1) -> torch.Tensor:
        """children [B, K, D] (any float dtype) -> gists [B, D] in the children's dtype.

        `lod` (1 .. levels) is the level of the gists being built: LOD1 gists summarise K
        tokens, LOD2 gists K LOD1 gists.
        """
        check_tensor("children", children, ndim=3, floating=True)
        lod = check_int("lod", lod, minimum=1)
        if lod > self.cfg.levels:
            raise InputError(f"lod must be in [1, {self.cfg.levels}], got {lod}")
        B, K, D = children.shape
        if (K, D) != (self.cfg.block_size, self.cfg.dim):
            raise InputError(
                f"children has shape {tuple(children.shape)}, expected [B, block_size="
                f"{self.cfg.block_size}, dim={self.cfg.dim}]"
            )
        x = children.to(self.dtype)
        if self.cfg.shared:
            x = x + self.level_embed[lod - 1]
            encoder = self.encoders[0]
        else:
            encoder = self.encoders[lod - 1]
        return encoder(x).to(children.dtype)
