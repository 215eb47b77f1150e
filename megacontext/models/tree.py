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
from ..device import HOST
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
        self._buf = [torch.empty(0, dim, dtype=dtype, device=HOST) for _ in range(cfg.max_lod + 1)]
        self._len = [0] * (cfg.max_lod + 1)
        # LensNet projections of the nodes (see `gather`): one table, each level's region
        # offset and capacity, each level's filled length, the `projection_key()` they hold
        self._proj = torch.empty(0, device=HOST)
        self._proj_off = np.zeros(cfg.max_lod + 1, dtype=np.int64)
        self._proj_cap = [0] * (cfg.max_lod + 1)
        self._proj_len = [0] * (cfg.max_lod + 1)
        self._proj_key = None

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
            grown = torch.empty(max(2 * buf.shape[0], used + n, 64), self.dim, dtype=self.dtype,
                                device=HOST)
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

    def gather(self, wc: WorkingContext, lensnet=None) -> torch.Tensor:
        """The rows of every WC entry, in WC order (contract §8, §10).

        Without `lensnet`: [N, D] the entries' vectors, in the tree's dtype.
        With a `LensNet`: [N, width] in the LensNet's dtype, `lensnet.project` of those vectors,
        for `lensnet(rows, features, projected=True)`. While autograd is off, the projections
        come from the tree's cache: every node is projected once (lazily, in one GEMM per level
        over the nodes appended since the last call) and reused until
        `lensnet.projection_key()` changes (an in-place weight update bumps its version, a
        different LensNet has another key), when the cache is rebuilt. With autograd on and a
        weight that requires grad, or weights without a version counter (inference tensors),
        the gathered vectors are projected afresh (differentiable, nothing cached).
        Raises the InvariantError subclass of the first broken invariant if `wc` does not fit
        this tree, InputTypeError if `lensnet` is not a LensNet.
        """
        spans = check_working_context(wc, self.num_tokens, self.cfg, check_budget=False)
        if lensnet is None:
            return self._gather_vectors(wc, spans)
        if not (callable(getattr(lensnet, "project", None))
                and callable(getattr(lensnet, "projection_key", None))):
            raise InputTypeError(f"lensnet must be a LensNet, got {type(lensnet).__name__}")
        key = lensnet.projection_key()
        if key is None or (torch.is_grad_enabled() and lensnet.in_proj.weight.requires_grad):
            return lensnet.project(self._gather_vectors(wc, spans))
        with torch.no_grad():
            self._update_projections(lensnet, key)
        # one index_select over the levels' regions of the projection table
        lods = as_numpy(wc.lods)
        index = self._proj_off[lods] + as_numpy(wc.starts) // spans
        return self._proj.index_select(0, torch.from_numpy(index))

    def _update_projections(self, lensnet, key) -> None:
        """Make `self._proj` hold the projection of every node under `key`: rebuilt when the
        key moved, else extended by the nodes appended since the last call. One table for all
        levels (level l in rows `_proj_off[l]` to `_proj_off[l] + capacity`), regrown with
        doubled capacities when a level outgrows its region. Runs outside inference mode so
        the table stays writable by later calls."""
        with torch.inference_mode(False):
            if self._proj_key != key:
                self._proj_key = None  # set again only once every level is consistent
                self._proj_len = [0] * len(self._buf)
                self._alloc_projections(lensnet, [max(n, 64) for n in self._len])
            if any(n > cap for n, cap in zip(self._len, self._proj_cap, strict=True)):
                self._alloc_projections(lensnet, [
                    max(2 * cap, n) if n > cap else cap
                    for n, cap in zip(self._len, self._proj_cap, strict=True)])
            for lod, have in enumerate(self._proj_len):
                n = self._len[lod]
                if have < n:
                    off = int(self._proj_off[lod])
                    rows = self._buf[lod][have:n].to(lensnet.in_proj.weight.device)
                    self._proj[off + have: off + n] = lensnet.project(rows).to(HOST)
                    self._proj_len[lod] = n
            self._proj_key = key

    def _alloc_projections(self, lensnet, caps: list[int]) -> None:
        """A projection table with per-level capacities `caps`, keeping the filled rows."""
        off = np.concatenate([[0], np.cumsum(caps[:-1])]).astype(np.int64)
        table = torch.empty(sum(caps), lensnet.cfg.width, dtype=lensnet.dtype, device=HOST)
        for lod, have in enumerate(self._proj_len):
            if have:
                old = int(self._proj_off[lod])
                table[off[lod]: off[lod] + have] = self._proj[old: old + have]
        self._proj, self._proj_off, self._proj_cap = table, off, list(caps)

    def _gather_vectors(self, wc: WorkingContext, spans: np.ndarray) -> torch.Tensor:
        """[N, D] row `start // span` of level `lod` for every entry."""
        lods, starts = as_numpy(wc.lods), as_numpy(wc.starts)
        out = torch.empty(lods.shape[0], self.dim, dtype=self.dtype, device=HOST)
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
