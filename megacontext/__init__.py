"""megacontext: a compact PyTorch reference for MegaContext-style learned context focus.

The public API (design §4) is what this module exports; the spec suite uses nothing else.
"""

from .config import MCConfig
from .errors import (
    AlignmentError,
    BudgetError,
    ConfigError,
    ContiguityError,
    CoverageError,
    InputError,
    InputTypeError,
    InvariantError,
    LevelError,
    MegaContextError,
    TailError,
)
from .kl import aggregate_kl, kl_barrier, kl_per_position, substitutability_loss
from .legality import legal_actions
from .lod_map import render_lod_map
from .tiny_gpt import LoRALinear, TinyGPT, TinyGPTConfig, TinyGPTOutput, lora_parameters
from .tree import MegaContextTree, mean_gist
from .working_context import WorkingContext, append_tokens, build_working_context

__all__ = [
    "AlignmentError",
    "BudgetError",
    "ConfigError",
    "ContiguityError",
    "CoverageError",
    "InputError",
    "InputTypeError",
    "InvariantError",
    "LevelError",
    "LoRALinear",
    "MCConfig",
    "MegaContextError",
    "MegaContextTree",
    "TailError",
    "TinyGPT",
    "TinyGPTConfig",
    "TinyGPTOutput",
    "WorkingContext",
    "aggregate_kl",
    "append_tokens",
    "build_working_context",
    "kl_barrier",
    "kl_per_position",
    "legal_actions",
    "lora_parameters",
    "mean_gist",
    "render_lod_map",
    "substitutability_loss",
]
