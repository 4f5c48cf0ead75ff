"""One exception type for problems a user can fix, so the CLI can print them as one line."""


class PixelwiseError(Exception):
    """A problem with the user's input: the message names the file, the value and the fix."""


class DataError(PixelwiseError):
    """A dataset file is unreadable, inconsistent or missing."""
