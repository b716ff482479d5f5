"""The baseline's per-item outcomes on a study's validation pool, grown on demand.

Every trial is compared with the baseline on exactly the items it used (a paired comparison), and racing lets
trials use different numbers of items. So the baseline (vanilla decoding: the expensive one) is decoded only as
far as the furthest trial needs, and whichever worker first needs more items decodes them, under a lock of its
own so two workers don't decode the same items. The ledger lives in the study (`StudyRecord.ledger`), so every
worker, a resumed run and `show`/`export` read the same outcomes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..storage.record import LedgerState, StoredTest, StudyRecord, bits, join_answers
from ..verdict.constraint import Evidence

if TYPE_CHECKING:  # pragma: no cover - typing only; reading a ledger (show, export) must not import torch
    import optuna

    from decoder.config import DecodeConfig

    from .evaluate import Evaluator

class BaselineLedger:
    """Grows and reads the baseline's outcomes for one study (see the module docstring)."""

    def __init__(self, study: optuna.Study, config: DecodeConfig, reference: str, evaluator: Evaluator,
                 items: list, *, chunk_size: int | None = None,
                 lock: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
                 on_progress: Callable[[int, int, int], None] | None = None) -> None:
        self.study, self.config, self.reference = study, config, reference
        self.evaluator, self.items, self.chunk_size = evaluator, items, chunk_size
        self._lock = lock or contextlib.nullcontext
        self.on_progress = on_progress

    def state(self) -> LedgerState:
        return StudyRecord(self.study).ledger

    def ensure(self, n: int) -> LedgerState:
        """The ledger covering at least the first `n` pool items, decoding the missing ones if needed."""
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
            StudyRecord(self.study).set_ledger(state, self.reference)
            return state

    def _progress(self, start: int, end: int) -> Callable[[int, int, int], None] | None:
        if self.on_progress is None:
            return None
        report = self.on_progress
        return lambda seen, total, correct: report(seen, end - start, correct)



# ------------------------------------------------------------------------------------------ the test split
def cached_test(study: optuna.Study, key: str) -> StoredTest | None:
    """The baseline's stored test evaluation for `key` (`record.test_key`), if an export made it."""
    return StudyRecord(study).stored_test(key)


def store_test(study: optuna.Study, key: str, evidence: Evidence, metrics: dict[str, Any], when: str) -> None:
    StudyRecord(study).store_test(key, StoredTest(bits(evidence.outcomes), metrics, when,
                                                  join_answers(evidence.answers)))
