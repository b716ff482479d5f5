"""The tuner end to end on the bundled tiny model: a real SQLite study, a real local MLflow store, real exports.

Studies here are small (a few trials over a few dozen validation items at gen length 64) so the file stays
within a couple of minutes on two CPU cores; the full-size loop is `python -m tuner run --task arith`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
from helpers import MODEL, Parking, child_env, load, small_args, spec_for

from decoder import load_profile, read_profile
from tuner.cli import main
from tuner.storage.database import open_storage
from tuner.study.lifecycle import default_study_name

# A few dozen items resolve nothing but the baseline within the spec's margin, and the baseline is never a pick
# (tuner.verdict.selection): exports of these small studies take a 60-point margin, so they confirm a real pick.
WIDE = ["--max-drop", "60"]


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """One 5-trial study shared by the tracking, show and export tests (the expensive part, done once)."""
    tmp = tmp_path_factory.mktemp("study")
    cwd = os.getcwd()
    os.chdir(tmp)  # MLflow's local artifacts and the default profiles/ dir land here
    log = io.StringIO()  # stderr as a log file sees it (not a terminal): kept for the log-line test
    try:
        with contextlib.redirect_stderr(log):
            assert main(["run", *small_args(tmp, 5), "--accept-low-power"]) == 0
    finally:
        os.chdir(cwd)
        (tmp / "run.log").write_text(log.getvalue())
    return tmp


def test_a_run_logged_to_a_file_prints_a_line_per_trial_and_the_study_link_once(finished_study):
    """Off a terminal (nohup, CI, a scheduler) a progress bar would show only at its end: one line per finished
    trial instead, with its number, state, knobs, accuracy and CI, tokens/s and items used."""
    lines = (finished_study / "run.log").read_text().splitlines()
    trials = [line for line in lines if re.search(r": trial \d+ ", line)]
    assert len(trials) == 5, lines
    assert re.search(r": trial 0 \(vanilla\) COMPLETE \[1/5\] · mode=vanilla", trials[0]), trials[0]
    for line in trials:
        assert re.search(r" (COMPLETE|PRUNED) \[\d/5\]", line), line
        assert ("window=" in line) != ("mode=vanilla" in line), line  # the knobs its mode reads, only those
        assert re.search(r"accuracy \d+\.\d% \[95% CI \d+\.\d%–\d+\.\d%\]", line), line
        assert re.search(r" · \d+\.\d tokens/s · \d+ items", line), line
    assert "drop " in trials[3] and "(upper " in trials[3]  # a searched trial: its paired drop and bound
    assert sum(line.startswith("MLflow: run ") for line in lines) == 1  # the study's link, once
    assert not any("━" in line for line in lines)  # no progress bar drawn into the log


def test_a_run_prints_its_plan_first_and_an_eta_per_trial(finished_study):
    """Before its first trial a run says what the study will cost (the baseline's items still to decode, trials ×
    expected items, the test confirmation, in items and in seconds from a probe on this machine), and every trial
    line carries the time left."""
    lines = (finished_study / "run.log").read_text().splitlines()
    first_trial = next(i for i, line in enumerate(lines) if re.search(r": trial \d+ ", line))
    plan = [line for line in lines[:first_trial] if line.startswith(("plan: ", "  baseline", "  trials", "  test"))]
    assert len(plan) == 4 and "timed on" in plan[0] and "s/item" in plan[0], plan
    assert re.search(r"up to 24 items to decode \(0 stored\) ≈ \d", plan[1]), plan[1]
    assert all(" · ETA " in line for line in lines if re.search(r": trial \d+ ", line))


def test_run_plan_prints_the_cost_and_exits_creating_nothing(tmp_path, capsys):
    assert main(["run", *small_args(tmp_path, 5), "--accept-low-power", "--plan"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan: 5 trials on 24 validation items, test split 24") and "total ≈" in out
    assert not (tmp_path / "study.db").exists()  # a plan creates no study and no database


def test_run_evaluates_references_first_and_fills_the_budget(finished_study):
    study = load(finished_study, 5)
    trials = study.get_trials()
    assert [t.user_attrs.get("reference") for t in trials[:3]] == ["vanilla", "fast-dllm", "paper"]
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 5
    base = study.user_attrs["baseline"]
    assert base["reference"] == "vanilla" and base["trial"] == 0
    fast, paper = trials[1], trials[2]
    m_fast, m_paper = fast.user_attrs["metrics"], paper.user_attrs["metrics"]
    # The streaming reference attends to fewer query x key pairs than Fast-dLLM on the same items.
    assert m_paper["attended_pairs"] < m_fast["attended_pairs"]
    assert all("accuracy" in t.constraints for t in finished)


def test_mlflow_holds_one_parent_with_nested_trials_and_pareto_artifacts(finished_study):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{finished_study}/mlflow.db")
    exp = client.get_experiment_by_name("dtune-arith")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 5
    assert all("accuracy" in c.data.metrics and "nfe" in c.data.metrics for c in children)
    # The robust speed and its dispersion (tuner.study.timing) are on every trial run, the old wall figure beside them.
    assert all({"tokens_per_s", "speed_spread", "speed_noisy", "tokens_per_s_wall"} <= set(c.data.metrics)
               for c in children)
    assert parent.data.params["task"] == "arith" and "validation_hash" in parent.data.params
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.html", "pareto.png", "trials.csv"} <= artifacts
    # What a reviewer reads: the UI opens the experiment on its runs ("Model training") side, the study run and
    # every trial run carry a one-line description, and no empty tags.
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.data.tags["mlflow.note.content"].startswith("dtune study ")
    for c in children:
        note = c.data.tags["mlflow.note.content"]
        assert note.startswith(f"trial {c.data.tags['dtune.trial_number']}") and "tokens/s" in note, note
        assert all(v != "" for v in c.data.tags.values())


def test_rerunning_resumes_without_losing_or_repeating_trials(finished_study):
    before = {t.number: t.values for t in load(finished_study, 5).get_trials()}
    args = small_args(finished_study, 5)
    args[args.index("trials=5")] = "trials=6"
    cwd = os.getcwd()
    os.chdir(finished_study)
    try:
        assert main(["run", *args, "--no-progress", "--accept-low-power"]) == 0
        # Budget spent: a further run with the same budget exits cleanly without running anything.
        assert main(["run", *args, "--no-progress", "--accept-low-power"]) == 0
    finally:
        os.chdir(cwd)
    after = load(finished_study, 6).get_trials()
    assert len(after) == 6
    assert {t.number: t.values for t in after[:5]} == before


def test_show_prints_the_front(finished_study, capsys):
    assert main(["show", *small_args(finished_study, 6)[:-2], "--set", "trials=6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["trials"]) == 6 and out["front"]
    assert all(t["speed_spread"] is not None for t in out["trials"])  # the robust figure's dispersion
    study = load(finished_study, 6)
    assert all(t.values[1] == t.user_attrs["metrics"]["tokens_per_s"] for t in study.get_trials() if t.values)


def test_export_confirms_on_test_and_writes_a_profile_decoder_loads(finished_study):
    out = finished_study / "arith.profile.json"
    args = small_args(finished_study, 6)
    rc = main(["export", *args, *WIDE, "--pick", "knee", "--out", str(out), "--force"])
    assert rc == 0
    profile = read_profile(out)
    config = load_profile(out)
    assert config == profile.decode
    meta = profile.meta
    assert meta["task"]["test"]["used"] == 24 and len(meta["task"]["test"]["hash"]) == 64
    assert meta["model"]["fingerprint"] and meta["study"]["trial"] >= 0
    assert {"pick", "baseline", "paired_test"} <= set(meta["test"])
    assert 0 <= meta["test"]["paired_test"]["p_value"] <= 1
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{finished_study}/mlflow.db")
    exp = client.get_experiment_by_name("dtune-arith")
    parent = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags][0]
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "profiles")] == [f"profiles/{out.name}"]


def test_a_second_export_decodes_only_the_pick_and_registers_it_for_production(finished_study, monkeypatch,
                                                                                capsys):
    """The baseline's test evaluation is stored in the shared ledger: a second export of the same study decodes only its
    pick (generations counted), says which figures it reused, registers the profile (alias candidate), and after
    `promote` production code loads it by alias."""
    import tuner.study.evaluate

    args = small_args(finished_study, 6)
    cwd = os.getcwd()
    os.chdir(finished_study)
    try:
        # The first export fills the shared baseline ledger of the test split (or finds it filled by another test).
        assert main(["export", *args, *WIDE, "--out", str(finished_study / "first.json"), "--force"]) == 0
        rows, real = [], tuner.study.evaluate.generate

        def counting(model, prompts, config, **kw):
            rows.append((config, len(prompts), "tokenizer" in kw))  # warm-up calls pass no tokenizer
            return real(model, prompts, config, **kw)

        monkeypatch.setattr(tuner.study.evaluate, "generate", counting)
        out = finished_study / "registered.json"
        assert main(["export", *args, *WIDE, "--out", str(out), "--force", "--register", "arith-tiny"]) == 0
        monkeypatch.undo()
        captured = capsys.readouterr()
        uri = f"sqlite:///{finished_study}/mlflow.db"
        # 24 test items rarely confirm anything: an unconfirmed (forced) profile is promoted only with --force.
        confirmed = read_profile(out).meta["confirmed"]
        assert main(["promote", "arith-tiny", "--tracking-uri", uri]) == (0 if confirmed else 2)
        if not confirmed:
            assert "failed its held-out confirmation" in capsys.readouterr().err
            assert main(["promote", "arith-tiny", "--tracking-uri", uri, "--force"]) == 0
    finally:
        os.chdir(cwd)
    profile = read_profile(out)
    # the pick's test items, once each over both exports (what the first stored, this one finds and does not decode
    # again), as far as the staged confirmation went; no baseline item decoded again
    sequential = profile.meta["test"]["sequential"]
    assert sum(n for _, n, scored in rows if scored) == sequential["decoded_this_run"]
    assert sequential["decoded_this_run"] + sequential["resumed_from_store"] == sequential["items_decoded"]
    assert all(config == profile.decode for config, _, _ in rows)
    assert profile.meta["test"]["baseline"]["reused_from"]  # and the profile says so
    assert "baseline's test evaluation reused" in captured.err
    if sequential["decoded_this_run"]:  # progress over the split, as far as the stages went
        assert f"{sequential['items_decoded']}/24 test items" in captured.err
    else:
        assert f"{sequential['resumed_from_store']} of the pick's test items were decoded by an earlier export" in captured.err
    assert "registered: arith-tiny version 1, alias candidate" in captured.out
    assert load_profile("models:/arith-tiny@production", tracking_uri=uri) == profile.decode
    version = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version("arith-tiny", "1")
    assert version.tags["task"] == "arith" and version.tags["model_fingerprint"] == profile.meta["model"]["fingerprint"]
    pick = profile.meta["test"]["pick"]
    assert version.tags["test_accuracy"] == f"{100 * pick['accuracy']:.1f}"


def test_export_finds_a_study_run_with_another_batch_size_and_decodes_with_it(finished_study, capsys):
    """`run --batch-size 16` then `export` (which has no such flag; the README's own-workload examples): export
    finds the study, says so, and decodes with the study's batch size, so the test ledger is the one the run's plan
    counted (its key has the batch size in it)."""
    from tuner.app.context import Context, Options

    run_spec = spec_for(finished_study, 5)
    spec = spec_for(finished_study, 5, ["batch_size=5"])
    ctx = Context(spec, Options(storage=f"sqlite:///{finished_study}/study.db"))
    assert ctx.study_name != default_study_name(run_spec)  # the derived name misses
    study = ctx.load_study()
    assert study.study_name == default_study_name(run_spec)
    assert "run with --batch-size 12 (batch_size 12 used here too)" in capsys.readouterr().err
    assert ctx.spec.batch_size == 12 and ctx.evaluator.batch_size == 12


def test_export_refuses_a_pick_that_fails_on_the_test_split(finished_study, capsys):
    """A trial that looked perfect on validation (an overfit point) but decodes everything in one step."""
    study = load(finished_study, 6)
    spec = spec_for(finished_study, 6)
    bad = spec.config_for({"mode": "streaming", "window": 16, "threshold": 0.01, "alpha": 0.7, "early_exit": True})
    trial = optuna.trial.create_trial(
        params={"window": 16, "threshold": 0.5, "alpha": 0.7, "early_exit": True},
        distributions={k: v for k, v in study.trials[3].distributions.items()},
        values=[1.0, 1e9], user_attrs={"config": bad.to_dict(), "metrics": {"accuracy": 1.0}},
        constraints={"accuracy": -1.0},
    )
    study.add_trial(trial)
    out = finished_study / "refused.json"
    rc = main(["export", *small_args(finished_study, 6), "--pick", "fastest", "--out", str(out)])
    assert rc == 3
    assert "refused:" in capsys.readouterr().err
    assert not out.exists()


def test_racing_stops_a_trial_that_cannot_meet_the_constraint(tmp_path):
    """On the real model and a real vanilla baseline (the ledger decodes it on demand): a reckless configuration is
    shown infeasible by its paired bound before the pool is used up and stops there, the baseline having decoded
    just the items it used; its repeat is not evaluated again."""
    from decoder import load_model
    from tuner.app.context import load_task
    from tuner.storage.shared_ledger import study_ledger
    from tuner.study.evaluate import Evaluator
    from tuner.study.objective import Objective

    spec = spec_for(tmp_path, 3, ["constraint.max_drop=0", "race.min_items=16", "validation_size=96"])
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/p.db"), study_name="prune",
                                directions=["maximize", "maximize"])
    task = load_task(spec, None)
    items = task.load("validation")[:96]
    model, tok = load_model(MODEL, device="cpu")
    objective = Objective(spec, Evaluator(model, tok, task, batch_size=8), items)
    # A reckless configuration: commits a whole block per step, so it soon gets items wrong that vanilla gets right.
    study.enqueue_trial({"window": 16, "threshold": 0.5, "alpha": 0.7, "early_exit": True})
    study.optimize(objective, n_trials=1)
    reckless = study.trials[0]
    assert reckless.state == optuna.trial.TrialState.PRUNED
    stopped = reckless.user_attrs["pruned_after"]
    assert stopped < 96 and reckless.user_attrs["metrics"]["race_verdict"] == "infeasible"
    assert [h["n"] for h in reckless.user_attrs["race"]] == [16, 32, 64][: len(reckless.user_attrs["race"])]
    assert reckless.constraints["accuracy"] > 0
    assert study_ledger(study).n == stopped  # the baseline decoded exactly the items the trial used
    # The same configuration again (alpha as a GP proposes it) is not evaluated again: it stops as trial 0 did.
    study.enqueue_trial({"window": 16, "threshold": 0.5, "alpha": 0.6999999999999998, "early_exit": True})
    study.optimize(objective, n_trials=1)
    repeat = study.trials[1]
    assert repeat.state == optuna.trial.TrialState.PRUNED and repeat.user_attrs["duplicate_of"] == 0
    assert repeat.user_attrs["pruned_after"] == reckless.user_attrs["pruned_after"]
    assert repeat.constraints == reckless.constraints


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--task", "nosuchtask"], "no study spec"),
        (["run", "--task", "arith", "--set", "trails=3"], "unknown field"),
        (["run", "--task", "arith", "--set", "search_space.alpha.low=2"], "search_space.alpha"),
        (["run", "--task", "arith", "--storage", "postgresql+psycopg://u:secret@127.0.0.1:9/db"],
         "can't open the study storage"),
        (["run", "--task", "arith", "--tracking-uri", "http://127.0.0.1:9"], "127.0.0.1:9"),
        (["run", "--task", "arith", "--refresh-every", "0"], "--refresh-every must be at least 1"),
        (["eval", "--task", "arith", "--threshold", "3"], "threshold must be in"),
        (["eval", "--task", "arith", "--model", "/no/such/model"], "neither a checkpoint directory"),
        (["eval", "--task", "gsm8k"], "cannot be reached"),  # no hub here and no --data-dir
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "tuner", *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert "secret" not in proc.stderr


def test_corrupt_profile_for_eval(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"dtune": {"format": "dtune-profile", "format_version": 7}}')
    proc = subprocess.run([sys.executable, "-m", "tuner", "eval", "--task", "arith", "--profile", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "format_version 7" in proc.stderr


def test_eval_json_reports_accuracy_speed_and_nfe(capsys):
    rc = main(["eval", "--task", "arith", "--model", MODEL, "--split", "test", "--limit", "12", "--gen-length",
               "64", "--mode", "streaming", "--window", "32", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 12 and 0 <= out["accuracy"] <= 1 and out["tokens_per_s"] > 0 and out["nfe"] > 0
    assert out["split"] == "test" and len(out["split_hash"]) == 64


def test_ctrl_c_keeps_finished_trials_and_the_rerun_resumes(tmp_path):
    """Ctrl-C once a trial has finished and the next is evaluating (parked at its start, tuner.workers.parking,
    whatever the machine's speed): exit 130, the finished trial kept as it was, and the rerun fills the budget."""
    args = [sys.executable, "-m", "tuner", "run", *small_args(tmp_path, 4), "--no-progress", "--accept-low-power"]
    parking = Parking(tmp_path)
    proc = subprocess.Popen(args, cwd=tmp_path, env=parking.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    spec = spec_for(tmp_path, 4)
    try:
        first = parking.wait(lambda parked: len(parked) == 1, [proc])[0]
        parking.release(first)  # that trial finishes; the run parks in the next one
        parking.wait(lambda parked: len(parked) == 1 and parked[0].trial != first.trial, [proc])
    except BaseException:
        proc.kill()
        raise
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "finished trials are kept" in err
    study = optuna.load_study(study_name=default_study_name(spec), storage=f"sqlite:///{tmp_path}/study.db")
    kept = {t.number: t.values for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE}
    assert kept
    rerun = subprocess.run(args, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    study = optuna.load_study(study_name=default_study_name(spec), storage=f"sqlite:///{tmp_path}/study.db")
    after = {t.number: t.values for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE}
    assert all(after[n] == v for n, v in kept.items())
    assert len([t for t in study.get_trials() if t.state in (optuna.trial.TrialState.COMPLETE,
                                                            optuna.trial.TrialState.PRUNED)]) == 4


def test_an_interrupt_while_optuna_records_a_trial_still_requeues_it(tmp_path):
    """A signal can land while Optuna writes a finished trial's outcome (seen when an --n-workers parent was killed
    as a trial ended): Optuna's clean-up then fails with an UnboundLocalError in place of the KeyboardInterrupt.
    The run must still end as interrupted, with the trial failed and re-queued, not left RUNNING until its
    heartbeat goes stale."""
    import sqlalchemy

    from tuner.workers.worker import interrupts

    fired = []

    def interrupt_the_first_outcome_write(conn, cursor, statement, parameters, context, executemany):
        if not fired and statement.lstrip().upper().startswith("UPDATE TRIALS") and "COMPLETE" in str(parameters):
            fired.append(statement)
            interrupts.request()  # what the SIGTERM/SIGINT handler does, here inside the statement

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", interrupt_the_first_outcome_write)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = main(["run", *small_args(tmp_path, 2), "--no-progress", "--accept-low-power"])
    finally:
        os.chdir(cwd)
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", interrupt_the_first_outcome_write)
    assert fired and code == 130
    trials = load(tmp_path, 2).get_trials()
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert trials[0].state == optuna.trial.TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.WAITING
    assert retry[0].user_attrs.get("reference") == "vanilla"


FIXTURES = Path(__file__).parent / "fixtures" / "data"


def test_gsm8k_path_runs_end_to_end_on_local_files(tmp_path):
    """The real-benchmark path (local model dir + --data-dir) works; the tiny model's GSM8K accuracy is ~0."""
    from decoder import load_model as load
    from decoder import save_checkpoint

    model, tokenizer = load(MODEL, device="cpu")
    local = save_checkpoint(model, tmp_path / "local-model", tokenizer=tokenizer)  # a plain local checkpoint dir
    args = ["--task", "gsm8k", "--model", str(local), "--data-dir", str(FIXTURES), "--storage",
            f"sqlite:///{tmp_path}/study.db", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    for o in ["chat_template=false", "few_shot=0", "task_options={metric: strict, validation_size: 8}",
              "decode.gen_length=64", "batch_size=8", "trials=3", "test_size=4",
              "references=[{name: vanilla, mode: vanilla, steps: 8}, {name: fast-dllm, mode: streaming, "
              "window: null, threshold: 0.9, alpha: 0.0, early_exit: false}, {name: paper, mode: streaming, "
              "window: 32, threshold: 0.9, alpha: 0.3, early_exit: true}]"]:
        args += ["--set", o]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["run", *args, "--no-progress", "--accept-low-power"]) == 0
        assert main(["export", *args, *WIDE, "--out", str(tmp_path / "gsm8k.json"), "--force"]) == 0
    finally:
        os.chdir(cwd)
    meta = read_profile(tmp_path / "gsm8k.json").meta
    assert meta["task"]["name"] == "gsm8k" and meta["task"]["validation"]["used"] == 8


def test_chat_template_without_a_template_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tuner", "eval", "--task", "arith", "--model", MODEL, "--set",
                           "chat_template=true", "--limit", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no chat template" in proc.stderr
