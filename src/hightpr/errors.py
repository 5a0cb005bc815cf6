"""User-facing errors: one clear line that names the fix, never a stack trace.

Every entry point runs inside `user_errors()`, the one error boundary: a `HightprError`
(or a Hydra config error) ends as `error: ...` on stderr and exit code 2. `HIGHTPR_DEBUG=1`
shows the full stack of any error instead, with the original cause chained.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager


class HightprError(Exception):
    """A problem the user can fix (bad config, missing data, corrupt file)."""


class DataMissingError(HightprError):
    """The prepared data is not where the config says it is."""


def debugging() -> bool:
    """`HIGHTPR_DEBUG=1`: let every error through with its full stack."""
    return os.environ.get("HIGHTPR_DEBUG", "") not in ("", "0")


@contextmanager
def user_errors(exit_code: int = 2, exit_when_debugging: bool = False) -> Iterator[None]:
    """The error boundary of a command: a user error becomes one line and `exit_code`.

    `exit_when_debugging`: where the caller would swallow a raised error (a Hydra callback), the
    debug mode prints the stack and exits instead of raising.
    """
    try:
        yield
    except HightprError as err:
        if debugging():
            if exit_when_debugging:
                traceback.print_exc()
                sys.exit(exit_code)
            raise
        logging.getLogger("hightpr").debug("user error", exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(exit_code)
