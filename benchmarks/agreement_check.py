"""The agreement promise checked on arith with its labels hidden from the constraint (issue 27).

    OMP_NUM_THREADS=1 python -m benchmarks.agreement_check [--workdir DIR] [--fresh 1000] [--out FILE]

A real study of the arith task under the agreement constraint (`constraint.metric=agreement`: each configuration
is judged by how often its extracted answer differs from vanilla's, labels never read), exported as usual; then the
exported profile and vanilla decode fresh problems no study saw (another seed) and the labels judge them. The
promise says: the accuracy drop on those problems is at most the disagreement rate (always, item by item), and
that rate is within the margin (at the stated confidence). Both are printed with the study's and export's figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import Report, command_line, machine_line, md_table
from decoder import load_model, read_profile
from tuner.study.evaluate import Evaluator
from tuner.study.spec import load_spec
from tuner.tasks.arith import ArithTask
from tuner.verdict.stats import disagreement, paired_drop

# A 400-item validation pool keeps the study cheap; the test split is the spec's 1,500: a pick whose answers differ
# from vanilla's on ~8% of problems, against a 10-point margin, needs it (400 test items refused one at 7.8 points,
# upper bound 10.6).
STUDY = ["--set", "constraint.metric=agreement", "--set", "validation_size=400", "--trials", "12"]
FRESH_SEED = 2027


def tuner(args: list[str], cwd: Path) -> float:
    """Run `python -m tuner ARGS`; returns its CPU time (children included) in minutes."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "tuner", *args], cwd=cwd, text=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
    if proc.returncode not in (0, 3):
        raise SystemExit(f"tuner {' '.join(args)} exited {proc.returncode}")
    return ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="agreement-check")
    parser.add_argument("--max-drop", type=float, default=10.0, help="the promised margin (points)")
    parser.add_argument("--fresh", type=int, default=1000, help="fresh labelled problems to check the promise on")
    parser.add_argument("--out")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    study = [*STUDY, "--set", f"constraint.max_drop={args.max_drop}", "--task", "arith", "--no-progress"]
    t0 = time.time()
    run_cpu = tuner(["run", *study], work)
    profile_path = work / "profile.json"
    export_cpu = tuner(["export", *[a for a in study if a not in ("--trials", "12", "--no-progress")],
                        "--out", str(profile_path), "--overwrite"], work)
    report = Report(args.out)
    report("### Agreement promise on arith, labels hidden from the constraint")
    report()
    report(machine_line())
    report(f"command: `{command_line()}`")
    if not profile_path.exists():
        report("no profile exported (the study confirmed none); nothing to check")
        report.save()
        return
    profile = read_profile(profile_path)
    rule = profile.meta["test"]["non_inferiority"]
    spec = load_spec("arith")
    model, tok = load_model(spec.model, device="cpu")
    task = ArithTask(seed=FRESH_SEED, validation_size=args.fresh, test_size=1)
    items = task.load("validation")
    evaluator = Evaluator(model, tok, task, batch_size=spec.batch_size)
    vanilla = evaluator.evaluate(items, spec.reference_config(spec.reference("vanilla")), chunk_size=250)
    pick = evaluator.evaluate(items, profile.decode, chunk_size=250)
    drop = paired_drop(pick.outcomes, vanilla.outcomes)
    disagree = disagreement(pick.answers, vanilla.answers)
    holds = drop.drop <= disagree.rate + 1e-12
    report(f"study + export: {run_cpu:.1f} + {export_cpu:.1f} CPU-min; fresh check: {time.time() - t0:.0f} s wall "
           "in all")
    report()
    report(md_table(
        ["", "items", "disagreement with vanilla (upper bound)", "accuracy drop vs vanilla", "promise"],
        [["export's confirmation (test split)", rule["n"],
          f"{rule['disagreement_points']:.1f} pts ({rule['upper_bound_points']:.1f})", "not read (labels hidden)",
          f"≤ {rule['margin_points']:g} pts: {'confirmed' if rule['confirmed'] else 'refused'}"],
         [f"fresh problems (seed {FRESH_SEED})", disagree.n, f"{100 * disagree.rate:.1f} pts ({100 * disagree.upper:.1f})",
          f"{100 * drop.drop:.1f} pts (vanilla {vanilla.accuracy:.1%}, profile {pick.accuracy:.1%})",
          f"drop ≤ disagreement: {holds}; disagreement ≤ margin: {100 * disagree.rate <= args.max_drop}"]]))
    report()
    report(f"profile: {profile_path} · knobs {json.dumps(profile.decode.to_dict())}")
    report.save()


if __name__ == "__main__":
    main()
