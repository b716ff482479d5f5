"""Study specs: the declarative, versioned description of one tuning study (`tuner/studies/<task>.yaml`).

A spec fixes what is *not* searched (model, generation length, block size, data, budget), what is (the search
space over DecodeConfig knobs), the reference points every front is judged against, and the accuracy constraint.
It is validated on load — unknown keys, wrong types, empty or out-of-range spaces, references outside the space —
so a typo fails in a second, not after an hour of tuning. Any field can be overridden from the CLI with
`--set dotted.key=value` (YAML syntax for the value). Which knobs exist, their ranges, the modes that read them
and their vanilla-neutral values come from the decoder's knob table (`decoder.config.KNOBS`).

The built-in specs ship inside the package (`tuner/studies/`) and are found through `importlib.resources`, so a
wheel install has them too.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from decoder.config import KNOBS, MODES, ConfigError, DecodeConfig

from ..base.errors import TunerError
from ..verdict.constraint import Constraint, ConstraintError, check_max_drop, check_metric
from ..verdict.racing import Race

SPEC_VERSION = 1
SAMPLERS = ("gp", "tpe", "nsga2", "random")
# Knobs a search space may name (decoder.config.KNOBS rows with a `search` kind).
SEARCHABLE = {name: knob for name, knob in KNOBS.items() if knob.search is not None}
# Knobs every mode reads: the only ones `decode` may fix (the others belong to references or the search space).
SHARED_KNOBS = {name for name, knob in KNOBS.items() if set(knob.modes) == set(MODES) and name != "mode"}


def builtin_specs() -> dict[str, Traversable]:
    """The specs that ship with dtune, by task name (package data: `tuner/studies/<task>.yaml`)."""
    folder = files("tuner") / "studies"
    return {Path(f.name).stem: f for f in folder.iterdir() if f.name.endswith(".yaml")}


class SpecError(TunerError, ValueError):
    """A study spec (file or override) is invalid; the message names the field."""


@dataclass(frozen=True)
class Dimension:
    """One searched knob: a float/int range or a list of choices (None = e.g. 'no pruning' for window)."""

    name: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @property
    def is_categorical(self) -> bool:
        return self.choices is not None

    def contains(self, value: Any) -> bool:
        if self.is_categorical:
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def most_vanilla_like(self) -> Any:
        """The value of this space closest to vanilla decoding (the knob table's neutral: no pruning, the highest
        fixed threshold, no early exit, ...).

        The vanilla reference doesn't read the streaming knobs but must report a point of the space to the sampler
        (the GP models only the space all complete trials share); at this corner its results are a fair guess.
        """
        return KNOBS[self.name].neutral_value(self.low, self.high, self.choices)


@dataclass(frozen=True)
class Reference:
    """A reference configuration enqueued before any sampled trial (e.g. vanilla, Fast-dLLM, the paper's)."""

    name: str
    knobs: dict[str, Any]


@dataclass(frozen=True)
class StudySpec:
    task: str
    model: str
    version: int = SPEC_VERSION
    description: str = ""
    chat_template: bool = False
    task_options: dict[str, Any] = field(default_factory=dict)
    few_shot: int | None = None
    decode: dict[str, Any] = field(default_factory=dict)  # fixed knobs: gen_length, block_size, temperature, …
    validation_size: int | None = None  # first N validation items (None = the whole split)
    test_size: int | None = None  # first N test items for export's confirmation (None = all)
    search_space: tuple[Dimension, ...] = ()
    references: tuple[Reference, ...] = ()
    objectives: tuple[str, ...] = ("accuracy", "tokens_per_s")
    constraint: Constraint = Constraint()
    race: Race = Race()
    trials: int = 30
    sampler: str = "gp"
    seed: int | None = 0
    batch_size: int = 1
    chunk_size: int = 50

    # --------------------------------------------------------------------------------------- derived
    @property
    def task_label(self) -> str:
        """The task in names (study, MLflow experiment): a built-in name as is, a file by its name, `lm-eval:X` with
        its colon replaced."""
        task = self.task.rstrip("/")
        name = Path(task).name if ("/" in task or Path(task).suffix) and not task.startswith("lm-eval:") else task
        return re.sub(r"[^A-Za-z0-9._-]+", "_", name)

    def fixed_knobs(self) -> dict[str, Any]:
        return dict(self.decode)

    def knob(self, name: str) -> Dimension:
        for k in self.search_space:
            if k.name == name:
                return k
        raise KeyError(name)

    def reference(self, name: str) -> Reference:
        for r in self.references:
            if r.name == name:
                return r
        raise KeyError(name)

    def reference_config(self, ref: Reference) -> DecodeConfig:
        return DecodeConfig.from_dict({**self.fixed_knobs(), **ref.knobs})

    def config_for(self, params: dict[str, Any]) -> DecodeConfig:
        """The DecodeConfig a sampled point stands for: fixed knobs + params; vanilla ignores streaming knobs."""
        mode = params.get("mode", "streaming")
        knobs = {**self.fixed_knobs(), **{k: v for k, v in params.items() if k != "mode"}, "mode": mode}
        knobs = {k: v for k, v in knobs.items() if k == "mode" or mode in KNOBS[k].modes}
        return DecodeConfig.from_dict(knobs)

    def to_dict(self) -> dict[str, Any]:
        """The spec in its YAML shape (round-trips through `spec_from_dict`)."""
        d = dataclasses.asdict(self)
        d["search_space"] = {k.name: _knob_to_dict(k) for k in self.search_space}
        d["references"] = [{"name": r.name, **r.knobs} for r in self.references]
        d["objectives"] = list(self.objectives)
        if self.constraint.metric == Constraint.metric:
            del d["constraint"]["metric"]  # the default, left out so that a study made before the field keeps its name
        return d

    def fingerprint(self) -> str:
        """A short hash of everything that changes results, used in the default study name (so re-running the
        same command resumes, and changing the spec starts a new study)."""
        d = self.to_dict()
        for volatile in ("description", "trials"):
            d.pop(volatile, None)
        d["test_size"] = None  # export's confirmation only: `export --set test_size=N` must find the same study
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _knob_to_dict(k: Dimension) -> dict[str, Any]:
    if k.is_categorical:
        return {"choices": list(k.choices)}
    out: dict[str, Any] = {"low": k.low, "high": k.high}
    if k.step is not None:
        out["step"] = k.step
    if k.log:
        out["log"] = True
    return out


# ------------------------------------------------------------------------------------------- loading
_FIELDS = {f.name for f in dataclasses.fields(StudySpec)}


def spec_source(task_or_path: str | Path) -> Path | Traversable:
    """The built-in spec of a task name, or a spec file path (anything ending in .yaml/.yml)."""
    p = Path(task_or_path)
    if p.suffix in {".yaml", ".yml"}:
        if not p.is_file():
            raise SpecError(f"no study spec {p}")
        return p
    builtin = builtin_specs()
    if str(task_or_path) not in builtin:
        raise SpecError(f"no study spec for task {str(task_or_path)!r} (built-in specs: {', '.join(sorted(builtin))}; "
                        "or pass a spec file with --spec)")
    return builtin[str(task_or_path)]


def load_spec(task_or_path: str | Path, overrides: list[str] | None = None) -> StudySpec:
    path = spec_source(task_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path} is not a text file (a study spec is YAML)") from None
    except OSError as exc:
        raise SpecError(f"can't read the study spec {path}: {exc.strerror or exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path} must hold a mapping of fields")
    data = apply_overrides(raw, overrides or [])
    try:
        return spec_from_dict(data)
    except SpecError as exc:
        raise SpecError(f"{path.name}: {exc}") from None


def override_value(text: str, item: str | None = None) -> Any:
    """The value of a `--set key=TEXT` override, read as YAML, except where YAML would read part of it as a comment
    (`answer_regex=#### (-?[0-9]+)` is null to YAML, `x=a #b` is "a"): then the text itself, as a string, since a
    comment on a command line is never what was meant."""
    if not text.strip():
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise SpecError(f"override {item or text!r}: value is not valid YAML") from None
    if "#" in text and (value is None or (isinstance(value, str) and "#" not in value)):
        return text.strip()
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`key=value` / `a.b=value` assignments (values in YAML syntax) applied to a copy of the spec dict."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"override {item!r} must look like field=value (e.g. trials=40, constraint.max_drop=2)")
        value = override_value(text, item)
        parts = key.strip().split(".")
        if parts[0] not in _FIELDS:
            raise SpecError(f"override {item!r}: unknown field {parts[0]!r}; fields: {', '.join(sorted(_FIELDS))}")
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def spec_from_dict(data: dict[str, Any]) -> StudySpec:
    unknown = set(data) - _FIELDS
    if unknown:
        raise SpecError(f"unknown field(s) {', '.join(sorted(unknown))}; fields: {', '.join(sorted(_FIELDS))}")
    for required in ("task", "model"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise SpecError(f"{required} must be a non-empty string")
    if data.get("version", SPEC_VERSION) != SPEC_VERSION:
        raise SpecError(f"version {data.get('version')!r} is not supported (this dtune reads version {SPEC_VERSION})")
    kwargs: dict[str, Any] = {k: v for k, v in data.items() if k not in {"search_space", "references", "constraint",
                                                                          "objectives", "race"}}
    _check_types(kwargs)
    kwargs["search_space"] = _parse_space(data.get("search_space") or {})
    kwargs["references"] = _parse_references(data.get("references") or [])
    kwargs["constraint"] = _parse_constraint(data.get("constraint") or {})
    kwargs["race"] = _parse_race(data.get("race") or {})
    objectives = tuple(data.get("objectives") or ("accuracy", "tokens_per_s"))
    if objectives != ("accuracy", "tokens_per_s"):
        raise SpecError(f"objectives must be [accuracy, tokens_per_s] (both maximised), got {list(objectives)}")
    kwargs["objectives"] = objectives
    spec = StudySpec(**kwargs)
    _check_consistency(spec)
    return spec


def _check_types(kw: dict[str, Any]) -> None:
    def want(name: str, types: tuple[type, ...], lo: int | None = None, optional: bool = False) -> None:
        if name not in kw:
            return
        v = kw[name]
        if v is None and optional:
            return
        if isinstance(v, bool) and bool not in types or not isinstance(v, types):
            raise SpecError(f"{name} must be {' or '.join(t.__name__ for t in types)}, got {v!r}")
        if lo is not None and v < lo:
            raise SpecError(f"{name} must be >= {lo}, got {v}")

    want("chat_template", (bool,))
    want("description", (str,))
    want("task_options", (dict,))
    want("decode", (dict,))
    want("few_shot", (int,), 0, optional=True)
    want("validation_size", (int,), 1, optional=True)
    want("test_size", (int,), 1, optional=True)
    want("trials", (int,), 1)
    want("seed", (int,), 0, optional=True)
    want("batch_size", (int,), 1)
    want("chunk_size", (int,), 1)
    if kw.get("sampler", "gp") not in SAMPLERS:
        raise SpecError(f"sampler must be one of {', '.join(SAMPLERS)}, got {kw.get('sampler')!r}")
    per_mode = set(kw.get("decode", {})) & (set(KNOBS) - SHARED_KNOBS)
    if per_mode:
        raise SpecError(f"decode fixes {', '.join(sorted(per_mode))}: these depend on the mode; set them per "
                        "reference or search them")


def _parse_space(space: dict[str, Any]) -> tuple[Dimension, ...]:
    if not isinstance(space, dict) or not space:
        raise SpecError("search_space must map knob names to ranges or choices")
    knobs = []
    for name, body in space.items():
        if name not in SEARCHABLE:
            raise SpecError(f"search_space: {name!r} is not a searchable knob ({', '.join(SEARCHABLE)})")
        if not isinstance(body, dict):
            raise SpecError(f"search_space.{name} must be a mapping with low/high or choices")
        extra = set(body) - {"low", "high", "step", "log", "choices"}
        if extra:
            raise SpecError(f"search_space.{name}: unknown key(s) {', '.join(sorted(extra))}")
        if "choices" in body:
            choices = body["choices"]
            if not isinstance(choices, list) or not choices or len(set(map(repr, choices))) != len(choices):
                raise SpecError(f"search_space.{name}.choices must be a non-empty list of distinct values")
            for c in choices:
                _check_choice(name, c)
            knobs.append(Dimension(name, choices=tuple(choices)))
            continue
        if SEARCHABLE[name].search == "choices":
            raise SpecError(f"search_space.{name} takes choices, not a range")
        lo_ok, hi_ok = SEARCHABLE[name].low, SEARCHABLE[name].high
        low, high = body.get("low"), body.get("high")
        for key, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SpecError(f"search_space.{name}.{key} must be a number, got {v!r}")
        if not lo_ok <= low < high <= hi_ok:
            raise SpecError(f"search_space.{name} needs {lo_ok} <= low < high <= {hi_ok}, got [{low}, {high}]")
        step = body.get("step")
        if step is not None and (not isinstance(step, (int, float)) or step <= 0 or step > high - low):
            raise SpecError(f"search_space.{name}.step must be in (0, high - low], got {step!r}")
        log = bool(body.get("log", False))
        if log and (low <= 0 or step is not None):
            raise SpecError(f"search_space.{name}: log scale needs low > 0 and no step")
        knobs.append(Dimension(name, float(low), float(high), None if step is None else float(step), log))
    return tuple(knobs)


def _check_choice(name: str, c: Any) -> None:
    try:
        KNOBS[name].check(c)
    except ConfigError:
        raise SpecError(f"search_space.{name} choices must be {KNOBS[name].describe()}, got {c!r}") from None


def _parse_references(refs: list[Any]) -> tuple[Reference, ...]:
    if not isinstance(refs, list):
        raise SpecError("references must be a list of {name: ..., <knobs>}")
    out, seen = [], set()
    for r in refs:
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            raise SpecError(f"each reference needs a name, got {r!r}")
        if r["name"] in seen:
            raise SpecError(f"duplicate reference name {r['name']!r}")
        seen.add(r["name"])
        out.append(Reference(r["name"], {k: v for k, v in r.items() if k != "name"}))
    return tuple(out)


def _parse_constraint(c: dict[str, Any]) -> Constraint:
    keys = [f.name for f in dataclasses.fields(Constraint)]
    if not isinstance(c, dict):
        raise SpecError(f"constraint must be a mapping {{{', '.join(keys)}}}")
    extra = set(c) - set(keys)
    if extra:
        raise SpecError(f"constraint: unknown key(s) {', '.join(sorted(extra))}")
    default = Constraint()
    try:
        max_drop = check_max_drop(c.get("max_drop", default.max_drop), "constraint.max_drop")
        metric = check_metric(c.get("metric", default.metric))
    except ConstraintError as exc:
        raise SpecError(str(exc)) from None
    confidence = _number(c, "confidence", default.confidence, "constraint.confidence", 0.5, 0.9999, open_low=True)
    discordance = _number(c, "discordance", default.discordance, "constraint.discordance", 0.0, 1.0, open_low=True)
    # The baseline is checked against the references once the spec is whole (_check_consistency).
    return dataclasses.replace(default, **{**c, "max_drop": max_drop, "confidence": confidence,
                                           "discordance": discordance, "metric": metric})


def _parse_race(r: dict[str, Any]) -> Race:
    if not isinstance(r, dict):
        raise SpecError("race must be a mapping {min_items, growth, speed_tolerance}")
    extra = set(r) - {"min_items", "growth", "speed_tolerance"}
    if extra:
        raise SpecError(f"race: unknown key(s) {', '.join(sorted(extra))}")
    min_items = r.get("min_items", Race.min_items)
    if isinstance(min_items, bool) or not isinstance(min_items, int) or min_items < 1:
        raise SpecError(f"race.min_items must be a positive integer, got {min_items!r}")
    growth = _number(r, "growth", Race.growth, "race.growth", 1.0, 100.0, open_low=True)
    tolerance = _number(r, "speed_tolerance", Race.speed_tolerance, "race.speed_tolerance", 0.0, 10.0)
    return Race(min_items, growth, tolerance)


def _number(d: dict[str, Any], key: str, default: float, name: str, low: float, high: float, *,
            open_low: bool = False) -> float:
    v = d.get(key, default)
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and (low < v if open_low else low <= v) and v <= high
    if not ok:
        raise SpecError(f"{name} must be a number in {'(' if open_low else '['}{low}, {high}], got {v!r}")
    return float(v)


def _check_consistency(spec: StudySpec) -> None:
    """Decode knobs valid, references valid and inside the space, the baseline a reference."""
    fixed = spec.fixed_knobs()
    try:
        DecodeConfig.from_dict({**fixed, "mode": "streaming"})
    except ConfigError as exc:
        raise SpecError(f"decode: {exc}") from None
    names = [r.name for r in spec.references]
    if spec.constraint.baseline not in names:
        raise SpecError(f"constraint.baseline {spec.constraint.baseline!r} is not a reference ({', '.join(names)})")
    searched = {k.name for k in spec.search_space}
    for ref in spec.references:
        try:
            cfg = spec.reference_config(ref)
        except ConfigError as exc:
            raise SpecError(f"reference {ref.name!r}: {exc}") from None
        if cfg.mode == "fast":
            raise SpecError(f"reference {ref.name!r}: express Fast-dLLM as mode streaming with window null, alpha 0 "
                            "and early_exit false (the same decoding) so it is a point of the search space")
        if cfg.mode == "streaming":
            for name in searched:
                value = getattr(cfg, name)
                if not spec.knob(name).contains(value):
                    raise SpecError(f"reference {ref.name!r} has {name}={value!r}, outside search_space.{name}")
    # Every streaming point of the space must be a valid DecodeConfig (e.g. block_size choices divide gen_length).
    for k in spec.search_space:
        for value in k.choices or ():
            try:
                spec.config_for({"mode": "streaming", k.name: value})
            except ConfigError as exc:
                raise SpecError(f"search_space.{k.name} choice {value!r}: {exc}") from None
