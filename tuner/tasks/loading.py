"""Getting raw records through ``datasets``: from the Hugging Face Hub, or from a local folder.

Both paths go through ``datasets.load_dataset`` and return plain lists of dicts, so everything after loading
is one code path. The local folder has the layout of the project's offline copy (``shared/data``)::

    gsm8k/train.jsonl  gsm8k/test.jsonl  math/test.jsonl  math/math500_test.jsonl
    humaneval/HumanEval.jsonl  mbpp/mbpp.jsonl

Why the reachability probe: on a machine without hub access ``load_dataset("openai/gsm8k")`` retries for
about 25 s before failing. We check the endpoint once (3 s timeout, cached) and fail at once with a
:class:`DataUnavailableError` that says how to point the task at local files instead.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataUnavailableError

DATA_DIR_ENV = "DTUNE_DATA_DIR"
_PROBE_TIMEOUT_S = 3.0
_PROBE_TTL_S = 300.0

_FIX_HINT = (
    "Pass --data-dir DIR (get_task(..., data_dir=DIR)) or set DTUNE_DATA_DIR=DIR to a folder laid out like "
    "shared/data (gsm8k/train.jsonl, gsm8k/test.jsonl, math/test.jsonl, math/math500_test.jsonl, "
    "humaneval/HumanEval.jsonl, mbpp/mbpp.jsonl), or set HF_HUB_OFFLINE=1 to use copies already in the "
    "Hugging Face cache."
)


@dataclass(frozen=True)
class HubPart:
    """One ``load_dataset(path, name, split=split)`` call; a task may concatenate several."""

    path: str
    name: str | None
    split: str

    def describe(self) -> str:
        return f"{self.path}" + (f" ({self.name})" if self.name else "") + f" [{self.split}]"


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """``data_dir``, else ``$DTUNE_DATA_DIR``, else None (= use the hub). A given folder must exist."""
    raw = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_dir():
        origin = "data_dir" if data_dir is not None else DATA_DIR_ENV
        raise DataUnavailableError(f"{origin} {str(path)!r} is not a directory. {_FIX_HINT}")
    return path.resolve()


def _offline_env() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


_probe_lock = threading.Lock()
_probe_cache: dict[str, tuple[float, bool, str]] = {}


def hub_reachable(timeout_s: float = _PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable, detail). Any HTTP answer counts as reachable; DNS/connect/timeout errors do not."""
    import urllib.error  # lazy: only needed when the hub is actually used
    import urllib.request

    url = _endpoint() + "/api/datasets"
    with _probe_lock:
        hit = _probe_cache.get(url)
        if hit and time.monotonic() - hit[0] < _PROBE_TTL_S:
            return hit[1], hit[2]
        try:
            urllib.request.urlopen(urllib.request.Request(url + "?limit=1", method="HEAD"), timeout=timeout_s)
            ok, detail = True, "ok"
        except urllib.error.HTTPError as exc:  # the server answered: reachable
            ok, detail = True, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            ok, detail = False, f"{type(exc).__name__}: {reason}"
        _probe_cache[url] = (time.monotonic(), ok, detail)
        return ok, detail


# Parsed local files, keyed by (path, size, mtime): several task objects over one folder parse it once.
_table_lock = threading.Lock()
_table_cache: dict[tuple[str, int, int], list[dict[str, Any]]] = {}


def _load_local(path: Path) -> list[dict[str, Any]]:
    try:
        stat = path.stat()
    except OSError as exc:
        raise DataUnavailableError(f"missing data file {path}. {_FIX_HINT}") from exc
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _table_lock:
        if key not in _table_cache:
            datasets = _quiet_datasets()
            try:
                table = datasets.load_dataset("json", data_files=str(path), split="train")
            except Exception as exc:  # noqa: BLE001 - any parser failure means the file is unusable
                raise DataUnavailableError(f"cannot read {path} with datasets: {exc}") from exc
            _table_cache[key] = table.to_list()
        return [dict(row) for row in _table_cache[key]]


def require_hub(what: str, fix: str | None = None) -> None:
    """Fail at once with a :class:`DataUnavailableError` when the hub cannot be reached (unless
    ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` ask for cached copies): ``datasets`` would retry for ~25 s.
    ``fix`` says what to do instead (default: point the built-in tasks at a local data directory)."""
    if not _offline_env():
        ok, detail = hub_reachable()
        if not ok:
            reason = "" if fix else " and no local data directory was given"
            raise DataUnavailableError(
                f"cannot load {what}: the Hugging Face Hub ({_endpoint()}) cannot be reached from this machine "
                f"({detail}){reason}. {fix or _FIX_HINT}"
            )


def _load_hub(parts: Sequence[HubPart], what: str) -> list[dict[str, Any]]:
    require_hub(what)
    datasets = _quiet_datasets()
    rows: list[dict[str, Any]] = []
    for part in parts:
        try:
            table = datasets.load_dataset(part.path, part.name, split=part.split)
        except Exception as exc:  # noqa: BLE001 - network, auth, missing-cache errors all mean "unavailable"
            raise DataUnavailableError(
                f"cannot load {what} from the hub ({part.describe()}): {exc}. {_FIX_HINT}"
            ) from exc
        rows.extend(table.to_list())
    return rows


def _quiet_datasets() -> Any:
    """``datasets``, imported on first use, without its progress bars and info lines ("Generating train split"):
    on stderr they come before, and bury, the one line of an error."""
    import datasets  # heavy import, only when data is actually needed

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    return datasets


def check_fields(rows: list[dict[str, Any]], fields: Sequence[str], where: str) -> None:
    """Every row has every field the task reads (not missing, not null): a file of another dataset, or one with
    a damaged row, fails at load with the row and field named, not as a KeyError once a model has loaded."""
    for i, row in enumerate(rows):
        missing = [f for f in fields if row.get(f) is None]
        if missing:
            present = ", ".join(sorted(k for k, v in row.items() if v is not None)) or "none"
            raise DataUnavailableError(f"{where}: row {i + 1} lacks the field(s) {', '.join(missing)} that the "
                                       f"task reads (its fields: {present})")


def load_records(
    *, data_dir: Path | None, local_file: str, hub_parts: Sequence[HubPart], what: str,
    fields: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], str]:
    """Records of one source table and a description of where they came from; each must hold `fields`.

    With ``data_dir``: ``data_dir / local_file`` via ``load_dataset("json", ...)``; else the concatenation of
    ``hub_parts`` from the hub.
    """
    if data_dir is not None:
        path = data_dir / local_file
        rows, source = _load_local(path), f"local file {path}"
    else:
        rows, source = _load_hub(hub_parts, what), "hub " + " + ".join(p.describe() for p in hub_parts)
    check_fields(rows, fields, source)
    return rows, source
