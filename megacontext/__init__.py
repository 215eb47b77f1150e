"""megacontext: a compact PyTorch reference for MegaContext-style learned context focus.

The public API (contract §4) is what this module exports; the spec suite uses nothing else.
"""

from .controller.allocator import Action, block_scores, focus_step
from .controller.config import MCConfig
from .controller.legality import legal_actions
from .controller.lod_map import render_lod_map
from .controller.working_context import WorkingContext, append_tokens, build_working_context
from .data import (
    CorpusError,
    Document,
    LongRangeExample,
    LongRangeTask,
    WindowSampler,
    load_documents,
    split_documents,
    validation_windows,
)
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
from .models.gistnet import GistNet, GistNetConfig
from .models.lens_gated import (
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
from .models.lensnet import LensNet, LensNetConfig, lens_features, tail_gists
from .models.tiny_gpt import LoRALinear, TinyGPT, TinyGPTConfig, TinyGPTOutput, lora_parameters
from .models.tree import MegaContextTree, mean_gist
from .runtime.labels import (
    BestVariantLabels,
    Candidate,
    SnapshotLabels,
    best_variant_labels,
    candidate_actions,
    label_snapshot,
)
from .runtime.session import (
    POLICIES,
    MegaContextSession,
    RefocusRecord,
    full_context_nll,
    policy_nll,
)
from .runtime.tables import SCHEMA_VERSION as LABEL_SCHEMA_VERSION
from .runtime.tables import StoredSnapshot, read_labels, write_snapshot_labels
from .supervision.kl import aggregate_kl, kl_barrier, kl_per_position, substitutability_loss
from .supervision.lens_loss import LensLoss, LensLossWeights, lens_loss
from .supervision.lens_targets import (
    lens_targets_from_best,
    lens_targets_from_utilities,
    variant_weights,
)
from .supervision.telemetry import (
    lens_telemetry,
    pearson_corr,
    score_histogram,
    score_stats,
    sign_agreement,
    spearman_corr,
)
from .training import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    PretrainConfig,
    checkpoint_sha256,
    load_base,
    load_checkpoint,
    pretrain,
    save_checkpoint,
)
from .training.cycle import (
    StaleGistError,
    TrainResult,
    gist_version,
    probe_maps,
    train,
)
from .training.phase_store import load_phase_checkpoint
from .training.train_config import (
    TrainConfig,
    load_train_config,
    save_train_config,
    train_config_from_dict,
)

__all__ = [
    "StaleGistError",
    "TrainConfig",
    "TrainResult",
    "gist_version",
    "load_phase_checkpoint",
    "load_train_config",
    "probe_maps",
    "save_train_config",
    "train",
    "train_config_from_dict",
    "BestVariantLabels",
    "Candidate",
    "MegaContextSession",
    "POLICIES",
    "RefocusRecord",
    "SnapshotLabels",
    "best_variant_labels",
    "candidate_actions",
    "full_context_nll",
    "label_snapshot",
    "LABEL_SCHEMA_VERSION",
    "StoredSnapshot",
    "read_labels",
    "write_snapshot_labels",
    "policy_nll",
    "CorpusError",
    "Document",
    "LongRangeExample",
    "LongRangeTask",
    "WindowSampler",
    "load_documents",
    "split_documents",
    "validation_windows",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointMismatchError",
    "PretrainConfig",
    "checkpoint_sha256",
    "load_base",
    "load_checkpoint",
    "pretrain",
    "save_checkpoint",
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
