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


def save_snapshot(index: SearchIndex, directory: Path) -> Path:
    """Write the index; returns the new snapshot directory."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"snapshot-{index.last_sequence}-{time.time_ns()}"
    staging = directory / f".{name}.tmp"
    staging.mkdir()
    partitions: list[dict[str, Any]] = []
    for number, (partition_name, partition) in enumerate(index.partitions.items()):
        slots = partition.live_slots()
        ids = [partition.ids[s] or "" for s in slots.tolist()]
        entry: dict[str, Any] = {
            "name": partition_name,
            "key": _key_to_dict(partition.key),
            "languages": [sorted(partition.languages[s]) for s in slots.tolist()],
        }
        if partition.key.embeddable:
            file_name = f"partition-{number}.npz"
            points = [partition.points[s] for s in slots.tolist()]
            betas = [partition.betas[s] for s in slots.tolist()]
            np.savez(
                staging / file_name,
                ids=np.array(ids, dtype=str),
                fine=partition.fine[slots],
                fine_scales=partition.fine_scales[slots],
                self_products=partition.self_products[slots],
                sizes=np.array([p.shape[0] for p in points], dtype=np.int64),  # type: ignore[union-attr]
                points=np.concatenate(points) if points else np.zeros((0, 0), np.float32),  # type: ignore[arg-type]
                betas=np.concatenate(betas) if betas else np.zeros(0),  # type: ignore[arg-type]
            )
            entry["file"] = file_name
        else:
            entry["ids"] = ids
            entry["specs"] = [partition.specs[s].to_reference_dict() for s in slots.tolist()]  # type: ignore[union-attr]
        partitions.append(entry)
    manifest = {
        "format": FORMAT,
        "embedding_dimension": index.embedding_dimension,
        "rescore_dimension": index.rescore_dimension,
        "embedding_seed": index.embedding_seed,
        "last_sequence": index.last_sequence,
        "records": {i: r.to_dict() for i, r in index.records.items()},
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
