"""The one base of every error toco-ray raises for its user.

Each subclass (``ConfigError``, ``DatasetError``, ``SpaceError``, ``JobError`` ...) carries a message that says what
was wrong, where, and what to do; a command line catches :class:`TocoError`, prints that message as one line and
exits with status 2. Anything else that escapes is a bug and shows its traceback. Subclasses keep the built-in base
they had (``ValueError``, ``RuntimeError``, ``LookupError``), so code that catches those still does.

This module imports nothing: the lightest layers (config, checkpoints, the GPU check) subclass it.
"""

EXIT_STATUS = 2  # what every command line returns for a TocoError (a usage error, as argparse's own)


class TocoError(Exception):
    """Something the user can fix: the message names the file, key or resource and what was expected."""
