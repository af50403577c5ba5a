"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""


class UserError(ValueError):
    """A bad value from the user (config, CLI option, data file). The message names the value
    and what would be valid."""


def check(condition: bool, message: str) -> None:
    """Raise `UserError(message)` unless `condition` holds."""
    if not condition:
        raise UserError(message)
