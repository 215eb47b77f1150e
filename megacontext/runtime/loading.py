"""I/O at the edge of the runtime commands: the base model and the token files they read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..models.tiny_gpt import TinyGPT, TinyGPTConfig


def load_base(path: str | os.PathLike | None, seed: int = 0) -> tuple[TinyGPT, str, str]:
    """(base in eval mode, its sha256, a one-line description).

    path: a `megacontext pretrain` run or checkpoint directory (read with
    `megacontext.training.pretrain.load_base`); None: a random-init default TinyGPT seeded with
    `seed` (sha256 "random-init-seed-<seed>"), for trying the commands without a checkpoint.
    """
    if path is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            base = TinyGPT(TinyGPTConfig()).eval()
        return base, f"random-init-seed-{seed}", f"random-init TinyGPT (seed {seed}, untrained)"
    try:
        from ..training.checkpoint import checkpoint_sha256
        from ..training.pretrain import load_base as _load
    except ImportError as e:  # pragma: no cover - only before the training package exists
        raise InputError(f"--base needs megacontext.training (pretrain): {e}") from None
    p = Path(path)
    if not p.exists():
        raise InputError(f"base checkpoint {str(p)!r} does not exist")
    base, manifest = _load(p)
    ckpt = p if (p / "manifest.json").is_file() else p / "checkpoint"
    val = manifest.get("metrics", {}).get("val_nll")
    desc = f"{p} (step {manifest.get('step')}, val_nll {val})"
    return base.eval(), checkpoint_sha256(ckpt), desc


def read_ids(path: str | os.PathLike) -> torch.Tensor:
    """A file's bytes as token ids [n] int64 (byte-level, vocab 256). Bytes are bytes: any file
    is valid. InputError for a missing or empty file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"FILE {str(p)!r} is not a readable file")
    data = p.read_bytes()
    if not data:
        raise InputError(f"FILE {str(p)!r} is empty")
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same directory + os.replace."""
    import tempfile

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p
