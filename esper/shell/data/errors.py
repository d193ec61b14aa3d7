"""Data errors. Both are user errors (the CLI maps them to exit 2 with their one-line message)."""


class DataError(Exception):
    """Data that exist but cannot be used: a corrupt file, a wrong count, a split too small to batch."""


class DatasetNotFound(DataError):
    """No source of a task's data was found; the message names every place looked and the fix."""
