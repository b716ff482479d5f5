"""Finding and normalising final answers in MATH solutions, following lm-eval's ``minerva_math``.

Written from the behaviour of lm-evaluation-harness ``lm_eval/tasks/minerva_math/utils.py`` and appendix D of
Lewkowycz et al. (2022) (the Minerva paper); the substitution and removal lists are the paper's/harness's
facts, reproduced so that normalised answers match the harness character for character.
"""

from __future__ import annotations

import re

_FINAL_RE = re.compile(r"Final Answer: The final answer is(.*?). I hope it is correct.")
_END_PHRASE = "I hope it is correct."
_LENIENT_FINAL_RE = re.compile(r"Final Answer: The final answer is(.*)")

SUBSTITUTIONS: tuple[tuple[str, str], ...] = (
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
)
REMOVED_EXPRESSIONS: tuple[str, ...] = (
    "square",
    "ways",
    "integers",
    "dollars",
    "mph",
    "inches",
    "ft",
    "hours",
    "km",
    "units",
    "\\ldots",
    "sue",
    "points",
    "feet",
    "minutes",
    "digits",
    "cents",
    "degrees",
    "cm",
    "gm",
    "pounds",
    "meters",
    "meals",
    "edges",
    "students",
    "childrentickets",
    "multiples",
    "\\text{s}",
    "\\text{.}",
    "\\text{\ns}",
    "\\text{}^2",
    "\\text{}^3",
    "\\text{\n}",
    "\\text{}",
    "\\mathrm{th}",
    "^\\circ",
    "^{\\circ}",
    "\\;",
    ",\\!",
    "{,}",
    '"',
    "\\dots",
)


def final_answer_phrase(text: str) -> str | None:
    """Content of the Minerva phrase "Final Answer: The final answer is X. I hope it is correct." (stripped),
    None if absent. As in the harness, the end phrase is appended to ``text`` first (so a completion that
    stops after ``X. `` still matches) and ``.`` in the pattern matches any character."""
    match = _FINAL_RE.search(text + _END_PHRASE)
    return match.group(1).strip() if match else None


def lenient_final_answer(text: str) -> str | None:
    """The rest of the line after "Final Answer: The final answer is", without a trailing "I hope it is
    correct." or full stop. For completions the harness pattern misses, e.g. "... is $5$." at the very end
    (no space before the appended end phrase)."""
    match = _LENIENT_FINAL_RE.search(text)
    if match is None:
        return None
    rest = match.group(1).replace(_END_PHRASE, "").strip()
    rest = rest[:-1].rstrip() if rest.endswith(".") else rest
    return rest or None


def last_boxed(text: str) -> str | None:
    """The last ``\\boxed{...}`` (or ``\\boxed X`` / ``\\fbox{...}``) in ``text`` including the command, with
    balanced braces; None if there is none or it is unterminated."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for pos in range(start, len(text)):
        if text[pos] == "{":
            depth += 1
        elif text[pos] == "}":
            depth -= 1
            if depth == 0:
                return text[start : pos + 1]
    return None


def unbox(boxed: str | None) -> str | None:
    """``\\boxed{X}`` -> ``X`` (also ``\\boxed X`` and ``\\fbox{X}``); None passes through."""
    if boxed is None:
        return None
    if boxed.startswith("\\boxed "):
        return boxed[len("\\boxed ") :]
    for prefix in ("\\boxed{", "\\fbox{"):
        if boxed.startswith(prefix) and boxed.endswith("}"):
            return boxed[len(prefix) : -1]
    return None


def normalize_final_answer(answer: str) -> str:
    """Minerva's normalisation: keep what follows the last ``=``, apply substitutions and removals, unwrap
    ``$...$``, ``\\text{}``, ``\\textbf{}``, ``\\overline{}``, ``\\boxed{}``, expand ``\\fracab``/``\\sqrta``
    shorthand, drop ``$`` and thousands separators of plain integers."""
    answer = answer.split("=")[-1]
    for before, after in SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expr in REMOVED_EXPRESSIONS:
        answer = answer.replace(expr, "")
    answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
    answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
    answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
    answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer


def reference_answer(solution: str) -> str | None:
    """The harness target: normalised content of the last ``\\boxed{}`` of a reference solution."""
    inner = unbox(last_boxed(solution))
    return normalize_final_answer(inner) if inner is not None else None


def extract_answer(completion: str, fallbacks: bool = True) -> tuple[str | None, str]:
    """(normalised answer or None, how it was found: "final-answer", "final-answer-lenient", "boxed", "none").

    The harness's Minerva phrase wins; with ``fallbacks`` on (default) two departures follow where the
    harness finds nothing and scores the completion wrong: the phrase without a well-formed ending, then the
    last ``\\boxed{}`` of the completion.
    """
    phrase = final_answer_phrase(completion)
    if phrase is not None:
        return normalize_final_answer(phrase), "final-answer"
    if not fallbacks:
        return None, "none"
    phrase = lenient_final_answer(completion)
    if phrase is not None:
        return normalize_final_answer(phrase), "final-answer-lenient"
    inner = unbox(last_boxed(completion))
    if inner is not None:
        return normalize_final_answer(inner), "boxed"
    return None, "none"
