"""Running a study: its spec, search space, objective, baseline ledger, timing and sampler."""
