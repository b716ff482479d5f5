"""`tuner export`: pick a trial, confirm it on the held-out test split, write and register its profile."""
