"""Label tables on disk: Parquet, versioned, written atomically (contract §12).

A label directory holds two tables, one Parquet part file per snapshot (so a crashed run loses
at most the snapshot in flight, and a resumed run skips the parts already there):

    snapshots/<snapshot_id:08d>.parquet   one row per snapshot (the WC and horizon it labels)
    labels/<snapshot_id:08d>.parquet      one row per measured (snapshot, action)

The labels part is written after the snapshot part, so its presence marks a finished snapshot.
Every part is written to a temporary file in the same directory and moved into place with
`os.replace`. Both schemas carry `schema_version` (SCHEMA_VERSION) as a column and in the
Parquet metadata (key b"megacontext.schema"). Reading back gives the float64 ΔNLL bit for bit,
so `lens_targets_from_utilities` on read-back utilities gives bit-identical targets.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..controller.config import MCConfig
from ..controller.working_context import WorkingContext
from ..device import HOST
from ..errors import InputError
from .labels import EXPAND, SnapshotLabels

SCHEMA_VERSION = 1
SCHEMA_KEY = b"megacontext.schema"

LABEL_SCHEMA = pa.schema([
    ("schema_version", pa.int32()),
    ("run_id", pa.string()),
    ("snapshot_id", pa.int64()),
    ("T", pa.int64()),  # tokens in the tree at the snapshot
    ("H", pa.int64()),  # horizon length
    ("action", pa.string()),  # "expand" | "collapse"
    ("lod", pa.int64()),  # the gist's level (expand) / the members' level (collapse)
    ("start", pa.int64()),  # first token of the gist / of the group
    ("delta_nll", pa.float64()),  # loss@H(variant) - loss@H(snapshot), nats/token
    ("base_nll", pa.float64()),  # loss@H(snapshot), nats/token
    ("policy", pa.string()),  # the policy that produced the snapshot's WC
    ("base_sha256", pa.string()),
    ("gistnet_sha256", pa.string()),  # "mean" for mean gists
    ("created_at", pa.string()),  # ISO 8601, UTC
], metadata={SCHEMA_KEY: f"labels/{SCHEMA_VERSION}".encode()})

SNAPSHOT_SCHEMA = pa.schema([
    ("schema_version", pa.int32()),
    ("run_id", pa.string()),
    ("snapshot_id", pa.int64()),
    ("source", pa.string()),  # where the tokens came from (a file path)
    ("T", pa.int64()),
    ("H", pa.int64()),
    ("wc_lods", pa.list_(pa.int64())),
    ("wc_starts", pa.list_(pa.int64())),
    ("wc_residency", pa.list_(pa.int64())),
    ("future", pa.list_(pa.int64())),  # the H horizon tokens
    ("base_nll", pa.float64()),
    ("n_measured", pa.int64()),  # candidates measured (rows in the labels part)
    ("n_legal", pa.int64()),  # legal actions on the WC (n_measured < n_legal: sampled)
    ("policy", pa.string()),
    ("base_sha256", pa.string()),
    ("gistnet_sha256", pa.string()),
    ("created_at", pa.string()),
], metadata={SCHEMA_KEY: f"snapshots/{SCHEMA_VERSION}".encode()})


def now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write `table` to `path` through a temporary file in the same directory + os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def part_name(snapshot_id: int) -> str:
    return f"{snapshot_id:08d}.parquet"


def is_labeled(directory: str | Path, snapshot_id: int) -> bool:
    """Whether the snapshot's labels part exists (its rows are complete)."""
    return (Path(directory) / "labels" / part_name(snapshot_id)).exists()


def write_snapshot_labels(
    directory: str | Path,
    labels: SnapshotLabels,
    future: torch.Tensor,
    *,
    run_id: str,
    snapshot_id: int,
    source: str,
    policy: str,
    base_sha256: str,
    gistnet_sha256: str,
    n_legal: int,
) -> None:
    """Write one snapshot's two parts (snapshot first, labels last), atomically."""
    d = Path(directory)
    created = now_utc()
    common = dict(run_id=run_id, policy=policy, base_sha256=base_sha256,
                  gistnet_sha256=gistnet_sha256, created_at=created)
    snap = {
        "schema_version": [SCHEMA_VERSION], "snapshot_id": [snapshot_id], "source": [source],
        "T": [labels.T], "H": [labels.H], "wc_lods": [labels.wc.lods.tolist()],
        "wc_starts": [labels.wc.starts.tolist()], "wc_residency": [labels.wc.residency.tolist()],
        "future": [future.tolist()], "base_nll": [labels.base_nll],
        "n_measured": [len(labels.candidates)], "n_legal": [n_legal],
        **{k: [v] for k, v in common.items()},
    }
    write_table_atomic(pa.Table.from_pydict(snap, schema=SNAPSHOT_SCHEMA),
                       d / "snapshots" / part_name(snapshot_id))
    C = len(labels.candidates)
    rows = {
        "schema_version": [SCHEMA_VERSION] * C, "snapshot_id": [snapshot_id] * C,
        "T": [labels.T] * C, "H": [labels.H] * C,
        "action": [c.kind for c in labels.candidates],
        "lod": [c.lod for c in labels.candidates],
        "start": [c.start for c in labels.candidates],
        "delta_nll": labels.delta_nll.tolist(), "base_nll": [labels.base_nll] * C,
        **{k: [v] * C for k, v in common.items()},
    }
    write_table_atomic(pa.Table.from_pydict(rows, schema=LABEL_SCHEMA),
                       d / "labels" / part_name(snapshot_id))


@dataclass
class StoredSnapshot:
    """One snapshot read back: its WC, horizon and utilities (float64, NaN = unmeasured)."""

    snapshot_id: int
    source: str
    wc: WorkingContext
    T: int
    H: int
    future: torch.Tensor
    base_nll: float
    expand_gain: torch.Tensor
    collapse_loss: torch.Tensor
    rows: int


def _check_version(table: pa.Table, kind: str, path: Path) -> None:
    meta = (table.schema.metadata or {}).get(SCHEMA_KEY, b"").decode()
    if meta != f"{kind}/{SCHEMA_VERSION}":
        raise InputError(f"{path}: schema {meta or 'missing'!r}, expected "
                         f"'{kind}/{SCHEMA_VERSION}'")


def read_labels(directory: str | Path, cfg: MCConfig) -> list[StoredSnapshot]:
    """Every finished snapshot of a label directory, by snapshot id, with its utilities.

    Rows map back to WC entries by (lod, start); a row naming no entry of its snapshot's WC,
    or a collapse whose K members are not at its level, raises InputError (a table that does
    not belong to that WC). InputError also for a schema version this code does not read.
    """
    d = Path(directory)
    out = []
    for part in sorted((d / "labels").glob("*.parquet")):
        snap_path = d / "snapshots" / part.name
        labels_t, snap_t = pq.read_table(part), pq.read_table(snap_path)
        _check_version(labels_t, "labels", part)
        _check_version(snap_t, "snapshots", snap_path)
        s = snap_t.to_pylist()[0]
        wc = WorkingContext(torch.tensor(s["wc_lods"], dtype=torch.int64, device=HOST),
                            torch.tensor(s["wc_starts"], dtype=torch.int64, device=HOST),
                            torch.tensor(s["wc_residency"], dtype=torch.int64, device=HOST))
        n, K = len(wc), cfg.block_size
        gain = torch.full((n,), math.nan, dtype=torch.float64, device=HOST)
        loss = torch.full((n,), math.nan, dtype=torch.float64, device=HOST)
        lods, starts = wc.lods.tolist(), wc.starts.tolist()
        row_of = {(lod, st): i for i, (lod, st) in enumerate(zip(lods, starts, strict=True))}
        cols = labels_t.to_pydict()
        for action, lod, start, delta in zip(cols["action"], cols["lod"], cols["start"],
                                             cols["delta_nll"], strict=True):
            r = row_of.get((lod, start))
            if r is None:
                raise InputError(f"{part}: row ({action}, lod={lod}, start={start}) names no "
                                 f"entry of snapshot {s['snapshot_id']}'s WC")
            if action == EXPAND:
                gain[r] = -delta
            else:
                if r + K > n or any(x != lod for x in lods[r: r + K]):
                    raise InputError(f"{part}: collapse at lod={lod}, start={start} has no K "
                                     f"members at that level")
                loss[r: r + K] = delta
        out.append(StoredSnapshot(s["snapshot_id"], s["source"], wc, s["T"], s["H"],
                                  torch.tensor(s["future"], dtype=torch.int64, device=HOST),
                                  s["base_nll"],
                                  gain, loss, labels_t.num_rows))
    return out
