"""The baseline's per-item outcomes on a study's validation pool, grown on demand.

Every trial is compared with the baseline on exactly the items it used (a paired comparison), and racing lets
trials use different numbers of items. So the baseline (vanilla decoding: the expensive one) is decoded only as
far as the furthest trial needs, and whichever worker first needs more items decodes them, under a lock of its
own so two workers don't decode the same items. The ledger lives in the study (`study.user_attrs`), so every
worker, a resumed run and `show`/`export` read the same outcomes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only; reading a ledger (show, export) must not import torch
    import optuna

    from decoder.config import DecodeConfig

    from .evaluate import Evaluator

LEDGER_KEY = "baseline_ledger"
SUMMARY_KEY = "baseline"  # {"trial", "reference", "accuracy", "n"}: what show / export print
TEST_KEY = "baseline_test"  # the baseline's test-split evaluations, reused by every export of the study


@dataclass(frozen=True)
class LedgerState:
    """What the study holds: outcomes of items [0, n) of the pool, and the decode cost of producing them."""

    outcomes: str = ""  # "1"/"0" per item, in pool order
    counted_tokens: int = 0
    decode_time_s: float = 0.0
    row_forwards: int = 0
    attended_pairs: int = 0  # query x key pairs (a ledger stored before this field reads 0)

    @property
    def n(self) -> int:
        return len(self.outcomes)

    @property
    def accuracy(self) -> float:
        return self.outcomes.count("1") / self.n if self.n else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.counted_tokens / self.decode_time_s if self.decode_time_s > 0 else 0.0

    def bools(self, n: int | None = None) -> list[bool]:
        return [o == "1" for o in self.outcomes[:n]]


def read_ledger(study: optuna.Study) -> LedgerState:
    raw = study.user_attrs.get(LEDGER_KEY)
    return LedgerState(**raw) if raw else LedgerState()


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
        return read_ledger(self.study)

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
            state = LedgerState(
                outcomes=state.outcomes + "".join("1" if o else "0" for o in result.outcomes),
                counted_tokens=state.counted_tokens + result.counted_tokens,
                decode_time_s=state.decode_time_s + result.counters.wall_time_s,
                row_forwards=state.row_forwards + result.counters.row_forwards,
                attended_pairs=state.attended_pairs + result.counters.attended_pairs)
            self.study.set_user_attr(LEDGER_KEY, state.__dict__)
            summary = dict(self.study.user_attrs.get(SUMMARY_KEY) or {"reference": self.reference})
            summary.update(accuracy=state.accuracy, n=state.n)
            self.study.set_user_attr(SUMMARY_KEY, summary)
            return state

    def _progress(self, start: int, end: int) -> Callable[[int, int, int], None] | None:
        if self.on_progress is None:
            return None
        report = self.on_progress
        return lambda seen, total, correct: report(seen, end - start, correct)



# ------------------------------------------------------------------------------------------ the test split
def test_key(config_key: str, model_fingerprint: str | None, split_hash: str, size: int) -> str:
    """What makes two test evaluations of the baseline the same: its configuration, the model's weights, the
    split's content and how many of its items were used."""
    return json.dumps({"config": config_key, "model": model_fingerprint, "split": split_hash, "n": size},
                      sort_keys=True)


def cached_test(study: optuna.Study, key: str) -> dict[str, Any] | None:
    """The baseline's stored test evaluation for `key` (outcomes, metrics, when), if an export made it."""
    return (study.user_attrs.get(TEST_KEY) or {}).get(key)


def store_test(study: optuna.Study, key: str, outcomes: list[bool], metrics: dict[str, Any], when: str) -> None:
    stored = dict(study.user_attrs.get(TEST_KEY) or {})
    stored[key] = {"outcomes": "".join("1" if o else "0" for o in outcomes), "metrics": metrics, "created": when}
    study.set_user_attr(TEST_KEY, stored)
