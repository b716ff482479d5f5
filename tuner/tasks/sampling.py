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


def in_validation(content: str, seed: int, fraction: float) -> bool:
    """Whether an item whose defining text is ``content`` belongs to the validation side of a stable hash split.

    The item's own hash decides (``sha256(f"{seed}:split:{content}")`` read as a number in [0, 1) below
    ``fraction``), not its rank among the others: adding or removing items never moves another one between the
    splits, and equal contents always land on the same side.
    """
    digest = hashlib.sha256(f"{seed}:split:{content}".encode()).hexdigest()
    return int(digest[:15], 16) / 16**15 < fraction
