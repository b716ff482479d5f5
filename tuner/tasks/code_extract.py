"""Getting runnable code out of a model completion, and assembling test programs.

Completions arrive in three shapes: a raw continuation of the prompt (base models, lm-eval style), code
wrapped in markdown fences (chat models: "```python ... ```", sometimes only a closing fence when the prompt
opened one), or a whole re-emitted function including its signature. These helpers normalise all three.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_PAIRED_FENCE_RE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_OPEN_FENCE_RE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n")
_PY_LANGS = {"", "python", "py", "python3", "py3"}


def strip_markdown(text: str, prefer: Callable[[str], bool] | None = None) -> str | None:
    """Code inside markdown fences, or None when ``text`` has no fence at all.

    - paired fences: the first Python (or untagged) block for which ``prefer`` is true, else the first such
      block, else the first block of any language;
    - one opening fence only (generation stopped before the closing one): everything after it;
    - one bare closing fence only (the prompt opened the block): everything before it.
    """
    if "```" not in text:
        return None
    blocks = [(lang.lower(), body) for lang, body in _PAIRED_FENCE_RE.findall(text)]
    if blocks:
        python_blocks = [body for lang, body in blocks if lang in _PY_LANGS] or [body for _, body in blocks]
        if prefer is not None:
            for body in python_blocks:
                if prefer(body):
                    return body
        return python_blocks[0]
    first = text.index("```")
    opening = _OPEN_FENCE_RE.match(text, first)
    before = text[:first]
    if opening and (opening.group(1) or not before.strip()):
        return text[opening.end() :]
    return before


def top_level_def(code: str, name: str) -> re.Match[str] | None:
    """Match of a column-0 ``def name(`` (or ``async def``) in ``code``."""
    return re.search(rf"(?m)^(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(", code)


def cut_after_definition(code: str, name: str, cut: Callable[[str], str]) -> str:
    """Apply the stop-sequence ``cut`` only after the signature line of ``def name(``.

    Stop sequences such as ``"\\ndef"`` are meant for raw continuations; applied to a completion that re-emits
    the whole function they would cut it before its own signature. Here the text before the definition and its
    signature line are kept, and the cut applies to the rest (the body is indented, so column-0 stops only
    fire after the function ends, as in the harness).
    """
    match = top_level_def(code, name)
    if match is None:
        return cut(code)
    line_end = code.find("\n", match.start())
    if line_end < 0:
        return code
    return code[: line_end + 1] + cut(code[line_end + 1 :])


def strip_begin_done(code: str) -> str:
    """Drop MBPP's ``[BEGIN]`` echo and anything from ``[DONE]`` on."""
    code = code.split("[DONE]")[0]
    stripped = code.lstrip()
    if stripped.startswith("[BEGIN]"):
        code = stripped[len("[BEGIN]") :]
    return code
