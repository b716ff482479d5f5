"""The tuner's one error base, and the one-line form every CLI message takes."""
from __future__ import annotations


class TunerError(Exception):
    """Base of every error the tuner raises on purpose; the CLI prints it as one line and exits 2."""
