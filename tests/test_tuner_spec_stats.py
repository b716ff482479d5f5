"""Study specs (validation, overrides) and the statistics the tuner acts on."""

from __future__ import annotations

import pytest
import yaml

from tuner.study.space import distributions, reference_params
from tuner.study.spec import SpecError, apply_overrides, builtin_specs, load_spec, spec_from_dict
from tuner.verdict.stats import mcnemar_exact, wilson_interval


@pytest.mark.parametrize("task", ["arith", "gsm8k", "math", "humaneval", "mbpp"])
def test_every_shipped_spec_is_valid_and_holds_its_references(task):
    spec = load_spec(task)
    assert spec.task == task
    names = {r.name for r in spec.references}
    assert {"vanilla", "fast-dllm", "paper"} <= names
    fast = spec.reference_config(spec.reference("fast-dllm"))
    assert fast.window is None and fast.alpha == 0 and not fast.early_exit and fast.threshold == 0.9
    assert spec.reference_config(spec.reference("vanilla")).mode == "vanilla"
    dists = distributions(spec)
    for ref in spec.references:  # every reference is a point of the search space the sampler sees
        params = reference_params(spec, ref.name)
        assert set(params) == set(dists)
        for name, value in params.items():
            assert dists[name]._contains(dists[name].to_internal_repr(value))
    # the sampler never proposes vanilla (a duplicate of the baseline); vanilla reports the most vanilla-like corner
    assert "mode" not in dists
    corner = reference_params(spec, "vanilla")
    assert corner.get("window", None) is None and corner.get("early_exit", False) is False
    assert corner["threshold"] == spec.knob("threshold").high and corner["alpha"] == spec.knob("alpha").low


def _base():
    return yaml.safe_load(builtin_specs()["arith"].read_text())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(trails=3), "unknown field"),
        (lambda d: d["search_space"].update(alpha={"low": 0.5, "high": 0.2}), "low < high"),
        (lambda d: d["search_space"].update(threshold={"low": 0.5, "high": 1.5}), "high <= 1.0"),
        (lambda d: d["search_space"].update(windw={"choices": [1]}), "not a searchable knob"),
        (lambda d: d["search_space"].update(window={"choices": [0, None]}), "positive integers or null"),
        (lambda d: d["search_space"].update(window={"low": 1, "high": 9}), "takes choices"),
        (lambda d: d["search_space"]["alpha"].update(lo=0.1), "unknown key"),
        (lambda d: d.update(trials=0), "trials must be >= 1"),
        (lambda d: d.update(sampler="cmaes"), "sampler must be one of"),
        (lambda d: d.update(constraint={"baseline": "nope"}), "not a reference"),
        (lambda d: d.update(constraint={"max_drop": -1}), "max_drop"),
        (lambda d: d["references"][2].update(window=48), "outside search_space.window"),
        (lambda d: d["references"].append({"name": "f", "mode": "fast"}), "express Fast-dLLM"),
        (lambda d: d["decode"].update(gen_length=100), "multiple of block_size"),
        (lambda d: d["decode"].update(window=32), "decode fixes window"),
        (lambda d: d.update(objectives=["accuracy"]), "objectives must be"),
        (lambda d: d.update(version=2), "version 2 is not supported"),
    ],
)
def test_bad_specs_fail_with_the_field_named(mutate, message):
    data = _base()
    mutate(data)
    with pytest.raises(SpecError, match=message):
        spec_from_dict(data)


def test_overrides_reach_any_field_and_reject_unknown_ones(tmp_path):
    spec = load_spec("arith", ["trials=7", "constraint.max_drop=2.5", "search_space.window.choices=[32, null]",
                               'model="/models/x"'])
    assert spec.trials == 7 and spec.constraint.max_drop == 2.5 and spec.model == "/models/x"
    assert spec.knob("window").choices == (32, None)
    with pytest.raises(SpecError, match="unknown field 'trails'"):
        apply_overrides({}, ["trails=3"])
    with pytest.raises(SpecError, match="field=value"):
        apply_overrides({}, ["trials"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="no study spec"):
        load_spec("nosuchtask")


def test_an_override_yaml_would_read_as_a_comment_keeps_its_text():
    """`--set 'task_options.answer_regex=#### (-?[0-9]+)'` (the README's example): YAML reads it as a comment (null),
    which silently left agreement comparing whole completions; it is the text. Quoted or '#'-free values are YAML's."""
    over = apply_overrides({}, [f"task_options.{v}" for v in ["answer_regex=#### (-?[0-9]+)", "a=x #y", "b='#### z'",
                                                                "c=[1, 2]", "d=null", "e="]])["task_options"]
    assert over["answer_regex"] == "#### (-?[0-9]+)"
    assert over["a"] == "x #y" and over["b"] == "#### z" and over["c"] == [1, 2]
    assert over["d"] is None and over["e"] is None


def test_fingerprint_changes_with_results_relevant_fields_only():
    a = load_spec("arith")
    assert load_spec("arith", ["trials=99"]).fingerprint() == a.fingerprint()
    assert load_spec("arith", ["test_size=50"]).fingerprint() == a.fingerprint()  # export-only
    assert load_spec("arith", ["validation_size=50"]).fingerprint() != a.fingerprint()


def test_wilson_interval():
    lo, hi = wilson_interval(80, 100)
    assert lo == pytest.approx(0.7112, abs=1e-3) and hi == pytest.approx(0.8666, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_mcnemar_exact():
    pick = [True] * 40 + [False] * 10 + [True] * 2
    base = [True] * 40 + [True] * 10 + [False] * 2
    r = mcnemar_exact(pick, base)
    assert (r["only_pick_correct"], r["only_baseline_correct"]) == (2, 10)
    assert r["p_value"] == pytest.approx(0.0386, abs=1e-3)
    assert mcnemar_exact([True], [True])["p_value"] == 1.0
