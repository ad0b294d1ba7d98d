"""The one exception a user should ever see from factmem: a clear sentence, no library traceback."""


class FactmemError(Exception):
    """A problem with the user's config, data or files, worded so they can fix it."""


class ConfigError(FactmemError):
    """A config field is missing, unknown or invalid (the message names the field and line)."""


class DataError(FactmemError):
    """A dataset file or row is unusable (the message names the file, row and field)."""
