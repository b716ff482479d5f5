"""The statistics behind every verdict: paired bounds, the constraint, racing, the Pareto front, the pick."""
