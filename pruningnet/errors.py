"""User-facing errors of the space, spec and PruningNet layer."""


class UserError(ValueError):
    """A bad value given by a user: the message names it and what is accepted.

    The CLI prints the message as one line and exits 2; anything else is a bug.
    """
