"""Evaluate one decode configuration on a list of task items: accuracy (with CI), honest throughput, cost counters.

Items are decoded in chunks (progress is reported and an interrupt lands between chunks; racing decides between
calls how many items a trial gets); within a chunk they are batched by prompt length (a batch equals its rows run
alone, so this changes speed, never results).

What tokens/s counts: for each completion, the answer tokens before the first stop id (EOS / `<|eot_id|>`), then
cut at the task's first stop sequence and re-tokenised — the reference code's convention, so EOS padding is never
counted as output. Time: the decoder's own wall time (device synchronised), prompts pre-tokenised, after one
untimed warm-up generation; scoring (and any sandboxed code) is excluded and reported separately.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from decoder import Counters, DecodeConfig, encode_prompt, generate

from ..storage.record import answer_digest
from ..tasks import Item, Task
from ..verdict.constraint import Evidence
from ..verdict.stats import wilson_interval


@dataclass
class EvalResult:
    n: int
    correct: int
    total_items: int
    counted_tokens: int
    counters: Counters
    scoring_time_s: float
    outcomes: list[bool] = field(default_factory=list)  # empty for an unlabelled task
    item_ids: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # each item's answer digest (`Task.answer`, record.answer_digest)

    @property
    def evidence(self) -> Evidence:
        return Evidence(tuple(self.outcomes), tuple(self.answers))

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    @property
    def tokens_per_s(self) -> float:
        t = self.counters.wall_time_s
        return self.counted_tokens / t if t > 0 else 0.0

    @property
    def labelled(self) -> bool:
        """Every item was scored against a label (an unlabelled task's items only have answers)."""
        return len(self.outcomes) == self.n

    def metrics(self) -> dict[str, float]:
        """Flat numbers for Optuna user attrs, MLflow metrics and `--json` output (accuracy only with labels)."""
        n = max(self.n, 1)
        c = self.counters
        lo, hi = self.ci
        scored = {"accuracy": self.accuracy, "accuracy_ci_low": lo, "accuracy_ci_high": hi, "correct": self.correct}
        return {
            **(scored if self.labelled else {}),
            "n": self.n,
            "tokens_per_s": self.tokens_per_s,
            "nfe": c.row_forwards / n,
            "nfe_total": c.row_forwards,
            "forward_calls": c.nfe,
            "attended_pairs": c.attended_pairs / n,
            "query_tokens": c.query_tokens / n,
            "generated_tokens": c.generated_tokens / n,
            "counted_tokens": self.counted_tokens / n,
            "latency_s": c.wall_time_s / n,
            "decode_time_s": c.wall_time_s,
            "scoring_time_s": self.scoring_time_s,
        }

    @classmethod
    def concat(cls, parts: Sequence[EvalResult]) -> EvalResult:
        """The results of consecutive slices of one item list as one result (racing evaluates rung by rung)."""
        counters = Counters()
        for p in parts:
            counters += p.counters
        return cls(n=sum(p.n for p in parts), correct=sum(p.correct for p in parts),
                   total_items=sum(p.total_items for p in parts), counted_tokens=sum(p.counted_tokens for p in parts),
                   counters=counters, scoring_time_s=sum(p.scoring_time_s for p in parts),
                   outcomes=[o for p in parts for o in p.outcomes], item_ids=[i for p in parts for i in p.item_ids],
                   answers=[a for p in parts for a in p.answers])

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics(), "total_items": self.total_items,
                "counters": asdict(self.counters)}


class Evaluator:
    """Holds a model, its tokenizer and a task; decodes and scores items under any DecodeConfig."""

    def __init__(self, model, tokenizer, task: Task, *, chat_template: bool = False, batch_size: int = 1):
        self.model, self.tokenizer, self.task = model, tokenizer, task
        self.chat_template = chat_template
        self.batch_size = max(1, int(batch_size))
        self._prompt_ids: dict[str, list[int]] = {}

    def prompt_ids(self, item: Item) -> list[int]:
        """Token ids of an item's prompt, with the model's chat template when asked (cached)."""
        if item.id not in self._prompt_ids:
            self._prompt_ids[item.id] = encode_prompt(self.tokenizer, self.task.prompt(item),
                                                      chat_template=self.chat_template)
        return self._prompt_ids[item.id]

    def chunk_for(self, chunk_size: int) -> int:
        """A chunk of whole batches (`chunk_size` rounded up to a multiple of the batch size): a chunk of 50 at
        batch 32 would decode batches of 32 and 18, the second at another cost."""
        return -(-chunk_size // self.batch_size) * self.batch_size

    def count_tokens(self, completion: str) -> int:
        cut = self.task.cut(completion)
        return len(self.tokenizer(cut, add_special_tokens=False)["input_ids"]) if cut else 0

    def evaluate(
        self,
        items: Sequence[Item],
        config: DecodeConfig,
        *,
        chunk_size: int | None = None,
        warmup: bool = True,
        on_progress: Callable[[int, int, int], None] | None = None,
    ) -> EvalResult:
        """Decode and score `items` in order, chunk by chunk (progress is reported and an interrupt can land
        between chunks; racing decides between calls how many items a trial gets, tuner.verdict.racing)."""
        items = list(items)
        total = len(items)
        if warmup and items:  # a whole batch: allocator growth and a batch's kernels are not timed
            generate(self.model, [self.prompt_ids(item) for item in items[: self.batch_size]], config)
        counters, counted, scoring = Counters(), 0, 0.0
        outcomes: list[bool] = []
        ids: list[str] = []
        answers: list[str] = []
        chunk = self.chunk_for(chunk_size or total or 1)
        for start in range(0, total, chunk):
            part = items[start : start + chunk]
            # Batch similar prompt lengths together (less padding); results don't depend on the grouping.
            order = sorted(range(len(part)), key=lambda i: len(self.prompt_ids(part[i])))
            completions: dict[int, str] = {}
            for b in range(0, len(order), self.batch_size):
                idx = order[b : b + self.batch_size]
                result = generate(self.model, [self.prompt_ids(part[i]) for i in idx], config, tokenizer=self.tokenizer)
                counters += result.counters
                for i, text in zip(idx, result.texts or [], strict=True):
                    completions[i] = text
                    counted += self.count_tokens(text)
            texts = [completions[i] for i in range(len(part))]
            t0 = time.perf_counter()
            if self.task.labelled:
                outcomes.extend(bool(s.correct) for s in self.task.score_batch(part, texts))
            answers.extend(answer_digest(self.task.answer(item, text)) for item, text in zip(part, texts, strict=True))
            scoring += time.perf_counter() - t0
            ids.extend(item.id for item in part)
            if on_progress is not None:
                on_progress(len(ids), total, sum(outcomes))
        return EvalResult(n=len(ids), correct=sum(outcomes), total_items=total, counted_tokens=counted,
                          counters=counters, scoring_time_s=scoring, outcomes=outcomes, item_ids=ids, answers=answers)
