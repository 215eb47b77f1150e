"""`CausalLensNet`: LensNet's weights scored causally, the seed's causal-vs-non-causal ablation
(contract §8.3, §16.2).

Entry n's score reads only entries 0..n (WC order is time order), as a controller that scores
each entry when it is written would: its slots read the WC prefix up to n, then entry n reads
its own slots. No tail gists: they summarise the newest bytes, which every older entry's score
would then depend on. With the same weights, entry n's score equals `LensNet` (tail=None) on
the prefix entries[:n + 1], so this is the reference architecture with a causal read, and a
trainer run with `[lensnet].causal = true` trains it from scratch (a LensNet trained
non-causally and scored causally would measure inputs it never saw).

Written the plain way (per-entry q/k/v/o projections), O(N^2 * S * H) memory: an ablation for
working contexts of hundreds of entries, not a production scorer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError
from .lensnet import _INSIDE_ONE, LensNet


class CausalLensNet(LensNet):
    """LensNet with a prefix-causal read (contract §8.3): same parameters and `state_dict` as
    `LensNet(cfg)`; `forward(x, features, mask=None, *, projected=False)` -> float32 scores
    [B, N] (or [N]) strictly inside (-1, 1), where entry n depends only on entries m <= n
    (padded entries never influence real ones and score 0). `reads_tail` is False: passing
    `tail` or `tail_mask` raises InputError (callers check `reads_tail` before gathering the
    tail gists). Other bad inputs raise what `LensNet.forward` raises."""

    reads_tail = False

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
        if tail is not None or tail_mask is not None:
            raise InputError("tail: a CausalLensNet reads no tail gists (they are newer than "
                             "every entry they would inform); pass tail=None")
        x, features, mask, _, _, unbatched = self._check(x, features, mask, None, None,
                                                         projected)
        B, N, _ = x.shape
        d, H = self.cfg.width, self.cfg.n_heads
        dh = d // H
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=x.device)
        x = x.masked_fill(~mask[:, :, None], 0.0)
        features = features.masked_fill(~mask[:, :, None], 0.0)
        W = self.derived()
        dt = self.dtype
        # h as LensNet computes it (centred projections: LayerNorm ignores a row's mean)
        f1 = F.pad(features.to(dt), (0, 1), value=1.0)  # [B, N, 4]
        h = x.to(dt) if projected else x.to(dt) @ W["w_in"].t()
        h = (h + f1 @ W["w_aux"].t()).masked_fill(~mask[:, :, None], 0.0)  # [B, N, d]
        hn = self.norm_entries(h).masked_fill(~mask[:, :, None], 0.0)

        # Read: for entry n, every latent slot attends over entries m <= n (real ones only).
        q = self.read.q(self.norm_read(self.latents)).view(-1, H, dh)  # [S, H, dh]
        k = self.read.k(hn).view(B, N, H, dh)
        v = self.read.v(hn).view(B, N, H, dh)
        logits = torch.einsum("shd,bmhd->bhsm", q, k) / math.sqrt(dh)  # [B, H, S, M]
        m_idx = torch.arange(N, device=x.device)
        seen = (m_idx[None, :] <= m_idx[:, None])[None] & mask[:, None, :]  # [B, N, M]
        seen = seen | torch.eye(N, dtype=torch.bool, device=x.device)[None]  # never empty
        logits = logits[:, :, None].masked_fill(~seen[:, None, :, None, :],
                                                torch.finfo(logits.dtype).min)  # [B,H,N,S,M]
        pooled = torch.einsum("bhnsm,bmhd->bnshd", logits.softmax(-1), v)  # [B, N, S, H, dh]
        slots = self.latents + self.read.o(pooled.reshape(B, N, -1, d))  # [B, N, S, d]
        slots = slots + self.slot_mlp(self.norm_slot_mlp(slots))

        # Write: entry n attends over its own slots.
        ns = self.norm_write(slots)
        qw = self.write.q(hn).view(B, N, H, dh)
        kw = self.write.k(ns).view(B, N, -1, H, dh)
        vw = self.write.v(ns).view(B, N, -1, H, dh)
        a = (torch.einsum("bnhd,bnshd->bnhs", qw, kw) / math.sqrt(dh)).softmax(-1)
        z = h + self.write.o(torch.einsum("bnhs,bnshd->bnhd", a, vw).reshape(B, N, d))
        u = self.head(self.norm_out(z))[..., 0].float()
        scores = (torch.tanh(u) * _INSIDE_ONE).masked_fill(~mask, 0.0)
        return scores[0] if unbatched else scores

    @classmethod
    def from_lensnet(cls, lensnet: LensNet) -> CausalLensNet:
        """A CausalLensNet with `lensnet`'s config, dtype and weights (copied)."""
        out = cls(lensnet.cfg).to(lensnet.dtype)
        out.load_state_dict(lensnet.state_dict())
        return out

