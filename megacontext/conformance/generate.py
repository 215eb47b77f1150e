"""The registry of vector files: file name -> document builder (contract §17)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import controller, kl, lens_supervision, models
from .encoding import dumps

GENERATORS: dict[str, Callable[[], dict]] = {
    "controller.json": controller.build_document,
    "kl.json": kl.build_document,
    "lens_supervision.json": lens_supervision.build_document,
    "lensnet.json": models.lensnet_document,
    "gistnet.json": models.gistnet_document,
    "tiny_gpt.json": models.tiny_gpt_document,
    "lens_gated.json": models.lens_gated_document,
}


def render(name: str) -> str:
    """The bytes of one vector file. Runs single-threaded with default dtype float32, so the
    reference's float64 reductions take one order (expected floats are rounded to 12
    significant digits besides)."""
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    try:
        doc = GENERATORS[name]()
        return dumps({"schema": doc["schema"], "file": name, **doc})
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
