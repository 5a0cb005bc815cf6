"""A bad value met while building a component becomes one `HightprError` naming the config node."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import InstantiationException

from hightpr.errors import HightprError


@contextmanager
def config_errors(what: str) -> Iterator[None]:
    """A bad value met while building `what` becomes one `HightprError` (the cause stays chained)."""
    try:
        yield
    except HightprError:
        raise
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, HightprError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from err
        raise HightprError(f"invalid {what} configuration: {err.__cause__ or err}") from err
    except (ValueError, TypeError, KeyError) as err:
        raise HightprError(f"invalid {what} configuration: {type(err).__name__}: {err} "
                           "(`--cfg job` shows the composed config)") from err
