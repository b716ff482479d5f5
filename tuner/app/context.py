"""What `run`, `eval`, `export`, `show` and the workers share: where the study and the tracking live, and the
wiring from a spec to its task, items, model and evaluator.

Every command builds one `Context` from its spec and options and asks it for what it needs; each part is built on
first use, so `show` never loads a model and a bad storage URL fails before anything expensive.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..base.errors import TunerError
from ..base.urls import DEFAULT_STORAGE, redact_url
from ..study.spec import StudySpec

if TYPE_CHECKING:  # pragma: no cover - typing only
    import optuna

    from ..storage.resilience import ResilientRDBStorage
    from ..study.evaluate import Evaluator
    from ..tasks import Item, Task
    from ..tracking import Tracker


class NoStudyError(TunerError):
    """The study a command reads (`show`, `export`) isn't in the storage."""


@dataclass(frozen=True)
class Options:
    """Where things are, shared by every command: the study database, the tracking store, the study's name (None:
    derived from the spec, so re-running resumes), the device and the local benchmark data."""

    storage: str = DEFAULT_STORAGE
    tracking_uri: str | None = None
    study_name: str | None = None
    device: str | None = None
    data_dir: str | None = None
    compile: bool = False  # the decoder's fused path (`load_model(compile=True)`)


def experiment_name(spec: StudySpec) -> str:
    """The MLflow experiment of a task's studies."""
    return f"dtune-{spec.task_label}"


def load_task(spec: StudySpec, data_dir: str | None) -> Task:
    """The spec's task with its options (few-shot count included)."""
    from ..tasks import get_task

    options: dict[str, Any] = dict(spec.task_options)
    if spec.few_shot is not None:
        options["num_fewshot"] = spec.few_shot
    return get_task(spec.task, data_dir=data_dir, **options)


class Context:
    """One command's wiring from a spec and its options; each part is built on first use and kept."""

    def __init__(self, spec: StudySpec, options: Options) -> None:
        self.spec, self.options = spec, options
        self._found_name: str | None = None  # the study `load_study` found under another name
        self.checked: set[str] = set()  # the pre-flight checks already passed (tuner.app.preflight)
        self._studies: dict[bool, optuna.Study] = {}  # `load_study`'s, by write access

    @property
    def study_name(self) -> str:
        from ..study.lifecycle import default_study_name

        return self.options.study_name or self._found_name or default_study_name(self.spec)

    @property
    def experiment(self) -> str:
        return experiment_name(self.spec)

    # ----------------------------------------------------------------------------------------- data
    @functools.cached_property
    def task(self) -> Task:
        return load_task(self.spec, self.options.data_dir)

    def items(self, split: str) -> list[Item]:
        """The items a split contributes: the first `validation_size` / `test_size` of it (None = all)."""
        items = self.task.load(split)
        size = self.spec.validation_size if split == "validation" else self.spec.test_size
        return items if size is None else items[:size]

    def check_sandbox(self) -> None:
        """A code task runs model-written programs only inside bubblewrap (or the explicit opt-in): refuse at once,
        before any model loads, where that can't be done (tuner.sandbox.SandboxError, one line)."""
        if getattr(self.task, "needs_sandbox", False):
            from ..sandbox import require_isolation

            require_isolation()

    # ---------------------------------------------------------------------------------------- model
    def check_device(self) -> None:
        """The device string, checked at once (`tpu9`, CUDA where there is none)."""
        from decoder.loading import resolve_device

        resolve_device(self.options.device)

    def check_model(self) -> dict[str, Any]:
        """`model_source`, for the commands that check it before their work starts (after the data: fetching a
        checkpoint from the hub costs more than reading a split)."""
        return self.model_source

    @functools.cached_property
    def model_source(self) -> dict[str, Any]:
        """The spec's checkpoint checked without building the model (the device string, config.json, intact
        weight files, a chat template when the spec asks for one) and its provenance (id, revision,
        fingerprint): a bad model or device fails here, in one line, before any split is decoded."""
        from pathlib import Path

        from decoder.errors import ConfigError
        from decoder.loading import inspect_checkpoint, load_tokenizer, resolve_device

        resolve_device(self.options.device)
        source = inspect_checkpoint(self.spec.model)
        if self.spec.chat_template and not getattr(load_tokenizer(Path(source["path"])), "chat_template", None):
            raise ConfigError(f"the tokenizer of {self.spec.model} has no chat template: set chat_template: false "
                              "(--set chat_template=false)")
        return source

    @functools.cached_property
    def model_and_tokenizer(self) -> tuple[Any, Any]:
        from decoder import load_model

        return load_model(self.spec.model, device=self.options.device, compile=self.options.compile)

    @property
    def model(self) -> Any:
        return self.model_and_tokenizer[0]

    @functools.cached_property
    def evaluator(self) -> Evaluator:
        from ..study.evaluate import Evaluator

        model, tokenizer = self.model_and_tokenizer
        return Evaluator(model, tokenizer, self.task, chat_template=self.spec.chat_template,
                         batch_size=self.spec.batch_size)

    def baseline_key(self, split: str) -> str:
        """The key of the shared baseline ledger of `split` (tuner.study.baseline.baseline_key): the model's
        fingerprint, the whole split's content, the prompt and baseline settings."""
        from ..study.baseline import baseline_key

        config = self.spec.reference_config(self.spec.reference(self.spec.constraint.baseline))
        return baseline_key(self.spec, config, self.model_source.get("fingerprint"),
                            self.task.split_info(split).content_hash)

    # ------------------------------------------------------------------------------------- services
    def check_services(self, *, create: bool = True, write: bool = True) -> None:
        """The study database and the tracking store checked without creating anything in either (a foreign or
        read-only database, an unreachable server, a missing folder): one line before any data or model."""
        from ..storage.database import check_storage
        from ..storage.errors import EmptyStorageError

        try:
            check_storage(self.options.storage, create=create, write=write)
        except EmptyStorageError:
            raise self._no_study() from None
        if self.options.tracking_uri:
            from ..tracking.store import check_reachable  # imports MLflow: after the cheaper check

            check_reachable(self.options.tracking_uri, retries=1, backoff_s=0.5)

    def open_storage(self, **kwargs: Any) -> ResilientRDBStorage:
        """The study database (`tuner.storage.database.open_storage`; raises StorageError with one line)."""
        from ..storage.database import open_storage

        return open_storage(self.options.storage, **kwargs)

    def open_tracker(self) -> Tracker:
        """The study's MLflow experiment (raises TrackingError with one line when the store can't be used)."""
        from ..tracking import Tracker

        return Tracker.open(self.options.tracking_uri, self.experiment)

    def load_study(self, *, write: bool = False) -> optuna.Study:
        """The existing study of this spec (`find_study`), loaded once per access mode."""
        if write not in self._studies:
            self._studies[write] = self.find_study(write=write)
        return self._studies[write]

    def find_study(self, *, write: bool = False) -> optuna.Study:
        """The existing study of this spec (for `show`, and `export` with `write`: it stores the baseline's test
        figures); NoStudyError if there is none. Creates no database, file or table on the way.

        Without `--study-name` the name is derived from the spec, and `run`'s shortcuts (`--validation-size`,
        `--batch-size`, `--sampler`, `--seed`) change it while `show` and `export` have no such options. So when
        no study has the derived name, the one study of this task and model whose recorded spec differs from this
        one in those fields only is used (said on stderr); several such studies are listed, with `--study-name`.
        """
        import optuna

        from ..storage.errors import EmptyStorageError
        from ..storage.record import stored_spec

        try:
            storage = self.open_storage(create=False, write=write)
        except EmptyStorageError:
            raise self._no_study() from None
        try:
            return optuna.load_study(study_name=self.study_name, storage=storage)
        except KeyError:
            pass
        where = redact_url(self.options.storage)
        if self.options.study_name:
            raise NoStudyError(f"no study {self.study_name!r} in {where}; check --study-name and --storage") from None
        from ..study.lifecycle import default_study_name

        prefix = default_study_name(self.spec).rsplit("-", 1)[0] + "-"
        summaries = [s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
                     if s.study_name.startswith(prefix)]
        mine = _comparable(self.spec.to_dict())
        matches = [s for s in summaries if _comparable(stored_spec(s.user_attrs) or {}) == mine]
        if len(matches) == 1:
            found = matches[0]
            recorded = stored_spec(found.user_attrs) or {}
            differs = _run_options(recorded, self.spec.to_dict())
            import sys

            self._found_name = found.study_name
            adopted = self._adopt(recorded)
            also = f" ({', '.join(f'{k} {v}' for k, v in adopted.items())} used here too)" if adopted else ""
            print(f"study {found.study_name!r}: the study of this spec {differs}{also}", file=sys.stderr)
            return optuna.load_study(study_name=found.study_name, storage=storage)
        if matches:
            listed = "; ".join(f"{s.study_name} ({_run_options(stored_spec(s.user_attrs) or {}, self.spec.to_dict())})"
                               for s in matches)
            raise NoStudyError(f"no study {self.study_name!r} in {where}, but {len(matches)} studies of this spec run "
                               f"with other options: {listed}; pick one with --study-name") from None
        others = ", ".join(s.study_name for s in summaries)
        if not others:
            raise self._no_study() from None
        raise NoStudyError(f"no study {self.study_name!r} in {where} (other studies of {self.spec.task} on this "
                           f"model, from other specs: {others}; pick one with --study-name, or pass the same --set "
                           "options as its run)") from None

    def _adopt(self, recorded: dict[str, Any]) -> dict[str, Any]:
        """Take the found study's batch size and validation pool (run options `export` has no flag for): the test
        split is then decoded as the study's validation was, so the baseline's test ledger is the one the run's plan
        counted, and finishing races over the study's own pool. Before any decoding is wired (the evaluator)."""
        import dataclasses

        if "evaluator" in self.__dict__:
            return {}
        fields = {k: recorded[k] for k in _DECODE_RUN_FIELDS if k in recorded and recorded[k] != getattr(self.spec, k)}
        if fields:
            self.spec = dataclasses.replace(self.spec, **fields)
        return fields

    def _no_study(self) -> NoStudyError:
        return NoStudyError(f"no study {self.study_name!r} in {redact_url(self.options.storage)}; run `python -m "
                            f"tuner run --task {self.spec.task}` first (or pass --study-name and --storage)")


# The spec fields `run` has shortcut options for (`--trials`, `--validation-size`, ...) that `show` and `export`
# lack, plus what the study name ignores anyway.
_RUN_FIELDS = ("trials", "validation_size", "batch_size", "sampler", "seed", "test_size", "description")
_DECODE_RUN_FIELDS = ("batch_size", "validation_size")  # of those, what changes what a command decodes


def _comparable(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The spec without those fields, in its stored (JSON) form."""
    import json

    return json.loads(json.dumps({k: v for k, v in spec.items() if k not in _RUN_FIELDS}, default=str)) if spec else None


def _run_options(stored: dict[str, Any], mine: dict[str, Any]) -> str:
    """How a study's recorded spec differs from this one in `run`'s option fields, as options."""
    diff = [f"--{k.replace('_', '-')} {stored.get(k)}" for k in _RUN_FIELDS[:5]
            if k != "trials" and stored.get(k) != mine.get(k)]
    return "run with " + " ".join(diff) if diff else "run with the same options"
