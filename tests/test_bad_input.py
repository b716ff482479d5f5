"""A corpus of bad inputs against the real CLIs (`python -m tuner`, `python -m decoder` as subprocesses, on the tiny
bundled model and real SQLite files in tmp_path).

Every case is judged the same four ways: the exit code (2), stderr is one line starting with `error:` that names
the problem (no traceback, no library log line before it), the files around it keep their checksums (nothing dtune
did not write is changed; nothing is created in a foreign database), and, where a study is involved, its trials
keep their states and values. The cases that must fail before a model loads run in about a second or two each.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from helpers import MODEL, child_env, small_args, spec_for

from decoder import DecodeConfig, ProfileError, load_profile, save_profile
from decoder.loading import BUNDLED_MODELS, inspect_checkpoint
from tuner.study.lifecycle import default_study_name

TINY = BUNDLED_MODELS["dtune/tiny-arith"]


# ------------------------------------------------------------------------------------------------ judging
def cli(args: list[str], cwd: Path, module: str = "tuner", timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=child_env(), capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, message: str) -> str:
    """Exit 2 and exactly one stderr line, `error: ...` holding `message`; returns the line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in lines[0], lines[0]
    return lines[0]


def checksums(folder: Path) -> dict[str, str]:
    """Every file under `folder` (names and contents): a file changed, added or removed shows."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def trial_record(db: Path, name: str) -> list[tuple]:
    """(number, state, values, reference, retried trial) of every trial of a study."""
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    return [(t.number, t.state.name, t.values, t.user_attrs.get("reference"), t.system_attrs.get("failed_trial"))
            for t in study.get_trials()]


# ------------------------------------------------------------------------------------------------- inputs
def foreign_db(tmp: Path) -> Path:
    """Another program's SQLite database."""
    db = tmp / "other-app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("INSERT INTO notes (text) VALUES ('remember the milk')")
    return db


def notes(tmp: Path) -> Path:
    path = tmp / "notes.txt"
    path.write_text("my notes, not a profile\n")
    return path


def binary_spec(tmp: Path) -> Path:
    path = tmp / "spec.yaml"
    path.write_bytes(bytes(range(256)) * 8)
    return path


def corrupt_weights(tmp: Path) -> Path:
    model = tmp / "corrupt-model"
    shutil.copytree(TINY, model)
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])  # a download cut half-way
    return model


def non_numeric_config(tmp: Path) -> Path:
    model = tmp / "bad-config-model"
    shutil.copytree(TINY, model)
    config = json.loads((model / "config.json").read_text())
    config["n_layers"] = "six"
    (model / "config.json").write_text(json.dumps(config))
    return model


def other_model_profile(tmp: Path) -> Path:
    """A profile exported for another model (by id and fingerprint)."""
    return save_profile(tmp / "llada.profile.json", DecodeConfig(mode="streaming", gen_length=32, block_size=16),
                        {"model": {"id": "GSAI-ML/LLaDA-8B-Instruct", "fingerprint": "0123456789abcdef"}})


def a_profile(tmp: Path) -> Path:
    return save_profile(tmp / "old.profile.json", DecodeConfig(mode="streaming", gen_length=32, block_size=16),
                        {"model": {"id": MODEL}})


def rows_without_fields(tmp: Path) -> Path:
    """GSM8K files whose rows hold other fields (another dataset's files in the right place)."""
    folder = tmp / "data" / "gsm8k"
    folder.mkdir(parents=True)
    rows = "".join(json.dumps({"prompt": f"{i} + 1 = ?", "target": str(i + 1)}) + "\n" for i in range(3))
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text(rows)
    return tmp / "data"


def gsm8k_spec_file(tmp: Path) -> Path:
    from tuner.study.spec import builtin_specs

    path = tmp / "gsm8k-copy.yaml"
    path.write_text(builtin_specs()["gsm8k"].read_text())
    return path


def _task_yaml(tmp: Path, body: str) -> Path:
    """An lm-eval task YAML over a three-line local JSONL file."""
    (tmp / "q.jsonl").write_text("".join(json.dumps({"question": f"{i} + 1 = ?", "answer": str(i + 1)}) + "\n"
                                         for i in range(3)))
    path = tmp / "task.yaml"
    path.write_text(body)
    return path


TASK_HEAD = "task: mine\ndataset_path: json\ndataset_kwargs: {data_files: {test: q.jsonl}}\ntest_split: test\n"
GENERATE = ("output_type: generate_until\ndoc_to_target: '{{answer}}'\ngeneration_kwargs: {until: [\"\\n\"]}\n"
            "metric_list: [{metric: exact_match}]\n")


def yaml_not_a_task(tmp: Path) -> Path:
    return _task_yaml(tmp, "just: a mapping\n")


def yaml_missing_doc_to_text(tmp: Path) -> Path:
    return _task_yaml(tmp, TASK_HEAD + GENERATE)


def yaml_field_the_data_lacks(tmp: Path) -> Path:
    return _task_yaml(tmp, TASK_HEAD + GENERATE + "doc_to_text: '{{prompt}}'\n")


def yaml_multiple_choice(tmp: Path) -> Path:
    return _task_yaml(tmp, TASK_HEAD + "output_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
                           "doc_to_choice: ['a', 'b']\ndoc_to_target: 0\n")


def prompts_file(tmp: Path, text: bytes) -> Path:
    path = tmp / "prompts.jsonl"
    path.write_bytes(text)
    return path


def prompts_duplicated(tmp: Path) -> Path:
    return prompts_file(tmp, b'{"prompt": "1 + 1 = ?"}\n{"prompt": "2 + 2 = ?"}\n{"prompt": "1 + 1 = ?"}\n')


def prompts_ok(tmp: Path) -> Path:
    return prompts_file(tmp, "".join(json.dumps({"prompt": f"{i} + 1 = ?"}) + "\n" for i in range(40)).encode())


def prompts_too_long(tmp: Path) -> Path:
    """Forty short prompts and, on line 7, one longer than the tiny model's positions leave for the answer."""
    lines = [json.dumps({"prompt": f"{i} + 1 = ?"}) for i in range(40)]
    lines[6] = json.dumps({"prompt": " ".join(["Question: how many coins?"] * 200)})
    return prompts_file(tmp, ("\n".join(lines) + "\n").encode())


SETUP: dict[str, Callable[[Path], Path]] = {
    "@FOREIGN_DB@": foreign_db, "@NOTES@": notes, "@BINARY_SPEC@": binary_spec, "@CORRUPT_MODEL@": corrupt_weights,
    "@BAD_CONFIG_MODEL@": non_numeric_config, "@OTHER_PROFILE@": other_model_profile, "@PROFILE@": a_profile,
    "@BAD_ROWS@": rows_without_fields, "@GSM8K_SPEC@": gsm8k_spec_file,
    "@YAML_NOT_A_TASK@": yaml_not_a_task, "@YAML_NO_DOC_TO_TEXT@": yaml_missing_doc_to_text,
    "@YAML_FIELD_LACKING@": yaml_field_the_data_lacks, "@YAML_MULTIPLE_CHOICE@": yaml_multiple_choice,
    "@PROMPTS_EMPTY@": lambda tmp: prompts_file(tmp, b""),
    "@PROMPTS_NOT_UTF8@": lambda tmp: prompts_file(tmp, b'{"prompt": "caf\xe9"}\n'),
    "@PROMPTS_DUPLICATED@": prompts_duplicated, "@PROMPTS_TOO_LONG@": prompts_too_long, "@PROMPTS_OK@": prompts_ok,
}
STORE = ["--storage", "sqlite:///study.db", "--tracking-uri", "sqlite:///mlflow.db"]

# (id, module, argv with SETUP placeholders, the words the one line must hold). Each case must exit 2 with that
# line and leave every file of its folder as it was (the folder holds only what the case set up).
CASES = [
    # numbers and flags, refused by the parser in one line
    ("eval-limit-negative", "tuner", ["eval", "--task", "arith", "--limit", "-1"], "--limit: must be at least 1"),
    ("eval-limit-zero", "tuner", ["eval", "--task", "arith", "--limit", "0"], "--limit: must be at least 1"),
    ("run-worker-index-negative", "tuner", ["run", "--task", "arith", "--worker-index", "-1", *STORE],
     "--worker-index: must be at least 0"),
    ("run-trials-zero", "tuner", ["run", "--task", "arith", "--trials", "0", *STORE], "--trials: must be at least 1"),
    ("run-trials-not-a-number", "tuner", ["run", "--task", "arith", "--trials", "many", *STORE],
     "--trials: expected an integer"),
    ("export-max-drop-negative", "tuner", ["export", "--task", "arith", "--max-drop", "-5", *STORE],
     "--max-drop: must be accuracy points in [0, 100]"),
    ("export-max-drop-nan", "tuner", ["export", "--task", "arith", "--max-drop", "nan", *STORE], "--max-drop"),
    # overrides: a bad --set is validated even where a shortcut flag sets the same field
    ("set-bad-value-hidden-by-shortcut", "tuner", ["run", "--task", "arith", "--set", "trials=many", "--trials", "2",
                                                   *STORE], "trials must be int, got 'many'"),
    ("set-and-shortcut-disagree", "tuner", ["run", "--task", "arith", "--set", "trials=3", "--trials", "2", *STORE],
     "give trials two values"),
    ("set-model-and-model-disagree", "tuner", ["eval", "--task", "arith", "--model", MODEL, "--set", "model=x/y"],
     "give model two values"),
    # spec files
    ("spec-binary", "tuner", ["run", "--task", "arith", "--spec", "@BINARY_SPEC@", *STORE], "is not a text file"),
    ("spec-other-task", "tuner", ["run", "--task", "arith", "--spec", "@GSM8K_SPEC@", *STORE],
     "is for task 'gsm8k'"),
    # devices
    ("run-device-tpu9", "tuner", ["run", "--task", "arith", "--device", "tpu9", *STORE], "unknown device 'tpu9'"),
    ("eval-device-tpu9", "tuner", ["eval", "--task", "arith", "--device", "tpu9"], "unknown device 'tpu9'"),
    ("generate-device-tpu9", "decoder", ["generate", "--model", MODEL, "--prompt", "1+1=", "--device", "tpu9"],
     "unknown device 'tpu9'"),
    # storage: another program's database, a text file, a missing one; nothing may be created in or beside them
    ("run-foreign-db", "tuner", ["run", "--task", "arith", "--storage", "sqlite:///@FOREIGN_DB@", "--tracking-uri",
                                 "sqlite:///mlflow.db"], "holds another program's tables (notes)"),
    ("show-foreign-db", "tuner", ["show", "--task", "arith", "--storage", "sqlite:///@FOREIGN_DB@"],
     "holds another program's tables (notes)"),
    ("export-foreign-db", "tuner", ["export", "--task", "arith", "--storage", "sqlite:///@FOREIGN_DB@",
                                    "--tracking-uri", "sqlite:///mlflow.db"], "holds another program's tables"),
    ("run-storage-is-a-text-file", "tuner", ["run", "--task", "arith", "--storage", "sqlite:///@NOTES@",
                                             "--tracking-uri", "sqlite:///mlflow.db"], "is not a SQLite database"),
    ("show-missing-db-creates-nothing", "tuner", ["show", "--task", "arith", "--storage", "sqlite:///missing.db"],
     "no study"),
    ("run-storage-folder-missing", "tuner", ["run", "--task", "arith", "--storage", "sqlite:///no/such/dir/s.db",
                                             "--tracking-uri", "sqlite:///mlflow.db"], "does not exist"),
    ("run-storage-url-malformed", "tuner", ["run", "--task", "arith", "--storage", "sqlite///x.db",
                                            "--tracking-uri", "sqlite:///mlflow.db"], "is not a database URL"),
    ("show-storage-url-malformed", "tuner", ["show", "--task", "arith", "--storage", "sqlite///x.db"],
     "is not a database URL"),
    # checkpoints: refused in one line, and by `run` before any database is made
    ("eval-corrupt-safetensors", "tuner", ["eval", "--task", "arith", "--model", "@CORRUPT_MODEL@", "--limit", "2"],
     "is not a readable safetensors file"),
    ("run-corrupt-safetensors", "tuner", ["run", "--task", "arith", "--model", "@CORRUPT_MODEL@", *STORE],
     "is not a readable safetensors file"),
    ("generate-corrupt-safetensors", "decoder", ["generate", "--model", "@CORRUPT_MODEL@", "--prompt", "1+1="],
     "is not a readable safetensors file"),
    ("eval-config-not-numeric", "tuner", ["eval", "--task", "arith", "--model", "@BAD_CONFIG_MODEL@", "--limit", "2"],
     "holds a value of the wrong type"),
    ("generate-config-not-numeric", "decoder", ["generate", "--model", "@BAD_CONFIG_MODEL@", "--prompt", "1+1="],
     "holds a value of the wrong type"),
    ("generate-chat-template-missing", "decoder", ["generate", "--model", MODEL, "--prompt", "1+1=",
                                                   "--chat-template"], "no chat template"),
    ("eval-chat-template-missing", "tuner", ["eval", "--task", "arith", "--set", "chat_template=true", "--limit",
                                             "2"], "no chat template"),
    # profiles: one tuned for another model is refused unless allowed
    ("generate-profile-other-model", "decoder", ["generate", "--model", MODEL, "--prompt", "1+1=", "--profile",
                                                 "@OTHER_PROFILE@"], "was tuned for model 'GSAI-ML/LLaDA-8B-Instruct'"),
    ("eval-profile-other-model", "tuner", ["eval", "--task", "arith", "--profile", "@OTHER_PROFILE@", "--limit", "2"],
     "was tuned for model 'GSAI-ML/LLaDA-8B-Instruct'"),
    # export --out: never over a file dtune did not write, a directory, or a profile without --overwrite
    ("export-out-foreign-file", "tuner", ["export", "--task", "arith", "--out", "@NOTES@", *STORE],
     "exists and is not a dtune profile"),
    ("export-out-directory", "tuner", ["export", "--task", "arith", "--out", ".", *STORE], "is a directory"),
    ("export-out-profile-without-overwrite", "tuner", ["export", "--task", "arith", "--out", "@PROFILE@", *STORE],
     "pass --overwrite"),
    ("export-out-under-a-file", "tuner", ["export", "--task", "arith", "--out", "@NOTES@/p.json", *STORE],
     "is not a directory"),
    # data: rows without the task's fields, named at load, before a model is built (and without datasets' bars)
    ("eval-rows-missing-fields", "tuner", ["eval", "--task", "gsm8k", "--data-dir", "@BAD_ROWS@", "--model", MODEL,
                                           "--set", "chat_template=false", "--split", "test"],
     "lacks the field(s) question, answer"),
    ("run-rows-missing-fields", "tuner", ["run", "--task", "gsm8k", "--data-dir", "@BAD_ROWS@", "--model", MODEL,
                                          "--set", "chat_template=false", *STORE], "lacks the field(s) question"),
    # your own tasks: lm-eval task files and prompts files, named by file and line or key, before any model loads
    ("run-yaml-not-a-task", "tuner", ["run", "--task", "@YAML_NOT_A_TASK@", "--model", MODEL, *STORE], "task.yaml"),
    ("run-yaml-generate-key-missing", "tuner", ["run", "--task", "@YAML_NO_DOC_TO_TEXT@", "--model", MODEL, *STORE],
     "doc_to_text"),
    ("run-yaml-template-field-missing", "tuner", ["run", "--task", "@YAML_FIELD_LACKING@", "--model", MODEL, *STORE],
     "prompt"),
    ("run-yaml-multiple-choice", "tuner", ["run", "--task", "@YAML_MULTIPLE_CHOICE@", "--model", MODEL, *STORE],
     "multiple_choice"),
    ("run-prompts-empty", "tuner", ["run", "--task", "@PROMPTS_EMPTY@", "--model", MODEL, *STORE], "empty"),
    ("run-prompts-not-utf8", "tuner", ["run", "--task", "@PROMPTS_NOT_UTF8@", "--model", MODEL, *STORE], "UTF-8"),
    ("run-prompts-duplicated", "tuner", ["run", "--task", "@PROMPTS_DUPLICATED@", "--model", MODEL, *STORE],
     "line 3"),
    ("run-prompts-too-long", "tuner", ["run", "--task", "@PROMPTS_TOO_LONG@", "--model", MODEL, "--accept-low-power",
                                       *STORE], "line 7: the prompt is"),
    ("run-own-task-without-model", "tuner", ["run", "--task", "@PROMPTS_OK@", *STORE], "--model is required"),
]


def _resolve(argv: list[str], tmp: Path) -> list[str]:
    out = []
    for arg in argv:
        for key, make in SETUP.items():
            if key in arg:
                target = tmp / "made" / key.strip("@")
                if not target.exists():
                    target.mkdir(parents=True)
                    made = make(target)
                    (target / ".path").write_text(str(made))
                arg = arg.replace(key, (target / ".path").read_text())
        out.append(arg)
    return out


@pytest.mark.parametrize("module, argv, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_no_file(tmp_path, module, argv, message):
    args = _resolve(argv, tmp_path)
    before = checksums(tmp_path)
    one_line_error(cli(args, tmp_path, module), message)
    assert checksums(tmp_path) == before  # nothing changed, nothing created (no database, lock file or profile)


def test_a_read_only_study_database_is_one_line_and_unchanged(finished_study):
    tmp, name = finished_study
    before, trials = checksums(tmp), trial_record(tmp / "study.db", name)
    read_only = f"sqlite:///file:{tmp / 'study.db'}?mode=ro&uri=true"  # read-only even to root
    proc = cli(["run", "--task", "arith", "--model", MODEL, "--storage", read_only, "--tracking-uri",
                f"sqlite:///{tmp}/mlflow.db", "--study-name", name, *_sets(tmp, 3)], tmp)
    one_line_error(proc, "is read-only")
    assert checksums(tmp) == before and trial_record(tmp / "study.db", name) == trials


def test_an_existing_profile_is_replaced_only_with_overwrite(tmp_path):
    """With --overwrite the check passes (and export goes on to the study, which is missing here)."""
    profile = a_profile(tmp_path)
    before = checksums(tmp_path)
    proc = cli(["export", "--task", "arith", "--out", str(profile), "--overwrite", *STORE], tmp_path)
    one_line_error(proc, "no study")
    assert checksums(tmp_path) == before


def test_the_library_refuses_a_mismatched_profile_and_a_foreign_file(tmp_path):
    source = inspect_checkpoint(MODEL)
    other = other_model_profile(tmp_path)
    with pytest.raises(ProfileError, match="was tuned for model"):
        load_profile(other, model=source)
    assert load_profile(other, model=source, allow_mismatch=True).gen_length == 32
    mine = save_profile(tmp_path / "mine.json", DecodeConfig(), {"model": source})
    assert load_profile(mine, model=source) == DecodeConfig()  # the same model passes
    text = notes(tmp_path)
    before = checksums(tmp_path)
    with pytest.raises(ProfileError, match="not a dtune profile"):
        save_profile(text, DecodeConfig())
    with pytest.raises(ProfileError, match="--overwrite"):
        save_profile(mine, DecodeConfig(mode="fast"))
    assert checksums(tmp_path) == before
    save_profile(mine, DecodeConfig(mode="fast"), overwrite=True)
    assert load_profile(mine).mode == "fast"


def test_a_mismatched_profile_is_used_when_explicitly_allowed(tmp_path):
    proc = cli(["generate", "--model", MODEL, "--prompt", "1+1=", "--profile", str(other_model_profile(tmp_path)),
                "--allow-model-mismatch", "--json"], tmp_path, module="decoder")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["config"]["gen_length"] == 32


# ---------------------------------------------------------------------------------- a study that exists
def _sets(tmp: Path, trials: int, extra: list[str] | None = None) -> list[str]:
    """The `--set` options of helpers.small_args (plus `extra`)."""
    args = small_args(tmp, trials)
    sets = [x for i, a in enumerate(args) if a == "--set" for x in ("--set", args[i + 1])]
    for item in extra or []:
        sets += ["--set", item]
    return sets


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A 2-trial study (vanilla and fast-dllm finished, the paper reference still queued), run by the real CLI."""
    tmp = tmp_path_factory.mktemp("study")
    proc = cli(["run", *small_args(tmp, 2), "--no-progress", "--accept-low-power"], tmp, timeout=600)
    assert proc.returncode == 0, proc.stderr
    name = default_study_name(spec_for(tmp, 2))
    states = [t[1] for t in trial_record(tmp / "study.db", name)]
    assert states == ["COMPLETE", "COMPLETE", "WAITING"]
    return tmp, name


@pytest.mark.parametrize("change, shown", [
    ("search_space.window.choices=[8, 32, null]", "search_space.window.choices: [16, 32, null] → [8, 32, null]"),
    ("validation_size=20", "validation_size: 24 → 20"),
])
def test_resuming_with_a_changed_spec_explains_and_loses_no_trial(finished_study, change, shown):
    tmp, name = finished_study
    trials = trial_record(tmp / "study.db", name)
    fresh = tmp / f"mlflow-{change.split('=')[0]}.db"  # a fresh tracking store: its set-up lines must not show
    before = {k: v for k, v in checksums(tmp).items() if not k.startswith("mlflow")}
    args = ["run", "--task", "arith", "--model", MODEL, "--storage", f"sqlite:///{tmp}/study.db", "--tracking-uri",
            f"sqlite:///{fresh}", "--study-name", name, *_sets(tmp, 3, [change]), "--no-progress",
            "--accept-low-power"]
    line = one_line_error(cli(args, tmp), "was created with another spec")
    assert shown in line and "--study-name" in line and "original spec" in line
    assert trial_record(tmp / "study.db", name) == trials  # the queued paper trial is still WAITING, not FAIL
    assert {k: v for k, v in checksums(tmp).items() if not k.startswith("mlflow")} == before


def test_ctrl_c_is_one_clean_line_and_the_resume_loses_nothing(finished_study):
    """Interrupted in a trial: exit 130, one `interrupted:` line (no Optuna "Trial failed" or traceback), the
    finished trials as they were, the interrupted one queued again; the resume then fills the budget."""
    tmp, name = finished_study
    budget = 4  # the budget may grow on a resume (not the spec)
    before = [t for t in trial_record(tmp / "study.db", name) if t[1] == "COMPLETE"]
    args = ["run", *small_args(tmp, budget), "--no-progress", "--accept-low-power", "--study-name", name]
    # The worker parks where its first trial's evaluation starts (tuner.workers.parking) until Ctrl-C: the interrupt
    # lands in a trial whatever the machine's speed.
    park = tmp / "park"
    park.mkdir(exist_ok=True)
    (park / "hold").touch()
    proc = subprocess.Popen([sys.executable, "-m", "tuner", *args], cwd=tmp,
                            env={**child_env(), "DTUNE_TEST_PARK": str(park)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and not list(park.glob("*.parked")):
        time.sleep(0.1)
    reached = proc.poll() is None and bool(list(park.glob("*.parked")))
    if not reached:
        proc.kill()
    assert reached, f"the run never reached a trial's evaluation: {proc.communicate()[1][-3000:]}"
    assert any(t[1] == "RUNNING" for t in trial_record(tmp / "study.db", name))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "failed" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].startswith("interrupted: finished trials are kept")
    after = trial_record(tmp / "study.db", name)
    assert after[: len(before)] == before  # the finished trials, their states and values unchanged
    assert not [t for t in after if t[1] == "RUNNING"]
    failed = [t[0] for t in after if t[1] == "FAIL"]
    assert all(any(t[4] == n and t[1] == "WAITING" for t in after) for n in failed)  # each interrupted one queued
    rerun = cli(args, tmp, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    final = trial_record(tmp / "study.db", name)
    assert final[: len(before)] == before
    assert len([t for t in final if t[1] in ("COMPLETE", "PRUNED")]) == budget
    assert [t[1] for t in final if t[3] == "paper"][-1] == "COMPLETE"  # the queued reference was never lost


def test_a_foreign_postgresql_database_is_refused_and_left_as_it_was(pg, tmp_path):
    """The same refusal on PostgreSQL: another application's tables, and none of Optuna's created beside them."""
    import sqlalchemy

    url = pg.create_database("otherapp")
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE invoices (id serial PRIMARY KEY, total numeric)"))
        conn.execute(sqlalchemy.text("INSERT INTO invoices (total) VALUES (42)"))
    for command in (["show", "--task", "arith"], ["run", "--task", "arith", "--tracking-uri", "sqlite:///mlflow.db"]):
        one_line_error(cli([*command, "--storage", url], tmp_path), "holds another program's tables (invoices)")
    with engine.connect() as conn:
        assert sqlalchemy.inspect(conn).get_table_names() == ["invoices"]
        assert conn.execute(sqlalchemy.text("SELECT total FROM invoices")).scalar() == 42
    engine.dispose()
    assert not list(tmp_path.iterdir())  # no tracking store made either


def test_export_refuses_a_default_profile_folder_it_cannot_use_before_any_work(tmp_path):
    """`profiles` (the default --out folder) is a file here: refused at once, not after the test split ran."""
    (tmp_path / "profiles").write_text("not a folder\n")
    before = checksums(tmp_path)
    one_line_error(cli(["export", "--task", "arith", *STORE], tmp_path), "profiles is not a directory")
    assert checksums(tmp_path) == before
