"""What a study shows: its summary metrics, tables and Pareto plots."""
