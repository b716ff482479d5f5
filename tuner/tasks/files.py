"""Reading the files a user hands dtune as a task (a JSONL of prompts, an lm-eval task YAML and its data files).

Every refusal is a :class:`TaskError` of one line that names the file and, where there is one, the line: a missing
or empty file, bytes that are not UTF-8, a line that is not a JSON object, YAML that does not parse. These files
are read before any model loads, so a bad one costs the user a second, not a model load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .errors import TaskError


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of ``path`` (a ``what``, e.g. "prompts file"); refuses a missing, empty or non-UTF-8 file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TaskError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise TaskError(f"{path}: is a folder, not a {what}") from None
    except OSError as exc:
        raise TaskError(f"{path}: can't read the {what}: {exc.strerror or exc}") from None
    if not data.strip():
        raise TaskError(f"{path}: the {what} is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TaskError(f"{path} line {line}: not UTF-8 text (byte {data[exc.start]:#04x}); a {what} must be "
                        "UTF-8") from None


def read_jsonl(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSONL file; each line must be one JSON object."""
    rows = []
    for number, line in enumerate(read_text(path, what).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskError(f"{path} line {number}: not JSON ({exc.msg} at column {exc.colno}); a {what} holds "
                            "one JSON object a line") from None
        if not isinstance(value, dict):
            raise TaskError(f"{path} line {number}: a JSON {type(value).__name__}, not an object; a {what} holds "
                            "one JSON object a line")
        rows.append((number, value))
    return rows


def check_data_file(path: Path, what: str) -> None:
    """Refuse a data file that is missing, empty, not UTF-8 (text formats) or, for ``.jsonl``, not JSON lines."""
    if path.suffix in {".jsonl", ".ndjson"}:
        read_jsonl(path, what)
    elif path.suffix in {".json", ".csv", ".tsv", ".txt"}:
        read_text(path, what)
    elif not path.is_file():
        raise TaskError(f"{path}: no such {what}")
    elif path.stat().st_size == 0:
        raise TaskError(f"{path}: the {what} is empty")


class _LineLoader(yaml.SafeLoader):
    """A YAML loader that leaves unknown tags (lm-eval's ``!function``) as plain values: only lines are wanted."""


_LineLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def read_yaml_mapping(path: Path, what: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The top-level mapping of a YAML file and the line of each of its keys (1-based)."""
    text = read_text(path, what)
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TaskError(f"{path}{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise TaskError(f"{path}: not an lm-eval task (a task YAML holds a mapping of keys, this holds a "
                        f"{type(data).__name__})")
    lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    return data, lines
