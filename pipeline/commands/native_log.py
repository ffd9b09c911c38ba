"""A quiet run's native log: what C/C++ code in the driver writes straight to file descriptor 2 goes to a file,
while Python's ``sys.stderr`` (the project's progress and errors, Python warnings, Ray's Python loggers) stays
on the terminal.

Ray's core worker writes its ERROR lines to fd 2 whatever its log level, and Ray Data's every actor pool makes
it write one that reads as a failure ("has constructor arguments in the object store and max_restarts > 0",
ray-project/ray#57733, for any actor Ray Data starts, with or without constructor arguments). Setting
RAY_BACKEND_LOG_LEVEL instead makes every Ray process announce the setting on the terminal.
"""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager


@contextmanager
def native_stderr_to_file(enabled: bool = True):
    """Inside, fd 2 is a temp file and ``sys.stderr`` a copy of the old fd 2. The file is removed when the block
    ends normally; after an error it is kept and its path printed, since a native crash explains itself there."""
    if not enabled or sys.stderr is not sys.__stderr__:  # stderr already redirected in Python (a test's capture)
        yield None
        return
    sys.stderr.flush()
    fd, path = tempfile.mkstemp(prefix="counterfactory-native-", suffix=".log")
    terminal = os.dup(2)
    previous = sys.stderr
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1, encoding=previous.encoding, errors="backslashreplace")
    failed = False
    try:
        yield path
    except BaseException:
        failed = True
        raise
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = previous
        os.dup2(terminal, 2)
        os.close(terminal)
        if failed and os.path.getsize(path):
            print(f"counterfactory: Ray's native log lines of this run are in {path}", file=sys.stderr)
        else:
            os.unlink(path)
