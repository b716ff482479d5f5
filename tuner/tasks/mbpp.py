"""MBPP (Austin et al. 2021), 3-shot, pass@1 in the sandbox, as lm-eval v0.4.8 ``mbpp``.

Splits by the official task_id ranges (``google-research-datasets/mbpp``, config ``full``, or ``mbpp.jsonl``):
``test`` = 11-510 (500), ``validation`` = 511-600 (90); the prompt pool is 1-10 and the exemplars are task_ids
2, 3, 4 (as lm-eval). Train (601-974) is not used.

Prompt per problem: ``"You are an expert Python programmer, and here is your task: {text} Your code should pass
these tests:\\n\\n{test 1}\\n{test 2}\\n{test 3}\\n[BEGIN]\\n"``; exemplars append ``{code}\\n[DONE]`` and are joined
by blank lines (the reference code keeps its ``\\r\\n`` line ends, as in the harness). Stop: ``[DONE]``.

Program run for scoring: the completion's code (markdown fences stripped, a leading ``[BEGIN]`` echo dropped,
cut at ``[DONE]``) + ``test_setup_code`` + the 3 asserts (``challenge_test_list`` is not used).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .base import Item
from .code_extract import strip_begin_done, strip_markdown
from .code_task import CodeTask
from .errors import TaskError
from .loading import HubPart, load_records
from .registry import register_task

HUB_PATH, HUB_NAME = "google-research-datasets/mbpp", "full"
HUB_SPLITS = ("prompt", "test", "validation", "train")
SPLIT_RANGES = {"test": range(11, 511), "validation": range(511, 601), "prompt": range(1, 11),
                "train": range(601, 975)}
# What the validation split may hold: lm-eval's validation ids alone (90, the default), or those followed by the
# 374 train problems, which no published number uses either: a pool of 464 that a paired bound can resolve
# margins of ~6 points with (90 items resolve ~13).
VALIDATION_POOLS = {"validation": ("validation",), "validation+train": ("validation", "train")}
FEWSHOT_IDS = (2, 3, 4)


def _problem_text(row: dict) -> str:
    tests = "\n".join(row["test_list"][:3])
    return (
        f"You are an expert Python programmer, and here is your task: {row['text']} "
        f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
    )


class MBPP(CodeTask):
    """MBPP full: test 500 / validation 90 by task_id range, lm-eval 3-shot prompt."""

    name = "mbpp"
    _stop_sequences = ("[DONE]",)

    def __init__(self, data_dir: str | Path | None = None, *, validation_pool: str = "validation", **kwargs) -> None:
        super().__init__(data_dir, **kwargs)
        if validation_pool not in VALIDATION_POOLS:
            raise TaskError(f"mbpp validation_pool must be one of {', '.join(VALIDATION_POOLS)}, got {validation_pool!r}")
        self.validation_pool = validation_pool
        self._rows: dict[int, dict] | None = None
        self._source = ""

    def _by_task_id(self) -> dict[int, dict]:
        with self._cache_lock:
            if self._rows is None:
                rows, self._source = load_records(
                    data_dir=self.data_dir,
                    local_file="mbpp/mbpp.jsonl",
                    hub_parts=[HubPart(HUB_PATH, HUB_NAME, s) for s in HUB_SPLITS],
                    what="MBPP",
                    fields=("task_id", "text", "code", "test_list"),
                )
                self._rows = {int(row["task_id"]): row for row in rows}
            return self._rows

    def _load_split(self, split: str) -> Sequence[Item]:
        rows = self._by_task_id()
        ranges = VALIDATION_POOLS[self.validation_pool] if split == "validation" else (split,)
        return [Item(f"Mbpp/{tid}", rows[tid]) for r in ranges for tid in SPLIT_RANGES[r] if tid in rows]

    def hash_text(self, item: Item) -> str:
        d = item.data
        return json.dumps(
            [d["text"], d["code"], d["test_list"], d.get("test_setup_code", "")], ensure_ascii=False
        )

    def source_description(self, split: str) -> str:
        self._by_task_id()
        ranges = VALIDATION_POOLS[self.validation_pool] if split == "validation" else (split,)
        ids = ", ".join(f"{SPLIT_RANGES[r].start}-{SPLIT_RANGES[r].stop - 1}" for r in ranges)
        return f"{self._source}: task_ids {ids}; exemplars {list(FEWSHOT_IDS)}"

    def _fewshot_prefix(self) -> str:
        rows = self._by_task_id()
        missing = [tid for tid in FEWSHOT_IDS if tid not in rows]
        if missing:
            raise TaskError(f"MBPP few-shot exemplars {missing} are missing from the data")
        return "".join(f"{_problem_text(rows[t])}{rows[t]['code']}\n[DONE]\n\n" for t in FEWSHOT_IDS)

    def prompt(self, item: Item) -> str:
        return self._fewshot_prefix() + _problem_text(item.data)

    def reference_completion(self, item: Item) -> str:
        return item.data["code"]

    def build_program(self, item: Item, completion: str) -> tuple[str, str, str]:
        fenced = strip_markdown(completion)
        if fenced is not None:
            code, how = strip_begin_done(fenced), "fenced"
        else:
            code, how = strip_begin_done(self.cut(completion)), "completion"
        setup = item.data.get("test_setup_code") or ""
        tests = "\n".join(item.data["test_list"])
        program = f"{code}\n\n{setup}\n\n{tests}\n"
        return program, code, how


register_task("mbpp", MBPP)
