"""Error reasons people read in the manifest: reproducible one-liners, never object reprs."""

from __future__ import annotations

import re


class InputError(ValueError):
    """A problem with the input itself (an undecodable seed, a bad key): its message is the whole reason."""


class StageSetupError(RuntimeError):
    """A stage could not set up on its worker (most often: its model would not load). The driver finds this
    class's name and message in whatever Ray wraps it in, and prints the message as the run's one-line error."""


def describe_error(exc: Exception) -> str:
    """``Type: message`` without object reprs and memory addresses, so reasons are reproducible;
    an InputError's message alone."""
    if isinstance(exc, InputError):
        return str(exc)
    text = re.sub(r"<[^<>]*? at 0x[0-9a-fA-F]+>", "input", str(exc))
    return f"{type(exc).__name__}: {text}"
