"""megacontext: a compact PyTorch reference for MegaContext-style learned context focus.

The public API (design §4) is what this module exports; the spec suite uses nothing else.
"""

from .allocator import Action, block_scores, focus_step
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
from .gistnet import GistNet, GistNetConfig
from .kl import aggregate_kl, kl_barrier, kl_per_position, substitutability_loss
from .legality import legal_actions
from .lens_gated import (
    GatedMLP,
    LensGatedAttention,
    LensGatedBlock,
    LensGatedConfig,
    RouteAnnealing,
    apply_route_annealing,
    lens_gated_block_factory,
    lens_gated_tiny_gpt,
    route_bias_at,
)
from .lens_loss import LensLoss, LensLossWeights, lens_loss
from .lens_targets import lens_targets_from_best, lens_targets_from_utilities, variant_weights
from .lensnet import LensNet, LensNetConfig, lens_features, tail_gists
from .lod_map import render_lod_map
from .supervision_telemetry import (
    lens_telemetry,
    pearson_corr,
    score_histogram,
    score_stats,
    sign_agreement,
    spearman_corr,
)
from .tiny_gpt import LoRALinear, TinyGPT, TinyGPTConfig, TinyGPTOutput, lora_parameters
from .tree import MegaContextTree, mean_gist
from .working_context import WorkingContext, append_tokens, build_working_context

__all__ = [
    "Action",
    "block_scores",
    "focus_step",
    "GatedMLP",
    "LensGatedAttention",
    "LensGatedBlock",
    "LensGatedConfig",
    "RouteAnnealing",
    "apply_route_annealing",
    "lens_gated_block_factory",
    "lens_gated_tiny_gpt",
    "route_bias_at",
    "GistNet",
    "GistNetConfig",
    "LensNet",
    "LensNetConfig",
    "lens_features",
    "tail_gists",
    "LensLoss",
    "LensLossWeights",
    "lens_loss",
    "lens_targets_from_best",
    "lens_targets_from_utilities",
    "lens_telemetry",
    "pearson_corr",
    "score_histogram",
    "score_stats",
    "sign_agreement",
    "spearman_corr",
    "variant_weights",
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
