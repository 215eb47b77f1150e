"""The public API of contract §4, grouped by topic, so a port can declare a whole part it does
not implement (contract §2: running the specs against another implementation).

A port's xfails file names a part either by topic (`unimplemented: models`) or by one public
name (`unimplemented: LensNet`); the specs that touch a declared name are then skipped as "not
implemented". The topics follow the reference's layout (megacontext/<topic>/); the reference's
own tests check that every name it exports sits in exactly one topic here.
"""

TOPICS: dict[str, tuple[str, ...]] = {
    "errors": (
        "MegaContextError", "InvariantError", "BudgetError", "ContiguityError",
        "AlignmentError", "LevelError", "CoverageError", "TailError", "InputError",
        "InputTypeError", "ConfigError",
    ),
    "controller": (
        "MCConfig", "WorkingContext", "build_working_context", "append_tokens",
        "legal_actions", "block_scores", "focus_step", "Action", "render_lod_map",
    ),
    "models": (
        "MegaContextTree", "mean_gist", "GistNet", "GistNetConfig", "LensNet", "LensNetConfig",
        "lens_features", "tail_gists", "TinyGPT", "TinyGPTConfig", "TinyGPTOutput",
        "LoRALinear", "lora_parameters", "LensGatedAttention", "LensGatedBlock",
        "LensGatedConfig", "GatedMLP", "RouteAnnealing", "apply_route_annealing",
        "lens_gated_block_factory", "lens_gated_tiny_gpt", "route_bias_at",
    ),
    "supervision": (
        "lens_targets_from_utilities", "lens_targets_from_best", "variant_weights",
        "lens_loss", "LensLoss", "LensLossWeights", "pearson_corr", "spearman_corr",
        "sign_agreement", "score_stats", "score_histogram", "lens_telemetry",
        "kl_per_position", "aggregate_kl", "kl_barrier", "substitutability_loss",
    ),
    "runtime": (
        "MegaContextSession", "POLICIES", "RefocusRecord", "full_context_nll", "policy_nll",
        "Candidate", "SnapshotLabels", "BestVariantLabels", "candidate_actions",
        "label_snapshot", "best_variant_labels", "LABEL_SCHEMA_VERSION", "StoredSnapshot",
        "read_labels", "write_snapshot_labels",
    ),
    "data": (
        "CorpusError", "Document", "LongRangeExample", "LongRangeTask", "WindowSampler",
        "load_documents", "split_documents", "validation_windows",
    ),
    "training": (
        "CheckpointError", "CheckpointCorruptError", "CheckpointMismatchError",
        "save_checkpoint", "load_checkpoint", "checkpoint_sha256", "PretrainConfig", "pretrain",
        "load_base", "TrainConfig", "TrainResult", "train", "train_config_from_dict",
        "load_train_config", "save_train_config", "probe_maps", "gist_version",
        "load_phase_checkpoint", "StaleGistError",
    ),
}

PUBLIC_NAMES: frozenset[str] = frozenset(n for names in TOPICS.values() for n in names)


def names_of(part: str) -> tuple[str, ...]:
    """The public names a part covers: a topic's names, or the one public name itself.
    Raises KeyError (with the known topics in its message) for anything else."""
    if part in TOPICS:
        return TOPICS[part]
    if part in PUBLIC_NAMES:
        return (part,)
    raise KeyError(
        f"{part!r} is neither a topic ({', '.join(TOPICS)}) nor a public name of contract §4"
    )
