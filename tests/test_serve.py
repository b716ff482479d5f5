"""`python -m decoder serve` on loopback, with the real `openai` client: answers equal `generate` alone, token for
token, whether batched, streamed, cut by max_tokens or by a stop string; bad requests get OpenAI's 400 body; the
metrics parse as Prometheus text; a client that leaves frees its row; SIGHUP re-reads the profile and SIGTERM /
SIGINT drain and exit 0.

One server (a thread of this process, decoder.serving.server.BackgroundServer) is shared by the module; the
disconnect test has a slow one of its own, and the signal tests start the real command.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import openai
import pytest
from helpers import child_env
from prometheus_client.parser import text_string_to_metric_families

from decoder import DecodeConfig, encode_prompt, generate, load_model, save_checkpoint, save_profile
from decoder.cli import main
from decoder.serving.engine import BatchOptions
from decoder.serving.metrics import Metrics
from decoder.serving.server import BackgroundServer
from decoder.serving.service import Service, open_profile

NAME = "tiny-chat"
# The tiny model answers "Question: ...\nAnswer:" prompts; this template asks that way.
CHAT_TEMPLATE = "{% for m in messages %}Question: {{ m['content'] }}\n{% endfor %}Answer:"
PROFILE = DecodeConfig(mode="streaming", gen_length=128, block_size=32, window=32, threshold=0.9, alpha=0.3)
# One token per forward, no early exit: a block takes 16 forwards, long enough to leave during it. The server stops
# a row once its answer has ended, as early exit would: SLOW_ALONE is the same decode with early exit, the reference.
SLOW = DecodeConfig(mode="fast", gen_length=256, block_size=16, threshold=1.0, early_exit=False)
SLOW_ALONE = replace(SLOW, early_exit=True)
QUESTIONS = [
    "Tom has 5 apples. He buys 3 more apples. How many apples does Tom have now?",
    "Mia has 13 shells. She finds 8 more shells. She gives away 9 shells. How many shells does Mia have now?",
    "Sam has 20 cards. He loses 4 cards. How many cards does Sam have now?",
    "Ava has 7 stickers. She gets 6 more stickers. She gives away 2 stickers. How many stickers does Ava have now?",
    "Leo has 12 marbles. He finds 5 more marbles. How many marbles does Leo have now?",
    "Zoe has 9 books. She buys 10 more books. She gives away 3 books. How many books does Zoe have now?",
]


def prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


SAMPLED = replace(PROFILE, temperature=0.7, seed=3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The tiny model with a chat template, and a profile for it."""
    root = tmp_path_factory.mktemp("serve")
    model, tokenizer = load_model("dtune/tiny-arith", device="cpu")
    tokenizer.chat_template = CHAT_TEMPLATE
    save_checkpoint(model, root / "tiny-chat", tokenizer=tokenizer)
    save_profile(root / "profile.json", PROFILE)
    save_profile(root / "slow.json", SLOW)
    save_profile(root / "sampled.json", SAMPLED)
    return root


@pytest.fixture(scope="module")
def reference(checkpoint):
    """A model of its own for the single-request decodes answers are compared with."""
    return load_model(str(checkpoint / "tiny-chat"), device="cpu")


def start(checkpoint: Path, profile: str, options: BatchOptions) -> BackgroundServer:
    model, tokenizer = load_model(str(checkpoint / "tiny-chat"), device="cpu")
    metrics = Metrics()
    live = open_profile(str(checkpoint / profile), model.source, metrics)
    return BackgroundServer(Service.create(model, tokenizer, live, metrics, name=NAME, options=options))


@pytest.fixture(scope="module")
def url(checkpoint):
    with start(checkpoint, "profile.json", BatchOptions(max_batch_size=8, max_wait_s=0.05)) as address:
        yield address


@pytest.fixture(scope="module")
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def alone(reference, ids: list[int], config: DecodeConfig = PROFILE, *, max_tokens: int | None = None,
          stop: tuple[str, ...] = ()) -> tuple[str, int]:
    """What `generate` gives for this prompt decoded by itself: the text (cut at max_tokens and the first stop
    string, as the server's contract says) and its completion tokens."""
    model, tokenizer = reference
    result = generate(model, [ids], config, tokenizer=tokenizer)
    n = result.generated_per_row[0]
    if max_tokens is None and not stop:
        return result.texts[0], n
    n = min(n, max_tokens or n)
    text = tokenizer.decode(result.tokens[0, :n].tolist(), skip_special_tokens=True)
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(cuts)] if cuts else text), n


def prompt_ids(reference, text: str, chat: bool = False) -> list[int]:
    return encode_prompt(reference[1], text, chat_template=chat)


def test_a_completion_equals_generate_alone(client, reference):
    for question in QUESTIONS[:2]:
        response = client.completions.create(model=NAME, prompt=prompt(question))
        text, tokens = alone(reference, prompt_ids(reference, prompt(question)))
        assert response.choices[0].text == text and "####" in text
        assert response.choices[0].finish_reason == "stop"
        assert response.usage.completion_tokens == tokens


def test_token_ids_as_the_prompt(client, reference):
    ids = prompt_ids(reference, prompt(QUESTIONS[2]))
    response = client.completions.create(model=NAME, prompt=ids)
    assert response.choices[0].text == alone(reference, ids)[0]
    assert response.usage.prompt_tokens == len(ids)


def test_a_chat_completion_uses_the_chat_template(client, reference):
    response = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": QUESTIONS[3]}])
    ids = prompt_ids(reference, QUESTIONS[3], chat=True)
    assert ids == prompt_ids(reference, prompt(QUESTIONS[3]))  # the template writes the prompt the model knows
    assert response.choices[0].message.content == alone(reference, ids)[0]
    assert response.choices[0].message.role == "assistant" and response.choices[0].finish_reason == "stop"


def test_a_stream_sends_each_block_as_it_is_committed(client, reference):
    ids = prompt_ids(reference, prompt(QUESTIONS[0]))
    chunks = list(client.completions.create(model=NAME, prompt=prompt(QUESTIONS[0]), stream=True,
                                            stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    text, tokens = alone(reference, ids)
    assert "".join(texts) == text and len(texts) >= 2  # the answer spans two blocks of 32
    first_block = reference[1].decode(generate(reference[0], [ids], PROFILE).tokens[0, :32].tolist(),
                                      skip_special_tokens=True)
    assert texts[0] == first_block  # the first chunk is the first block, sent before the second is decoded
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == tokens


def test_a_chat_stream(client, reference):
    chunks = list(client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": QUESTIONS[1]}],
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == alone(reference, prompt_ids(reference, QUESTIONS[1], chat=True))[0]
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("max_tokens, stop", [(10, None), (33, None), (None, ["="]), (20, [" 3 ", "apples"]),
                                              (None, ["no such text"])])
def test_max_tokens_and_stop_cut_the_answer_as_decoding_alone_would(client, reference, max_tokens, stop):
    ids = prompt_ids(reference, prompt(QUESTIONS[0]))
    want, tokens = alone(reference, ids, max_tokens=max_tokens, stop=tuple(stop or ()))
    whole = client.completions.create(model=NAME, prompt=ids, max_tokens=max_tokens, stop=stop)
    streamed = client.completions.create(model=NAME, prompt=ids, max_tokens=max_tokens, stop=stop, stream=True)
    streamed = list(streamed)
    assert whole.choices[0].text == "".join(c.choices[0].text for c in streamed) == want
    assert whole.choices[0].finish_reason == streamed[-1].choices[0].finish_reason
    if max_tokens == 10:
        assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 10
    if stop == ["="]:
        assert whole.choices[0].finish_reason == "stop" and whole.usage.completion_tokens < tokens


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(client, reference, url):
    before = scrape(url)
    jobs = [(q, mt, st) for q in QUESTIONS for mt, st in ((None, None), (12, None), (None, ["+"]))]

    def ask(job):
        question, max_tokens, stop = job
        return client.completions.create(model=NAME, prompt=prompt(question), max_tokens=max_tokens,
                                         stop=stop).choices[0].text

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(ask, jobs))
    for (question, max_tokens, stop), answer in zip(jobs, answers, strict=True):
        ids = prompt_ids(reference, prompt(question))
        assert answer == alone(reference, ids, max_tokens=max_tokens, stop=tuple(stop or ()))[0]
    after = scrape(url)
    batches = after["dtune_batch_size_count"] - before["dtune_batch_size_count"]
    rows = after["dtune_batch_size_sum"] - before["dtune_batch_size_sum"]
    assert rows == len(jobs) and batches < len(jobs)  # some requests shared a batch


def test_a_sampling_profile_decodes_one_request_at_a_time_as_generate_does_alone(checkpoint, reference):
    """A batch shares its sampling noise, so only a batch of one reproduces `generate` alone with the seed."""
    with start(checkpoint, "sampled.json", BatchOptions(max_batch_size=8, max_wait_s=0.05)) as address:
        client = openai.OpenAI(base_url=f"{address}/v1", api_key="unused", max_retries=0, timeout=60)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda q: client.completions.create(model=NAME, prompt=prompt(q), seed=3)
                                    .choices[0].text, QUESTIONS[:4]))
        metrics = scrape(address)
    assert metrics["dtune_batch_size_sum"] == metrics["dtune_batch_size_count"] == 4
    for question, answer in zip(QUESTIONS[:4], answers, strict=True):
        assert answer == alone(reference, prompt_ids(reference, prompt(question)), SAMPLED)[0]


def test_fields_at_their_tuned_value_and_no_op_fields_are_accepted(client, reference):
    ids = prompt_ids(reference, prompt(QUESTIONS[4]))
    response = client.completions.create(model=NAME, prompt=ids, temperature=0.0, top_p=1, n=1, seed=7,
                                         presence_penalty=0, frequency_penalty=0, user="someone", echo=False)
    assert response.choices[0].text == alone(reference, ids)[0]


def test_the_openai_client_sees_a_refused_field_as_a_bad_request(client):
    with pytest.raises(openai.BadRequestError, match="temperature=0.7 would change the tuned decoding"):
        client.completions.create(model=NAME, prompt="Question: 1\nAnswer:", temperature=0.7)


M = {"model": NAME}
BAD = [
    ("malformed-json", "/v1/completions", b'{"model": "tiny-chat", "prompt": ', None, "invalid_json",
     "not valid JSON"),
    ("not-an-object", "/v1/completions", b"[1, 2]", None, "invalid_value", "must be a JSON object"),
    ("missing-prompt", "/v1/completions", M, "prompt", "invalid_value", "prompt is required"),
    ("wrong-type", "/v1/completions", {**M, "prompt": "x", "max_tokens": "5"}, "max_tokens", "invalid_value",
     "valid integer"),
    ("bool-for-int", "/v1/completions", {**M, "prompt": "x", "max_tokens": True}, "max_tokens", "invalid_value",
     "valid integer"),
    ("prompt-type", "/v1/completions", {**M, "prompt": {"text": "x"}}, "prompt", "invalid_value",
     "string or a list of token ids"),
    ("unknown-field", "/v1/completions", {**M, "prompt": "x", "tools": []}, "tools", "invalid_value",
     "unknown field 'tools'"),
    ("empty-prompt", "/v1/completions", {**M, "prompt": ""}, "prompt", "invalid_value", "prompt is empty"),
    ("empty-ids", "/v1/completions", {**M, "prompt": []}, "prompt", "invalid_value", "prompt is empty"),
    ("ids-outside-vocab", "/v1/completions", {**M, "prompt": [5, 432]}, "prompt", "invalid_value",
     "outside the vocabulary (0-431)"),
    ("prompt-too-long", "/v1/completions", {**M, "prompt": [5] * 1153}, "prompt", "context_length_exceeded",
     "at most 1152"),
    ("two-prompts", "/v1/completions", {**M, "prompt": ["a", "b"]}, "prompt", "invalid_value",
     "one prompt per request"),
    ("temperature", "/v1/completions", {**M, "prompt": "x", "temperature": 0.7}, "temperature",
     "unsupported_value", "set it to 0.0"),
    ("top_p", "/v1/completions", {**M, "prompt": "x", "top_p": 0.5}, "top_p", "unsupported_value",
     "would change the tuned decoding"),
    ("n", "/v1/completions", {**M, "prompt": "x", "n": 2}, "n", "unsupported_value", "leave n out"),
    ("logprobs", "/v1/completions", {**M, "prompt": "x", "logprobs": 0}, "logprobs", "unsupported_value",
     "not supported"),
    ("echo", "/v1/completions", {**M, "prompt": "x", "echo": True}, "echo", "unsupported_value", "not supported"),
    ("max-tokens-above-gen-length", "/v1/completions", {**M, "prompt": "x", "max_tokens": 129}, "max_tokens",
     "invalid_value", "exceeds the profile's gen_length (128)"),
    ("max-tokens-zero", "/v1/completions", {**M, "prompt": "x", "max_tokens": 0}, "max_tokens", "invalid_value",
     "at least 1"),
    ("five-stops", "/v1/completions", {**M, "prompt": "x", "stop": list("abcde")}, "stop", "invalid_value",
     "at most 4"),
    ("stream-options-alone", "/v1/completions", {**M, "prompt": "x", "stream_options": {"include_usage": True}},
     "stream_options", "invalid_value", "only allowed with stream=true"),
    ("chat-no-messages", "/v1/chat/completions", {**M, "messages": []}, "messages", "invalid_value",
     "messages is empty"),
    ("chat-image", "/v1/chat/completions",
     {**M, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content", "invalid_value", "text only"),
    ("chat-role", "/v1/chat/completions", {**M, "messages": [{"role": "robot", "content": "x"}]},
     "messages[0].role", "invalid_value", "'user'"),
    ("chat-max-tokens-disagree", "/v1/chat/completions",
     {**M, "messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "max_completion_tokens": 6},
     "max_tokens", "invalid_value", "disagree"),
]


@pytest.mark.parametrize("path, body, param, code, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_request_gets_a_400_in_openai_form(url, path, body, param, code, message):
    status, answer = post(url, path, body)
    assert status == 400, answer
    error = answer["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == code
    assert message in error["message"]


def test_an_unknown_model_is_a_404_and_an_unknown_path_too(url):
    status, answer = post(url, "/v1/completions", {"model": "gpt-4", "prompt": "x"})
    assert status == 404 and answer["error"]["code"] == "model_not_found" and "tiny-chat" in answer["error"]["message"]
    status, answer = post(url, "/v1/embeddings", {"model": NAME, "input": "x"})
    assert status == 404 and "Not Found" in answer["error"]["message"]


def test_models_and_health(url, client):
    assert [m.id for m in client.models.list()] == [NAME]
    health = json.load(urllib.request.urlopen(f"{url}/health", timeout=10))
    assert health["status"] == "ok" and health["profile"]["decode"] == PROFILE.to_dict()


def test_metrics_are_prometheus_text(url, client):
    before = scrape(url)
    response = client.completions.create(model=NAME, prompt=prompt(QUESTIONS[5]))
    post(url, "/v1/completions", {**M, "prompt": ""})
    # A row's forwards are counted when its batch ends, after its answer went out.
    _wait_for(lambda: scrape(url)["dtune_forwards_per_request_count"] > before["dtune_forwards_per_request_count"])
    after = scrape(url)
    assert after['dtune_requests_total{endpoint="completions"}'] \
        == before.get('dtune_requests_total{endpoint="completions"}', 0) + 1
    assert after["dtune_generated_tokens_total"] == before["dtune_generated_tokens_total"] \
        + response.usage.completion_tokens
    assert after['dtune_request_errors_total{status="400"}'] \
        == before.get('dtune_request_errors_total{status="400"}', 0) + 1
    assert after["dtune_forwards_per_request_count"] == before["dtune_forwards_per_request_count"] + 1
    assert after["dtune_queue_depth"] == 0 and after["dtune_tokens_per_second"] > 0
    for name in ("dtune_batch_size_count", "dtune_time_to_first_block_seconds_count",
                 "dtune_request_latency_seconds_count"):
        assert after[name] > before.get(name, 0)


def scrape(url: str) -> dict[str, float]:
    """GET /metrics, parsed by prometheus_client's own parser: sample name{labels} -> value."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


def post(url: str, path: str, body: dict | bytes) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_a_client_that_disconnects_frees_its_row(checkpoint, reference, stream):
    """The client leaves while its first block decodes: the row stops after that block, long before its answer
    would have ended (three blocks of 16 forwards)."""
    ids = prompt_ids(reference, prompt(QUESTIONS[0]))
    alone_forwards = generate(reference[0], [ids], SLOW_ALONE).counters.nfe
    with start(checkpoint, "slow.json", BatchOptions(max_batch_size=1, max_wait_s=0)) as address:
        host, port = address.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("POST", "/v1/completions", json.dumps({**M, "prompt": ids, "stream": stream}),
                           {"Content-Type": "application/json"})
        if stream:
            assert connection.getresponse().status == 200  # headers go out before the first block is decoded
        # Leave once its row is in a batch (a request cancelled while still queued is dropped before decoding,
        # with no forwards to count: the event this test waits for below).
        _wait_for(lambda: scrape(address).get("dtune_batch_size_count") == 1)
        connection.close()
        _wait_for(lambda: scrape(address).get("dtune_forwards_per_request_count") == 1)  # its batch ended
        metrics = scrape(address)
    assert metrics['dtune_requests_finished_total{reason="cancelled"}'] == 1
    assert SLOW.block_size <= metrics["dtune_forwards_per_request_sum"] < alone_forwards == 48


def _wait_for(condition, timeout: float = 120) -> None:
    """Poll until `condition` holds; the limit only bounds a broken server (a busy 2-core machine took over 30 s)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_serve_refuses_bad_options_in_one_line_before_loading(tmp_path, capsys, checkpoint):
    profile = str(checkpoint / "profile.json")
    with _taken_port() as port:
        cases = [(["--profile", str(tmp_path / "none.json")], "does not exist"),
                 (["--profile", profile, "--port", str(port)], "Address already in use"),
                 (["--profile", profile, "--host", "no-such-host.invalid"], "can't listen on"),
                 (["--profile", profile, "--device", "tpu9"], "unknown device"),
                 (["--profile", profile, "--model", str(tmp_path)], "no config.json")]
        for args, message in cases:
            assert main(["serve", "--model", "dtune/tiny-arith", "--port", "0", *args]) == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--model", "dtune/tiny-arith", "--profile", profile, "--port", "65536"])
    assert exit_.value.code == 2 and "at most 65535" in capsys.readouterr().err


class _taken_port:
    """A loopback port something else listens on."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return self.sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sighup_rereads_the_profile_and_a_signal_drains_then_exits_0(tmp_path, checkpoint, reference, sig):
    profile = tmp_path / "live.json"
    save_profile(profile, PROFILE)
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "decoder", "serve", "--model", str(checkpoint / "tiny-chat"),
                                 "--profile", str(profile), "--port", "0", "--served-model-name", NAME,
                                 "--no-access-log"], env=child_env(), stdout=subprocess.DEVNULL, stderr=err)
    try:
        url = _wait_for_url(proc, log)
        assert _health(url)["profile"]["generation"] == 1
        save_profile(profile, SLOW, overwrite=True)  # the next batch decodes with this one, after SIGHUP
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while (health := _health(url))["profile"]["generation"] < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert health["profile"]["decode"] == SLOW.to_dict()

        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        ids = prompt_ids(reference, prompt(QUESTIONS[0]))
        connection.request("POST", "/v1/completions", json.dumps({**M, "prompt": ids, "stream": True}),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        first = response.readline()  # the first block's chunk: the request is in flight
        assert first.startswith(b"data: ")
        proc.send_signal(sig)
        rest = response.read().decode()  # the stream runs to its end
        events = [json.loads(line[6:]) for line in (first.decode() + rest).splitlines()
                  if line.startswith("data: {")]
        assert rest.rstrip().endswith("data: [DONE]")
        assert "".join(e["choices"][0]["text"] for e in events) == alone(reference, ids, SLOW_ALONE)[0]
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=5)
    assert "re-read: the next batch decodes with" in log.read_text()


def _wait_for_url(proc: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + 120
    while True:
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            url = found.group(1)
            try:
                _health(url)
                return url
            except OSError:
                pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def _health(url: str) -> dict:
    return json.load(urllib.request.urlopen(f"{url}/health", timeout=10))
