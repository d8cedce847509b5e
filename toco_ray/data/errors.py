"""The one exception type of the data layer."""

from toco_ray.errors import TocoError


class DatasetError(TocoError, ValueError):
    """A dataset file or folder is missing or malformed; the message names the path and what was expected."""
