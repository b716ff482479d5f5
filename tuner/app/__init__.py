"""What every command shares: the wiring from a spec and options to task, model, storage and tracking, and its pre-flight checks."""
