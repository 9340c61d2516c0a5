"""The one exception type for errors a user can cause."""


class VaefastError(ValueError):
    """Bad input, a bad path or a bad model: the message names the problem and the fix.

    Subclasses ``ValueError`` so scikit-learn-style callers can catch it as such; the
    CLI prints its message as one line and exits with code 2.
    """
