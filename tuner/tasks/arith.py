"""``arith``: procedurally generated GSM8K-style word problems, the built-in task of the bundled tiny model.

Why it exists: the real benchmarks need an 8B model and a GPU. ``arith`` needs nothing (no data files, no hub)
and is what ``dtune/tiny-arith`` (``decoder/bundled/tiny-arith``) was trained on, so a tuning run on a laptop
decodes with a model whose confidences mean something.

A problem is a start quantity followed by a few add/subtract events::

    Question: Mia has 13 shells. She finds 8 more shells. She gives away 9 shells. How many shells does Mia
    have now?
    Answer: Mia starts with 13 shells. She finds 8 more shells. 13 + 8 = 21. She gives away 9 shells.
    21 - 9 = 12.
    #### 12

The worked answer ends in ``#### <number>`` and is scored by GSM8K's strict ``####`` extraction
(:mod:`tuner.tasks.gsm8k`). A model answers with the solution and then EOS up to the generation length, as
LLaDA-Instruct pads its answers, so early exit and suffix pruning behave as on the real model. The solution
has confident tokens (the restated start and events, ``+``/``=``, the EOS tail) and dependent ones (each
running total depends on the previous one), which is what makes low acceptance thresholds cost accuracy.
Each event is restated before its equation (``answer_style="echo"``, the default) because a tiny model learns
to copy a sentence far sooner than to find "the k-th number of the question"; ``"equations"`` drops them.

Splits: every problem belongs to one of three disjoint partitions decided by a hash of its question text
(:func:`partition_of`): ``validation`` (1/20 of problem space), ``test`` (1/20) and ``train`` (the rest).
``load("validation")``/``load("test")`` draw ``size`` problems of their partition with a seeded generator;
:func:`train_stream` yields only ``train``-partition problems, so no seed or size can leak an evaluation
problem into training.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import NO_ANSWER, Item, ScoreResult, Task
from .errors import TaskError
from .gsm8k import STRICT_RE, normalize, regex_filter
from .registry import register_task

# The model trained on this task (decoder/bundled/tiny-arith) and the generation shape it was trained for.
DEFAULT_MODEL = "dtune/tiny-arith"
DEFAULT_GEN_LENGTH = 128
DEFAULT_BLOCK_SIZE = 32
DEFAULT_SEED = 1234
EOS_TOKEN = "<|endoftext|>"
MASK_TOKEN = "<|mdm_mask|>"

# (name, subject pronoun, object pronoun)
NAMES: tuple[tuple[str, str, str], ...] = (
    ("Tom", "He", "him"),
    ("Mia", "She", "her"),
    ("Sam", "He", "him"),
    ("Lily", "She", "her"),
    ("Ben", "He", "him"),
    ("Emma", "She", "her"),
    ("Jack", "He", "him"),
    ("Anna", "She", "her"),
    ("Leo", "He", "him"),
    ("Zoe", "She", "her"),
    ("Max", "He", "him"),
    ("Ivy", "She", "her"),
)
ITEMS: tuple[str, ...] = (
    "apples",
    "marbles",
    "stickers",
    "cookies",
    "books",
    "pencils",
    "cards",
    "coins",
    "shells",
    "stamps",
    "balloons",
    "candies",
)
# Event sentences; {P} subject pronoun, {O} object pronoun, {n} amount, {item} plural noun.
ADD_TEMPLATES: tuple[str, ...] = (
    "{P} buys {n} more {item}.",
    "{P} finds {n} more {item}.",
    "{P} gets {n} more {item}.",
    "A friend gives {O} {n} {item}.",
)
SUB_TEMPLATES: tuple[str, ...] = (
    "{P} gives away {n} {item}.",
    "{P} loses {n} {item}.",
    "{P} sells {n} {item}.",
    "{P} uses {n} {item}.",
)
PARTITIONS = ("validation", "test", "train")
ANSWER_STYLES = ("echo", "equations")


@dataclass(frozen=True)
class ArithConfig:
    """Shape of the generated problems. The defaults are what the bundled model was trained on."""

    min_ops: int = 2
    max_ops: int = 3
    max_start: int = 20
    max_amount: int = 10
    max_value: int = 30  # every running total stays in [0, max_value]
    # "echo": each event sentence is repeated before its equation (the default); "equations": equations only.
    answer_style: str = "echo"

    def validate(self) -> None:
        if not 1 <= self.min_ops <= self.max_ops:
            raise TaskError(f"need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        if self.answer_style not in ANSWER_STYLES:
            raise TaskError(f"answer_style must be one of {ANSWER_STYLES}, got {self.answer_style!r}")
        if not 1 <= self.max_start <= self.max_value or self.max_amount < 1:
            raise TaskError("need 1 <= max_start <= max_value and max_amount >= 1")


def make_problem(rng: random.Random, config: ArithConfig = ArithConfig()) -> dict[str, Any]:
    """One random problem as a GSM8K-shaped record: ``question``, ``answer`` (worked solution ending in
    ``#### n``) and ``target`` (the number as a string)."""
    name, subj, obj = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    total = rng.randint(2, config.max_start)
    sentences = [f"{name} has {total} {item}."]
    steps = [f"{name} starts with {total} {item}."]
    for _ in range(rng.randint(config.min_ops, config.max_ops)):
        can_add = total < config.max_value
        can_sub = total > 1
        if can_add and (not can_sub or rng.random() < 0.5):
            n = rng.randint(1, min(config.max_amount, config.max_value - total))
            template, new, sign = rng.choice(ADD_TEMPLATES), total + n, "+"
        else:
            n = rng.randint(1, min(config.max_amount, total - 1))
            template, new, sign = rng.choice(SUB_TEMPLATES), total - n, "-"
        sentence = template.format(P=subj, O=obj, n=n, item=item)
        sentences.append(sentence)
        if config.answer_style == "echo":
            steps.append(sentence)
        steps.append(f"{total} {sign} {n} = {new}.")
        total = new
    sentences.append(f"How many {item} does {name} have now?")
    return {
        "question": " ".join(sentences),
        "answer": " ".join(steps) + f"\n#### {total}",
        "target": str(total),
    }


def question_hash(question: str) -> str:
    """sha256 of the question text (hex): what decides a problem's partition."""
    return hashlib.sha256(question.encode("utf-8")).hexdigest()


def partition_of(question: str) -> str:
    """The partition a problem belongs to, from its text alone: 1/20 validation, 1/20 test, rest train."""
    bucket = int(question_hash(question)[:8], 16) % 20
    return PARTITIONS[bucket] if bucket < 2 else "train"


def sample_partition(partition: str, size: int, seed: int, config: ArithConfig = ArithConfig()) -> list[dict]:
    """``size`` distinct problems of ``partition``, drawn by a generator seeded with (partition, seed)."""
    if partition not in PARTITIONS:
        raise TaskError(f"unknown arith partition {partition!r}")
    config.validate()
    rng = random.Random(f"arith/{partition}/{seed}")
    seen: set[str] = set()
    out: list[dict] = []
    attempts = 0
    while len(out) < size:
        attempts += 1
        if attempts > 200 * size + 10_000:
            raise TaskError(f"could not draw {size} distinct {partition} problems; widen the ArithConfig")
        record = make_problem(rng, config)
        q = record["question"]
        if q in seen or partition_of(q) != partition:
            continue
        seen.add(q)
        out.append(record)
    return out


def train_stream(seed: int, config: ArithConfig = ArithConfig()) -> Iterator[dict[str, Any]]:
    """An endless seeded stream of training problems; never yields a validation or test-partition problem."""
    config.validate()
    rng = random.Random(f"arith/train-stream/{seed}")
    while True:
        record = make_problem(rng, config)
        if partition_of(record["question"]) == "train":
            yield record


def format_prompt(question: str) -> str:
    """GSM8K's zero-shot ``Question:/Answer:`` prompt; the model continues with `` <solution>``."""
    return f"Question: {question}\nAnswer:"


class ArithTask(Task):
    """The built-in arithmetic word-problem task (no data files; ``data_dir`` is accepted and ignored)."""

    name = "arith"
    _stop_sequences = ("Question:", EOS_TOKEN)
    default_model = DEFAULT_MODEL
    default_gen_length = DEFAULT_GEN_LENGTH
    default_block_size = DEFAULT_BLOCK_SIZE

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        seed: int = DEFAULT_SEED,
        validation_size: int = 500,
        test_size: int = 500,
        config: ArithConfig | None = None,
    ) -> None:
        # Generated, not loaded: a data_dir (or $DTUNE_DATA_DIR, which Task.__init__ would resolve and insist
        # on) is irrelevant, so the base's state is set up here without resolving one.
        self.data_dir = None
        self._split_cache: dict[str, list[Item]] = {}
        self._cache_lock = threading.RLock()
        if validation_size < 1 or test_size < 1:
            raise TaskError("validation_size and test_size must be >= 1")
        self.seed = seed
        self.sizes = {"validation": validation_size, "test": test_size}
        self.config = config or ArithConfig()
        self.config.validate()

    def _load_split(self, split: str) -> Sequence[Item]:
        records = sample_partition(split, self.sizes[split], self.seed, self.config)
        return [Item(f"arith/{split}/{i}", record) for i, record in enumerate(records)]

    def hash_text(self, item: Item) -> str:
        return item.data["question"] + "\n" + item.data["answer"]

    def source_description(self, split: str) -> str:
        return f"generated: arith {split} partition, {self.sizes[split]} problems, seed {self.seed}, {self.config}"

    def prompt(self, item: Item) -> str:
        return format_prompt(item.data["question"])

    def answer(self, item: Item, completion: str) -> str:
        """The ``#### <number>`` the scorer reads (GSM8K strict match), :data:`NO_ANSWER` where there is none."""
        return regex_filter(STRICT_RE, self.cut(completion), 0) or NO_ANSWER

    def score(self, item: Item, completion: str) -> ScoreResult:
        return score_completion(completion, item.data["target"])


def score_completion(completion: str, target: str) -> ScoreResult:
    """GSM8K strict match: the first ``#### <number>`` of the completion (cut at the stop sequences) against
    ``target``. A function of its own so training-time evaluation needs no task object."""
    text = ArithTask.cut(ArithTask, completion)  # type: ignore[arg-type]  # cut only reads the class's stops
    raw = regex_filter(STRICT_RE, text, 0)
    norm = normalize(raw) if raw is not None else None
    correct = norm is not None and norm == target
    if correct:
        reason = None
    elif raw is None:
        reason = "no '#### <number>' in the completion"
    else:
        reason = f"wrong answer: {norm!r} != {target!r}"
    return ScoreResult(correct, raw, reason, {"target": target, "normalized": norm})


register_task("arith", ArithTask)
