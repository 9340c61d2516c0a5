"""The one exception type for errors a user can cause."""

from __future__ import annotations


class VaefastError(ValueError):
    """Bad input, a bad path or a bad model: the message names the problem and the fix.

    Subclasses ``ValueError`` so scikit-learn-style callers can catch it as such; the
    CLI prints its message as one line and exits with code 2.
    """


class BadRows(VaefastError):
    """Inputs whose values break the pixel rule (``vaefast.layout.check_pixels``); ``row``
    is the first bad row, counted from the start of the array checked."""

    def __init__(self, message: str, row: int, reason: str):
        super().__init__(message)
        self.row, self.reason = row, reason

    def shifted(self, offset: int, name: str | None = None) -> BadRows:
        """The same error with its row counted ``offset`` rows earlier (a block's row as
        the whole array's), named ``name: reason at row R`` when a name is given."""
        row = offset + self.row
        text = (
            f"{name}: {self.reason} at row {row}"
            if name
            else str(self).replace(f"row {self.row}", f"row {row}")
        )
        return BadRows(text, row, self.reason)


class BadFile(VaefastError):
    """A file of a dataset (an image, a parquet cell, a tar member) that cannot be read
    or decoded; ``id`` names it as the store records it."""

    def __init__(self, message: str, id: str, reason: str):
        super().__init__(message)
        self.id, self.reason = id, reason


def first_line(e: BaseException, limit: int = 300) -> str:
    """An exception's first non-empty line (at most ``limit`` characters), or its type's
    name: how a third-party error becomes part of one line to the user."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(e).__name__
