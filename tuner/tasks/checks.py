"""Checks of a task against a model that need only its tokenizer and config, so that they run before it loads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from .base import Prompt, Task
from .errors import TaskError


def check_prompt_lengths(task: Task, encode: Callable[[Prompt], Sequence[int]], max_tokens: int, *,
                         splits: Iterable[str] = ("validation", "test"), why: str = "") -> None:
    """Refuse a task with a prompt longer than ``max_tokens`` tokens as ``encode`` tokenises it (the caller's
    encoder, chat template included), naming the first such prompt's file and line (:meth:`Task.locate`) and how
    many there are; ``why`` says where the limit comes from (e.g. "the model's 4096 positions minus gen_length
    256")."""
    first, longest, count = None, 0, 0
    for split in splits:
        for item in task.load(split):
            length = len(encode(task.prompt(item)))
            if length > max_tokens:
                count += 1
                first = first or (item, length)
                longest = max(longest, length)
    if first is not None:
        item, length = first
        more = f" ({count} prompts are too long, the longest {longest} tokens)" if count > 1 else ""
        limit = f"{max_tokens}" + (f" ({why})" if why else "")
        raise TaskError(f"{task.locate(item)}: the prompt is {length} tokens, longer than the model allows: "
                        f"{limit}{more}")
