"""`LensNet`: a signed utility score in (-1, 1) for every working-context entry (contract §8).

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

Speed (contract §10: a focus step within a small multiple of the machine's floor). The only
O(N * d_in) work is the input projection, a GEMM that depends only on each entry's vector and
`in_proj`'s weight: `project` computes it, a tree caches it per node
(`MegaContextTree.gather(wc, lensnet=net)`), and `forward(rows, features, projected=True)`
starts from the cached rows. The rest is a few passes over the entries' [N, d] buffer and over
[S*H, N] attention weights:
- per-entry key/value/query/output projections are never materialised: they are absorbed into
  the S slot-side vectors (q.(W_k h) = (W_k^T q).h; sum_n a_n W_v h_n = W_v sum_n a_n h_n), so
  each attention costs two [S*H, d] x [d, N] products;
- no [N, d] LayerNorm pass: the projections into the entry stream are mean-centred (LayerNorm
  ignores a row's mean), so LayerNorm(h) = gamma * h / rms(h) + beta; gamma and beta fold into
  the slot-side vectors and 1/rms(h) is one number per entry (a vector norm); the same for z;
- the head needs w . z = w . h + sum_m a_m (w . v_m): w rides along as one more row of the
  write-logit product, so z is read once, for its norm;
- the write softmax runs over the slot axis of an [S, H, N] layout (contiguous in N): torch's
  softmax over a tiny last dimension is ~15x slower;
- slot-side math (S rows) runs in float32: a bf16 GEMM that small costs ~5x more on this CPU;
  what depends on parameters alone (the latents' queries; the read's value and output
  projections with gamma and beta; the write's query-key and value-output products) is
  folded into a few matrices, cached while autograd is off (`derived`).
Measured and not kept (one thread, N=8192, bf16): never forming z (its norm from
|h|^2 + 2 a.(V h) + a^T (V V^T) a) saves the [N, d] residual pass but its float32 [S*H, N]
products cost as much, and its larger temporaries made glibc trim and re-fault ~20 MB per
call at N=32768; carrying the feature term analytically instead of the in-place addmm_ (K=4
corrections to three products) cost more than the pass it saves.
Where it stands (benchmarks/test_floor_perf.py; one thread on a shared 2-core AMD EPYC without
AMX, N=8192, bf16, width 128): from cached projections ~3.7 ms, ~3.2x the floor of a whole
focus step; on the vectors (plain path) ~12 ms. The four [S*H, d] x [d, N] entry-side products
run at ~90 GFLOP/s, under half the machine's square-GEMM rate, and are most of what is left.
`tests/test_models_internals.py` checks all of this against the plain formulation (scores and
gradients), and golden/vectors/lensnet.json against a float64 numpy one.

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

from ..controller.config import MCConfig
from ..controller.working_context import WorkingContext, as_numpy, check_working_context
from ..errors import ConfigError, InputError, InputTypeError, check_int, check_tensor

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
    """Scores every working-context entry with a signed utility in (-1, 1) (contract §8.3).

    `LensNet(cfg: LensNetConfig | None = None)`; `cfg` defaults to `LensNetConfig()` (d_in=768,
    width=128, n_heads=4, n_latents=6, slot_mlp_ratio=2); anything else than a LensNetConfig
    raises InputTypeError. Non-causal dual cross-attention: a few learned slots (plus optional
    tail gists) read the whole WC, then every entry reads the slots, so cost is linear in N and
    the first entry sees the recent tail. Positive score: more detail here is worth it
    (expand); negative: less is fine (collapse).

    `forward(x [B, N, d_in] or [N, d_in], features [B, N, 3] or [N, 3] from lens_features,
    mask [B, N] bool = None, tail [B, G, d_in] or [G, d_in] = None, tail_mask [B, G] = None)`
    returns float32 scores [B, N] (or [N]) strictly inside (-1, 1); padded entries (mask
    False) score exactly 0 and never influence real ones. Inputs of any float dtype are cast
    to the parameter dtype (`.to(torch.bfloat16)` for bf16; no autocast needed). Same weights
    and inputs give bitwise-identical scores. Bad shapes or dtypes raise InputError /
    InputTypeError naming the argument. `reads_tail` (True) tells callers to pass the tail
    gists; `CausalLensNet` (the causal ablation) reads none.
    """

    reads_tail = True

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
        # Write: entries query the slots, a softmax over the slots. A key bias adds q_n . b_k,
        # the same logit for every slot of entry n's softmax, so it would be dead weight (its
        # gradient is exactly zero); a query bias would add b_q . k_s, a per-slot logit the
        # LayerNorm's beta already gives ((W_q beta) . k_s). Neither.
        self.norm_write = nn.LayerNorm(d)
        self.write = CrossAttention(d, cfg.n_heads, query_bias=False, key_bias=False)
        self.norm_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)
        self._derived_cache = None  # (parameter stamp, derived tensors), see `derived`
        self._token = object()  # identity for projection_key (never reused, unlike id())

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
        *,
        projected: bool = False,
    ) -> torch.Tensor:
        """Scores [B, N] (or [N] for unbatched input), float32, strictly inside (-1, 1).

        x: [B, N, d_in] or [N, d_in] entry vectors (any float dtype; cast to the model's);
            with `projected=True`, [B, N, width] or [N, width] projections from `project`
            (or `MegaContextTree.gather(wc, lensnet=self)`), made under the current weights:
            the scores then equal those of the plain path on the vectors, bitwise when the
            projections were computed in the same GEMM shape (contract §10).
        features: [B, N, 3] or [N, 3] from `lens_features`.
        mask: [B, N] bool, True for real entries; padded entries never influence real ones
            (whatever their values, NaN included) and score exactly 0.
        tail: [B, G, d_in] or [G, d_in] tail gists (e.g. the LOD2 root and the latest LOD1
            gists) that join the learned slots; tail_mask [B, G] bool marks the real ones.
        """
        x, features, mask, tail, tail_mask, unbatched = self._check(x, features, mask, tail,
                                                                     tail_mask, projected)
        # Padded entries and masked tail gists are zeroed here, at the entrance: masking only
        # later would keep the outputs clean but not the gradients (a NaN in a padded x row
        # times its zero output gradient is NaN in every element of in_proj.weight.grad).
        if mask is not None:
            x = x.masked_fill(~mask[:, :, None], 0.0)
            features = features.masked_fill(~mask[:, :, None], 0.0)
        if tail_mask is not None:
            tail = tail.masked_fill(~tail_mask[:, :, None], 0.0)
        W = self.derived()
        P = W["slot_side"]
        dt, st = self.dtype, P["latents"].dtype  # model dtype; slot-side dtype (float32 at least)
        B, N, D = x.shape
        d, H = self.cfg.width, self.cfg.n_heads

        # Entries: one GEMM over d_in (centred weights: see `derive`), or the cached projections;
        # the features and the bias are added by one more product. h's rows are mean-free, so
        # LayerNorm(h) is gamma * h / rms(h) + beta and only the per-entry 1/rms is computed.
        f1 = F.pad(features.to(dt).reshape(B * N, N_FEATURES), (0, 1), value=1.0)  # [B*N, 4]
        if projected:  # out of place: the caller's projections are never written to
            h = torch.addmm(x.to(dt).reshape(B * N, d), f1, W["w_aux"].t())  # [B*N, d]
        else:
            h = torch.mm(x.to(dt).reshape(B * N, D), W["w_in"].t())  # [B*N, d]
            h = h.addmm_(f1, W["w_aux"].t())
        h = h.view(B, N, d)
        if mask is not None:  # padded entries become zero rows: inert and NaN-free
            h = h.masked_fill(~mask[:, :, None], 0.0)
        inv_rms = _inv_rms(h, self.norm_entries.eps).to(dt)[:, None, :]  # [B, 1, N]

        # Slots: learned latents (their read queries are parameters only: precomputed), then
        # the projected tail gists. Slot-side math is tiny (S rows) and runs in float32 at
        # least: a bf16 GEMM this small costs ~5x a float32 one on this CPU. The S*H rows of
        # the slot-side tensors are (slot, head) pairs, slot-major.
        slots = P["latents"].expand(B, -1, -1)  # [B, S, d]
        q_abs = W["latent_queries"].expand(B, -1, -1, -1)  # [B, S_latent, H, d]
        if tail is not None:
            tail_h = _lin(P, "in_proj", tail.to(st)) + P["tail_embed"]
            slots = torch.cat([slots, tail_h], dim=1)
            q_abs = torch.cat([q_abs, self.read_queries(P, tail_h)], dim=1)
        S = slots.shape[1]

        # Read: slot s, head j attends over the entries (absorbed keys, gamma folded in);
        # sum_n a_n LN(h_n) = gamma * sum_n (a_n / rms_n) h_n + beta as the weights sum to one,
        # and gamma, beta, W_v and W_o fold into one linear map of the pooled heads (`read_out`).
        logits = torch.bmm(q_abs.reshape(B, S * H, d).to(dt), h.transpose(1, 2)) * inv_rms
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, :], torch.finfo(dt).min)
        pooled = torch.bmm(logits.softmax(dim=-1) * inv_rms, h).to(st)  # [B, S*H, d]
        del logits  # freed before the write allocates its own [B, S*H, N] buffers: a lower peak
        slots = slots + _lin(W, "read_out", pooled.view(B, S, H * d))
        slots = slots + _lin(P, "slot_mlp.2", F.gelu(_lin(P, "slot_mlp.0",
                                                          _ln(P, "norm_slot_mlp", slots))))

        # Write: entry n, head j attends over the slots with logit (W_q,j LN(h_n)) . k_sj
        #   = (gamma * k_abs_sj) . h_n / rms_n + beta . k_abs_sj,   k_abs_sj = W_q,j^T k_sj,
        # and z_n = h_n + sum_sj a_sjn v_abs_sj, v_abs_sj = W_o,j v_sj + b_o / H (the centred
        # output projection folded into the values; the b_o / H sum to b_o as each head's
        # weights sum to one). gamma * k_abs, beta . k_abs and v_abs are one linear map of
        # LayerNorm(slot) (`write_kv`); a masked tail slot gets the logit -max everywhere.
        kv = _lin(W, "write_kv", _ln(P, "norm_write", slots)).view(B, S * H, 2 * d + 1)
        k_gamma, k_beta, v_abs = kv.split([d, 1, d], dim=-1)  # [B, S*H, d | 1 | d]
        k_beta = k_beta.to(dt)
        if tail_mask is not None:
            slot_ok = torch.cat([tail_mask.new_ones(B, self.cfg.n_latents), tail_mask], dim=1)
            k_beta = k_beta.masked_fill(~slot_ok.repeat_interleave(H, dim=1)[:, :, None],
                                        torch.finfo(dt).min)
        # Head: w . LN(z) + b = (gamma_out * w) . z / rms(z) + (w . beta_out + b), with
        # w . z_n = w . h_n + sum_sj a_sjn (w . v_abs_sj): w rides along as one more row of the
        # logit product, so the head reads z once (its norm).
        w = W["head_w"]
        dots = torch.bmm(torch.cat([k_gamma, w.expand(B, 1, d)], dim=1).to(dt),
                         h.transpose(1, 2))  # [B, S*H + 1, N]
        logits = torch.addcmul(k_beta, dots[:, : S * H], inv_rms)
        attn = logits.view(B, S, H, N).softmax(dim=1).view(B, S * H, N)  # over slots, per head
        w_z = torch.baddbmm(dots[:, S * H:], (v_abs @ w).to(dt)[:, None, :], attn)  # [B, 1, N]
        # z = h + attn^T v_abs, accumulated into h's buffer when no autograd graph needs h.
        residual = torch.baddbmm if torch.is_grad_enabled() else torch.Tensor.baddbmm_
        z = residual(h, attn.transpose(1, 2), v_abs.to(dt))  # [B, N, d]
        u = w_z[:, 0].float() * _inv_rms(z, self.norm_out.eps).float() + W["head_offset"]

        # Scores: tanh in float32, kept strictly inside (-1, 1).
        scores = torch.tanh(u) * _INSIDE_ONE
        if mask is not None:
            scores = scores.masked_fill(~mask, 0.0)
        return scores[0] if unbatched else scores

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The input projection of entry vectors, [..., d_in] (any float dtype) -> [..., width]
        in the model's dtype (contract §10). It depends only on the vectors and `in_proj`'s
        weight (not on the features, the bias, or any other entry), so a tree can compute it
        once per node and reuse it while `projection_key()` is unchanged; feed the rows to
        `forward(..., projected=True)`. Differentiable while autograd is on. The weight is
        centred (see `derive`), so these are not `in_proj(x)`: only `forward` reads them.
        Raises InputError on a wrong last dimension, InputTypeError on a non-float tensor."""
        check_tensor("x", x, floating=True)
        if x.ndim < 1 or x.shape[-1] != self.cfg.d_in:
            raise InputError(f"x has shape {tuple(x.shape)}, expected [..., d_in={self.cfg.d_in}]")
        w_in = (_centred(self.in_proj.weight) if torch.is_grad_enabled()
                else self.derived()["w_in"])
        rows = x.to(self.dtype).reshape(-1, self.cfg.d_in)
        return torch.mm(rows, w_in.t()).view(*x.shape[:-1], self.cfg.width)

    def projection_key(self) -> tuple | None:
        """A value that changes whenever `project`'s result may change: the version counter,
        storage and dtype of `in_proj.weight` and this module's identity token. In-place
        updates (optimizer steps, load_state_dict, `copy_` under no_grad) bump the version;
        `.to()` moves the storage. None when the weight is an inference tensor (it has no
        version counter): such projections must not be cached. Writes through `.data`
        bypass version counters (as for `derived`)."""
        w = self.in_proj.weight
        if w.is_inference():
            return None
        return (self._token, w._version, w.data_ptr(), w.dtype)

    def read_queries(self, P: dict, slots: torch.Tensor) -> torch.Tensor:
        """[..., S, d] slots -> [..., S, H, d] read queries with W_k and gamma absorbed:
        q_sj . W_k,j LN(h_n) = (gamma * W_k,j^T q_sj) . h_n / rms_n + a per-slot constant."""
        H, d = self.cfg.n_heads, self.cfg.width
        q = _lin(P, "read.q", _ln(P, "norm_read", slots)).unflatten(-1, (H, 1, d // H))
        w_k = P["read.k.weight"].view(H, d // H, d) / math.sqrt(d // H)
        return (q @ w_k).squeeze(-2) * P["norm_entries.weight"]  # [..., S, H, 1, d] -> squeeze

    def derive(self) -> dict:
        """What forward derives from the parameters alone.

        - `w_in`, `w_aux` (model dtype) are centred: each output feature minus the mean over
          the d features, and so is the write attention's output projection. h and z only
          ever enter LayerNorms, which ignore a row's mean, so this changes no output; it
          makes every row mean-free, so forward needs no [N, d] normalisation pass
          (LayerNorm(h) = gamma * h / rms(h) + beta).
        - `slot_side`: float32 (at least) copies of every parameter, for the S-row math.
        - `latent_queries`: the latents' read queries [S_latent, H, d].
        - `read_out`: the read's value and output projections with the entry LayerNorm's
          gamma and beta folded in, as one linear map [d, H*d] of the pooled heads.
        - `write_kv`: per head j, LayerNorm(slot) -> [gamma * k_abs_j | beta . k_abs_j |
          v_abs_j] (k_abs_j = W_q,j^T W_k,j LN(slot) / sqrt(dh), v_abs_j = W_o,j W_v,j
          LN(slot) + biases), one linear map [H*(2d+1), d].
        - `head_w`, `head_offset`: the head with the output LayerNorm's gamma and beta folded in.
        """
        dt = self.dtype
        P = {n: p.to(torch.promote_types(dt, torch.float32)) for n, p in self.named_parameters()}
        H, d = self.cfg.n_heads, self.cfg.width
        dh = d // H
        gamma, beta = P["norm_entries.weight"], P["norm_entries.bias"]
        w_aux = torch.cat([self.feat_proj.weight, self.in_proj.bias[:, None]], dim=1)  # [d, 4]

        # Read: slot += sum_j W_o,j (W_v,j (gamma * p_j + beta) + b_v,j) + b_o, where
        # p_j = sum_n a_jn h_n / rms_n is what forward pools for head j.
        read_ov = torch.einsum("oje,jed->ojd", P["read.o.weight"].view(d, H, dh),
                               P["read.v.weight"].view(H, dh, d))  # [d, H, d]: W_o,j W_v,j
        read_b = (read_ov @ beta).sum(1) + P["read.o.weight"] @ P["read.v.bias"] + P["read.o.bias"]

        # Write, per head j: k_abs_j = K_j LN(slot) and v_abs_j = V_j LN(slot) + v_j.
        w_q = (P["write.q.weight"].view(H, dh, d) / math.sqrt(dh)).transpose(1, 2)  # [H, d, dh]
        K = w_q @ P["write.k.weight"].view(H, dh, d)  # [H, d, d]
        w_o = _centred(P["write.o.weight"]).view(d, H, dh).transpose(0, 1)  # [H, d, dh]
        V = w_o @ P["write.v.weight"].view(H, dh, d)  # [H, d, d]
        v = (w_o @ P["write.v.bias"].view(H, dh, 1))[..., 0] + _centred(P["write.o.bias"]) / H
        write_w = torch.cat([gamma[:, None] * K, (beta @ K)[:, None], V], dim=1)  # [H, 2d+1, d]
        write_b = torch.cat([v.new_zeros(H, d + 1), v], dim=1)  # [H, 2d+1]: keys unbiased
        return {
            "slot_side": P,
            "w_in": _centred(self.in_proj.weight),  # [d, d_in]
            "w_aux": _centred(w_aux),  # [d, 4]: features, then the bias
            "latent_queries": self.read_queries(P, P["latents"]),  # [S_latent, H, d]
            "read_out.weight": (read_ov * gamma).reshape(d, H * d),
            "read_out.bias": read_b,
            "write_kv.weight": write_w.reshape(H * (2 * d + 1), d),
            "write_kv.bias": write_b.reshape(-1),
            "head_w": P["norm_out.weight"] * P["head.weight"][0],  # [d]
            "head_offset": (P["head.weight"][0] @ P["norm_out.bias"] + P["head.bias"]).float(),
        }

    def derived(self) -> dict:
        """`derive()`, cached while autograd is off until a parameter changes (its version
        counter or storage moves), so inference pays for it once; fresh (and differentiable)
        whenever autograd is on. Writes through `param.data` bypass version counters: change
        parameters in place under torch.no_grad(), with load_state_dict or an optimizer."""
        params = _parameters(self, [])
        if torch.is_grad_enabled() or any(p.is_inference() for p in params):
            return self.derive()  # (inference tensors carry no version counter)
        stamp = tuple((p._version, p.data_ptr(), p.dtype) for p in params)
        if self._derived_cache is None or self._derived_cache[0] != stamp:
            self._derived_cache = (stamp, self.derive())
        return self._derived_cache[1]

    def _check(self, x, features, mask, tail, tail_mask, projected):
        check_tensor("x", x, floating=True)
        if not isinstance(projected, bool):
            raise InputTypeError(f"projected must be a bool, got {projected!r}")
        name, size = ("width", self.cfg.width) if projected else ("d_in", self.cfg.d_in)
        if x.ndim not in (2, 3):
            raise InputError(f"x must be [N, {name}] or [B, N, {name}], got shape "
                             f"{tuple(x.shape)}")
        unbatched = x.ndim == 2
        if unbatched:
            x = x[None]
        B, N, D = x.shape
        if D != size:
            raise InputError(f"x has feature size {D}, expected {name}={size}"
                             + (" (projected=True)" if projected else ""))
        D = self.cfg.d_in  # tail gists are always raw vectors
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


def _parameters(module: nn.Module, out: list) -> list:
    """Every parameter of `module` and its submodules (shared ones repeated): what
    `list(module.parameters())` gives, at a third of its cost for the per-call cache check."""
    out.extend(p for p in module._parameters.values() if p is not None)
    for child in module._modules.values():
        if child is not None:
            _parameters(child, out)
    return out


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


def lens_tail(lensnet: LensNet, tree) -> torch.Tensor | None:
    """The `tail` argument for `lensnet` on `tree`: `tail_gists(tree)`, or None when the tree
    has no gist yet or the scorer reads no tail (`reads_tail` False: `CausalLensNet`)."""
    if not lensnet.reads_tail:
        return None
    tail = tail_gists(tree)
    return tail if tail.shape[0] else None


def tail_gists(tree, per_level: int = 2) -> torch.Tensor:
    """[G, D] the newest `per_level` gists of each level, coarsest level first (G may be
    smaller than max_lod * per_level while the history is short) - LensNet's tail slots."""
    per_level = check_int("per_level", per_level, minimum=0)
    levels = [tree.level(lod)[-per_level:] if per_level else tree.level(lod)[:0]
              for lod in range(tree.cfg.max_lod, 0, -1)]
    return torch.cat(levels, dim=0)
