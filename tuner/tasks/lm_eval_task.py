"""Any lm-evaluation-harness generation task as a dtune :class:`Task`, prompted and scored by lm-eval itself.

Items are lm-eval's documents, prompts its ``fewshot_context`` as ``build_all_requests`` renders them, and a
verdict its own ``construct_requests`` -> ``apply_filters`` -> ``process_results`` on the completion cut at the
stop sequences: nothing that defines a verdict is re-implemented. Splits, the answer key and where dtune departs
from lm-eval: docs/tasks.md, "Your own tasks".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import Item, ScoreResult, Task, normalize_whitespace
from .errors import TaskError
from .lm_eval_config import (
    REGISTRY_PREFIX,
    Source,
    load_registered_task,
    load_yaml_task,
    quiet_lm_eval,
    template_fields,
)
from .sampling import in_validation

DEFAULT_SEED = 1234
FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_random_seed
#: lm-eval filters that pick a response without extracting anything from it.
_PASS_THROUGH_FILTERS = frozenset({"take_first"})


class LmEvalTask(Task):
    """A dtune task over one lm-eval ``generate_until`` task object; see the module docstring."""

    def __init__(
        self,
        lm_task: Any,
        source: Source,
        *,
        seed: int = DEFAULT_SEED,
        validation_fraction: float = 0.5,
        filter: str | None = None,  # noqa: A002 - lm-eval's word for it
        metric: str | None = None,
        fewshot_seed: int = FEWSHOT_SEED,
    ) -> None:
        self.data_dir = None  # lm-eval finds the data; a data_dir is irrelevant
        self._split_cache: dict[str, list[Item]] = {}
        self._cache_lock = threading.RLock()
        if not 0.0 < validation_fraction < 1.0:
            raise TaskError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
        self.lm_task, self.source = lm_task, source
        self.seed, self.validation_fraction, self.fewshot_seed = seed, validation_fraction, fewshot_seed
        config = lm_task.config
        self.name = str(config.task)  # type: ignore[misc]  # a per-task name, not the class's
        gen = config.generation_kwargs or {}
        until = gen.get("until") or []
        self._stop_sequences = tuple(u for u in ([until] if isinstance(until, str) else until) if u)  # type: ignore[misc]
        from lm_eval.defaults import DEFAULT_MAX_GEN_TOKS

        #: The generation length the task asks for (``max_gen_toks``; lm-eval's default where it names none).
        self.default_gen_length = int(gen.get("max_gen_toks") or DEFAULT_MAX_GEN_TOKS)
        self.filter, self._extracts = self._choose_filter(filter)
        self.metric = self._choose_metric(metric)
        self._score_lock = threading.Lock()
        self._prompts: dict[str, str] = {}
        self._questions: dict[str, str] = {}
        self._where: dict[str, str] = {}
        self._splits: dict[str, list[Item]] = {}
        self._description: dict[str, str] = {}
        self._notices: list[str] = []
        with quiet_lm_eval():
            self._make_splits()

    # -------------------------------------------------------------------------------------- choices
    def _choose_filter(self, name: str | None) -> tuple[str, bool]:
        """The filter whose output decides (default: the first of ``filter_list``), and whether it extracts."""
        names = [f.name for f in self.lm_task._filters]
        chosen = names[0] if name is None else name
        if chosen not in names:
            raise TaskError(f"{self.source.label}: no filter {name!r}; its filters: {', '.join(names)}")
        specs = {f.get("name"): f for f in (self.lm_task.config.filter_list or []) if isinstance(f, dict)}
        functions = [step.get("function") for step in specs.get(chosen, {}).get("filter", [])]
        return chosen, any(fn not in _PASS_THROUGH_FILTERS for fn in functions)

    def _choose_metric(self, name: str | None) -> str:
        """The metric whose value is the verdict: right/wrong per item, so exact_match or a task's own
        ``process_results`` (whose values are checked to be 0 or 1 when scoring)."""
        names = list(self.lm_task.aggregation())
        chosen = names[0] if name is None and names else name
        if chosen not in names:
            raise TaskError(f"{self.source.label}: no metric {name!r}; its metrics: {', '.join(names) or 'none'}")
        if chosen != "exact_match" and self.lm_task.config.process_results is None:
            raise TaskError(f"{self.source.label}: {self.source.key('metric_list')}: {chosen}; dtune needs a "
                            "right/wrong verdict per item: exact_match (with its options), or a process_results "
                            "function that returns 0 or 1")
        return str(chosen)

    # ----------------------------------------------------------------------------------------- data
    def _docs(self, lm_split: str) -> list[dict[str, Any]]:
        config = self.lm_task.config
        docs = self.lm_task.test_docs() if lm_split == config.test_split else self.lm_task.validation_docs()
        return list(docs)

    def _doc_location(self, lm_split: str, index: int, count: int) -> str:
        """``test document 3``, with the data file's line where one JSONL file holds the split as it is."""
        where = f"{lm_split} document {index}"
        lines = self.source.data_lines.get(lm_split)
        if lines and self.lm_task.config.process_docs is None and len(lines[1]) == count:
            where += f" ({lines[0].name} line {lines[1][index]})"
        return where

    def _render(self, lm_split: str) -> list[Item]:
        """Items of one lm-eval split with their prompts, rendered as ``build_all_requests`` renders them."""
        docs = self._docs(lm_split)
        task, config = self.lm_task, self.lm_task.config
        import jinja2

        task.set_fewshot_seed(seed=self.fewshot_seed)
        shots = 0 if config.num_fewshot is None else config.num_fewshot
        items = []
        for index, doc in enumerate(docs):
            item = Item(f"{self.name}/{lm_split}/{index}", doc)
            self._where[item.id] = self._doc_location(lm_split, index, len(docs))
            where = self.locate(item)
            for key in ("doc_to_text", "doc_to_target"):
                empty = [f for f in template_fields(getattr(config, key)) if f in doc and doc[f] is None]
                if empty:
                    raise TaskError(f"{where}: no value for the field '{empty[0]}' that "
                                    f"{self.source.key(key)} reads")
                try:
                    text = task.doc_to_text(doc) if key == "doc_to_text" else task.doc_to_target(doc)
                except jinja2.exceptions.UndefinedError as exc:
                    raise TaskError(f"{where}: {self.source.key(key)}: {exc} in this document") from None
                if key == "doc_to_text":
                    self._questions[item.id] = str(text)
            context = task.fewshot_context(doc, num_fewshot=shots, gen_prefix=task.doc_to_prefix(doc))
            if not isinstance(context, str):
                raise TaskError(f"{self.source.label}: a multiple-input task (one context per choice); dtune "
                                "needs one prompt per document")
            self._prompts[item.id] = context
            items.append(item)
        if not items:
            raise TaskError(f"{self.source.label}: its {lm_split} split has no documents")
        return items

    def _make_splits(self) -> None:
        config = self.lm_task.config
        test_split = config.test_split or config.validation_split
        val_split = config.validation_split if config.validation_split not in (None, test_split) else None
        test = self._render(test_split)
        if val_split is not None:
            validation = self._render(val_split)
            note = {"validation": f"lm-eval's {val_split} split", "test": f"lm-eval's {test_split} split"}
        else:
            pool, validation, test = test, [], []
            for item in pool:
                content = json.dumps(item.data, sort_keys=True, ensure_ascii=False, default=str)
                (validation if in_validation(content, self.seed, self.validation_fraction) else test).append(item)
            how = (f"of lm-eval's {test_split} split ({len(pool)} documents; it has no validation split, so dtune "
                   f"divided them by a stable hash, seed {self.seed}, {self.validation_fraction:.0%} to validation)")
            note = {"validation": f"the validation part {how}",
                    "test": f"the test part {how}; not comparable to lm-eval's score on the whole split"}
        validation, test, dropped = self._without_repeats(validation, test)
        for split, items in (("validation", validation), ("test", test)):
            if not items:
                raise TaskError(f"{self.source.label}: the {split} split is empty ({len(validation) + len(test)} "
                                "documents in all); give the task more documents")
        self._splits = {"validation": validation, "test": test}
        suffix = f"; {dropped} repeated prompt(s) dropped" if dropped else ""
        self._description = {split: f"{self.source.label}: {note[split]}{suffix}" for split in note}
        if val_split is None:
            self._notices.append(f"{self.source.label} has no validation split: dtune divided its {test_split} "
                                 f"split by a stable hash (validation {len(validation)}, test {len(test)}); test "
                                 "numbers are not lm-eval's full-split numbers")
        if dropped:
            self._notices.append(f"{self.source.label}: {dropped} repeated prompt(s) dropped (each prompt once)")

    def _without_repeats(self, validation: list[Item], test: list[Item]) -> tuple[list[Item], list[Item], int]:
        """Both splits with each prompt once: a repeat is refused in a task file, dropped from a registered task."""
        seen: dict[str, str] = {}
        kept: dict[str, list[Item]] = {"validation": [], "test": []}
        dropped = 0
        for split, items in (("validation", validation), ("test", test)):
            for item in items:
                question = self._questions[item.id]
                if question in seen:
                    if not self.source.registered:
                        raise TaskError(f"{self.locate(item)}: the same prompt as {seen[question]}; each prompt "
                                        "once (a repeated prompt would count twice in every comparison)")
                    dropped += 1
                    continue
                seen[question] = self._where[item.id]
                kept[split].append(item)
        return kept["validation"], kept["test"], dropped

    def _load_split(self, split: str) -> Sequence[Item]:
        return self._splits[split]

    def hash_text(self, item: Item) -> str:
        return json.dumps([self._prompts[item.id], str(self.lm_task.doc_to_target(item.data))], ensure_ascii=False)

    def source_description(self, split: str) -> str:
        return self._description[split]

    def locate(self, item: Item) -> str:
        return f"{self.source.label}: {self._where[item.id]}"

    def notices(self) -> list[str]:
        return list(self._notices)

    # ---------------------------------------------------------------------------- prompting, scoring
    def prompt(self, item: Item) -> str:
        return self._prompts[item.id]

    def _filtered(self, items: Sequence[Item], completions: Sequence[str]) -> list[dict[str, Any]]:
        """Each completion through lm-eval's filters: ``{filter name: filtered response}`` per item."""
        if len(items) != len(completions):
            raise TaskError(f"{len(items)} items but {len(completions)} completions")
        with self._score_lock:  # the filters read and write the task object's instance list
            instances = []
            for item, completion in zip(items, completions, strict=True):
                instance = self.lm_task.construct_requests(doc=item.data, ctx=self._prompts[item.id],
                                                           metadata=(self.name, 0, 1))
                instance.resps.append(self.cut(completion))  # as lm-eval's models return a generation
                instances.append(instance)
            self.lm_task._instances = instances
            self.lm_task.apply_filters()
            self.lm_task._instances = []
        return [dict(instance.filtered_resps) for instance in instances]

    def answer(self, item: Item, completion: str) -> str:
        """What the deciding filter hands the metric where it extracts (a regex's match or its ``[invalid]``),
        else the completion cut at the stop sequences, whitespace-normalised."""
        if not self._extracts:
            return normalize_whitespace(self.cut(completion))
        value = self._filtered([item], [completion])[0][self.filter]
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)

    def score(self, item: Item, completion: str) -> ScoreResult:
        return self.score_batch([item], [completion])[0]

    def score_batch(self, items: Sequence[Item], completions: Sequence[str]) -> list[ScoreResult]:
        """lm-eval's verdicts: filters over the whole batch, then ``process_results`` per item and filter."""
        results = []
        for item, filtered in zip(items, self._filtered(items, completions), strict=True):
            per_filter = {name: {"extracted": value, **self.lm_task.process_results(item.data, [value])}
                          for name, value in filtered.items()}
            chosen = per_filter[self.filter]
            value = chosen.get(self.metric)
            if value not in (0, 1):  # also True/False, 0.0/1.0
                raise TaskError(f"{self.source.label}: metric {self.metric} gave {value!r} for {item.id}; dtune "
                                "needs a right/wrong verdict (0 or 1) per item")
            extracted = chosen["extracted"]
            extracted = extracted if isinstance(extracted, str) else json.dumps(extracted, default=str)
            target = self.lm_task.doc_to_target(item.data)
            reason = None if value else f"{self.metric} {value} under filter {self.filter}: {extracted!r} vs {target!r}"
            details = {"filter": self.filter, "metric": self.metric, "target": target, "filters": per_filter}
            results.append(ScoreResult(bool(value), extracted, reason, details))
        return results

    def __repr__(self) -> str:
        return f"LmEvalTask({self.source.label!r})"


def from_yaml(path: str | Path, data_dir: str | Path | None = None, **options: Any) -> LmEvalTask:
    """The task of an lm-eval task YAML file (``data_dir`` is accepted and ignored: the YAML names its data)."""
    lm_task, source = load_yaml_task(Path(path))
    return LmEvalTask(lm_task, source, **options)


def from_registry(spec: str, data_dir: str | Path | None = None, **options: Any) -> LmEvalTask:
    """The task of a name lm-eval registers, given as ``lm-eval:NAME``."""
    name = spec[len(REGISTRY_PREFIX):] if spec.startswith(REGISTRY_PREFIX) else spec
    if not name.strip():
        raise TaskError(f"{spec!r}: name an lm-eval task after {REGISTRY_PREFIX!r} (e.g. lm-eval:gsm8k)")
    lm_task, source = load_registered_task(name.strip())
    return LmEvalTask(lm_task, source, **options)
