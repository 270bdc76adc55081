"""The data errors: each names the file or dataset and what to do (a `parity.errors.UsageError`)."""

from __future__ import annotations

import os

from parity.errors import UsageError


class DataError(UsageError):
    """A problem with the data a user gave or asked for (printed by the CLI without a traceback)."""


class DataFormatError(DataError, ValueError):
    """A malformed or out-of-range line: names the file, the 1-based line number and the text."""

    def __init__(self, path: str | os.PathLike, line: int | None, text: str | None, reason: str):
        self.path, self.line, self.text, self.reason = str(path), line, text, reason
        where = f"{self.path}, line {line}" if line is not None else self.path
        shown = f": {text!r}" if text is not None else ""
        super().__init__(f"{where}: {reason}{shown}")


class DatasetNotFoundError(DataError, FileNotFoundError):
    """No files for a dataset where they were looked for."""


class ChecksumError(DataError):
    """A file's hash is not the pinned one (a download of ours is discarded; a file that was already in
    place is moved aside, never deleted)."""


class DownloadError(DataError):
    """A file could not be fetched (offline, or the server refused)."""
