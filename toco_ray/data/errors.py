"""The one exception type of the data layer."""


class DatasetError(ValueError):
    """A dataset file or folder is missing or malformed; the message names the path and what was expected."""
