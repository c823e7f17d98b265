"""Errors users can act on: each message says what is wrong, where, and what to do."""


class MedClipSVDError(Exception):
    """Base class. The CLI prints these without a traceback and exits with status 2."""


class BackboneNotFoundError(MedClipSVDError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsNotAvailableError(MedClipSVDError):
    """Pretrained weights could not be found locally and could not be downloaded."""


class TargetError(MedClipSVDError, ValueError):
    """A target specification selects nothing, or names layers/towers that do not exist."""


class AdapterError(MedClipSVDError):
    """An adapter folder is missing, malformed, or does not belong to the given backbone."""


class AdapterMismatchError(AdapterError):
    """The adapter was made from a different base model."""


class DataError(MedClipSVDError):
    """Data on disk is missing, unreadable, or disagrees with its split/labels."""


class FileFormatError(MedClipSVDError, ValueError):
    """A config or data file is not UTF-8, not valid YAML/JSON, or over a bound (size, nesting, alias
    expansion, duplicate keys). ``problem`` is the message without the path, for callers that add their own
    context; ``str()`` is ``"<path>: <problem>"``."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{self.path}: {problem}")


class TrackingError(MedClipSVDError):
    """The tracking server or store cannot be used (unreachable, refuses us, unknown run or model)."""


class ModelOutputError(MedClipSVDError):
    """The model's scores cannot be used (NaN/inf): its weights are out of range or damaged."""
