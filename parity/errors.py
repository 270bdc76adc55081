"""The errors the harness reports to users, and the exit status each one maps to.

A `UsageError` is a mistake in what the user asked for or handed in (an unknown option value, a
missing or malformed file, a configuration out of range): the command line prints its message as
one line and exits with status 2, never a traceback. Everything else that goes wrong is a bug or an
environment failure and keeps its traceback.

    0    everything ran and every check passed
    1    a parity check failed, a benchmark arm or a run stage failed
    2    a usage error (this module's UsageError and its subclasses)
    3    training diverged: the loss became NaN or Inf (the last good checkpoint is kept)
    130  interrupted (Ctrl-C): whatever was written before stays whole
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake in the user's request or input; reported as one line, exit status 2."""


class ConfigError(UsageError, ValueError):
    """A configuration field of the wrong type or out of range, an unknown field or preset."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message names where, and the last good checkpoint."""

    def __init__(self, framework: str, seed: int, epoch: int, step: int, checkpoint: Path | None):
        self.framework, self.seed, self.epoch, self.step, self.checkpoint = framework, seed, epoch, step, checkpoint
        kept = f"last good checkpoint kept: {checkpoint}" if checkpoint else "no checkpoint was written before it"
        super().__init__(f"{framework} (seed {seed}): the loss became NaN or Inf at epoch {epoch}, step {step}; "
                         f"training stopped ({kept})")
