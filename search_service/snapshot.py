"""The index on disk, so a restart catches up from its last sequence instead of from 0.

Layout under the snapshot directory: `CURRENT` names the live snapshot directory
(`snapshot-<sequence>-<n>`), replaced atomically (os.replace) once the new directory is
complete; older directories are removed afterwards. A snapshot directory holds
`manifest.json` (format, embedding dimensions and seed, last sequence, semantic records,
partition keys, languages, image specs) and one `partition-<i>.npz` per Gaussian partition
(ids, fine embeddings as int8 codes and scales, self inner products, reduced sets as float32
z + float64 beta), written without pickle. A snapshot of another format, or whose embedding
or re-scoring dimension or seed differs from the index's, is ignored (the index replays the
feed from 0).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lwdock.rkme.spec import RKMESpec, SpecType
from search_service.index import SearchIndex
from search_service.partition import FineCodes, PartitionKey
from search_service.semantic import SemanticRecord

FORMAT = 2  # 2: fine embeddings (re-scoring); the FAISS vectors are their prefix
CURRENT = "CURRENT"
log = logging.getLogger("lwdock.search")


def _key_to_dict(key: PartitionKey) -> dict[str, Any]:
    return {
        "spec_type": key.spec_type.value,
        "sample_shape": list(key.sample_shape),
        "gamma": key.gamma,
        "embedding_model": key.embedding_model,
        "image_kernel": key.image_kernel,
    }


def _key_from_dict(data: dict[str, Any]) -> PartitionKey:
    return PartitionKey(
        SpecType(data["spec_type"]),
        tuple(int(n) for n in data["sample_shape"]),
        float(data["gamma"]),
        embedding_model=str(data["embedding_model"]),
        image_kernel=str(data["image_kernel"]),
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _PartitionCapture:
    name: str
    key: PartitionKey
    ids: list[str]
    languages: list[frozenset[str]]
    # embeddable partitions: copies of the arrays the index changes in place, and the
    # learnwares' reduced sets (arrays the index replaces, never changes)
    fine: np.ndarray | None = None
    fine_scales: np.ndarray | None = None
    self_products: np.ndarray | None = None
    points: list[np.ndarray] = field(default_factory=list)
    betas: list[np.ndarray] = field(default_factory=list)
    specs: list[RKMESpec] = field(default_factory=list)  # image partitions


@dataclass(frozen=True)
class SnapshotCapture:
    """What a snapshot holds, taken from the index at one moment (`capture_snapshot`, under
    the index's read lock) and written afterwards without the lock (`write_snapshot`)."""

    last_sequence: int
    changes: int  # the index's change count at the capture
    embedding_dimension: int
    rescore_dimension: int
    embedding_seed: int
    records: dict[str, SemanticRecord]
    partitions: list[_PartitionCapture]


def capture_snapshot(index: SearchIndex) -> SnapshotCapture:
    """The index's content at this moment; call it under the index's read lock. Arrays the
    index changes in place (fine codes, scales, self products) are copied (their live rows);
    what it only ever replaces (reduced sets, image specs, frozen records, ids, language sets)
    is referenced. The copy is a small part of a snapshot's cost (at 10^4 learnwares here:
    3 ms, against 97 ms to write and fsync the files), and the lock is held for it only, so
    neither the feed's changes nor the searches (queued behind a waiting change by the
    writer-preferring lock) wait for the disk."""
    partitions = []
    for partition_name, partition in index.partitions.items():
        slots = partition.live_slots()
        listed = slots.tolist()
        embeddable = partition.key.embeddable
        partitions.append(
            _PartitionCapture(
                name=partition_name,
                key=partition.key,
                ids=[partition.ids[s] or "" for s in listed],
                languages=[partition.languages[s] for s in listed],
                fine=partition.fine[slots] if embeddable else None,
                fine_scales=partition.fine_scales[slots] if embeddable else None,
                self_products=partition.self_products[slots] if embeddable else None,
                points=[p for s in listed if (p := partition.points[s]) is not None],
                betas=[b for s in listed if (b := partition.betas[s]) is not None],
                specs=[spec for s in listed if (spec := partition.specs[s]) is not None],
            )
        )
    return SnapshotCapture(
        last_sequence=index.last_sequence,
        changes=index.changes,
        embedding_dimension=index.embedding_dimension,
        rescore_dimension=index.rescore_dimension,
        embedding_seed=index.embedding_seed,
        records=dict(index.records),
        partitions=partitions,
    )


def save_snapshot(index: SearchIndex, directory: Path) -> Path:
    """Capture and write the index (nothing else may change it meanwhile); returns the new
    snapshot directory."""
    return write_snapshot(capture_snapshot(index), directory)


def write_snapshot(capture: SnapshotCapture, directory: Path) -> Path:
    """Write a captured index as the directory's current snapshot; returns its directory."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"snapshot-{capture.last_sequence}-{time.time_ns()}"
    staging = directory / f".{name}.tmp"
    staging.mkdir()
    partitions: list[dict[str, Any]] = []
    for number, part in enumerate(capture.partitions):
        entry: dict[str, Any] = {
            "name": part.name,
            "key": _key_to_dict(part.key),
            "languages": [sorted(languages) for languages in part.languages],
        }
        if part.key.embeddable:
            file_name = f"partition-{number}.npz"
            np.savez(
                staging / file_name,
                ids=np.array(part.ids, dtype=str),
                fine=part.fine,
                fine_scales=part.fine_scales,
                self_products=part.self_products,
                sizes=np.array([p.shape[0] for p in part.points], dtype=np.int64),
                points=np.concatenate(part.points) if part.points else np.zeros((0, 0), np.float32),
                betas=np.concatenate(part.betas) if part.betas else np.zeros(0),
            )
            entry["file"] = file_name
        else:
            entry["ids"] = part.ids
            entry["specs"] = [spec.to_reference_dict() for spec in part.specs]
        partitions.append(entry)
    manifest = {
        "format": FORMAT,
        "embedding_dimension": capture.embedding_dimension,
        "rescore_dimension": capture.rescore_dimension,
        "embedding_seed": capture.embedding_seed,
        "last_sequence": capture.last_sequence,
        "records": {i: r.to_dict() for i, r in capture.records.items()},
        "partitions": partitions,
    }
    (staging / "manifest.json").write_text(json.dumps(manifest))
    for written in staging.iterdir():  # durable before CURRENT points at it
        _fsync(written)
    _fsync(staging)
    final = directory / name
    staging.rename(final)
    pointer = directory / f".{CURRENT}.tmp"
    pointer.write_text(name)
    _fsync(pointer)
    os.replace(pointer, directory / CURRENT)
    _fsync(directory)
    current = (directory / CURRENT).read_text().strip()  # never remove what CURRENT names
    for old in directory.iterdir():
        if old.is_dir() and old.name not in (name, current):
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_snapshot(index: SearchIndex, directory: Path) -> bool:
    """Fill an empty index from the directory's current snapshot; False when there is none
    usable (missing, unreadable or of another embedding), leaving the index empty."""
    try:
        name = (directory / CURRENT).read_text().strip()
        root = directory / name
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if (
        manifest.get("format") != FORMAT
        or manifest.get("embedding_dimension") != index.embedding_dimension
        or manifest.get("rescore_dimension") != index.rescore_dimension
        or manifest.get("embedding_seed") != index.embedding_seed
    ):
        log.warning("ignoring a snapshot of another index version", extra={"snapshot": name})
        return False
    try:
        _fill(index, root, manifest)
    except Exception as exc:  # truncated npz (BadZipFile), malformed specs...: replay from 0
        log.warning("ignoring an unreadable snapshot", extra={"snapshot": name, "error": str(exc)})
        index.reset_records({})
        index.partitions.clear()
        index.placement.clear()
        index.last_sequence = 0
        return False
    return True


def _fill(index: SearchIndex, root: Path, manifest: dict[str, Any]) -> None:
    index.reset_records({i: SemanticRecord.from_dict(r) for i, r in manifest["records"].items()})
    placement: dict[str, list[str]] = {}
    for entry in manifest["partitions"]:
        key = _key_from_dict(entry["key"])
        partition = index.new_partition(key)
        languages = entry["languages"]
        if key.embeddable:
            with np.load(root / entry["file"], allow_pickle=False) as data:
                ids = [str(i) for i in data["ids"]]
                sizes = data["sizes"]
                points = np.split(data["points"], np.cumsum(sizes)[:-1]) if ids else []
                betas = np.split(data["betas"], np.cumsum(sizes)[:-1]) if ids else []
                items = [
                    (
                        learnware_id,
                        RKMESpec(
                            z=z, beta=beta, gamma=key.gamma, type=key.spec_type, language=list(lang)
                        ),
                    )
                    for learnware_id, z, beta, lang in zip(
                        ids, points, betas, languages, strict=True
                    )
                ]
                codes = FineCodes(data["fine"], data["fine_scales"])
                records = [index.records[i] for i in ids]
                partition.add_many(items, records, codes, data["self_products"])
        else:
            ids = list(entry["ids"])
            items = [
                (learnware_id, RKMESpec.from_reference_dict(spec))
                for learnware_id, spec in zip(ids, entry["specs"], strict=True)
            ]
            partition.add_many(items, [index.records[i] for i in ids])
        index.partitions[entry["name"]] = partition
        for learnware_id in ids:
            placement.setdefault(learnware_id, []).append(entry["name"])
    index.placement = {i: tuple(names) for i, names in placement.items()}
    index.last_sequence = int(manifest["last_sequence"])
