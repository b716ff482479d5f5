"""Developer tools that are not part of the installed package: the bundled tiny model's training run, a throw-away
PostgreSQL server for tests and benchmarks, and scripts that compare or inspect studies. Run from the repository
root (`python -m tools.<name>`); tests and benchmarks import them from there."""
