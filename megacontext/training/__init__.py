"""Training: checkpoints (contract §13), config files, base pretraining."""

from .checkpoint import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointMismatchError,
    checkpoint_sha256,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
)
from .config_io import config_from_dict, config_to_dict, load_config_toml, save_config_toml
from .pretrain import (
    DataConfig,
    ModelConfig,
    PretrainConfig,
    TrainConfig,
    load_base,
    lr_at,
    pretrain,
    validation_nll,
)

__all__ = [
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointMismatchError",
    "DataConfig",
    "ModelConfig",
    "PretrainConfig",
    "TrainConfig",
    "checkpoint_sha256",
    "config_from_dict",
    "config_to_dict",
    "load_base",
    "load_checkpoint",
    "load_config_toml",
    "lr_at",
    "pretrain",
    "read_manifest",
    "save_checkpoint",
    "save_config_toml",
    "validation_nll",
]
