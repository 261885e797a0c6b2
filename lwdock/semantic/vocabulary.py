"""The reference's semantic vocabulary (learnware 0.4.0.post1 `config.py`).

`vocabulary.json` is the reference's own `semantic_specs` table, exported by the reference
package (the `Model` key and the `Text Generation` task are 0.4 additions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class SemanticKey:
    key: str
    # "Class" (exactly one value), "Tag" (one or more), "String" or "Optional".
    type: str
    values: tuple[str, ...]


def _load() -> tuple[SemanticKey, ...]:
    raw = json.loads(resources.files(__package__).joinpath("vocabulary.json").read_text())
    return tuple(
        SemanticKey(key, entry["Type"], tuple(entry.get("Values") or ()))
        for key, entry in raw.items()
    )


VOCABULARY: tuple[SemanticKey, ...] = _load()
