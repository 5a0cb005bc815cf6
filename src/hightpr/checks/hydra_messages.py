"""Hydra's composition errors as one line: a misspelled key gets `did you mean`, an unknown option
the group's options."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from hightpr.checks.keys import unknown_key, valid_keys
from hightpr.errors import HightprError


def composition_message(err: Exception) -> str:
    """One line for a Hydra composition error: a misspelled key gets `did you mean`, an unknown
    option the group's options, any other error its first line."""
    cause = err.__cause__
    text = str(err)
    if text.startswith("Could not override '") and isinstance(cause, OmegaConfBaseException):
        full = text.split("'")[1]
        path, _, key = full.rpartition(".")
        valid = valid_keys(path, getattr(cause, "parent_node", None))
        if key in valid:
            return f"{full} is not in the config yet: add it with +{full}=..."
        return unknown_key(path, key, valid)
    if isinstance(err, MissingConfigException) and err.options:
        return f"{text.splitlines()[0]}; available options: {', '.join(sorted(err.options))}"
    if isinstance(err, OverrideParseException):
        return f"cannot parse the override: {text.splitlines()[0]}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(cause, OmegaConfBaseException):
        lines += [str(cause).splitlines()[0]]
    return "; ".join(lines) or type(err).__name__


@contextmanager
def hydra_errors() -> Iterator[None]:
    """Around `@hydra.main`: Hydra raises instead of printing a trace, and a composition or job-setup
    error becomes one `HightprError` (for `user_errors`, the one boundary)."""
    from hydra.errors import HydraException

    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except (HydraException, OmegaConfBaseException) as err:
        if isinstance(err.__cause__, HightprError):
            raise err.__cause__ from err
        raise HightprError(composition_message(err)) from err
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
