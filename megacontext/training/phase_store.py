"""Phase checkpoints of the training cycle (contract §13): safetensors files + manifest.json.

Written before `training/checkpoint.py` (save_checkpoint / load_checkpoint) landed; the same
layout (one safetensors file per module, manifest.json with the sha256 of each file) and the
same `CheckpointError`. Moving the cycle onto `checkpoint.py` is a follow-up:

    save_phase_checkpoint(directory, tensors={"gistnet": sd, ...}, manifest={...}) -> Path
    load_phase_checkpoint(directory) -> (tensors, manifest)     # sha256 of every file checked

Atomic: written into a temporary directory beside the target, then renamed into place (an
existing checkpoint of the same name is replaced only after the new one is complete).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .checkpoint import CheckpointError

MANIFEST = "manifest.json"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_phase_checkpoint(directory: str | os.PathLike, tensors: dict[str, dict[str, torch.Tensor]],
                          manifest: dict) -> Path:
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    blobs = {f"{name}.safetensors": st_save({k: v.detach().cpu().contiguous().clone()
                                             for k, v in sd.items()})
             for name, sd in tensors.items()}
    full = dict(manifest)
    full["files"] = {fn: {"sha256": _sha(b), "bytes": len(b)} for fn, b in sorted(blobs.items())}
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    for fn, b in blobs.items():
        (tmp / fn).write_bytes(b)
    (tmp / MANIFEST).write_text(json.dumps(full, indent=2, allow_nan=True) + "\n")
    if directory.exists():
        old = directory.parent / f".{directory.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
    return directory


def read_manifest(directory: str | os.PathLike) -> dict:
    path = Path(directory) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint manifest here") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: unreadable manifest: {e}") from None


def load_phase_checkpoint(directory: str | os.PathLike
                          ) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    directory = Path(directory)
    manifest = read_manifest(directory)
    out = {}
    for fn, meta in manifest.get("files", {}).items():
        path = directory / fn
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{path}: listed in the manifest but missing") from None
        if _sha(data) != meta["sha256"]:
            raise CheckpointError(f"{path}: sha256 differs from the manifest's")
        out[fn.removesuffix(".safetensors")] = st_load(data)
    return out, manifest


def state_sha256(sd: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes (sorted by name)."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
