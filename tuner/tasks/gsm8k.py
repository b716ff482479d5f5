"""GSM8K (grade-school math word problems), prompted and scored as lm-evaluation-harness v0.4.8 ``gsm8k``.

Splits (GSM8K has no official validation split):
  - ``validation``: a seeded sample of ``validation_size`` (500) problems of the *train* file (seed 1234;
    hash ranking, see :mod:`tuner.tasks.sampling`), listed in file order;
  - ``test``: the 1,319 official test problems, in file order;
  - few-shot exemplars: ``num_fewshot`` (5) further train problems, never from the validation sample, fixed
    per seed and the same for every prompt (lm-eval instead draws 5 train exemplars per document).

Prompt: ``"Question: {q}\\nAnswer: {worked answer}\\n\\n"`` per exemplar, then ``"Question: {q}\\nAnswer:"``.
Scoring: both lm-eval filters on the completion cut at the stop sequences -- strict-match (first
``#### <number>``) and flexible-extract (last number-like string) -- then lm-eval's ``exact_match``
normalisation of prediction and reference (drop ``,`` and ``$``, everything up to ``#### ``, a trailing ``.``;
ignore case). ``correct`` follows ``metric`` ("strict", default, or "flexible"); ``details`` has both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import NO_ANSWER, Item, ScoreResult, Task
from .errors import TaskError
from .loading import HubPart, load_records
from .registry import register_task
from .sampling import seeded_order

HUB_PATH, HUB_NAME = "openai/gsm8k", "main"
DEFAULT_SEED = 1234
STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_IGNORE_RES = tuple(re.compile(p) for p in (",", r"\$", r"(?s).*#### ", r"\.$"))
METRICS = ("strict", "flexible")
FILTERS = {"strict": (STRICT_RE, 0), "flexible": (FLEXIBLE_RE, -1)}  # metric -> (regex, group_select)


def regex_filter(regex: re.Pattern[str], text: str, group_select: int) -> str | None:
    """lm-eval's ``regex`` filter: all matches, pick ``group_select`` (0 first, -1 last); for patterns with
    several groups the first non-empty group; stripped. None where lm-eval yields its ``[invalid]`` fallback."""
    matches = regex.findall(text)
    if not matches:
        return None
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), "")
        if not match:
            return None
    return match.strip()


def normalize(text: str) -> str:
    """lm-eval ``exact_match`` preprocessing used by gsm8k: regexes_to_ignore in order, then lower-case."""
    for regex in _IGNORE_RES:
        text = regex.sub("", text)
    return text.lower()


def target_of(answer: str) -> str:
    """Normalised reference answer (the number after ``#### `` in the worked solution)."""
    return normalize(answer)


class GSM8K(Task):
    """GSM8K with lm-eval's 5-shot "Question:/Answer:" prompt and strict/flexible exact match."""

    name = "gsm8k"
    _stop_sequences = ("Question:", "</s>", "<|im_end|>")

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        metric: str = "strict",
        num_fewshot: int = 5,
        seed: int = DEFAULT_SEED,
        validation_size: int = 500,
    ) -> None:
        super().__init__(data_dir)
        if metric not in METRICS:
            raise TaskError(f"gsm8k metric must be one of {METRICS}, got {metric!r}")
        if num_fewshot < 0 or validation_size < 1:
            raise TaskError("num_fewshot must be >= 0 and validation_size >= 1")
        self.metric = metric
        self.num_fewshot = num_fewshot
        self.seed = seed
        self.validation_size = validation_size
        self._train: tuple[list[Item], list[Item], str] | None = None  # (validation, exemplars, source)
        self._sources: dict[str, str] = {}

    # ----------------------------------------------------------------------------------------- data
    def _records(self, split: str) -> tuple[list[dict[str, Any]], str]:
        return load_records(
            data_dir=self.data_dir,
            local_file=f"gsm8k/{split}.jsonl",
            hub_parts=[HubPart(HUB_PATH, HUB_NAME, split)],
            what=f"gsm8k {split}",
            fields=("question", "answer"),
        )

    def _train_partition(self) -> tuple[list[Item], list[Item], str]:
        with self._cache_lock:
            if self._train is None:
                rows, source = self._records("train")
                items = [Item(f"gsm8k/train/{i}", row) for i, row in enumerate(rows)]
                need = self.validation_size + self.num_fewshot
                if len(items) < need:
                    raise TaskError(
                        f"gsm8k train has {len(items)} problems, fewer than validation_size + num_fewshot = {need}"
                    )
                by_id = {it.id: it for it in items}
                order = seeded_order(by_id, self.seed, "validation")
                val_ids = set(order[: self.validation_size])
                validation = [it for it in items if it.id in val_ids]
                rest = [i for i in order[self.validation_size :]]
                shots = [by_id[i] for i in seeded_order(rest, self.seed, "fewshot")[: self.num_fewshot]]
                self._train = (validation, shots, source)
            return self._train

    def _load_split(self, split: str) -> Sequence[Item]:
        if split == "validation":
            validation, shots, source = self._train_partition()
            self._sources[split] = (
                f"{source}: seeded sample of {self.validation_size} (seed {self.seed}); few-shot exemplars "
                f"{[s.id for s in shots]}"
            )
            return validation
        rows, source = self._records("test")
        self._sources[split] = source
        return [Item(f"gsm8k/test/{i}", row) for i, row in enumerate(rows)]

    @property
    def fewshot_items(self) -> list[Item]:
        """The exemplars used in every prompt (drawn from train outside the validation sample)."""
        return list(self._train_partition()[1])

    def hash_text(self, item: Item) -> str:
        return json.dumps([item.data["question"], item.data["answer"]], ensure_ascii=False)

    def source_description(self, split: str) -> str:
        self.load(split)
        return self._sources[split]

    # ------------------------------------------------------------------------------------ prompting
    def prompt(self, item: Item) -> str:
        shots = "".join(
            f"Question: {s.data['question']}\nAnswer: {s.data['answer']}\n\n" for s in self.fewshot_items
        )
        return f"{shots}Question: {item.data['question']}\nAnswer:"

    # -------------------------------------------------------------------------------------- scoring
    def answer(self, item: Item, completion: str) -> str:
        """What the filter of ``metric`` extracts (strict: the first ``#### <number>``; flexible: the last number),
        :data:`NO_ANSWER` where it finds nothing."""
        regex, select = FILTERS[self.metric]
        return regex_filter(regex, self.cut(completion), select) or NO_ANSWER

    def score(self, item: Item, completion: str) -> ScoreResult:
        text = self.cut(completion)
        target = target_of(item.data["answer"])
        verdicts: dict[str, dict[str, Any]] = {}
        for metric, (regex, select) in FILTERS.items():
            raw = regex_filter(regex, text, select)
            norm = normalize(raw) if raw is not None else None
            verdicts[metric] = {
                "extracted": raw,
                "normalized": norm,
                "correct": norm is not None and norm == target,
            }
        chosen = verdicts[self.metric]
        if chosen["correct"]:
            reason = None
        elif chosen["extracted"] is None:
            reason = (
                "no '#### <number>' in the completion"
                if self.metric == "strict"
                else "no number in the completion"
            )
        else:
            reason = f"wrong answer: {chosen['normalized']!r} != {target!r}"
        details = {"metric": self.metric, "target": target, **verdicts}
        return ScoreResult(bool(chosen["correct"]), chosen["extracted"], reason, details)


register_task("gsm8k", GSM8K)
