"""HumanEval (Chen et al. 2021): 0-shot function completion, pass@1 in the sandbox (lm-eval v0.4.8 style).

Splits: HumanEval has only 164 test problems and no validation split, so they are split in half with a seeded
hash ranking (seed 1234, no stratification): the first 82 in rank order are ``validation``, the other 82 are
``test``; both listed in task-number order. Results on either half are not comparable to published full-set
HumanEval numbers.

Prompt: the function stub (signature + docstring). Stop sequences: lm-eval's ``\\nclass``, ``\\ndef``, ``\\n#``,
``\\nif``, ``\\nprint``.

Program run for scoring: ``prompt + completion + "\\n\\n" + test + "\\n\\ncheck(entry_point)\\n"``, where
  - a completion with markdown fences contributes the fenced code (not cut at the stop sequences: the fence
    delimits it), otherwise the completion cut at the stop sequences;
  - if that code defines ``entry_point`` itself at column 0, it replaces the prompt's stub: the program is the
    prompt's preamble (imports and helpers before the stub) + the code, and stop sequences only cut after the
    re-emitted signature line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .base import Item
from .code_extract import cut_after_definition, strip_markdown, top_level_def
from .code_task import CodeTask
from .loading import HubPart, load_records
from .registry import register_task
from .sampling import seeded_order

HUB_PATH = "openai/openai_humaneval"
DEFAULT_SEED = 1234


def _task_number(item: Item) -> int:
    try:
        return int(item.id.rsplit("/", 1)[-1])
    except ValueError:
        return 0


class HumanEval(CodeTask):
    """HumanEval split 82/82 (seeded), scored by running the official tests in the sandbox."""

    name = "humaneval"
    _stop_sequences = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")

    def __init__(self, data_dir: str | Path | None = None, *, seed: int = DEFAULT_SEED, **kwargs) -> None:
        super().__init__(data_dir, **kwargs)
        self.seed = seed
        self._source = ""

    def _load_split(self, split: str) -> Sequence[Item]:
        rows, self._source = load_records(
            data_dir=self.data_dir,
            local_file="humaneval/HumanEval.jsonl",
            hub_parts=[HubPart(HUB_PATH, None, "test")],
            what="HumanEval",
            fields=("task_id", "prompt", "canonical_solution", "test", "entry_point"),
        )
        items = {row["task_id"]: Item(row["task_id"], row) for row in rows}
        order = seeded_order(items, self.seed, "split")
        half = len(order) // 2
        chosen = set(order[:half] if split == "validation" else order[half:])
        return sorted((items[i] for i in chosen), key=_task_number)

    def hash_text(self, item: Item) -> str:
        d = item.data
        return json.dumps(
            [d["prompt"], d["canonical_solution"], d["test"], d["entry_point"]], ensure_ascii=False
        )

    def source_description(self, split: str) -> str:
        self.load(split)
        return f"{self._source}: seeded half ({split}) of all problems, seed {self.seed}"

    def prompt(self, item: Item) -> str:
        return item.data["prompt"]

    def reference_completion(self, item: Item) -> str:
        return item.data["canonical_solution"]

    def build_program(self, item: Item, completion: str) -> tuple[str, str, str]:
        entry = item.data["entry_point"]
        prompt = item.data["prompt"]
        fenced = strip_markdown(completion, prefer=lambda code: top_level_def(code, entry) is not None)
        if fenced is not None:
            code, how = fenced, "fenced"
        elif top_level_def(completion, entry) is not None:
            code, how = cut_after_definition(completion, entry, self.cut), "completion"
        else:
            code, how = self.cut(completion), "completion"
        if top_level_def(code, entry) is not None:
            stub = top_level_def(prompt, entry)
            preamble = prompt[: stub.start()] if stub else ""
            body = preamble + ("\n" if preamble and not preamble.endswith("\n") else "") + code
            how += "+full-function"
        else:
            body = prompt + code
        program = f"{body}\n\n{item.data['test']}\n\ncheck({entry})\n"
        return program, code, how


register_task("humaneval", HumanEval)
