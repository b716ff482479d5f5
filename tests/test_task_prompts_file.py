"""Unlabelled prompts files (`--task prompts.jsonl`): the example file, the stable hash split, chats through the chat
template, and every bad input refused as one line naming the file and line, before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from decoder import encode_prompt
from decoder.errors import ConfigError
from decoder.loading import load_tokenizer, resolve_checkpoint
from tuner.tasks import TaskError, get_task
from tuner.tasks.checks import check_prompt_lengths
from tuner.tasks.prompts_file import PromptsFile
from tuner.tasks.registry import task_source

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "prompts.jsonl"
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def write(tmp: Path, lines: list, name: str = "prompts.jsonl") -> Path:
    path = tmp / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def questions(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"Question: what is {i} + {i}?\nAnswer:"} for i in range(start, start + n)]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_checkpoint("dtune/tiny-arith"))


def test_the_example_file_is_an_unlabelled_task_split_in_two():
    task = get_task(str(EXAMPLE))
    assert isinstance(task, PromptsFile) and task_source(str(EXAMPLE)) == "prompts"
    assert not task.labelled and not task.is_chat
    val, test = task.load("validation"), task.load("test")
    assert val and test and not {i.id for i in val} & {i.id for i in test}
    lines = [json.loads(line)["prompt"] for line in EXAMPLE.read_text().splitlines()]
    assert sorted(task.prompt(i) for i in val + test) == sorted(lines)
    item = test[0]
    assert task.locate(item) == f"{EXAMPLE} line {lines.index(task.prompt(item)) + 1}"
    assert task.answer(item, "  #### 12 \n\n more ") == "#### 12 more"
    with pytest.raises(TaskError, match="no answers to score against"):
        task.score(item, "#### 12")
    again = get_task(str(EXAMPLE))
    assert again.split_info("test") == task.split_info("test")
    assert "unlabelled" in task.source_description("test") and "hash split" in task.source_description("test")
    assert task.notices() == [f"{EXAMPLE}: unlabelled prompts; dtune split them by a stable hash (validation "
                              f"{len(val)}, test {len(test)}) and can only promise agreement with the baseline's "
                              "answers"]


def test_the_split_is_stable_when_prompts_are_added_or_reordered(tmp_path):
    first = PromptsFile(write(tmp_path, questions(60), "a.jsonl"))
    grown = PromptsFile(write(tmp_path, list(reversed(questions(120))), "b.jsonl"))
    for split in ("validation", "test"):
        assert {i.id for i in first.load(split)} <= {i.id for i in grown.load(split)}
    other = PromptsFile(write(tmp_path, questions(60), "c.jsonl"), seed=7)
    assert {i.id for i in other.load("test")} != {i.id for i in first.load("test")}
    most = PromptsFile(write(tmp_path, questions(60), "d.jsonl"), validation_fraction=0.9)
    assert len(most.load("validation")) > 40


def test_stop_sequences_cut_the_answer_key(tmp_path):
    task = get_task(str(write(tmp_path, questions(20))), stop_sequences=["\n\n"])
    item = task.load("test")[0]
    assert task.stop_sequences == ["\n\n"] and task.answer(item, " 4\n\nQuestion: x") == "4"


def test_chats_are_rendered_with_the_models_chat_template(tmp_path, tokenizer):
    chats = [{"messages": [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": f"What is {i} + 1?"}], "id": i} for i in range(20)]
    task = get_task(str(write(tmp_path, chats)))
    assert task.is_chat
    item = task.load("test")[0]
    prompt = task.prompt(item)
    assert prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt[1]["content"]}]
    with pytest.raises(ConfigError, match="no chat template"):
        encode_prompt(tokenizer, prompt)
    tokenizer.chat_template = CHAT_TEMPLATE
    try:
        expected = tokenizer(f"system: Be brief.\nuser: {prompt[1]['content']}\nassistant:",
                             add_special_tokens=False)["input_ids"]
        assert encode_prompt(tokenizer, prompt) == expected
        assert encode_prompt(tokenizer, prompt, chat_template=True) == expected
        text = "Question: 1 + 1?\nAnswer:"  # a raw prompt is templated only when asked, as one user turn
        assert encode_prompt(tokenizer, text) == tokenizer(text)["input_ids"]
        assert encode_prompt(tokenizer, text, chat_template=True) == tokenizer(
            f"user: {text}\nassistant:", add_special_tokens=False)["input_ids"]
    finally:
        tokenizer.chat_template = None


def test_a_prompt_longer_than_the_model_allows_names_its_line(tmp_path, tokenizer):
    lines = questions(30)
    lines[17] = {"prompt": "Question: " + "one two three " * 200 + "\nAnswer:"}
    task = get_task(str(write(tmp_path, lines)))
    def encode(p):
        return encode_prompt(tokenizer, p)
    check_prompt_lengths(task, encode, 10_000)
    with pytest.raises(TaskError) as err:
        check_prompt_lengths(task, encode, 1152, why="the model's 1280 positions minus gen_length 128")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'prompts.jsonl'} line 18: the prompt is ") and "1152 (the model's" in message
    assert len(message.splitlines()) == 1


BAD = [
    ("empty", [], "the prompts file is empty"),
    ("blank lines only", ["", "   "], "the prompts file is empty"),
    ("not json", [{"prompt": "a"}, "{prompt: b}"], "line 2: not JSON"),
    ("not an object", [{"prompt": "a"}, '["a list"]'], "line 2: a JSON list, not an object"),
    ("neither key", [{"prompt": "a"}, {"text": "b"}], 'line 2: needs exactly one of "prompt" or "messages" (its keys: text)'),
    ("both keys", [{"prompt": "a", "messages": []}], 'line 1: needs exactly one of "prompt" or "messages"'),
    ("empty prompt", [{"prompt": "a"}, {"prompt": "  "}], 'line 2: "prompt" must be non-empty text'),
    ("prompt not text", [{"prompt": 3}], 'line 1: "prompt" must be non-empty text'),
    ("empty chat", [{"messages": []}], 'line 1: "messages" must be a non-empty list'),
    ("bad role", [{"messages": [{"role": "bot", "content": "x"}]}], "line 1: message 1 must be"),
    ("no content", [{"messages": [{"role": "user"}]}], "line 1: message 1 must be"),
    ("ends with the assistant", [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}],
     "line 1: the last message is the assistant's"),
    ("mixed forms", [{"prompt": "a"}, {"messages": [{"role": "user", "content": "b"}]}],
     "line 2: a chat line in a file whose line 1 is a prompt; use one form per file"),
    ("duplicate", [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "a"}], "line 3: the same prompt as line 1"),
    ("duplicate chat", [{"messages": [{"role": "user", "content": "a"}]}, {"messages": [{"role": "user", "content": "a"}]}],
     "line 2: the same prompt as line 1"),
    ("too few", [{"prompt": "only one"}], "split is empty (1 prompt in the file"),
]


@pytest.mark.parametrize(("case", "lines", "message"), BAD, ids=[c for c, _, _ in BAD])
def test_bad_prompts_files_are_one_line_naming_the_file_and_line(tmp_path, case, lines, message):
    path = write(tmp_path, lines)
    with pytest.raises(TaskError) as err:
        get_task(str(path))
    text = str(err.value)
    assert text.startswith(str(path)) and message in text and len(text.splitlines()) == 1, text


def test_unreadable_prompts_files(tmp_path):
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(TaskError, match=r"latin.jsonl line 2: not UTF-8 text \(byte 0xe9\)"):
        get_task(str(latin))
    with pytest.raises(TaskError, match="no such prompts file"):
        get_task(str(tmp_path / "missing.jsonl"))
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(TaskError, match="is a folder"):
        get_task(str(tmp_path / "folder.jsonl"))
    with pytest.raises(TaskError, match="does not accept these options"):
        get_task(str(EXAMPLE), validation_size=3)
    with pytest.raises(TaskError, match="validation_fraction"):
        get_task(str(EXAMPLE), validation_fraction=1.0)


def test_the_example_files_are_what_their_generator_writes():
    """examples/arith.jsonl (the built-in arith problems) and examples/prompts.jsonl come from tools/example_data.py."""
    from tools.example_data import arith_records, jsonl, prompt_records

    assert (REPO / "examples" / "arith.jsonl").read_text() == jsonl(arith_records())
    assert EXAMPLE.read_text() == jsonl(prompt_records())


def test_an_answer_regex_makes_agreement_read_the_answer_not_its_wording(tmp_path):
    """A prompts file may say where the answer is (task_options.answer_regex), as a task's extraction filter does:
    two completions that word the same answer differently then agree; without it any wording change counts."""
    path = write(tmp_path, questions(40))
    plain, extracting = get_task(str(path)), get_task(str(path), answer_regex=r"#### (-?\d+)")
    item = plain.load("test")[0]
    one, other = "So 3 + 3 = 6.\n#### 6", "3 and 3 make 6.  #### 6 "
    assert plain.answer(item, one) != plain.answer(item, other)
    assert extracting.answer(item, one) == extracting.answer(item, other) == "6"
    assert extracting.answer(item, "no number here") == "[invalid]"
    with pytest.raises(TaskError, match="is not a regular expression"):
        get_task(str(path), answer_regex="(")
    with pytest.raises(TaskError, match="give at most one"):
        get_task(str(path), answer_regex="(a)(b)")
