"""The data of `examples/` and the completions its test scores.

    python -m tools.example_data                 # examples/arith.jsonl and examples/prompts.jsonl
    python -m tools.example_data --completions   # + tests/fixtures/arith_completions.jsonl (tiny model, ~10 CPU-min)

`examples/arith.jsonl` holds the built-in arith task's validation and test problems (seed 1234, 500 each, in that
order), `examples/prompts.jsonl` 1,000 other arith questions (seed 4321) as unlabelled prompts. Both are deterministic (a test
checks the files are what this writes). The completions are the bundled tiny model's real answers to every problem
of `examples/arith.jsonl` under a lossy streaming setting (tau0 0.5) and, for the first 300, a lossier one (0.3),
so that both right and wrong verdicts occur; `tests/test_task_lm_eval.py` scores them with the built-in task and
with the lm-eval example and requires the same verdicts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tuner.tasks.arith import ArithTask, format_prompt

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
COMPLETIONS = REPO / "tests" / "fixtures" / "arith_completions.jsonl"
#: (name, decode settings, how many of the problems) of the fixture's completions.
SETTINGS = (("streaming-tau0.5", {"threshold": 0.5}, 1000), ("streaming-tau0.3", {"threshold": 0.3}, 300))


def arith_records() -> list[dict]:
    """The records of `examples/arith.jsonl`: the built-in arith validation then test problems (500 each)."""
    task = ArithTask()
    return [item.data for split in ("validation", "test") for item in task.load(split)]


PROMPTS_SEED, PROMPTS = 4321, 1000


def prompt_records() -> list[dict]:
    """The lines of `examples/prompts.jsonl`: 1,000 arith questions of a draw of their own (seed 4321) as raw
    prompts, no answers: enough for a margin of a few points on each half of the hash split."""
    task = ArithTask(seed=PROMPTS_SEED, validation_size=PROMPTS, test_size=1)
    return [{"prompt": format_prompt(item.data["question"])} for item in task.load("validation")]


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def completion_records(batch_size: int = 16) -> list[dict]:
    """`{"setting", "question", "completion"}` for each setting of SETTINGS (decoded on the CPU)."""
    from decoder import DecodeConfig, generate, load_model

    model, tokenizer = load_model("dtune/tiny-arith", device="cpu")
    records = arith_records()
    out = []
    for name, knobs, count in SETTINGS:
        config = DecodeConfig(mode="streaming", gen_length=128, block_size=32, window=32, alpha=0.3, **knobs)
        for start in range(0, count, batch_size):
            chunk = records[start : min(start + batch_size, count)]
            result = generate(model, [format_prompt(r["question"]) for r in chunk], config, tokenizer=tokenizer)
            out += [{"setting": name, "question": r["question"], "completion": text}
                    for r, text in zip(chunk, result.texts, strict=True)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--completions", action="store_true", help="also decode the test's completions")
    args = parser.parse_args()
    (EXAMPLES / "arith.jsonl").write_text(jsonl(arith_records()))
    (EXAMPLES / "prompts.jsonl").write_text(jsonl(prompt_records()))
    if args.completions:
        COMPLETIONS.write_text(jsonl(completion_records()))


if __name__ == "__main__":
    main()
