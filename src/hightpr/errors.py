"""User-facing errors: one clear line that names the fix, never a stack trace."""


class HightprError(Exception):
    """A problem the user can fix (bad config, missing data, corrupt file)."""


class DataMissingError(HightprError):
    """The prepared data is not where the config says it is."""
