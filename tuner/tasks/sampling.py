"""Seeded, order-independent selection of items (validation samples, few-shot exemplars, half splits).

Why hash ranking instead of ``random.Random(seed).sample``: the rank of an item depends only on the seed and
the item's id, not on the order in which a source (hub parquet, local JSONL) lists the records, so the same
seed selects the same problems from either source, and the choice is reproducible in any language.
Rank key: ``sha256(f"{seed}:{salt}:{item_id}")``; smallest first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def rank_key(item_id: str, seed: int, salt: str = "") -> str:
    """Sort key of ``item_id`` for ``seed``/``salt`` (hex digest, compared as a string)."""
    return hashlib.sha256(f"{seed}:{salt}:{item_id}".encode()).hexdigest()


def seeded_order(item_ids: Iterable[str], seed: int, salt: str = "") -> list[str]:
    """``item_ids`` in seeded pseudo-random order (deterministic, independent of input order)."""
    return sorted(set(item_ids), key=lambda i: rank_key(i, seed, salt))
