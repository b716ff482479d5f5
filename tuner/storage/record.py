"""What a study stores, as types: the one module that knows the keys under which Optuna keeps them.

A study's own facts (its spec, the baseline ledger, the baseline's test evaluations, the speed anchor, the MLflow
run) live in the study's user attributes (`StudyRecord`); what a trial measured lives in its user attributes
(`TrialRecord`, written through `TrialWriter`); what an exported profile says of its origin is its `meta` block
(`ProfileMeta`). The stored layout is unchanged from the files written before these types existed, so a study and
a profile outlive an upgrade.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..verdict.constraint import Evidence

if TYPE_CHECKING:  # pragma: no cover - `show` reads records without importing Optuna eagerly elsewhere
    import optuna
    from optuna.trial import FrozenTrial, TrialState

# ---------------------------------------------------------------------------------------------- the keys
# Study user attributes.
_SPEC, _SPEC_FINGERPRINT, _INITIALIZED, _WORKERS_STARTED = "spec", "spec_fingerprint", "initialized", "workers_started"
_PARENT_RUN = "mlflow_parent_run_id"
_BASELINE, _LEDGER, _LEDGER_KEY = "baseline", "baseline_ledger", "baseline_ledger_key"
_EXPORT_STAGES = "export_stages"  # {key: the pick's test evidence so far}: a killed export resumes its stages
_FINISHED = "finished_races"  # {trial number: evidence a finished trial earned after its race (finishing)}
_COMPLETE = "complete"
_SPEED_ANCHOR = "speed_anchor"
# Trial user attributes.
_REFERENCE, _CONFIG, _CONFIG_KEY, _WORKER = "reference", "config", "config_key", "worker"
_METRICS, _OUTCOMES, _ANSWERS, _RACE, _TIMING = "metrics", "outcomes", "answers", "race", "timing"
_PRUNED_AFTER, _DUPLICATE_OF = "pruned_after", "duplicate_of"
REPEATS_AVOIDED = "repeats_avoided"  # proposals of an evaluated configuration the sampler replaced for this trial
# Trial system attributes Optuna's retry callback writes (and `storage.retry.queue_retry` copies).
_FAILED_TRIAL, _RETRY_HISTORY = "failed_trial", "retry_history"

# What one attempt of a trial wrote about its own outcome; a retry starts without them.
ATTEMPT_KEYS = (_METRICS, _OUTCOMES, _ANSWERS, _RACE, _PRUNED_AFTER, _DUPLICATE_OF, _WORKER)
ANSWER_DIGEST_CHARS = 8  # hex characters kept per answer key: two different answers collide with p = 2^-32


def answer_digest(answer: str) -> str:
    """The stored form of an item's answer key (`Task.answer`): a short hash, so a trial's answers on 1,600 items
    cost 13 KB however long its programs or proofs, and agreement compares them just as well."""
    return hashlib.sha256(answer.encode("utf-8")).hexdigest()[:ANSWER_DIGEST_CHARS]


def join_answers(digests: Sequence[str]) -> str:
    return "".join(digests)


def split_answers(joined: str | None) -> tuple[str, ...]:
    joined = joined or ""
    w = ANSWER_DIGEST_CHARS
    return tuple(joined[i : i + w] for i in range(0, len(joined), w))


def bits(outcomes: Sequence[bool]) -> str:
    """Per-item outcomes as stored: "1"/"0" per item."""
    return "".join("1" if o else "0" for o in outcomes)


def unbits(stored: str | None) -> tuple[bool, ...]:
    return tuple(o == "1" for o in stored or "")


# --------------------------------------------------------------------------------------------- values
@dataclass(frozen=True)
class TrialMetrics:
    """The flat numbers a trial reports (MLflow metrics, `trials.csv`, the profile's validation figures).

    Every field is optional: a reference, a repeat and an early-stopped trial each fill a different subset, and
    a study written by an older dtune may lack newer fields. `from_dict` refuses a key that is not a field, so a
    producer's typo fails where it is written."""

    # accuracy on the items the trial used (tuner.study.evaluate)
    accuracy: float | None = None
    accuracy_ci_low: float | None = None
    accuracy_ci_high: float | None = None
    n: int | None = None
    correct: int | None = None
    # cost counters, per item unless named _total / _s
    nfe: float | None = None
    nfe_total: int | None = None
    forward_calls: int | None = None
    attended_pairs: float | None = None
    query_tokens: float | None = None
    generated_tokens: float | None = None
    counted_tokens: float | None = None
    latency_s: float | None = None
    decode_time_s: float | None = None
    scoring_time_s: float | None = None
    # speed (tuner.study.timing)
    tokens_per_s: float | None = None
    tokens_per_s_wall: float | None = None
    tokens_per_s_low: float | None = None
    tokens_per_s_high: float | None = None
    speed_method: str | None = None
    speed_noisy: bool | None = None
    speed_ratio: float | None = None
    speed_spread: float | None = None
    timing_load: float | None = None
    timing_overhead_s: float | None = None
    timing_passes: int | None = None
    # the paired comparison with the baseline behind the verdict (tuner.verdict)
    drop: float | None = None
    drop_lower: float | None = None
    drop_upper: float | None = None
    discordance: float | None = None
    baseline_only: int | None = None
    candidate_only: int | None = None
    confidence: float | None = None
    race_verdict: str | None = None
    baseline_accuracy_same_items: float | None = None
    agreement: float | None = None  # share of its items whose answer equals the baseline's
    # how it was timed: on the decoder's fused path (`--compile`); stored only when True, so a study written before
    # the flag (or timed eagerly) keeps its keys
    compile: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> TrialMetrics:
        raw = dict(raw or {})
        unknown = set(raw) - _METRIC_FIELDS
        if unknown:
            raise KeyError(f"not a trial metric: {', '.join(sorted(unknown))}")
        return cls(**raw)

    @classmethod
    def read(cls, raw: Mapping[str, Any] | None) -> TrialMetrics:
        """A stored metrics dict (fields a later dtune dropped are ignored)."""
        return cls(**{k: v for k, v in (raw or {}).items() if k in _METRIC_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as stored and as logged to MLflow (a False flag is not set)."""
        return {f.name: v for f in dataclasses.fields(self)
                if (v := getattr(self, f.name)) is not None and not (f.name in _FLAGS and v is False)}

    def __bool__(self) -> bool:
        return bool(self.to_dict())


_METRIC_FIELDS = frozenset(f.name for f in dataclasses.fields(TrialMetrics))
_FLAGS = frozenset({"compile"})  # bool metrics stored only when True


@dataclass(frozen=True)
class RaceStep:
    """The verdict after one rung of racing (tuner.verdict.racing): the paired drop on the first `n` items."""

    n: int
    drop: float
    lower: float
    upper: float
    verdict: str
    dominated_by: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.dominated_by is None:
            del d["dominated_by"]
        return d


@dataclass(frozen=True)
class TrialRecord:
    """Everything a finished, running or failed trial holds, read from Optuna's FrozenTrial."""

    number: int
    state: TrialState
    params: dict[str, Any]
    values: tuple[float, ...] | None
    constraints: dict[str, float] | None  # the sampler's constraint values by key (<= 0: feasible)
    reference: str | None = None  # the reference point it evaluates (vanilla, paper, ...), None for a sampled one
    config: dict[str, Any] | None = None  # the DecodeConfig it decoded, as a dict
    config_key: str | None = None  # what makes two trials the same configuration (tuner.study.space.config_key)
    metrics: TrialMetrics = field(default_factory=TrialMetrics)
    outcomes: str = ""  # "1"/"0" per validation item used, in pool order (empty for an unlabelled task)
    answers: tuple[str, ...] = ()  # the answer digest per item used (`answer_digest`), for the agreement constraint
    race: tuple[RaceStep, ...] = ()
    pruned_after: int | None = None
    duplicate_of: int | None = None  # the earlier trial of the same configuration whose result it copies
    worker: str | None = None
    timing: dict[str, Any] | None = None  # the timing passes and their rule (tuner.study.timing)
    retry_of: int | None = None  # the first attempt, when this trial retries one a dead worker left
    repeats_avoided: int = 0  # repeated proposals the sampler replaced before this trial's (tuner.study.repeats)

    @classmethod
    def read(cls, trial: FrozenTrial) -> TrialRecord:
        a, s = trial.user_attrs, trial.system_attrs
        return cls(
            number=trial.number, state=trial.state, params=dict(trial.params),
            values=tuple(trial.values) if trial.values else None,
            constraints=dict(trial.constraints) if trial.constraints else None,
            reference=a.get(_REFERENCE), config=a.get(_CONFIG), config_key=a.get(_CONFIG_KEY),
            metrics=TrialMetrics.read(a.get(_METRICS)), outcomes=a.get(_OUTCOMES) or "",
            answers=split_answers(a.get(_ANSWERS)),
            race=tuple(RaceStep(**step) for step in a.get(_RACE) or ()),
            pruned_after=a.get(_PRUNED_AFTER), duplicate_of=a.get(_DUPLICATE_OF), worker=a.get(_WORKER),
            timing=a.get(_TIMING), retry_of=s.get(_FAILED_TRIAL), repeats_avoided=int(a.get(REPEATS_AVOIDED, 0)))

    @property
    def outcome_bools(self) -> list[bool]:
        return [o == "1" for o in self.outcomes]

    @property
    def evidence(self) -> Evidence:
        return Evidence(unbits(self.outcomes), self.answers)


def read_trials(study: optuna.Study, states: Container[TrialState] | None = None) -> list[TrialRecord]:
    """The study's trials as records, in number order (`states` filters)."""
    return [TrialRecord.read(t) for t in study.get_trials(deepcopy=False)
            if states is None or t.state in states]


def reference_of(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(_REFERENCE)


def config_key_of(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(_CONFIG_KEY)


def retry_of(trial: FrozenTrial) -> int | None:
    return trial.system_attrs.get(_FAILED_TRIAL)


def record_repeats(study: optuna.Study, trial: FrozenTrial, repeats: int) -> None:
    """Count the repeated proposals replaced for `trial` while the sampler proposes it (before it is a Trial)."""
    from .optuna_internals import backend, trial_id

    backend(study).set_trial_user_attr(trial_id(trial), REPEATS_AVOIDED, repeats)


def reference_attrs(name: str) -> dict[str, Any]:
    """The user attributes a reference point is enqueued with."""
    return {_REFERENCE: name}


def retry_attrs(trial: FrozenTrial) -> tuple[dict[str, Any], dict[str, Any]]:
    """(user attrs, system attrs) of a retry of failed `trial`: its own attributes minus what its attempt wrote
    about its outcome (ATTEMPT_KEYS, and Optuna's `constraints` system attrs: `set_constraint` keeps a key already
    set, so a retry that inherited them would carry the failed attempt's constraint), plus the retry history as
    Optuna's RetryHeartbeatStaleTrialCallback records it."""
    history = [*trial.system_attrs.get(_RETRY_HISTORY, []), trial.number]
    system = {k: v for k, v in trial.system_attrs.items() if not (k == "constraints" or k.startswith("constraints:"))}
    system.update({_FAILED_TRIAL: trial.system_attrs.get(_FAILED_TRIAL, trial.number), _RETRY_HISTORY: history})
    user = {k: v for k, v in trial.user_attrs.items() if k not in ATTEMPT_KEYS}
    return user, system


def retry_count(trial: FrozenTrial) -> int:
    """How many attempts `trial` and the ones before it made (its retry history, itself included)."""
    return len(trial.system_attrs.get(_RETRY_HISTORY, [])) + 1


class TrialWriter:
    """Writes a running trial's record (the objective and the worker are its only writers)."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def reference(self, name: str) -> None:
        self.trial.set_user_attr(_REFERENCE, name)

    def configuration(self, config: dict[str, Any], key: str) -> None:
        self.trial.set_user_attr(_CONFIG, config)
        self.trial.set_user_attr(_CONFIG_KEY, key)

    def worker(self, label: str) -> None:
        self.trial.set_user_attr(_WORKER, label)

    def timing(self, detail: dict[str, Any]) -> None:
        self.trial.set_user_attr(_TIMING, detail)

    def result(self, metrics: TrialMetrics, evidence: Evidence, race: list[RaceStep] | None = None) -> None:
        self.trial.set_user_attr(_METRICS, metrics.to_dict())
        if race is not None:
            self.trial.set_user_attr(_RACE, [step.to_dict() for step in race])
        self.trial.set_user_attr(_OUTCOMES, bits(evidence.outcomes))
        if evidence.answers:
            self.trial.set_user_attr(_ANSWERS, join_answers(evidence.answers))

    def stopped_after(self, n: int) -> None:
        self.trial.set_user_attr(_PRUNED_AFTER, n)

    def copy_of(self, earlier: TrialRecord) -> None:
        """A repeat of `earlier`'s configuration: its metrics and where it stopped, and which trial it copies."""
        self.trial.set_user_attr(_DUPLICATE_OF, earlier.number)
        self.trial.set_user_attr(_METRICS, earlier.metrics.to_dict())
        if earlier.pruned_after is not None:
            self.trial.set_user_attr(_PRUNED_AFTER, earlier.pruned_after)


# -------------------------------------------------------------------------------------------- the study
@dataclass(frozen=True)
class LedgerState:
    """The baseline's outcomes on items [0, n) of the validation pool, and the decode cost of producing them."""

    outcomes: str = ""  # "1"/"0" per item, in pool order (empty for an unlabelled task)
    counted_tokens: int = 0
    decode_time_s: float = 0.0
    row_forwards: int = 0
    attended_pairs: int = 0  # query x key pairs (a ledger stored before this field reads 0)
    answers: str = ""  # the answer digests per item (`join_answers`; a ledger stored before this field reads "")

    @property
    def n(self) -> int:
        return max(len(self.outcomes), len(self.answers) // ANSWER_DIGEST_CHARS)

    @property
    def labelled(self) -> bool:
        """Its items had labels: it holds outcomes (or holds nothing yet)."""
        return bool(self.outcomes) or not self.answers

    def evidence(self, n: int | None = None) -> Evidence:
        return Evidence(unbits(self.outcomes), split_answers(self.answers)).head(self.n if n is None else n)

    def head(self, n: int) -> LedgerState:
        """The evidence of the first `n` items (its cost figures stay the whole ledger's: a rate, not a sum)."""
        if n >= self.n:
            return self
        return dataclasses.replace(self, outcomes=self.outcomes[:n], answers=self.answers[: n * ANSWER_DIGEST_CHARS])

    def extended(self, more: Evidence, *, counted_tokens: int, decode_time_s: float, row_forwards: int,
                 attended_pairs: int) -> LedgerState:
        """The ledger with the next items' evidence and cost appended. Answers are kept only while they cover
        every item (a ledger stored before answers were stores none, and an accuracy study needs none)."""
        whole = len(self.answers) == self.n * ANSWER_DIGEST_CHARS
        return LedgerState(
            outcomes=self.outcomes + bits(more.outcomes), counted_tokens=self.counted_tokens + counted_tokens,
            decode_time_s=self.decode_time_s + decode_time_s, row_forwards=self.row_forwards + row_forwards,
            attended_pairs=self.attended_pairs + attended_pairs,
            answers=self.answers + join_answers(more.answers) if whole else self.answers)

    @property
    def accuracy(self) -> float:
        return self.outcomes.count("1") / self.n if self.n else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.counted_tokens / self.decode_time_s if self.decode_time_s > 0 else 0.0

    def bools(self, n: int | None = None) -> list[bool]:
        return [o == "1" for o in self.outcomes[:n]]


@dataclass(frozen=True)
class Extension:
    """A finished trial's evidence after finishing raced it further (tuner.verdict.finishing): on more items, and
    `complete` when it earned the whole pool (a candidate for the pick then, as a trial racing resolved)."""

    evidence: Evidence
    complete: bool


@dataclass(frozen=True)
class BaselineSummary:
    """What `show` and `export` print of the baseline: its trial, reference and accuracy on the ledger."""

    reference: str | None = None
    accuracy: float | None = None
    n: int | None = None
    trial: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class SpeedAnchor:
    """The timing reference's quiet probe time that puts every trial of a study on one speed scale."""

    reference: str
    probe: list[str]
    time_s: float
    trial: int | None = None
    source: str = ""
    machine_key: str = ""
    created: str = ""


def stored_spec(user_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The spec a study recorded (from a study's or a study summary's user attributes); None before specs were."""
    spec = user_attrs.get(_SPEC)
    return spec if isinstance(spec, dict) else None


class StudyRecord:
    """Typed reads and writes of what a study stores beside its trials."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study

    def _get(self, key: str) -> Any:
        return self.study.user_attrs.get(key)

    # --- set-up
    @property
    def spec(self) -> dict[str, Any] | None:
        return stored_spec(self.study.user_attrs)

    @property
    def spec_fingerprint(self) -> str | None:
        return self._get(_SPEC_FINGERPRINT)

    def record_spec(self, spec: dict[str, Any], fingerprint: str) -> None:
        self.study.set_user_attr(_SPEC, spec)
        self.study.set_user_attr(_SPEC_FINGERPRINT, fingerprint)

    @property
    def initialized(self) -> bool:
        return bool(self._get(_INITIALIZED))

    def mark_initialized(self) -> None:
        self.study.set_user_attr(_INITIALIZED, True)

    def take_worker_indices(self, count: int) -> int:
        """The first of `count` fresh worker indices (call under the study lock)."""
        first = int(self._get(_WORKERS_STARTED) or 0)
        self.study.set_user_attr(_WORKERS_STARTED, first + max(1, count))
        return first

    # --- tracking
    @property
    def parent_run_id(self) -> str | None:
        return self._get(_PARENT_RUN)

    def set_parent_run_id(self, run_id: str) -> None:
        if self.parent_run_id != run_id:
            self.study.set_user_attr(_PARENT_RUN, run_id)

    # --- the baseline
    @property
    def baseline(self) -> BaselineSummary | None:
        raw = self._get(_BASELINE)
        return BaselineSummary(**{k: raw.get(k) for k in ("reference", "accuracy", "n", "trial")}) if raw else None

    def set_baseline(self, summary: BaselineSummary) -> None:
        self.study.set_user_attr(_BASELINE, summary.to_dict())

    @property
    def own_ledger(self) -> LedgerState | None:
        """The ledger a study kept in itself before ledgers were shared (`shared_ledger`), if any."""
        raw = self._get(_LEDGER)
        return LedgerState(**raw) if raw else None

    def set_own_ledger(self, state: LedgerState) -> None:
        """A ledger kept in the study itself (tests and replays that run without a shared store)."""
        self.study.set_user_attr(_LEDGER, dataclasses.asdict(state))

    @property
    def ledger_key(self) -> str | None:
        """The key of the shared ledger (tuner.storage.shared_ledger) that holds this study's baseline evidence."""
        return self._get(_LEDGER_KEY)

    def set_ledger_key(self, key: str) -> None:
        if self.ledger_key != key:
            self.study.set_user_attr(_LEDGER_KEY, key)

    # --- finishing: trials raced further after the study (Optuna can't write a finished trial's attributes)
    def extensions(self) -> dict[int, Extension]:
        return {int(number): Extension(Evidence(unbits(raw[_OUTCOMES]), split_answers(raw[_ANSWERS])),
                                       bool(raw[_COMPLETE]))
                for number, raw in (self._get(_FINISHED) or {}).items()}

    def set_extension(self, number: int, extension: Extension) -> None:
        stored = dict(self._get(_FINISHED) or {})
        stored[str(number)] = {_OUTCOMES: bits(extension.evidence.outcomes),
                               _ANSWERS: join_answers(extension.evidence.answers), _COMPLETE: extension.complete}
        self.study.set_user_attr(_FINISHED, stored)

    # --- export
    def export_stages(self, key: str) -> Evidence | None:
        """The pick's test evidence a staged confirmation stored under `key` (pick, model, split, design)."""
        raw = (self._get(_EXPORT_STAGES) or {}).get(key)
        return Evidence(unbits(raw[_OUTCOMES]), split_answers(raw[_ANSWERS])) if raw else None

    def set_export_stages(self, key: str, evidence: Evidence) -> None:
        stored = dict(self._get(_EXPORT_STAGES) or {})
        stored[key] = {_OUTCOMES: bits(evidence.outcomes), _ANSWERS: join_answers(evidence.answers)}
        self.study.set_user_attr(_EXPORT_STAGES, stored)

    # --- timing
    @property
    def speed_anchor(self) -> SpeedAnchor | None:
        raw = self._get(_SPEED_ANCHOR)
        return SpeedAnchor(**raw) if raw else None

    def set_speed_anchor(self, anchor: SpeedAnchor) -> None:
        self.study.set_user_attr(_SPEED_ANCHOR, dataclasses.asdict(anchor))


# ------------------------------------------------------------------------------------ a profile's meta
@dataclass(frozen=True)
class TestFigures:
    """The held-out confirmation: both configurations' metrics on the test items, the declared rule's verdict with
    its numbers, an exact McNemar test, and the speed-ups."""

    pick: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)  # its metrics, and `reused_from` when stored earlier
    non_inferiority: dict[str, Any] = field(default_factory=dict)  # tuner.verdict.selection.Confirmation.rule()
    paired_test: dict[str, Any] = field(default_factory=dict)
    sequential: dict[str, Any] | None = None  # the staged design, its looks, the items decoded (tuner.verdict.sequential)
    speedup_tokens_per_s: float | None = None  # the study's robust figures on validation
    speedup_test_decode: float | None = None  # this export's own test decode

    @property
    def reused_baseline(self) -> str | None:
        """When the baseline's test figures were decoded, if an earlier export of the study stored them."""
        return self.baseline.get("reused_from")


@dataclass(frozen=True)
class BaselineProvenance:
    name: str
    config: dict[str, Any]


@dataclass(frozen=True)
class StudyProvenance:
    name: str | None = None
    storage: str | None = None
    trial: int | None = None
    pick: str | None = None
    pick_rule: str | None = None
    reference: str | None = None  # the reference the pick is, if it is one
    spec_fingerprint: str | None = None
    finishing: dict[str, Any] | None = None  # the open trials export raced before its pick (tuner.verdict.finishing)
    baseline: BaselineProvenance | None = None


@dataclass(frozen=True)
class ProfileMeta:
    """A profile's `meta` block (field order = the file's)."""

    created: str | None = None
    tuner_version: str | None = None
    confirmed: bool = False
    forced: bool = False
    promise: str | None = None  # what the profile keeps, in words (`Constraint.rule`)
    model: dict[str, Any] = field(default_factory=dict)  # id and `decoder.loading.inspect_checkpoint` provenance
    task: dict[str, Any] = field(default_factory=dict)  # name, options, and both splits' sizes, hashes, sources
    study: StudyProvenance = field(default_factory=StudyProvenance)
    validation: dict[str, Any] = field(default_factory=dict)  # the pick's trial metrics on validation
    test: TestFigures = field(default_factory=TestFigures)
    hardware: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls, raw: Mapping[str, Any]) -> ProfileMeta:
        """A stored `meta` block (keys it lacks read as empty; keys it has beyond these are dropped)."""
        plain = {k: raw[k] for k in _META_FIELDS - {"study", "test"} if k in raw}
        study = dict(raw.get("study") or {})
        base = study.get(_STUDY_BASELINE)
        study = {k: v for k, v in study.items() if k in _STUDY_FIELDS}
        return cls(**plain, study=StudyProvenance(**study, baseline=BaselineProvenance(**base) if base else None),
                   test=TestFigures(**{k: v for k, v in (raw.get("test") or {}).items() if k in _TEST_FIELDS}))


_STUDY_BASELINE = "baseline"
_STUDY_FIELDS = {f.name for f in dataclasses.fields(StudyProvenance)} - {_STUDY_BASELINE}
_META_FIELDS = {f.name for f in dataclasses.fields(ProfileMeta)}
_TEST_FIELDS = {f.name for f in dataclasses.fields(TestFigures)}
