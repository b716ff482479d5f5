"""MATH (Hendrycks et al.), prompted and scored like lm-evaluation-harness v0.4.8 ``minerva_math``.

Splits (MATH has no validation split; the 7,500 train problems are not in the offline copy):
  - ``test``: MATH-500 (Lightman et al.), the 500 problems of ``HuggingFaceH4/MATH-500`` / ``math500_test.jsonl``
    in file order, ids = their ``unique_id`` (e.g. ``test/precalculus/807.json``);
  - ``validation``: a seeded sample (seed 1234, hash ranking) of ``validation_size`` (500) problems from the
    other 4,500 problems of the full 5,000-problem MATH test set (``EleutherAI/hendrycks_math``, the
    harness's dataset, all 7 subjects; or ``math/test.jsonl``); a problem is "in MATH-500" when its stripped
    text equals one of the 500. Ids: ``math/<subject>/<sha256(problem)[:12]>``, source independent.

Prompt: the 4 fixed Minerva exemplars (text as in the harness, which also reproduces its single-backslash
line breaks inside ``align*``), each ``"Problem:\\n{problem}\\n\\nSolution: {solution}"``, joined by blank lines,
then ``"Problem:\\n{problem}\\n\\nSolution:"``. Stop: ``Problem:``.

Scoring: answer = content of "Final Answer: The final answer is X. I hope it is correct." (harness); with
``fallbacks=True`` (default; our departure) else the rest of a "Final Answer: The final answer is" line, else the
last ``\\boxed{}`` of the completion; normalised with Minerva's ``normalize_final_answer``;
target = normalised last ``\\boxed{}`` of the reference solution (for MATH-500 too; its ``answer`` field is
kept in ``details``); equivalence by :func:`tuner.tasks.math_equiv.is_equiv` (string, exact numeric, then
sympy with a timeout). Departures from the harness are listed in ``docs/tasks.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import NO_ANSWER, Item, ScoreResult, Task
from .errors import TaskError
from .loading import HubPart, load_records
from .math_answers import extract_answer, reference_answer
from .math_equiv import is_equiv
from .registry import register_task
from .sampling import seeded_order

MATH_HUB_PATH = "EleutherAI/hendrycks_math"
MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
MATH500_HUB_PATH = "HuggingFaceH4/MATH-500"
DEFAULT_SEED = 1234

# The four Minerva exemplars exactly as the harness renders them (the "\\\n" sequences are a backslash followed
# by a line break, as in the harness's Python source).
MINERVA_EXEMPLARS: tuple[tuple[str, str], ...] = (
    (
        "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.}",
        "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, and "
        "$5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives "
        "$x<5$. Therefore, the domain of the expression is $\\boxed{[2,5)}$.\nFinal Answer: The final answer "
        "is $[2,5)$. I hope it is correct.",
    ),
    (
        "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
        "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = "
        "\\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct.",
    ),
    (
        "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many "
        "times must Terrell lift them in order to lift the same total weight?",
        "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds of "
        "weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of "
        "$2\\cdot15\\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:\n"
        "\\begin{align*}\n30n&=480\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\n"
        "Final Answer: The final answer is $16$. I hope it is correct.",
    ),
    (
        "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\n6y-9x &=b.\n\\end{align*}has a solution "
        "$(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming $b$ is nonzero.",
        "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$Since we "
        "also know that $6y-9x=b$, we have\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}."
        "$$\nFinal Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.",
    ),
)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "unknown"


def _problem_key(problem: str) -> str:
    return problem.strip()


class MinervaMath(Task):
    """MATH with the Minerva 4-shot prompt; test = MATH-500, validation = seeded 500 of the other 4,500."""

    name = "math"
    _stop_sequences = ("Problem:",)

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        seed: int = DEFAULT_SEED,
        validation_size: int = 500,
        fallbacks: bool = True,
        equivalence_timeout_s: float = 5.0,
        use_sympy: bool = True,
    ) -> None:
        super().__init__(data_dir)
        if validation_size < 1:
            raise TaskError("validation_size must be >= 1")
        self.seed = seed
        self.validation_size = validation_size
        self.fallbacks = fallbacks
        self.equivalence_timeout_s = equivalence_timeout_s
        self.use_sympy = use_sympy
        self._sources: dict[str, str] = {}
        self._math500: tuple[list[dict[str, Any]], str] | None = None

    # ----------------------------------------------------------------------------------------- data
    def _math500_rows(self) -> tuple[list[dict[str, Any]], str]:
        with self._cache_lock:
            if self._math500 is None:
                self._math500 = load_records(
                    data_dir=self.data_dir,
                    local_file="math/math500_test.jsonl",
                    hub_parts=[HubPart(MATH500_HUB_PATH, None, "test")],
                    what="MATH-500",
                    fields=("unique_id", "problem", "solution"),
                )
            return self._math500

    def _load_split(self, split: str) -> Sequence[Item]:
        m500, m500_source = self._math500_rows()
        if split == "test":
            self._sources[split] = m500_source
            return [Item(row["unique_id"], row) for row in m500]
        rows, source = load_records(
            data_dir=self.data_dir,
            local_file="math/test.jsonl",
            hub_parts=[HubPart(MATH_HUB_PATH, subject, "test") for subject in MATH_SUBJECTS],
            what="MATH test set",
            fields=("problem", "solution"),
        )
        in_500 = {_problem_key(r["problem"]) for r in m500}
        pool: dict[str, Item] = {}
        for row in rows:
            key = _problem_key(row["problem"])
            if key in in_500:
                continue
            digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
            item_id = f"math/{_slug(row.get('type', ''))}/{digest}"
            pool.setdefault(item_id, Item(item_id, row))
        if len(pool) < self.validation_size:
            raise TaskError(
                f"MATH pool outside MATH-500 has {len(pool)} problems, fewer than validation_size={self.validation_size}"
            )
        chosen = set(seeded_order(pool, self.seed, "validation")[: self.validation_size])
        self._sources[split] = (
            f"{source}: seeded sample of {self.validation_size} (seed {self.seed}) of the {len(pool)} problems "
            f"not in MATH-500"
        )
        return [item for item_id, item in pool.items() if item_id in chosen]

    def hash_text(self, item: Item) -> str:
        return json.dumps([item.data["problem"], item.data["solution"]], ensure_ascii=False)

    def source_description(self, split: str) -> str:
        self.load(split)
        return self._sources[split]

    # ------------------------------------------------------------------------------------ prompting
    def prompt(self, item: Item) -> str:
        shots = "".join(f"Problem:\n{p}\n\nSolution: {s}\n\n" for p, s in MINERVA_EXEMPLARS)
        return f"{shots}Problem:\n{item.data['problem']}\n\nSolution:"

    # -------------------------------------------------------------------------------------- scoring
    def target(self, item: Item) -> str | None:
        """Normalised reference answer (harness rule: last ``\\boxed{}`` of the solution)."""
        return reference_answer(item.data["solution"])

    def answer(self, item: Item, completion: str) -> str:
        """The normalised final answer the scorer compares (with the task's ``fallbacks``), :data:`NO_ANSWER`
        where none is found."""
        return extract_answer(self.cut(completion), fallbacks=self.fallbacks)[0] or NO_ANSWER

    def score(self, item: Item, completion: str) -> ScoreResult:
        text = self.cut(completion)
        answer, how = extract_answer(text, fallbacks=self.fallbacks)
        target = self.target(item)
        details: dict[str, Any] = {"target": target, "found_by": how}
        if "answer" in item.data:
            details["dataset_answer"] = item.data["answer"]
        if answer is None:
            return ScoreResult(False, None, "no final answer (Minerva phrase or \\boxed{}) found", details)
        if target is None:
            return ScoreResult(False, answer, "reference solution has no \\boxed{} answer", details)
        verdict = is_equiv(answer, target, timeout_s=self.equivalence_timeout_s, use_sympy=self.use_sympy)
        details.update({"equivalence": verdict.method, "equivalence_error": verdict.error})
        reason = None if verdict.equal else f"not equivalent: {answer!r} vs {target!r}"
        return ScoreResult(verdict.equal, answer, reason, details)


register_task("math", MinervaMath, aliases=("minerva_math",))
