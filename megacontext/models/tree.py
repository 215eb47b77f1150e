"""`MegaContextTree`: the whole history, at every level of detail (contract §8).

LOD0 holds one vector per token; LOD-l holds one gist per K consecutive LOD-(l-1) vectors.
Ingest is append-only and a gist is computed exactly once, in the append that completes its
span (batched over every span completed by that append); a partial trailing span has no gist.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..controller.config import MCConfig
from ..controller.working_context import WorkingContext, as_numpy, check_working_context
from ..errors import InputError, InputTypeError, check_tensor

GistFn = Callable[[torch.Tensor, int], torch.Tensor]  # (children [B, K, D], lod) -> [B, D]


def mean_gist(children: torch.Tensor, lod: int) -> torch.Tensor:
    """The default gist: the mean of the K children. [B, K, D] -> [B, D]."""
    return children.mean(dim=1)


class MegaContextTree:
    """The whole history at every level of detail (contract §8.1).

    `MegaContextTree(cfg: MCConfig, dim: int, gist_fn=None, dtype=torch.float32)`: level 0
    holds one `dim`-wide vector per token; level l (1 .. cfg.max_lod) one gist per K
    consecutive level-(l-1) vectors. `gist_fn(children [B, K, dim], lod) -> [B, dim]` builds
    the gists (default `mean_gist`; a `GistNet` fits). Ingest is append-only: `append(x [n,
    dim])` (dtype = `dtype`, finite) computes each gist exactly once, in the append that
    completes its span; a partial trailing span has no gist.

    `num_tokens` is T; `level(lod)` is [T // K**lod, dim]; `gather(wc)` returns [N, dim], the
    vector of every WC entry in WC order (the WC is validated against T, budget not enforced);
    `save(path)` / `MegaContextTree.load(path, gist_fn)` round-trip it. Bad arguments raise
    InputError / InputTypeError naming them; an invalid WC its InvariantError subclass.
    """

    def __init__(
        self,
        cfg: MCConfig,
        dim: int,
        gist_fn: GistFn | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        if not isinstance(cfg, MCConfig):
            raise InputTypeError(f"cfg must be an MCConfig, got {type(cfg).__name__}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InputError(f"dim must be a positive int, got {dim!r}")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise InputTypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.cfg, self.dim, self.dtype = cfg, dim, dtype
        self.gist_fn = gist_fn if gist_fn is not None else mean_gist
        # per level: a buffer with spare capacity (amortised doubling) and its used length
        self._buf = [torch.empty(0, dim, dtype=dtype) for _ in range(cfg.max_lod + 1)]
        self._len = [0] * (cfg.max_lod + 1)

    @property
    def num_tokens(self) -> int:
        """T: tokens ingested so far."""
        return self._len[0]

    def level(self, lod: int) -> torch.Tensor:
        """[count, D] the vectors of level `lod` (a view; do not modify)."""
        if isinstance(lod, bool) or not isinstance(lod, int) or not 0 <= lod <= self.cfg.max_lod:
            raise InputError(f"lod must be an int in [0, {self.cfg.max_lod}], got {lod!r}")
        return self._buf[lod][: self._len[lod]]

    def _push(self, lod: int, x: torch.Tensor) -> None:
        n, used = x.shape[0], self._len[lod]
        buf = self._buf[lod]
        if used + n > buf.shape[0]:
            grown = torch.empty(max(2 * buf.shape[0], used + n, 64), self.dim, dtype=self.dtype)
            grown[:used] = buf[:used]
            self._buf[lod] = buf = grown
        buf[used: used + n] = x
        self._len[lod] = used + n

    @torch.no_grad()
    def append(self, x: torch.Tensor) -> None:
        """Ingest token embeddings x [n, D] (dtype = the tree's) and build completed gists."""
        check_tensor("x", x, ndim=2, floating=True)
        if x.shape[1] != self.dim:
            raise InputError(f"x has feature size {x.shape[1]}, expected dim={self.dim}")
        if x.dtype != self.dtype:
            raise InputTypeError(f"x has dtype {x.dtype}, the tree stores {self.dtype}")
        check_tensor("x", x, finite=True)
        self._push(0, x)
        K = self.cfg.block_size
        for lod in range(1, self.cfg.max_lod + 1):
            have, complete = self._len[lod], self._len[lod - 1] // K
            if complete == have:
                break  # no new span at this level, so none above either
            children = self._buf[lod - 1][have * K: complete * K].reshape(complete - have, K,
                                                                          self.dim)
            gists = self.gist_fn(children, lod)
            if not isinstance(gists, torch.Tensor) or gists.shape != (complete - have, self.dim):
                got = tuple(gists.shape) if isinstance(gists, torch.Tensor) else type(gists)
                raise InputError(
                    f"gist_fn returned {got} for LOD{lod}, expected ({complete - have}, {self.dim})"
                )
            self._push(lod, gists.to(self.dtype))

    def gather(self, wc: WorkingContext) -> torch.Tensor:
        """[N, D] the vector of every WC entry, in WC order."""
        check_working_context(wc, self.num_tokens, self.cfg, check_budget=False)
        lods, starts = as_numpy(wc.lods), as_numpy(wc.starts)
        out = torch.empty(lods.shape[0], self.dim, dtype=self.dtype)
        for lod in range(self.cfg.max_lod + 1):
            rows = np.flatnonzero(lods == lod)
            if rows.size:
                src = torch.from_numpy(starts[rows] // self.cfg.span(lod))
                out[torch.from_numpy(rows)] = self._buf[lod].index_select(0, src)
        return out

    def save(self, path: str | Path) -> None:
        """Write the tree (config, dtype and every level) to `path` with torch.save."""
        torch.save(
            {
                "cfg": self.cfg.__dict__,
                "dim": self.dim,
                "dtype": str(self.dtype).removeprefix("torch."),
                "levels": [self.level(lod).clone() for lod in range(self.cfg.max_lod + 1)],
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path, gist_fn: GistFn | None = None) -> MegaContextTree:
        """Read a tree written by `save`; `gist_fn` builds the gists of future appends."""
        state = torch.load(path, weights_only=True)
        tree = cls(MCConfig(**state["cfg"]), state["dim"], gist_fn,
                   getattr(torch, state["dtype"]))
        for lod, level in enumerate(state["levels"]):
            tree._push(lod, level)
        return tree
