"""Typed errors of the decoder; the CLI turns each into a one-line message and a non-zero exit."""


class DecoderError(Exception):
    """Base class of every error the decoder raises on purpose."""


class ConfigError(DecoderError, ValueError):
    """A DecodeConfig knob is out of range, of the wrong type, or combined with a mode that can't use it."""


class ModelLoadError(DecoderError):
    """A checkpoint can't be found, read, or mapped onto a supported architecture."""


class ProfileError(DecoderError):
    """A profile file is missing, corrupt, or written by an incompatible format version."""


class ServeError(DecoderError):
    """The server can't start as asked: its address can't be bound, or an option is out of range."""
