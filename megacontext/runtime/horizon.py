"""loss@H: the base model's mean NLL of the next H tokens given a working context (contract §11).

The base reads the WC's gathered vectors at `WorkingContext.positions(cfg)` followed by the
embeddings of the first H-1 horizon tokens at their own positions `T .. T+H-2`; the outputs at
the WC's last entry and at those H-1 tokens predict the H horizon tokens (teacher forcing).

Many WCs are scored in one forward by RIGHT-padding every sequence with zero vectors after its
last horizon token. Attention is causal, so a real position never attends to a later padded
one: no attention mask is needed, and a padded row's output is simply not read. This is the
contract's "padding mask": the causal mask already is one for right padding.

The base contract (`BaseModel`): `embed(ids[n] int64) -> [n, E]` and
`base(inputs [B, L, E], positions=[B, L] float) -> logits [B, L, V]` (or an object with a
`.logits` attribute, as `TinyGPT` returns).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..controller.config import MCConfig
from ..controller.working_context import WorkingContext, as_numpy
from ..device import HOST
from ..errors import InputError, InputTypeError, check_int, check_tensor


def base_logits(base, inputs: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """[B, L, V] logits of the base over input embeddings [B, L, E] at float positions [B, L]."""
    out = base(inputs, positions=positions)
    logits = getattr(out, "logits", out)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
        raise InputTypeError(f"base returned {type(out).__name__}; expected logits [B, L, V] or "
                             f"an object with .logits")
    return logits


def device_of(base) -> torch.device:
    """The device of the base's parameters (CPU for a base without parameters)."""
    params = getattr(base, "parameters", None)
    p = next(iter(params()), None) if callable(params) else None
    return p.device if p is not None else torch.device("cpu")


def embed_ids(base, ids: torch.Tensor) -> torch.Tensor:
    """[n, E] input embeddings of token ids [n] (int64) through `base.embed`, on the CPU."""
    out = base.embed(ids.to(device_of(base)))
    if not isinstance(out, torch.Tensor) or out.shape[:1] != ids.shape or out.ndim != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputTypeError(f"base.embed(ids[{ids.shape[0]}]) returned {got}; expected "
                             f"[{ids.shape[0]}, E]")
    return out.cpu()


def check_ids(name: str, ids, vocab_size: int | None = None, min_length: int = 0) -> torch.Tensor:
    """A 1-D int64 tensor of token ids (each in [0, vocab_size) when that is known)."""
    check_tensor(name, ids, ndim=1, dtype=torch.int64)
    if ids.shape[0] < min_length:
        raise InputError(f"{name} must hold at least {min_length} token(s), got {ids.shape[0]}")
    if ids.numel() and vocab_size is not None:
        bad = (ids < 0) | (ids >= vocab_size)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise InputError(f"{name}[{i}] = {int(ids[i])} is outside [0, vocab_size="
                             f"{vocab_size})")
    return ids


@torch.no_grad()
def loss_at_h_batch(
    base,
    wc_vectors: Sequence[torch.Tensor],
    wc_positions: Sequence[torch.Tensor],
    T: int,
    future: torch.Tensor,
    future_emb: torch.Tensor | None = None,
    batch_size: int = 32,
) -> torch.Tensor:
    """[V] float64 mean NLL (nats/token) of `future[H]` after each of V working contexts.

    wc_vectors[v]: [N_v, E] gathered vectors, wc_positions[v]: [N_v] positions (N_v >= 1);
    future: [H] int64 tokens T .. T+H-1 (H >= 1). Variants run `batch_size` at a time, right
    padded with zeros (see the module docstring). future_emb: `embed_ids(base, future)`, if the
    caller has it.
    """
    H = int(future.shape[0])
    if H < 1:
        raise InputError("future must hold at least one token (the horizon H >= 1)")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    emb = embed_ids(base, future) if future_emb is None else future_emb
    q_emb = emb[: H - 1]  # [H-1, E] the teacher-forced inputs
    q_pos = torch.arange(T, T + H - 1, dtype=torch.float64, device=HOST)
    out = torch.empty(len(wc_vectors), dtype=torch.float64, device=HOST)
    for b0 in range(0, len(wc_vectors), batch_size):
        vecs, poss = wc_vectors[b0: b0 + batch_size], wc_positions[b0: b0 + batch_size]
        lens = [int(v.shape[0]) for v in vecs]
        if min(lens) < 1:
            raise InputError("a working context must hold at least one entry to predict from")
        L = max(lens) + H - 1
        E = q_emb.shape[1] if q_emb.numel() else vecs[0].shape[1]
        x = torch.zeros(len(vecs), L, E, dtype=emb.dtype, device=HOST)
        pos = torch.zeros(len(vecs), L, dtype=torch.float64, device=HOST)
        rows = []  # per variant: indices of the H predicting positions
        for j, (v, p, n) in enumerate(zip(vecs, poss, lens, strict=True)):
            x[j, :n] = v.to(emb.dtype)
            x[j, n: n + H - 1] = q_emb
            pos[j, :n] = p.to(torch.float64)
            pos[j, n: n + H - 1] = q_pos
            rows.append(torch.arange(n - 1, n - 1 + H, device=HOST))
        dev = device_of(base)
        logits = base_logits(base, x.to(dev), pos.to(dev))  # [b, L, V]
        picked = logits[torch.arange(len(vecs), device=dev)[:, None],
                        torch.stack(rows).to(dev)]  # [b, H, V]
        nll = F.cross_entropy(picked.float().transpose(1, 2),
                              future.to(dev).expand(len(vecs), H), reduction="none")  # [b, H]
        out[b0: b0 + len(vecs)] = nll.double().mean(dim=1).cpu()
    return out


# --- one-action variants (contract §12) -------------------------------------------------------


def expand_variant(wc: WorkingContext, row: int, cfg: MCConfig) -> WorkingContext:
    """The WC with gist `row` replaced by its K children (residency 0); budget not enforced."""
    lods, starts, res = as_numpy(wc.lods), as_numpy(wc.starts), as_numpy(wc.residency)
    lod = int(lods[row])
    if lod < 1:
        raise InputError(f"entry {row} is an LOD0 token: it cannot expand")
    K, child = cfg.block_size, cfg.span(lod - 1)
    new_l = np.full(K, lod - 1, dtype=np.int64)
    new_s = starts[row] + child * np.arange(K, dtype=np.int64)
    return WorkingContext.from_numpy(
        np.concatenate([lods[:row], new_l, lods[row + 1:]]),
        np.concatenate([starts[:row], new_s, starts[row + 1:]]),
        np.concatenate([res[:row], np.zeros(K, dtype=np.int64), res[row + 1:]]),
    )


def collapse_variant(wc: WorkingContext, head: int, cfg: MCConfig) -> WorkingContext:
    """The WC with the sibling group at rows [head, head+K) replaced by its parent gist."""
    lods, starts, res = as_numpy(wc.lods), as_numpy(wc.starts), as_numpy(wc.residency)
    K = cfg.block_size
    one = np.ones(1, dtype=np.int64)
    return WorkingContext.from_numpy(
        np.concatenate([lods[:head], one * (lods[head] + 1), lods[head + K:]]),
        np.concatenate([starts[:head], one * starts[head], starts[head + K:]]),
        np.concatenate([res[:head], one * 0, res[head + K:]]),
    )
