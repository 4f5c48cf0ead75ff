"""One exception type for problems a user can fix, so the CLI can print them as one line."""
import importlib


class PixelwiseError(Exception):
    """A problem with the user's input: the message names the file, the value and the fix."""


class DataError(PixelwiseError):
    """A dataset file is unreadable, inconsistent or missing."""


def import_optional(module: str, extra: str, purpose: str):
    """Import an optional dependency, or say which pip extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PixelwiseError(f"{purpose} needs the {module.split('.')[0]} package, which is not installed: "
                             f"pip install 'pixelwise[{extra}]'") from None
