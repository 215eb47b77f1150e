"""Checkpoints: a directory of safetensors weights plus `manifest.json` (contract §13).

Layout of a checkpoint directory:

    <name>.safetensors   one file per module (or extra state dict), e.g. model.safetensors
    manifest.json        {"format": "megacontext-checkpoint/1", "kind": str, "config": {...},
                          "step": int | null, "metrics": {...}, <caller keys>,
                          "files": {"<name>.safetensors": {"sha256": hex, "bytes": int}},
                          "created_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ"}

Atomicity: everything is written into a fresh temporary directory next to the target
(`.<name>.tmp-*`), each file fsync'ed, then the previous checkpoint (if any) is renamed to
`.<name>.previous`, the temporary directory renamed to `<name>`, and the previous one deleted.
A crash at any point leaves either the old or the new checkpoint complete: before the first
rename the old one is untouched; between the renames it is complete under `.<name>.previous`,
where `load_checkpoint` finds it (and the next `save_checkpoint` moves it back first).

Reading (`load_checkpoint`, `read_manifest`, `checkpoint_sha256`) also accepts a run directory
whose checkpoint is its `checkpoint/` subdirectory (the layout `megacontext pretrain` writes).

Integrity: `load_checkpoint` recomputes every file's sha256 and raises `CheckpointCorruptError`
on a mismatch; passing `kind=` / `config=` makes a checkpoint of another kind or config a
`CheckpointMismatchError` naming the manifest file and the differing keys.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from ..errors import InputError, InputTypeError

FORMAT = "megacontext-checkpoint/1"
MANIFEST = "manifest.json"
RESERVED = ("format", "files", "created_at")
RUN_CHECKPOINT = "checkpoint"  # a run directory's checkpoint; accepted wherever one is read
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class CheckpointError(InputError):
    """A checkpoint that cannot be read: missing directory, missing or unreadable manifest."""


class CheckpointCorruptError(CheckpointError):
    """A file whose sha256 differs from the one its manifest records (or that is missing)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint of another kind or config than the caller asked for."""


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _backup_of(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.previous"


def _tensors(name: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise InputTypeError(f"state dict {name!r} entry {key!r} is a "
                                 f"{type(value).__name__}, not a torch.Tensor")
        # clone: tied weights share storage, which safetensors refuses to write
        out[key] = value.detach().to("cpu").contiguous().clone()
    return out


def save_checkpoint(
    directory: str | os.PathLike,
    modules: Mapping[str, torch.nn.Module],
    manifest: Mapping,
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a checkpoint atomically (see module docstring) and return its path.

    modules: name -> module; each module's `state_dict()` goes to `<name>.safetensors`.
    manifest: JSON-serializable; must hold "kind" (str) and "config" (dict); "step" and
        "metrics" default to null and {}; "format", "files" and "created_at" are written here
        (passing them is an InputError).
    state_dicts: optional extra name -> {key: tensor} (e.g. optimizer state), saved the same way.
    Raises InputError / InputTypeError naming the offending name or key.
    """
    directory = Path(directory)
    if not isinstance(manifest, Mapping):
        raise InputTypeError(f"manifest must be a dict, got {type(manifest).__name__}")
    for key in RESERVED:
        if key in manifest:
            raise InputError(f"manifest key {key!r} is written by save_checkpoint; do not pass it")
    if not isinstance(manifest.get("kind"), str) or not manifest["kind"]:
        raise InputError(f"manifest['kind'] must be a non-empty string, got "
                         f"{manifest.get('kind')!r}")
    if not isinstance(manifest.get("config"), Mapping):
        raise InputError(f"manifest['config'] must be a dict, got {manifest.get('config')!r}")
    all_states: dict[str, Mapping[str, torch.Tensor]] = {}
    for name, module in modules.items():
        if not isinstance(module, torch.nn.Module):
            raise InputTypeError(f"modules[{name!r}] must be a torch.nn.Module, got "
                                 f"{type(module).__name__}")
        all_states[name] = module.state_dict()
    for name, state in (state_dicts or {}).items():
        if name in all_states:
            raise InputError(f"state_dicts name {name!r} is also a module name")
        if not isinstance(state, Mapping):
            raise InputTypeError(f"state_dicts[{name!r}] must be a dict of tensors")
        all_states[name] = state
    if not all_states:
        raise InputError("a checkpoint needs at least one module or state dict")
    for name in all_states:
        if not isinstance(name, str) or not _NAME.match(name):
            raise InputError(f"module name {name!r} is not a valid file stem "
                             f"(letters, digits, _ . -)")
    blobs = {f"{name}.safetensors": _st_save(_tensors(name, state))
             for name, state in all_states.items()}
    full = {"format": FORMAT, "kind": manifest["kind"], "config": manifest["config"],
            "step": manifest.get("step"), "metrics": manifest.get("metrics", {})}
    full.update({k: v for k, v in manifest.items() if k not in full})
    full["files"] = {fn: {"sha256": _sha256_bytes(b), "bytes": len(b)}
                     for fn, b in sorted(blobs.items())}
    full["created_at"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        manifest_bytes = (json.dumps(full, indent=2, sort_keys=False, allow_nan=True) + "\n"
                          ).encode()
    except TypeError as e:
        raise InputTypeError(f"manifest is not JSON-serializable: {e}") from None

    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    backup = _backup_of(directory)
    if not directory.exists() and backup.exists():  # a crash between the renames: restore
        os.rename(backup, directory)
    for stale in parent.glob(f".{directory.name}.tmp-*"):  # left by a crashed save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=parent))
    try:
        for fn, blob in blobs.items():
            _write_file(tmp / fn, blob)
        _write_file(tmp / MANIFEST, manifest_bytes)
        _fsync_dir(tmp)
        if directory.exists():
            if backup.exists():
                shutil.rmtree(backup)
            os.rename(directory, backup)
        os.rename(tmp, directory)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(backup, ignore_errors=True)
    return directory


def _resolve(directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    if (directory / MANIFEST).is_file():
        return directory
    if not directory.joinpath(MANIFEST).exists() and (directory / RUN_CHECKPOINT).exists():
        return _resolve(directory / RUN_CHECKPOINT)  # a run directory (pretrain's layout)
    backup = _backup_of(directory)
    if not directory.exists() and (backup / MANIFEST).is_file():
        return backup  # a save crashed between its two renames; the previous one is complete
    if directory.is_dir():
        raise CheckpointError(f"{str(directory / MANIFEST)!r} does not exist: "
                              f"{str(directory)!r} is not a checkpoint directory")
    raise CheckpointError(f"no checkpoint at {str(directory)!r}")


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of the checkpoint at `directory` (not verified against the files)."""
    path = _resolve(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {str(path)!r}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{str(path)!r} is not a {FORMAT} manifest")
    return manifest


def _verified_blobs(directory: Path, manifest: dict) -> dict[str, bytes]:
    blobs = {}
    for fn, info in manifest["files"].items():
        path = directory / fn
        try:
            data = path.read_bytes()
        except OSError:
            raise CheckpointCorruptError(f"{str(path)!r} listed in the manifest is missing"
                                         ) from None
        actual = _sha256_bytes(data)
        if actual != info.get("sha256"):
            raise CheckpointCorruptError(f"{str(path)!r} has sha256 {actual}, the manifest "
                                         f"records {info.get('sha256')}: the file is corrupt")
        blobs[fn] = data
    return blobs


def _flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(expected: Mapping, found: Mapping) -> list[str]:
    """Human-readable differences between two (nested) configs: 'key: expected X, found Y'."""
    a, b = _flatten(expected), _flatten(found)
    diffs = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
        # JSON turns tuples into lists; compare through JSON
        if json.dumps(va, sort_keys=True, default=str) != json.dumps(vb, sort_keys=True,
                                                                   default=str):
            diffs.append(f"{k}: expected {va!r}, found {vb!r}")
    return diffs


def load_checkpoint(
    directory: str | os.PathLike,
    *,
    kind: str | None = None,
    config: Mapping | None = None,
) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """(state dicts by name, manifest) of the checkpoint at `directory`, every file verified.

    kind / config: when given, the manifest's must equal them, else CheckpointMismatchError
    naming manifest.json and the mismatch. Raises CheckpointError (no checkpoint, unreadable
    manifest), CheckpointCorruptError (sha256 mismatch or missing file).
    """
    path = _resolve(directory)
    manifest = read_manifest(path)
    where = str(path / MANIFEST)
    if kind is not None and manifest.get("kind") != kind:
        raise CheckpointMismatchError(f"{where!r} is a checkpoint of kind "
                                      f"{manifest.get('kind')!r}, expected {kind!r}")
    if config is not None:
        diffs = config_differences(config, manifest.get("config") or {})
        if diffs:
            raise CheckpointMismatchError(f"{where!r} has another config: " + "; ".join(diffs))
    blobs = _verified_blobs(path, manifest)
    states = {fn.removesuffix(".safetensors"): dict(_st_load(b)) for fn, b in blobs.items()}
    return states, manifest


def checkpoint_sha256(directory: str | os.PathLike) -> str:
    """One sha256 (hex) naming the checkpoint: of the canonical JSON of its kind, config and the
    sha256 of each file (not step, metrics or created_at, so re-saving identical weights under
    the same config gives the same name). Files are verified first (CheckpointCorruptError)."""
    path = _resolve(directory)
    manifest = read_manifest(path)
    _verified_blobs(path, manifest)
    ident = {"kind": manifest["kind"], "config": manifest["config"],
             "files": {fn: info["sha256"] for fn, info in sorted(manifest["files"].items())}}
    return _sha256_bytes(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode())
