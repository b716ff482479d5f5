"""What a study will cost, as `run` prints it before its first trial (and `run --plan` prints and exits), and the
ETA its progress lines carry: tuner.study.plan's estimate from what the storage already holds and a short probe
timed on this device."""

from __future__ import annotations

import time

import optuna

from ..app.context import Context
from ..storage.record import TrialRecord, read_trials
from ..storage.shared_ledger import SharedLedger
from ..study.lifecycle import FINISHED
from ..study.plan import CostPlan, Eta, Overheads, make_plan, probe
from ..verdict.sequential import Design


def study_plan(ctx: Context, storage: optuna.storages.BaseStorage | None, study: optuna.Study | None) -> CostPlan:
    """The plan of this command's study: the baseline items the shared ledgers already hold (any study's), the
    trials it has finished, and a probe of a batch with the baseline and the timing reference."""
    spec = ctx.spec
    validation, test = ctx.items("validation"), ctx.items("test")
    stored = test_stored = 0
    if storage is not None:
        stored = SharedLedger(storage, ctx.baseline_key("validation")).read().n
        test_stored = SharedLedger(storage, ctx.baseline_key("test")).read().n
    done, items = 0, []
    if study is not None:
        trials = read_trials(study, states=FINISHED)
        done = len(trials)
        items = [t.evidence.n for t in trials if t.duplicate_of is None and t.reference is None and t.evidence.n]
    timed = probe(spec, ctx.evaluator, validation)
    return make_plan(spec, pool=len(validation), test_items=len(test), baseline_stored=stored, trials_done=done,
                     finished_items=items, test_baseline_stored=test_stored,
                     design=Design.for_constraint(spec.constraint), probe=timed,
                     overheads=Overheads.for_study(spec, timed.clock))  # passes as the clock trials are timed on


class Progress:
    """What a worker has decoded since its plan was made, for the ETA (`Eta.line`)."""

    def __init__(self, plan: CostPlan, baseline_stored: int) -> None:
        self.eta, self.baseline_stored = Eta(plan, time.monotonic()), baseline_stored
        self.trials, self.items = 0, 0

    def trial_done(self, trial: optuna.trial.FrozenTrial) -> None:
        record = TrialRecord.read(trial)
        if record.state in FINISHED:
            self.trials += 1
            self.items += 0 if record.duplicate_of is not None else record.evidence.n  # a copy decodes nothing

    def line(self, baseline_now: int) -> str:
        return self.eta.line(baseline_items=max(0, baseline_now - self.baseline_stored), trials_finished=self.trials,
                             trial_items=self.items)
