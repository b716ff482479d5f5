"""What each command checks before any expensive work, declared once per command and run once per context.

Cheap checks come first (options, where files go, the databases), then what may fetch or load (the data, the
checkpoint's files); a model is never loaded before every check has passed. A command that calls another's
library code (the CLI's `export` calls `tuner.export.export`) runs each check once: the context remembers it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..verdict.constraint import check_max_drop
from .context import Context

Inputs = Mapping[str, Any]


@dataclass(frozen=True)
class Check:
    """One named check; `run(ctx, inputs)` raises a one-line TunerError / DecoderError when it fails."""

    name: str
    what: str
    run: Callable[[Context, Inputs], None]


def _power(ctx: Context, inputs: Inputs) -> None:
    """Both splits load; unless `accept_low_power`, the margin can be resolved by them (tuner.verdict.racing)."""
    if inputs.get("accept_low_power"):
        ctx.items("validation")
        return
    from ..verdict.racing import power_check

    power_check(ctx.spec.constraint, len(ctx.items("validation")), len(ctx.items("test")))


def _margin(ctx: Context, inputs: Inputs) -> None:
    if inputs.get("max_drop") is not None:
        check_max_drop(inputs["max_drop"])


def default_profile_path(study_name: str) -> Path:
    """profiles/<study>-<time>.json, with a counter where that name is taken (two exports in one second)."""
    stem = Path("profiles") / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', study_name)}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    path, n = stem.with_suffix(".json"), 1
    while path.exists():
        n += 1
        path = stem.parent / f"{stem.name}-{n}.json"
    return path


def _profile_target(ctx: Context, inputs: Inputs) -> None:
    """Where export writes: never over a file dtune did not write, over a profile only with `overwrite`; without
    `out`, the default folder and the full default name."""
    from decoder.profile import check_folder, check_writable

    if inputs.get("out") is not None:
        check_writable(inputs["out"], overwrite=bool(inputs.get("overwrite")))
    else:
        check_folder(Path("profiles"))
        check_writable(default_profile_path(ctx.study_name))


def _registry(ctx: Context, inputs: Inputs) -> None:
    """A registered-model name that MLflow will take, and a tracking store that answers."""
    if inputs.get("register"):
        from ..tracking.registry import check_name

        check_name(inputs["register"])
        ctx.open_tracker()


def _prompt_lengths(ctx: Context, inputs: Inputs) -> None:
    """A task from the user's own files (not a built-in one): every prompt fits the model with the answer, as the
    model's tokenizer and chat template encode it (the tokenizer and config.json only: no weights)."""
    from ..tasks.registry import task_source

    if task_source(ctx.spec.task) == "builtin":
        return
    from decoder import encode_prompt
    from decoder.architectures import args_from_config
    from decoder.loading import load_tokenizer, read_config

    from ..tasks.checks import check_prompt_lengths

    ckpt = Path(ctx.model_source["path"])
    tokenizer, positions = load_tokenizer(ckpt), args_from_config(read_config(ckpt)).max_seq_len
    gen = int(ctx.spec.decode.get("gen_length", 0))
    check_prompt_lengths(ctx.task, lambda p: encode_prompt(tokenizer, p, chat_template=ctx.spec.chat_template),
                         positions - gen, why=f"the model's {positions} positions minus gen_length {gen}")


def _eval_config(ctx: Context, inputs: Inputs) -> None:
    """The profile file and the knobs (they need no model)."""
    from decoder.cli import build_config

    build_config(inputs.get("profile"), inputs.get("knobs") or {})


SERVICES = Check("services", "the study database and the tracking store can be used (nothing created in either)",
                 lambda ctx, _: ctx.check_services())
STUDY_SERVICES = Check("study services", "the study database exists and is writable; the tracking store answers",
                       lambda ctx, _: ctx.check_services(create=False, write=True))
SANDBOX = Check("sandbox", "a code task can run model-written programs in isolation (bubblewrap, or the opt-in)",
                lambda ctx, _: ctx.check_sandbox())
DEVICE = Check("device", "the device string names a device this machine has", lambda ctx, _: ctx.check_device())
POWER = Check("data", "the splits load, and they can resolve the margin (unless --accept-low-power)", _power)
SPLIT = Check("split", "the split to evaluate loads", lambda ctx, inputs: ctx.task.load(inputs["split"]) and None)
TEST_SPLIT = Check("test split", "the test split loads", lambda ctx, _: ctx.items("test") and None)
MODEL = Check("model", "the checkpoint's files, its fingerprint and its chat template when the spec asks for one",
              lambda ctx, _: ctx.check_model() and None)
MARGIN = Check("margin", "--max-drop is accuracy points in [0, 100]", _margin)
PROFILE_TARGET = Check("profile target", "the profile's path can be written without replacing a foreign file",
                       _profile_target)
REGISTRY = Check("registry", "--register names a valid registered model, and MLflow answers", _registry)
EVAL_CONFIG = Check("decode settings", "the profile file and the knobs make a valid configuration", _eval_config)
PROMPT_LENGTHS = Check("prompt lengths", "every prompt of a task from your files fits the model with its answer",
                        _prompt_lengths)
STUDY = Check("study", "the study this spec ran exists in the storage", lambda ctx, _: ctx.load_study(write=True) and None)

# Each command's checks, in the order they run.
RUN = (SERVICES, SANDBOX, DEVICE, POWER, MODEL, PROMPT_LENGTHS)
EVAL = (EVAL_CONFIG, SANDBOX, DEVICE, SPLIT, MODEL, PROMPT_LENGTHS)
EXPORT = (MARGIN, PROFILE_TARGET, SANDBOX, STUDY_SERVICES, REGISTRY, STUDY, DEVICE, TEST_SPLIT, MODEL, PROMPT_LENGTHS)
WORKER = (SANDBOX,)  # a worker about to decode (the command that started it ran RUN)


def preflight(ctx: Context, checks: tuple[Check, ...], **inputs: Any) -> None:
    """Run `checks` in order, each at most once per context."""
    for check in checks:
        if check.name not in ctx.checked:
            check.run(ctx, inputs)
            ctx.checked.add(check.name)
