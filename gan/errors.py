"""The one exception type for user mistakes.

A `GanError` carries a message meant for a person: it names the file, field or argument at
fault and says what was expected. The CLI prints it without a traceback and exits with 2;
everything else is a bug and keeps its traceback.
"""


class GanError(Exception):
    """A user-facing error (bad input, missing file, bad config) with a readable message."""
