"""lm-evaluation-harness tasks in dtune (`--task path/to/task.yaml`, `--task lm-eval:NAME`), judged against lm-eval
itself on the same documents: the same prompts as its `build_all_requests`, the same verdicts as its filters and
`process_results`; the example task scores exactly as the built-in `arith` on the tiny model's real completions;
the stable hash split; and every bad input refused as one line naming the file and the key or line."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval")

from decoder import encode_prompt  # noqa: E402
from decoder.loading import load_tokenizer, resolve_checkpoint  # noqa: E402
from tuner.tasks import TaskError, get_task  # noqa: E402
from tuner.tasks.arith import ArithTask  # noqa: E402
from tuner.tasks.base import cut_at  # noqa: E402
from tuner.tasks.checks import check_prompt_lengths  # noqa: E402
from tuner.tasks.lm_eval_task import LmEvalTask  # noqa: E402
from tuner.tasks.registry import task_source  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
EXAMPLE = EXAMPLES / "arith.yaml"
COMPLETIONS = Path(__file__).parent / "fixtures" / "arith_completions.jsonl"
GSM8K_DATA = Path(__file__).parent / "fixtures" / "data" / "gsm8k"
LM_EVAL_GSM8K = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"


@pytest.fixture(scope="module")
def example() -> LmEvalTask:
    return get_task(str(EXAMPLE))


@pytest.fixture(scope="module")
def completions() -> list[dict]:
    return [json.loads(line) for line in COMPLETIONS.read_text().splitlines()]


def lm_eval_run(manager, name: str, completions: dict[int, str]) -> tuple[list[str], list[dict]]:
    """lm-eval's own evaluation of `completions` (doc index -> generation) as its evaluator runs it: prompts from
    `build_all_requests` (few-shot seed 1234), each generation cut at `until` (as its models return them), then
    `apply_filters` and `process_results` per filter. Returns the prompts and the per-document results."""
    from lm_eval.tasks import TaskManager  # noqa: F401 - the manager's type

    task = manager.load([name])["tasks"][name]
    task.set_fewshot_seed(seed=1234)
    task.build_all_requests()
    until = task.config.generation_kwargs["until"]
    for instance in task.instances:
        instance.resps.append(cut_at(completions.get(instance.doc_id, ""), until))
    task.apply_filters()
    prompts, results = [], []
    for instance in sorted(task.instances, key=lambda i: i.doc_id):
        prompts.append(instance.arguments[0])
        results.append({key: {"filtered": value, **task.process_results(instance.doc, [value])}
                        for key, value in instance.filtered_resps.items()})
    return prompts, results


# ------------------------------------------------------------------------------------- the must-shows
def test_the_example_scores_exactly_as_builtin_arith_on_the_tiny_models_completions(example, completions):
    """Same items (every example document is a built-in arith problem, with the same prompt), same verdicts and the
    same answer keys on 1,300 real completions of the bundled tiny model (tools/example_data.py)."""
    builtin = ArithTask()
    builtin_items = {it.data["question"]: it for split in ("validation", "test") for it in builtin.load(split)}
    items = {it.data["question"]: it for split in ("validation", "test") for it in example.load(split)}
    assert set(items) == set(builtin_items) and len(items) == 1000
    for question, item in items.items():
        assert example.prompt(item) == builtin.prompt(builtin_items[question])
    ours = example.score_batch([items[c["question"]] for c in completions], [c["completion"] for c in completions])
    for c, mine in zip(completions, ours, strict=True):
        theirs = builtin.score(builtin_items[c["question"]], c["completion"])
        assert mine.correct == theirs.correct, c
        assert example.answer(items[c["question"]], c["completion"]) == builtin.answer(
            builtin_items[c["question"]], c["completion"])
    verdicts = Counter((c["setting"], r.correct) for c, r in zip(completions, ours, strict=True))
    print(f"\n{len(ours)} completions, verdicts equal on all; right/wrong per setting: {dict(verdicts)}")
    assert all(verdicts[(s, v)] >= 20 for s in ("streaming-tau0.5", "streaming-tau0.3") for v in (True, False))


def test_the_example_matches_lm_evals_own_evaluation(example, completions, monkeypatch):
    """lm-eval loads the example from its folder (`TaskManager(include_path=examples)`, its data file named relative
    to the working directory, as lm-eval reads it): the same prompts, filtered answers and verdicts per document."""
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(EXAMPLES)
    by_question = {c["question"]: c["completion"] for c in completions if c["setting"] == "streaming-tau0.3"}
    items = {int(it.id.rsplit("/", 1)[1]): it for split in ("validation", "test") for it in example.load(split)}
    generations = {doc: by_question.get(item.data["question"], " no answer") for doc, item in items.items()}
    prompts, results = lm_eval_run(TaskManager(include_path=str(EXAMPLES), include_defaults=False), "arith_example",
                                   generations)
    assert len(prompts) == len(items) == 1000
    ours = example.score_batch([items[d] for d in range(1000)], [generations[d] for d in range(1000)])
    for doc, (prompt, theirs, mine) in enumerate(zip(prompts, results, ours, strict=True)):
        assert example.prompt(items[doc]) == prompt
        assert mine.correct == bool(theirs["strict-match"]["exact_match"])
        assert mine.extracted == theirs["strict-match"]["filtered"]


# --------------------------------------------------------------- a few-shot task with two filters, via include
@pytest.fixture(scope="module")
def gsm8k_dir(tmp_path_factory) -> Path:
    """lm-eval's own gsm8k.yaml (included, unchanged) over the GSM8K fixture records: 3-shot from train, a validation
    split of 12 test records and a test split of the other 20."""
    folder = tmp_path_factory.mktemp("gsm8k-local")
    test = (GSM8K_DATA / "test.jsonl").read_text().splitlines(keepends=True)
    (folder / "validation.jsonl").write_text("".join(test[:12]))
    (folder / "test.jsonl").write_text("".join(test[12:]))
    shutil.copy(GSM8K_DATA / "train.jsonl", folder / "train.jsonl")
    (folder / "gsm8k_local.yaml").write_text(
        f"include: {LM_EVAL_GSM8K}\ntask: gsm8k_local\ndataset_path: json\ndataset_name: null\n"
        "dataset_kwargs:\n  data_files: {train: train.jsonl, validation: validation.jsonl, test: test.jsonl}\n"
        "validation_split: validation\nnum_fewshot: 3\n")
    return folder


def _gsm8k_completions(docs: list[dict]) -> dict[int, str]:
    """Right, wrong, strict-only-wrong (flexible right) and over-long generations, in turn."""
    out = {}
    for i, doc in enumerate(docs):
        answer = doc["answer"]
        number = answer.split("#### ")[-1]
        out[i] = [f" {answer}", f" {answer[:-len(number)]}{number}1", f" so it is {number}.",
                  f" {answer}\n\nQuestion: next #### 0", "I don't know."][i % 5]
    return out


@pytest.mark.parametrize("split", ["test", "validation"])
def test_a_few_shot_task_with_two_filters_matches_lm_eval(gsm8k_dir, split, monkeypatch):
    from lm_eval.tasks import TaskManager

    task = get_task(str(gsm8k_dir / "gsm8k_local.yaml"))
    assert task.stop_sequences == ["Question:", "</s>", "<|im_end|>"] and task.default_gen_length == 256
    assert task.filter == "strict-match" and task.metric == "exact_match"
    items = task.load(split)
    assert len(items) == (20 if split == "test" else 12)
    assert "lm-eval's" in task.source_description(split) and "hash" not in task.source_description(split)
    assert task.notices() == []
    generations = _gsm8k_completions([it.data for it in items])
    monkeypatch.chdir(gsm8k_dir)
    if split == "validation":  # lm-eval evaluates its test split: the same task with the validation split as it
        (gsm8k_dir / "as_validation.yaml").write_text(
            (gsm8k_dir / "gsm8k_local.yaml").read_text().replace("task: gsm8k_local", "task: gsm8k_as_validation")
            + "test_split: validation\n")
    name = "gsm8k_local" if split == "test" else "gsm8k_as_validation"
    prompts, results = lm_eval_run(TaskManager(include_path=str(gsm8k_dir), include_defaults=False), name,
                                   generations)
    flexible = LmEvalTask(task.lm_task, task.source, filter="flexible-extract")
    ours = task.score_batch(items, [generations[i] for i in range(len(items))])
    theirs_flexible = flexible.score_batch(items, [generations[i] for i in range(len(items))])
    for i, item in enumerate(items):
        assert task.prompt(item) == prompts[i] and task.prompt(item).count("Question:") == 4  # 3 shots + the item
        assert ours[i].correct == bool(results[i]["strict-match"]["exact_match"])
        assert theirs_flexible[i].correct == bool(results[i]["flexible-extract"]["exact_match"])
        assert task.answer(item, generations[i]) == results[i]["strict-match"]["filtered"]
        assert flexible.answer(item, generations[i]) == results[i]["flexible-extract"]["filtered"]
    assert {r.correct for r in ours} == {True, False} and sum(r.correct for r in theirs_flexible) > sum(
        r.correct for r in ours)


def test_without_an_extraction_filter_the_answer_is_the_cut_completion(gsm8k_dir):
    text = (gsm8k_dir / "gsm8k_local.yaml").read_text()
    (gsm8k_dir / "no_filter.yaml").write_text(text.replace("task: gsm8k_local", "task: gsm8k_no_filter")
                                              + "filter_list: null\n")
    task = get_task(str(gsm8k_dir / "no_filter.yaml"))
    item = task.load("test")[0]
    assert task.filter == "none"
    assert task.answer(item, "  It is\n 42.\nQuestion: more") == "It is 42."
    assert task.score(item, item.data["answer"]).correct  # exact_match on the whole answer, as lm-eval


# ------------------------------------------------------------------------------------------ the hash split
def test_the_hash_split_is_stable_disjoint_and_complete(example, tmp_path):
    val, test = example.load("validation"), example.load("test")
    assert not {i.id for i in val} & {i.id for i in test}
    assert sorted(int(i.id.rsplit("/", 1)[1]) for i in val + test) == list(range(1000))
    assert 400 < len(val) < 600
    note = example.source_description("test")
    assert "no validation split" in note and "stable hash" in note and "not comparable" in note
    assert example.notices() == [f"{EXAMPLE} has no validation split: dtune divided its test split by a stable hash "
                                 f"(validation {len(val)}, test {len(test)}); test numbers are not lm-eval's "
                                 "full-split numbers"]
    again = get_task(str(EXAMPLE))
    assert again.split_info("validation") == example.split_info("validation")
    # More documents (appended, then the file reversed) leave every earlier document on its side.
    lines = (EXAMPLES / "arith.jsonl").read_text().splitlines(keepends=True)
    extra = [json.dumps({**json.loads(line), "question": json.loads(line)["question"] + " (again)"}) + "\n"
             for line in lines[:200]]
    (tmp_path / "arith.jsonl").write_text("".join(reversed(lines + extra)))
    shutil.copy(EXAMPLE, tmp_path / "arith.yaml")
    grown = get_task(str(tmp_path / "arith.yaml"))
    for split in ("validation", "test"):
        before = {i.data["question"] for i in example.load(split)}
        after = {i.data["question"] for i in grown.load(split)}
        assert before <= after
    reseeded = get_task(str(EXAMPLE), seed=5)
    assert {i.id for i in reseeded.load("test")} != {i.id for i in test}


def test_task_sources_and_the_data_file_next_to_the_yaml(example, monkeypatch, tmp_path):
    assert task_source("examples/arith.yaml") == "lm-eval-file" and task_source("x.YML") == "lm-eval-file"
    assert task_source("lm-eval:gsm8k") == "lm-eval" and task_source("p.jsonl") == "prompts"
    assert task_source("arith") == task_source("gsm8k") == "builtin"
    monkeypatch.chdir(tmp_path)  # the data file is found next to the YAML from any working directory
    item = get_task(str(EXAMPLE)).load("test")[0]
    assert example.locate(item) == f"{EXAMPLE}: test document {item.id.rsplit('/', 1)[1]} (arith.jsonl line " \
                                   f"{int(item.id.rsplit('/', 1)[1]) + 1})"


# --------------------------------------------------------------------------------------------- bad input
@pytest.fixture
def workdir(tmp_path) -> Path:
    shutil.copy(EXAMPLES / "arith.jsonl", tmp_path / "arith.jsonl")
    return tmp_path


def variant(folder: Path, old: str, new: str, name: str = "task.yaml") -> Path:
    text = EXAMPLE.read_text()
    assert old in text, old
    path = folder / name
    path.write_text(text.replace(old, new))
    return path


def data_variant(folder: Path, change) -> None:
    lines = (folder / "arith.jsonl").read_text().splitlines()
    change(lines)
    (folder / "arith.jsonl").write_text("\n".join(lines) + "\n")


def line_of(path: Path, key: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(f"{key}:"))


def refused(path: Path | str, *fragments: str) -> str:
    with pytest.raises(TaskError) as err:
        get_task(str(path))
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_yaml_that_is_not_a_task(workdir):
    spec = REPO / "tuner" / "studies" / "arith.yaml"
    refused(spec, f"{spec}: a dtune study spec, not an lm-eval task; pass it with --spec")
    (workdir / "compose.yaml").write_text("services:\n  web:\n    image: nginx\n")
    refused(workdir / "compose.yaml", "compose.yaml: not an lm-eval task: it has no `task:` key (its keys: services)")
    (workdir / "list.yaml").write_text("- a\n- b\n")
    refused(workdir / "list.yaml", "list.yaml: not an lm-eval task (a task YAML holds a mapping of keys")
    (workdir / "group.yaml").write_text("group: my_group\ntask: [arith_example]\n")
    refused(workdir / "group.yaml", "group.yaml: an lm-eval group (group (line 1): my_group)")
    (workdir / "broken.yaml").write_text("task: x\ndoc_to_text: \"unclosed\n  more: [\n")
    refused(workdir / "broken.yaml", "broken.yaml line ", "not valid YAML")


@pytest.mark.parametrize("output_type", ["multiple_choice", "loglikelihood"])
def test_a_multiple_choice_or_loglikelihood_task(workdir, output_type):
    path = variant(workdir, "output_type: generate_until", f"output_type: {output_type}")
    refused(path, f"task.yaml: output_type (line {line_of(path, 'output_type')}): {output_type}; dtune tunes "
                  "generation and needs output_type: generate_until")


@pytest.mark.parametrize(("key", "message"), [
    ("doc_to_text", "no `doc_to_text:` key; a generate_until task needs"),
    ("doc_to_target", "no `doc_to_target:` key"),
    ("dataset_path", "no `dataset_path:` key"),
    ("test_split", "no `test_split:` (nor `validation_split:`) key"),
])
def test_a_generate_until_key_missing(workdir, key, message):
    line = next(line for line in EXAMPLE.read_text().splitlines() if line.startswith(f"{key}:"))
    refused(variant(workdir, line + "\n", ""), f"task.yaml: {message}")


def test_other_keys_dtune_cannot_use(workdir):
    refused(variant(workdir, "num_fewshot: 0", "num_fewshot: 0\nunsafe_code: true"), "unsafe_code (line ",
            "use dtune's sandboxed humaneval or mbpp")
    refused(variant(workdir, "num_fewshot: 0", "num_fewshot: 0\nrepeats: 4"), "repeats (line ", "repeats: 1")
    refused(variant(workdir, "  max_gen_toks: 128", "  max_gen_toks: lots"), "generation_kwargs (line ",
            "max_gen_toks must be a positive integer")
    refused(variant(workdir, "  - metric: exact_match", "  - metric: bleu"), "metric_list (line ", "bleu",
            "exact_match")
    refused(variant(workdir, "test_split: test", "test_split: validation"),
            "test_split (line ", "validation, but dataset_kwargs.data_files (line ", "has the split(s) test")


def test_a_key_lm_eval_does_not_know_and_a_broken_template(workdir):
    path = variant(workdir, "num_fewshot: 0", "num_fewshot: 0\nfewshot_sploit: train")
    refused(path, f"task.yaml: fewshot_sploit (line {line_of(path, 'fewshot_sploit')}): not a key of an lm-eval task")
    path = variant(workdir, "{{question}}", "{{question}")
    refused(path, f"task.yaml: doc_to_text (line {line_of(path, 'doc_to_text')}) is not valid Jinja")


def test_a_template_naming_a_field_the_data_lacks(workdir):
    path = variant(workdir, "{{question}}", "{{questoin}}")
    refused(path, f"task.yaml: doc_to_text (line {line_of(path, 'doc_to_text')}) names the field 'questoin', which "
                  "the documents lack")
    data_variant(workdir, lambda lines: lines.__setitem__(6, json.dumps({"answer": "#### 3", "target": "3"})))
    path = variant(workdir, "task: arith_example", "task: arith_example")
    refused(path, "task.yaml: test document 6 (arith.jsonl line 7): no value for the field 'question' that "
                  f"doc_to_text (line {line_of(path, 'doc_to_text')}) reads")


def test_empty_and_non_utf8_files(workdir):
    (workdir / "empty.yaml").write_text("\n \n")
    refused(workdir / "empty.yaml", "empty.yaml: the lm-eval task file is empty")
    (workdir / "latin.yaml").write_bytes(b"task: caf\xe9\n")
    refused(workdir / "latin.yaml", "latin.yaml line 1: not UTF-8 text (byte 0xe9)")
    path = variant(workdir, "task: arith_example", "task: arith_example")
    (workdir / "arith.jsonl").write_text("")
    refused(path, "task.yaml: dataset_kwargs.data_files (line ", "arith.jsonl: the data file is empty")
    data_variant(workdir, lambda lines: lines.extend(['{"question": "a"}', '{"question": "caf\\u00e9"}']))
    raw = (workdir / "arith.jsonl").read_bytes().replace(b"caf\\u00e9", b"caf\xe9")
    (workdir / "arith.jsonl").write_bytes(raw)
    refused(path, "arith.jsonl line 2: not UTF-8 text")
    (workdir / "arith.jsonl").write_text('{"question": "a"}\n{"question": \n')
    refused(path, "arith.jsonl line 2: not JSON")
    (workdir / "arith.jsonl").unlink()
    refused(path, "dataset_kwargs.data_files (line ", "arith.jsonl: no such data file")


def test_duplicated_prompts(workdir):
    data_variant(workdir, lambda lines: lines.__setitem__(9, lines[2]))
    refused(variant(workdir, "task: arith_example", "task: arith_example"),
            "(arith.jsonl line 10): the same prompt as ", "(arith.jsonl line 3); each prompt once")


def test_a_prompt_longer_than_the_model_allows(workdir):
    long = {"question": "Tom has 3 apples. " * 300 + "How many?", "answer": "#### 3", "target": "3"}
    data_variant(workdir, lambda lines: lines.__setitem__(41, json.dumps(long)))
    task = get_task(str(variant(workdir, "task: arith_example", "task: arith_example")))
    tokenizer = load_tokenizer(resolve_checkpoint("dtune/tiny-arith"))
    with pytest.raises(TaskError) as err:
        check_prompt_lengths(task, lambda p: encode_prompt(tokenizer, p), 1280 - 128)
    assert "task.yaml: test document 41 (arith.jsonl line 42): the prompt is " in str(err.value)


def test_options_are_checked(example):
    with pytest.raises(TaskError, match="no filter 'loose'; its filters: strict-match"):
        LmEvalTask(example.lm_task, example.source, filter="loose")
    with pytest.raises(TaskError, match="does not accept these options"):
        get_task(str(EXAMPLE), validation_size=10)


def test_without_lm_eval_the_error_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "lm_eval" or m.startswith("lm_eval.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    refused(EXAMPLE, "needs lm-evaluation-harness, an optional extra of dtune: pip install \"dtune[lm-eval]\"")


# -------------------------------------------------------------------------------------- lm-eval:NAME
@pytest.fixture(scope="module")
def registry():
    from tuner.tasks.lm_eval_config import registry_manager

    return registry_manager()  # the index of every task lm-eval ships: built once (seconds)


def test_registered_names_that_are_not_one_generation_task(registry):
    refused("lm-eval:gsm8kk", "lm-eval has no task 'gsm8kk'; did you mean gsm8k")
    refused("lm-eval:", "name an lm-eval task after 'lm-eval:'")
    refused("lm-eval:minerva_math", "lm-eval task minerva_math: an lm-eval group, not one task")
    refused("lm-eval:math_word_problems", "an lm-eval tag, not one task; name one of its tasks (its tasks: ")
    refused("lm-eval:arc_easy", "lm-eval task arc_easy", "output_type (line ", "multiple_choice")
    refused("lm-eval:humaneval", "unsafe_code", "sandboxed humaneval")


def test_a_registered_task_without_the_hub_fails_at_once(registry, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    message = refused("lm-eval:gsm8k", "cannot load lm-eval task gsm8k", "(dataset openai/gsm8k)",
                      "cannot be reached", "dataset_path: json")
    assert "--data-dir" not in message


def test_a_registered_task_loads_and_its_repeated_prompts_are_dropped(workdir, monkeypatch):
    """The `lm-eval:NAME` path on a task lm-eval indexes from a folder (its own data need the hub): built by name from
    lm-eval's index, and a repeat in data the user cannot fix is dropped and said, not refused."""
    from lm_eval.tasks import TaskManager

    from tuner.tasks import lm_eval_config

    data_variant(workdir, lambda lines: lines.__setitem__(9, lines[2]))
    variant(workdir, "task: arith_example", "task: arith_registered")
    monkeypatch.chdir(workdir)  # lm-eval reads the relative data file from the working directory
    monkeypatch.setattr(lm_eval_config, "_manager", TaskManager(include_path=str(workdir), include_defaults=False))
    task = get_task("lm-eval:arith_registered")
    assert task.name == "arith_registered" and task.source.registered
    assert len(task.load("validation")) + len(task.load("test")) == 999
    assert task.notices()[-1] == f"lm-eval task arith_registered ({workdir / 'task.yaml'}): 1 repeated prompt(s) " \
                                 "dropped (each prompt once)"
    assert "1 repeated prompt(s) dropped" in task.source_description("test")
