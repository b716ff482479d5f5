"""The task interface every benchmark implements, and the small value types it hands out.

A task knows five things: where its records come from (:meth:`Task.load`), how to turn one record into the
exact prompt a model sees (:meth:`Task.prompt`: raw text, or a chat as a list of messages), where a completion ends
(:attr:`Task.stop_sequences`, :meth:`Task.cut`), what a completion answers (:meth:`Task.answer`, the key two
decodings are compared by), and whether a completion is right (:meth:`Task.score`; only where
:attr:`Task.labelled`). Everything else (decoding, chat templates, aggregation) belongs to the caller, so that the
same task object serves tuning and confirmation runs.
"""

from __future__ import annotations

import hashlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import DataUnavailableError, TaskError
from .loading import resolve_data_dir

__all__ = ["NO_ANSWER", "DataUnavailableError", "Item", "Message", "Prompt", "ScoreResult", "SplitInfo", "Task",
           "TaskError", "cut_at", "normalize_whitespace"]

#: One chat turn, ``{"role": "user" | "system" | "assistant", "content": str}``.
Message = dict[str, str]
#: What :meth:`Task.prompt` returns: raw text, or a chat (rendered with the model's chat template by the caller).
Prompt = str | list[Message]
#: The answer key of a completion the task's extraction finds nothing in (lm-eval's regex filter fallback).
NO_ANSWER = "[invalid]"


@dataclass(frozen=True)
class Item:
    """One benchmark problem: a stable ``id`` and the raw record as loaded (``data``), never modified."""

    id: str
    data: dict[str, Any] = field(hash=False, repr=False)


@dataclass(frozen=True)
class ScoreResult:
    """Verdict on one completion.

    ``extracted`` is the answer (or program) the verdict was based on, None when nothing could be extracted;
    ``reason`` says why the completion is wrong (None when correct); ``details`` holds task-specific evidence
    (e.g. both GSM8K filters, the sandbox status and output excerpt).
    """

    correct: bool
    extracted: str | None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class SplitInfo:
    """What a split is: its name, size, a content hash and where it came from.

    ``content_hash`` is sha256 over each item's id and defining text (in split order); it does not depend on
    whether the records came from the hub or a local copy, so it identifies the split across machines.
    """

    name: str
    size: int
    content_hash: str
    source: str


def cut_at(text: str, stops: Iterable[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any of ``stops``."""
    end = len(text)
    for stop in stops:
        pos = text.find(stop) if stop else -1
        if 0 <= pos < end:
            end = pos
    return text[:end]


def normalize_whitespace(text: str) -> str:
    """``text`` with every run of whitespace made one space, and none at either end."""
    return " ".join(text.split())


class Task(ABC):
    """Base class of a benchmark task. Subclasses set :attr:`name` and ``_stop_sequences`` (a tuple) and
    implement :meth:`_load_split`, :meth:`prompt`, :meth:`score`, and (for a hash that ignores incidental record
    fields) :meth:`hash_text`.

    Constructors take ``data_dir`` (None: ``$DTUNE_DATA_DIR`` if set, else the Hugging Face Hub) plus
    task-specific keyword options; :func:`tuner.tasks.get_task` passes both through.
    """

    name: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("validation", "test")
    _stop_sequences: ClassVar[tuple[str, ...]] = ()
    #: True for tasks that execute model-written code (a CLI then calls ``tuner.sandbox.require_isolation()``).
    needs_sandbox: ClassVar[bool] = False
    #: False for tasks without reference answers (a prompts file): :meth:`score` raises, and a study can only
    #: promise agreement with its baseline (:meth:`answer`), not an accuracy drop.
    labelled: ClassVar[bool] = True

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir: Path | None = resolve_data_dir(data_dir)
        self._split_cache: dict[str, list[Item]] = {}
        self._cache_lock = threading.RLock()

    # ----------------------------------------------------------------------------------------- data
    def load(self, split: str) -> list[Item]:
        """Items of ``split`` in a fixed order; loaded once per task object, then served from memory."""
        if split not in self.splits:
            raise TaskError(f"task {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        with self._cache_lock:
            if split not in self._split_cache:
                self._split_cache[split] = list(self._load_split(split))
            return list(self._split_cache[split])

    @abstractmethod
    def _load_split(self, split: str) -> Sequence[Item]:
        """Build the items of a (validated) split name."""

    def hash_text(self, item: Item) -> str:
        """The text that defines an item for :meth:`split_info` (default: its record as canonical JSON)."""
        return json.dumps(item.data, sort_keys=True, ensure_ascii=False, default=str)

    def source_description(self, split: str) -> str:
        """Human-readable origin of a split (overridden by tasks to name files, hub ids and sampling)."""
        return f"local data dir {self.data_dir}" if self.data_dir else "Hugging Face Hub"

    def notices(self) -> list[str]:
        """One-line facts a user should read before a study on this task, e.g. that dtune made its validation split
        (default: none); a CLI prints them at the start of a run."""
        return []

    def locate(self, item: Item) -> str:
        """Where ``item`` comes from, for a message about it (a file and line where the task knows one)."""
        return f"item {item.id}"

    def split_info(self, split: str) -> SplitInfo:
        """Size and stable content hash of ``split`` (loads it if needed)."""
        items = self.load(split)
        digest = hashlib.sha256()
        for item in items:
            digest.update(item.id.encode("utf-8"))
            digest.update(b"\x00")
            digest.update(self.hash_text(item).encode("utf-8"))
            digest.update(b"\x00")
        return SplitInfo(split, len(items), digest.hexdigest(), self.source_description(split))

    # ------------------------------------------------------------------------------------ prompting
    @abstractmethod
    def prompt(self, item: Item) -> Prompt:
        """The full prompt: raw text (few-shot exemplars included, no chat template), or a list of chat messages,
        which the caller always renders with the model's chat template (``decoder.encode_prompt``)."""

    @property
    def stop_sequences(self) -> list[str]:
        """Strings that end a completion (lm-eval's ``until``); a fresh list each time."""
        return list(self._stop_sequences)

    def cut(self, completion: str) -> str:
        """``completion`` up to (not including) the earliest stop sequence, as lm-eval truncates outputs.

        Reads only the class attribute ``_stop_sequences`` (so ``SomeTask.cut(SomeTask, text)`` works too);
        :func:`cut_at` does the same for any list of stops.
        """
        return cut_at(completion, self._stop_sequences)

    # ------------------------------------------------------------------------------------ answering
    def answer(self, item: Item, completion: str) -> str:
        """The answer key of a raw completion, what an agreement constraint compares two decodings by.

        Tasks with an extraction step return what their scorer reads (the extracted answer or program,
        :data:`NO_ANSWER` where nothing is found), so that equal keys get equal verdicts under any labels; this
        default, for tasks without one, is the completion cut at the stop sequences, whitespace-normalised.
        """
        return normalize_whitespace(self.cut(completion))

    # -------------------------------------------------------------------------------------- scoring
    @abstractmethod
    def score(self, item: Item, completion: str) -> ScoreResult:
        """Judge one raw completion (the task applies :meth:`cut` itself); a task that is not :attr:`labelled`
        raises :class:`TaskError`."""

    def score_batch(self, items: Sequence[Item], completions: Sequence[str]) -> list[ScoreResult]:
        """Score many completions; code tasks override this to run programs in parallel."""
        if len(items) != len(completions):
            raise TaskError(f"{len(items)} items but {len(completions)} completions")
        return [self.score(item, completion) for item, completion in zip(items, completions, strict=True)]

    def __repr__(self) -> str:
        where = f"data_dir={str(self.data_dir)!r}" if self.data_dir else "hub"
        return f"{type(self).__name__}({where})"
