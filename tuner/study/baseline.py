"""The baseline's per-item evidence on a split, grown on demand and shared by every study of the same key.

Every trial is compared with the baseline on exactly the items it used (a paired comparison), and racing lets
trials use different numbers of items. So the baseline (vanilla decoding: the expensive one) is decoded only as
far as the furthest trial needs, by whichever worker first needs more items, under a lock of its own so that no
item is decoded twice. The ledger is keyed by the model's fingerprint, the split's content, the prompt settings and
the baseline's decode settings (`baseline_key`) and kept in the storage every worker shares
(tuner.storage.shared_ledger): another study of the same model and task, its export, a resumed run and
`show`/`export` read the same evidence instead of decoding it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..storage.record import LedgerState
from ..storage.shared_ledger import SharedLedger
from .space import config_key

if TYPE_CHECKING:  # pragma: no cover - typing only; reading a ledger (show, export) must not import torch
    from decoder.config import DecodeConfig

    from ..tasks import Item
    from .evaluate import Evaluator
    from .spec import StudySpec


def baseline_key(spec: StudySpec, config: DecodeConfig, model_fingerprint: str | None, split_hash: str) -> str:
    """What makes two baseline decodings of a split the same: the model's weights, the split's content (items and
    their order), what turns an item into a prompt (task, options, few-shot, chat template), the baseline's decode
    settings and the batch size (on a GPU a batch's shape changes its floating point). A changed one never
    matches."""
    ident = {"model": model_fingerprint or spec.model, "split": split_hash, "task": spec.task,
             "task_options": spec.task_options, "few_shot": spec.few_shot, "chat_template": spec.chat_template,
             "decode": config_key(config), "batch_size": spec.batch_size}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def items_hash(items: Sequence[Item]) -> str:
    """A split's content from its items alone (ids and records, in order), where no task is at hand."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.id, item.data], sort_keys=True, default=str).encode())
    return digest.hexdigest()


class BaselineLedger:
    """Grows and reads the baseline's evidence on the first items of one split (see the module docstring)."""

    def __init__(self, store: SharedLedger, config: DecodeConfig, evaluator: Evaluator, items: list, *,
                 chunk_size: int | None = None,
                 lock: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
                 on_progress: Callable[[int, int, int], None] | None = None) -> None:
        self.store, self.config = store, config
        self.evaluator, self.items, self.chunk_size = evaluator, items, chunk_size
        self._lock = lock or contextlib.nullcontext
        self.on_progress = on_progress

    def state(self) -> LedgerState:
        return self.store.read()

    def ensure(self, n: int) -> LedgerState:
        """The ledger covering at least the first `n` items, decoding the missing ones if needed."""
        n = min(n, len(self.items))
        state = self.state()
        if state.n >= n:
            return state
        with self._lock():
            state = self.state()  # another worker may have grown it while this one waited
            if state.n >= n:
                return state
            result = self.evaluator.evaluate(self.items[state.n : n], self.config, chunk_size=self.chunk_size,
                                             warmup=True, on_progress=self._progress(state.n, n))
            state = state.extended(result.evidence, counted_tokens=result.counted_tokens,
                                   decode_time_s=result.counters.wall_time_s,
                                   row_forwards=result.counters.row_forwards,
                                   attended_pairs=result.counters.attended_pairs)
            self.store.write(state)
            return state

    def _progress(self, start: int, end: int) -> Callable[[int, int, int], None] | None:
        if self.on_progress is None:
            return None
        report = self.on_progress
        return lambda seen, total, correct: report(seen, end - start, correct)
