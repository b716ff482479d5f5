"""An unlabelled task from a JSONL file of prompts: a deployment's own traffic, tuned with no answers at all.

One ``{"prompt": ...}`` or ``{"messages": [...]}`` object a line (one form per file); items are split by a stable
hash of their own text, so adding prompts never moves another between the splits. Nothing can be scored
(:attr:`labelled` is False): a study compares each decoding with its baseline's by :meth:`Task.answer`. The format
and what is refused: docs/tasks.md, "Your own tasks".
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import NO_ANSWER, Item, Message, Prompt, ScoreResult, Task, normalize_whitespace
from .errors import TaskError
from .files import read_jsonl
from .sampling import in_validation

DEFAULT_SEED = 1234
ROLES = ("system", "user", "assistant")
_WHAT = "prompts file"


def _chat(path: Path, number: int, messages: Any) -> list[Message]:
    """The messages of one line, checked: a non-empty list of {role, content} ending with a user turn."""
    where = f"{path} line {number}"
    if not isinstance(messages, list) or not messages:
        raise TaskError(f"{where}: \"messages\" must be a non-empty list of {{\"role\", \"content\"}} objects")
    chat = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(
                message.get("content"), str):
            raise TaskError(f"{where}: message {i + 1} must be {{\"role\": {' | '.join(ROLES)}, \"content\": "
                            f"text}}, got {json.dumps(message, ensure_ascii=False)[:80]}")
        chat.append({"role": message["role"], "content": message["content"]})
    if chat[-1]["role"] != "user":
        raise TaskError(f"{where}: the last message is the {chat[-1]['role']}'s; a chat to answer ends with a "
                        "user turn")
    return chat


def _prompt_of(path: Path, number: int, row: dict[str, Any]) -> Prompt:
    forms = [k for k in ("prompt", "messages") if k in row]
    if len(forms) != 1:
        found = ", ".join(sorted(row)) or "none"
        raise TaskError(f"{path} line {number}: needs exactly one of \"prompt\" or \"messages\" (its keys: {found})")
    if forms[0] == "messages":
        return _chat(path, number, row["messages"])
    prompt = row["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise TaskError(f"{path} line {number}: \"prompt\" must be non-empty text")
    return prompt


def _key(prompt: Prompt) -> str:
    """The text that defines a prompt (its hash gives the item's id and split)."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False, sort_keys=True)


def _compile(answer_regex: str | None) -> re.Pattern[str] | None:
    if answer_regex is None:
        return None
    try:
        pattern = re.compile(answer_regex)
    except (re.error, TypeError) as exc:
        raise TaskError(f"answer_regex {answer_regex!r} is not a regular expression: {exc}") from None
    if pattern.groups > 1:
        raise TaskError(f"answer_regex {answer_regex!r} has {pattern.groups} groups; give at most one (the answer)")
    return pattern


class PromptsFile(Task):
    """Unlabelled prompts from a JSONL file, split by a stable hash; see the module docstring for the format."""

    labelled = False

    def __init__(
        self,
        path: str | Path,
        data_dir: str | Path | None = None,
        *,
        seed: int = DEFAULT_SEED,
        validation_fraction: float = 0.5,
        stop_sequences: Sequence[str] = (),
        answer_regex: str | None = None,
    ) -> None:
        # A file, not a dataset: a data_dir (or $DTUNE_DATA_DIR, which Task.__init__ resolves) is irrelevant.
        self.data_dir = None
        self._split_cache: dict[str, list[Item]] = {}
        self._cache_lock = threading.RLock()
        if not 0.0 < validation_fraction < 1.0:
            raise TaskError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
        if isinstance(stop_sequences, str) or not all(isinstance(s, str) and s for s in stop_sequences):
            raise TaskError("stop_sequences must be a list of non-empty strings")
        self.path = Path(path)
        self.name = self.path.name  # type: ignore[misc]  # a per-file name, not the class's
        self._stop_sequences = tuple(stop_sequences)  # type: ignore[misc]
        self.answer_pattern = _compile(answer_regex)
        self.seed, self.validation_fraction = seed, validation_fraction
        self._prompts: dict[str, Prompt] = {}
        self._lines: dict[str, int] = {}
        self._splits: dict[str, list[Item]] = {"validation": [], "test": []}
        self._read()

    def _read(self) -> None:
        seen: dict[str, int] = {}
        forms: dict[bool, int] = {}
        for number, row in read_jsonl(self.path, _WHAT):
            prompt = _prompt_of(self.path, number, row)
            is_chat = not isinstance(prompt, str)
            forms.setdefault(is_chat, number)
            if len(forms) > 1:  # this line's form is the second one seen
                first = forms[not is_chat]
                raise TaskError(f"{self.path} line {number}: a {'chat' if is_chat else 'prompt'} line in a file "
                                f"whose line {first} is a {'prompt' if is_chat else 'chat'}; use one form per file")
            key = _key(prompt)
            if key in seen:
                raise TaskError(f"{self.path} line {number}: the same prompt as line {seen[key]}; each prompt once "
                                "(a repeated prompt would count twice in every comparison)")
            seen[key] = number
            item = Item(f"prompt/{hashlib.sha256(key.encode()).hexdigest()[:16]}", row)
            self._prompts[item.id], self._lines[item.id] = prompt, number
            side = "validation" if in_validation(key, self.seed, self.validation_fraction) else "test"
            self._splits[side].append(item)
        for split, items in self._splits.items():
            if not items:
                count = f"{len(seen)} prompt{'s' if len(seen) != 1 else ''}"
                raise TaskError(f"{self.path}: the {split} split is empty ({count} in the file, split by a stable "
                                "hash); a study needs both splits (give more prompts)")

    @property
    def is_chat(self) -> bool:
        """True when the file holds chats (``messages``): the model then needs a chat template."""
        return any(not isinstance(p, str) for p in self._prompts.values())

    def _load_split(self, split: str) -> Sequence[Item]:
        return self._splits[split]

    def hash_text(self, item: Item) -> str:
        return _key(self._prompts[item.id])

    def locate(self, item: Item) -> str:
        return f"{self.path} line {self._lines[item.id]}"

    def source_description(self, split: str) -> str:
        total = sum(len(items) for items in self._splits.values())
        return (f"prompts file {self.path} (unlabelled): {len(self._splits[split])} of its {total} prompts, a stable "
                f"hash split (seed {self.seed}, {self.validation_fraction:.0%} to validation)")

    def notices(self) -> list[str]:
        return [f"{self.path}: unlabelled prompts; dtune split them by a stable hash (validation "
                f"{len(self._splits['validation'])}, test {len(self._splits['test'])}) and can only promise agreement "
                "with the baseline's answers"]

    def prompt(self, item: Item) -> Prompt:
        prompt = self._prompts[item.id]
        return prompt if isinstance(prompt, str) else [dict(m) for m in prompt]

    def answer(self, item: Item, completion: str) -> str:
        """With `answer_regex`, what its first match (or its one group) reads in the cut completion, as a task's
        extraction filter would (NO_ANSWER without a match): agreement then ignores how an answer is worded; without
        it, the whole cut completion, whitespace-normalised (any change of wording counts)."""
        if self.answer_pattern is None:
            return super().answer(item, completion)
        found = self.answer_pattern.search(self.cut(completion))
        if found is None:
            return NO_ANSWER
        return normalize_whitespace(found.group(1) if self.answer_pattern.groups else found.group(0))

    def score(self, item: Item, completion: str) -> ScoreResult:
        raise TaskError(f"{self.path} has no answers to score against (an unlabelled prompts file); a study on it "
                        "can only promise agreement with its baseline")

    def __repr__(self) -> str:
        return f"PromptsFile({str(self.path)!r})"
