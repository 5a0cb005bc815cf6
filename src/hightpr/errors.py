"""User-facing errors: one clear line that names the fix, never a stack trace.

Every entry point runs inside the one error boundary: a `HightprError` (or a Hydra config error)
ends as `error: ...` on stderr and exit code 2. `HIGHTPR_DEBUG=1` shows the full stack of any error
instead, with the original cause chained. A console command `main(argv) -> int` takes it with
`@command`; the training entry point, which Hydra drives, with `with user_errors():`.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps


class HightprError(Exception):
    """A problem the user can fix (bad config, missing data, corrupt file)."""


class DataMissingError(HightprError):
    """The prepared data is not where the config says it is."""


def debugging() -> bool:
    """`HIGHTPR_DEBUG=1`: let every error through with its full stack."""
    return os.environ.get("HIGHTPR_DEBUG", "") not in ("", "0")


# What a console command reports as one line: its own errors, and the ValueError with which the
# metrics (`hightpr.metrics`: a TPR out of range, too few validation positives for a threshold
# rule, a single-class test set) and the figures (an unknown file extension) refuse a value.
COMMAND_ERRORS: tuple[type[Exception], ...] = (HightprError, ValueError)


def _report(err: BaseException) -> None:
    """The one `error:` line of a user error (its stack goes to the debug log)."""
    logging.getLogger("hightpr").debug("user error", exc_info=True)
    print(f"error: {err}", file=sys.stderr)


def command(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """The error boundary of a console command `main(argv) -> int`: a user error returns 2.

    A `COMMAND_ERRORS` error prints one `error: ...` line on stderr and `main` returns 2 (a console
    script exits with it); under `HIGHTPR_DEBUG=1` it propagates with its full stack. argparse's own
    refusals (a usage line, exit 2) and every other exception pass through untouched.
    """

    @wraps(main)
    def boundary(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except COMMAND_ERRORS as err:
            if debugging():
                raise
            _report(err)
            return 2

    return boundary


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
        _report(err)
        sys.exit(exit_code)
