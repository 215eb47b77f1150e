"""`LensNet`: a signed utility score in (-1, 1) for every working-context entry (design §8).

Non-causal dual cross-attention, linear in N:

    h    = W_in x + W_aux f + b             entries at a small width d; f = aux features  [B, N, d]
    hn   = LayerNorm(h)
    slot = [latents ; W_in tail + e_tail]   a few learned slots plus optional tail gists  [B, S, d]
    slot = slot + Read(slot <- hn)          every slot reads the whole WC ("8k -> S")
    slot = slot + MLP(LayerNorm(slot))
    z    = h + Write(hn <- LayerNorm(slot)) every entry reads the enriched slots ("S -> 8k")
    u    = tanh(w . LayerNorm(z) + b)       the signed score                              [B, N]

Read and Write are ordinary multi-head cross-attentions (q, k, v, o projections); the slots see
the whole WC, so the first entry's score depends on the recent tail (the public LensNet this
replaces was causal and could not). Positive u: more detail here is worth it; negative: less.

Speed (design §10: <= 3 ms at N=8192, d_in=768 in bf16). The only O(N * d_in) work is the input
projection; everything else touches each entry's d-vector a few times:
- per-entry key/value/query/output projections are never materialised: they are absorbed into
  the S slot-side vectors (q.(W_k h) = (W_k^T q).h; sum_n a_n W_v h_n = W_v sum_n a_n h_n), so
  each attention costs two [S*H, d] x [d, N] products;
- no [N, d] LayerNorm pass: the projections into the entry stream are mean-centred (LayerNorm
  ignores a row's mean), so LayerNorm(h) = gamma * h / rms(h) + beta; gamma and beta fold into
  the slot-side vectors and 1/rms(h) is one number per entry (a vector norm); the same for z
  and the head;
- the write softmax runs over the slot axis of an [H, S, N] layout (contiguous in N): torch's
  softmax over a tiny last dimension is ~15x slower;
- slot-side math (S rows) runs in float32: a bf16 GEMM that small costs ~5x more on this CPU;
  everything derived from parameters alone is cached while autograd is off (`derived`).
`tests/test_models_internals.py` checks all of this against the plain formulation, and
golden/vectors/lensnet.json against a float64 numpy one.

The model runs in its parameter dtype (`.to(torch.bfloat16)` for bf16); inputs of any float
dtype are cast to it, so bf16 works without autocast. Scores come back as float32: the tanh is
taken in float32 and scaled by 1 - 2^-24 so |u| < 1 strictly, even where tanh rounds to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import MCConfig
from .errors import ConfigError, InputError, InputTypeError, check_int, check_tensor
from .working_context import WorkingContext, as_numpy, check_working_context

N_FEATURES = 3  # lens_features: level, log span width, log distance to the cursor
_INSIDE_ONE = 1.0 - 2.0**-24  # largest float32 factor < 1: maps tanh's 1.0 to 0.99999994


def lens_features(wc: WorkingContext, T: int, cfg: MCConfig) -> torch.Tensor:
    """[N, 3] float32 auxiliary features of each WC entry, with the cursor at T:

    0: level of detail `lod`;
    1: `ln(span)`, the width of the entry in tokens, log-scaled;
    2: `ln(1 + T - end)`, how many tokens lie between the entry's end and the cursor.
    """
    check_working_context(wc, T, cfg, check_budget=False)
    lods = as_numpy(wc.lods)
    span = float(cfg.block_size) ** lods
    end = as_numpy(wc.starts) + cfg.block_size ** lods
    out = np.stack([lods.astype(np.float64), np.log(span), np.log1p(T - end)], axis=1)
    return torch.from_numpy(out.astype(np.float32))


@dataclass(frozen=True)
class LensNetConfig:
    d_in: int = 768  # width of the WC vectors (the base model's embedding width)
    width: int = 128  # d: the internal width every entry is projected to
    n_heads: int = 4
    n_latents: int = 6  # learned slots that read the whole WC
    slot_mlp_ratio: int = 2

    def __post_init__(self):
        for name, minimum in (("d_in", 1), ("width", 1), ("n_heads", 1), ("n_latents", 1),
                              ("slot_mlp_ratio", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ConfigError(f"LensNetConfig.{name} must be an int >= {minimum}, got {v!r}")
        if self.width % self.n_heads:
            raise ConfigError(
                f"LensNetConfig: width={self.width} is not divisible by n_heads={self.n_heads}"
            )


class CrossAttention(nn.Module):
    """Parameters of one multi-head cross-attention; LensNet applies them in absorbed form."""

    def __init__(self, width: int, n_heads: int, query_bias: bool, key_bias: bool):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, width // n_heads
        self.q = nn.Linear(width, width, bias=query_bias)
        self.k = nn.Linear(width, width, bias=key_bias)
        self.v = nn.Linear(width, width)
        self.o = nn.Linear(width, width)

    def heads(self, weight: torch.Tensor) -> torch.Tensor:
        """A [d_out, d_in] projection as per-head blocks [H, head_dim, d_in]."""
        return weight.view(self.n_heads, self.head_dim, -1)


class LensNet(nn.Module):
    def __init__(self, cfg: LensNetConfig | None = None):
        super().__init__()
        cfg = LensNetConfig() if cfg is None else cfg
        if not isinstance(cfg, LensNetConfig):
            raise InputTypeError(f"cfg must be a LensNetConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        d = cfg.width
        self.in_proj = nn.Linear(cfg.d_in, d)
        self.feat_proj = nn.Linear(N_FEATURES, d, bias=False)
        self.latents = nn.Parameter(torch.randn(cfg.n_latents, d) * 0.5)
        self.tail_embed = nn.Parameter(torch.zeros(d))  # marks a slot as a tail gist
        self.norm_entries = nn.LayerNorm(d)
        # Read: slots query the entries. A key bias adds the same logit to every entry of a
        # slot's softmax, so it would be dead weight: none.
        self.norm_read = nn.LayerNorm(d)
        self.read = CrossAttention(d, cfg.n_heads, query_bias=True, key_bias=False)
        self.norm_slot_mlp = nn.LayerNorm(d)
        self.slot_mlp = nn.Sequential(
            nn.Linear(d, cfg.slot_mlp_ratio * d), nn.GELU(), nn.Linear(cfg.slot_mlp_ratio * d, d)
        )
        # Write: entries query the slots. The query bias is dropped for the same reason
        # (absorbed into the keys it would add a per-slot logit shared by all entries, which
        # the key bias already provides).
        self.norm_write = nn.LayerNorm(d)
        self.write = CrossAttention(d, cfg.n_heads, query_bias=False, key_bias=True)
        self.norm_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)
        self._derived_cache = None  # (parameter stamp, derived tensors), see `derived`

    @property
    def dtype(self) -> torch.dtype:
        return self.in_proj.weight.dtype

    def forward(
        self,
        x: torch.Tensor,
        features: torch.Tensor,
        mask: torch.Tensor | None = None,
        tail: torch.Tensor | None = None,
        tail_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores [B, N] (or [N] for unbatched input), float32, strictly inside (-1, 1).

        x: [B, N, d_in] or [N, d_in] entry vectors (any float dtype; cast to the model's).
        features: [B, N, 3] or [N, 3] from `lens_features`.
        mask: [B, N] bool, True for real entries; padded entries never influence real ones
            (whatever their values, NaN included) and score exactly 0.
        tail: [B, G, d_in] or [G, d_in] tail gists (e.g. the LOD2 root and the latest LOD1
            gists) that join the learned slots; tail_mask [B, G] bool marks the real ones.
        """
        x, features, mask, tail, tail_mask, unbatched = self._check(x, features, mask, tail,
                                                                     tail_mask)
        W = self.derived()
        P = W["slot_side"]
        dt = self.dtype
        B, N, D = x.shape
        d, H = self.cfg.width, self.cfg.n_heads
        dh = d // H

        # Entries: one GEMM over d_in (centred weights: see `derive`); the features and the bias
        # accumulate into its output in place. h's rows are mean-free, so LayerNorm(h) is
        # gamma * h / rms(h) + beta and only the per-entry 1/rms is computed here.
        h = torch.mm(x.to(dt).reshape(B * N, D), W["w_in"].t())  # [B*N, d]
        f1 = torch.cat([features.to(dt).reshape(B * N, N_FEATURES), h.new_ones(B * N, 1)], 1)
        h = h.addmm_(f1, W["w_aux"].t()).view(B, N, d)
        if mask is not None:  # padded entries become zero rows: inert and NaN-free
            h = h.masked_fill(~mask[:, :, None], 0.0)
        inv_rms = _inv_rms(h, self.norm_entries.eps).to(dt)[:, None, :]  # [B, 1, N]
        gamma, beta = P["norm_entries.weight"], P["norm_entries.bias"]

        # Slots: learned latents (their read queries are parameters only: precomputed), then
        # the projected tail gists. Slot-side math is tiny (S rows) and runs in float32 at
        # least: a bf16 GEMM this small costs ~5x a float32 one on this CPU.
        slots = P["latents"].expand(B, -1, -1)
        q_abs = W["latent_queries"].expand(B, -1, -1, -1)  # [B, H, S_latent, d]
        if tail is not None:
            tail_h = _lin(P, "in_proj", tail.to(P["latents"].dtype)) + P["tail_embed"]
            slots = torch.cat([slots, tail_h], dim=1)
            q_abs = torch.cat([q_abs, self.read_queries(P, tail_h)], dim=2)
        S = slots.shape[1]

        # Read: slot s, head j attends over the entries (absorbed keys, gamma folded in);
        # sum_n a_n LN(h_n) = gamma * sum_n (a_n / rms_n) h_n + beta as the weights sum to one.
        logits = torch.bmm(q_abs.reshape(B, H * S, d).to(dt), h.transpose(1, 2))
        logits = logits * inv_rms  # [B, H*S, N]
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, :], torch.finfo(dt).min)
        pooled = torch.bmm(logits.softmax(dim=-1) * inv_rms, h).to(gamma.dtype) * gamma + beta
        v = torch.einsum("bjsd,jed->bsje", pooled.view(B, H, S, d), W["read_v"])
        slots = slots + _lin(P, "read.o", v.reshape(B, S, d) + P["read.v.bias"])
        slots = slots + _lin(P, "slot_mlp.2", F.gelu(_lin(P, "slot_mlp.0",
                                                          _ln(P, "norm_slot_mlp", slots))))

        # Write: entry n, head j attends over the slots with (W_q,j LN(h_n)) . k_sj
        #   = (gamma * W_q,j^T k_sj) . h_n / rms_n + beta . W_q,j^T k_sj;
        # the (centred) output projection folds into the slot values, b_o / H per head
        # summing to b_o because each head's weights sum to one.
        sn = _ln(P, "norm_write", slots)
        k = _lin(P, "write.k", sn).view(B, S, H, dh)
        v = _lin(P, "write.v", sn).view(B, S, H, dh)
        k_abs = torch.einsum("bsje,jed->bjsd", k, W["write_q"])  # [B, H, S, d], scaled
        k_beta = (k_abs @ beta).reshape(B, H * S, 1).to(dt)
        v_abs = torch.einsum("bsje,dje->bjsd", v, W["write_o"]) + W["write_o_bias"]
        logits = torch.bmm((k_abs * gamma).reshape(B, H * S, d).to(dt), h.transpose(1, 2))
        logits = torch.addcmul(k_beta, logits, inv_rms).view(B, H, S, N)
        if tail_mask is not None:
            latent_ok = tail_mask.new_ones(B, self.cfg.n_latents)
            slot_ok = torch.cat([latent_ok, tail_mask], dim=1)  # [B, S]
            logits = logits.masked_fill(~slot_ok[:, None, :, None], torch.finfo(dt).min)
        attn = logits.softmax(dim=2).view(B, H * S, N)  # over slots, per head
        # z = h + attn^T v_abs, accumulated into h's buffer when no autograd graph needs h.
        residual = torch.baddbmm if torch.is_grad_enabled() else torch.Tensor.baddbmm_
        z = residual(h, attn.transpose(1, 2), v_abs.reshape(B, H * S, d).to(dt))  # [B, N, d]

        # Head: w . LN(z) + b = (gamma_out * w) . z / rms(z) + (w . beta_out + b); tanh in
        # float32, kept strictly inside (-1, 1).
        u = torch.mv(z.view(B * N, d), W["head_w"]).view(B, N)
        u = u.float() * _inv_rms(z, self.norm_out.eps).float() + W["head_offset"]
        scores = torch.tanh(u) * _INSIDE_ONE
        if mask is not None:
            scores = scores.masked_fill(~mask, 0.0)
        return scores[0] if unbatched else scores

    def read_queries(self, P: dict, slots: torch.Tensor) -> torch.Tensor:
        """[..., S, d] slots -> [..., H, S, d] read queries with W_k and gamma absorbed:
        q_sj . W_k,j LN(h_n) = (gamma * W_k,j^T q_sj) . h_n / rms_n + a per-slot constant."""
        H, d = self.cfg.n_heads, self.cfg.width
        q = _lin(P, "read.q", _ln(P, "norm_read", slots))
        q = q.unflatten(-1, (H, d // H)).transpose(-3, -2)  # [..., H, S, dh]
        w_k = P["read.k.weight"].view(H, 1, d // H, d) / math.sqrt(d // H)
        return (q.unsqueeze(-2) @ w_k).squeeze(-2) * P["norm_entries.weight"]

    def derive(self) -> dict:
        """What forward derives from the parameters alone.

        - `w_in`, `w_aux` (model dtype) and `write_o*` are centred: each output feature minus
          the mean over the d features. h and z only ever enter LayerNorms, which ignore a
          row's mean, so this changes no output; it makes every row mean-free, so forward
          needs no [N, d] normalisation pass (LayerNorm(h) = gamma * h / rms(h) + beta).
        - `slot_side`: float32 (at least) copies of every parameter, for the S-row math.
        - `latent_queries`: the latents' read queries; `read_v`, `write_q`, `write_o`: the
          per-head blocks the absorbed attentions use; `head_w`, `head_offset`: the head with
          the output LayerNorm's gamma and beta folded in.
        """
        dt = self.dtype
        P = {n: p.to(torch.promote_types(dt, torch.float32)) for n, p in self.named_parameters()}
        H, d = self.cfg.n_heads, self.cfg.width
        dh = d // H
        w_aux = torch.cat([self.feat_proj.weight, self.in_proj.bias[:, None]], dim=1)  # [d, 4]
        return {
            "slot_side": P,
            "w_in": _centred(self.in_proj.weight),  # [d, d_in]
            "w_aux": _centred(w_aux),  # [d, 4]: features, then the bias
            "latent_queries": self.read_queries(P, P["latents"]),  # [H, S_latent, d]
            "read_v": P["read.v.weight"].view(H, dh, d),
            "write_q": P["write.q.weight"].view(H, dh, d) / math.sqrt(dh),
            "write_o": _centred(P["write.o.weight"]).view(d, H, dh),
            "write_o_bias": _centred(P["write.o.bias"]) / H,
            "head_w": (self.norm_out.weight * self.head.weight[0]).to(dt),  # [d]
            "head_offset": (P["head.weight"][0] @ P["norm_out.bias"] + P["head.bias"]).float(),
        }

    def derived(self) -> dict:
        """`derive()`, cached while autograd is off until a parameter changes (its version
        counter or storage moves), so inference pays for it once; fresh (and differentiable)
        whenever autograd is on. Writes through `param.data` bypass version counters: change
        parameters in place under torch.no_grad(), with load_state_dict or an optimizer."""
        params = list(self.parameters())
        if torch.is_grad_enabled() or any(p.is_inference() for p in params):
            return self.derive()  # (inference tensors carry no version counter)
        stamp = tuple((p._version, p.data_ptr(), p.dtype) for p in params)
        if self._derived_cache is None or self._derived_cache[0] != stamp:
            self._derived_cache = (stamp, self.derive())
        return self._derived_cache[1]

    def _check(self, x, features, mask, tail, tail_mask):
        check_tensor("x", x, floating=True)
        if x.ndim not in (2, 3):
            raise InputError(f"x must be [N, d_in] or [B, N, d_in], got shape {tuple(x.shape)}")
        unbatched = x.ndim == 2
        if unbatched:
            x = x[None]
        B, N, D = x.shape
        if D != self.cfg.d_in:
            raise InputError(f"x has feature size {D}, expected d_in={self.cfg.d_in}")
        check_tensor("features", features, floating=True)
        want = (N, N_FEATURES) if unbatched else (B, N, N_FEATURES)
        if tuple(features.shape) != want:
            raise InputError(f"features has shape {tuple(features.shape)}, expected {want}")
        features = features.reshape(B, N, N_FEATURES)
        if mask is not None:
            check_tensor("mask", mask, dtype=torch.bool)
            if tuple(mask.shape) != (B, N):
                raise InputError(f"mask has shape {tuple(mask.shape)}, expected {(B, N)}")
        if tail is None:
            if tail_mask is not None:
                raise InputError("tail_mask was given without tail")
        else:
            check_tensor("tail", tail, floating=True)
            if unbatched and tail.ndim == 2:
                tail = tail[None]
            if tail.ndim != 3 or tail.shape[0] != B or tail.shape[2] != D:
                raise InputError(
                    f"tail has shape {tuple(tail.shape)}, expected [{B}, G, {D}]"
                    + (" or [G, d_in]" if unbatched else "")
                )
            if tail_mask is not None:
                check_tensor("tail_mask", tail_mask, dtype=torch.bool)
                if tail_mask.ndim == 1 and unbatched:
                    tail_mask = tail_mask[None]
                if tuple(tail_mask.shape) != tuple(tail.shape[:2]):
                    raise InputError(f"tail_mask has shape {tuple(tail_mask.shape)}, expected "
                                     f"{tuple(tail.shape[:2])}")
        return x, features, mask, tail, tail_mask, unbatched


def _centred(weight: torch.Tensor) -> torch.Tensor:
    """A projection's weight [d, ...] (or bias [d]) minus its mean over the d outputs."""
    return weight - weight.mean(dim=0, keepdim=True)


def _inv_rms(h: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / sqrt(mean(h^2, last dim) + eps) in float32 at least: LayerNorm's scale for a
    mean-free row."""
    norm = torch.linalg.vector_norm(h, dim=-1).to(torch.promote_types(h.dtype, torch.float32))
    return torch.rsqrt(norm.square() / h.shape[-1] + eps)


def _lin(P: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    """The linear layer `name` applied with the float32 copies in P."""
    return F.linear(x, P[f"{name}.weight"], P.get(f"{name}.bias"))


def _ln(P: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    """The LayerNorm `name` (eps 1e-5, the nn.LayerNorm default) with the copies in P."""
    return F.layer_norm(x, x.shape[-1:], P[f"{name}.weight"], P[f"{name}.bias"], 1e-5)


def tail_gists(tree, per_level: int = 2) -> torch.Tensor:
    """[G, D] the newest `per_level` gists of each level, coarsest level first (G may be
    smaller than max_lod * per_level while the history is short) - LensNet's tail slots."""
    per_level = check_int("per_level", per_level, minimum=0)
    levels = [tree.level(lod)[-per_level:] if per_level else tree.level(lod)[:0]
              for lod in range(tree.cfg.max_lod, 0, -1)]
    return torch.cat(levels, dim=0)
