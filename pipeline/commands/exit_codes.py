"""What a failed command prints (one line) and the exit code it returns; docs/operations.md lists the codes.

The traceback is for ``--debug``. An error raised inside a Ray worker reaches the driver wrapped (a task or
actor error whose text holds the worker's traceback), so the cause is looked for both in the exception chain
and in that text.
"""

from __future__ import annotations

import errno
import re

OK, VERIFY_FAILED, CONFIG_ERROR, OUTPUT_REFUSED, BAD_INPUT_FILE = 0, 1, 2, 3, 4
INPUT_UNREACHABLE, MODEL_NOT_LOADED, NO_SPACE, OTHER_ERROR, WRONG_RAY = 5, 6, 7, 8, 9

_SETUP = re.compile(r"StageSetupError: (.+)")
_UNREACHABLE = re.compile(r"InputUnreachable: (.+)")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__


def classify(exc: BaseException, output: str | None = None) -> tuple[int, str]:
    """``(exit code, one line)`` for an error no command handled itself."""
    from pipeline.execution.ray_seams import RaySeamMissing
    from stages.ingest.listing import InputUnreachable
    from stages.utils.errors import StageSetupError

    text = str(exc)
    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {output}" if output else ""
            return NO_SPACE, (f"no space left on device{where} ({cause.filename or cause.strerror}); free space or "
                              "choose another --output, then run again: finished shards are kept")
        if isinstance(cause, StageSetupError):
            return MODEL_NOT_LOADED, f"{cause}; check the model reference and revision in the config"
        if isinstance(cause, InputUnreachable):
            return INPUT_UNREACHABLE, str(cause)
        if isinstance(cause, RaySeamMissing):
            return WRONG_RAY, str(cause)
    if "No space left on device" in text:
        return NO_SPACE, "no space left on device; free space or choose another --output, then run again"
    found = _SETUP.search(text)
    if found:
        return MODEL_NOT_LOADED, f"{found.group(1).strip()}; check the model reference and revision in the config"
    found = _UNREACHABLE.search(text)
    if found:
        return INPUT_UNREACHABLE, found.group(1).strip()
    first = next((line for line in text.splitlines() if line.strip()), "")
    return OTHER_ERROR, f"{type(exc).__name__}: {first[:300]}"
