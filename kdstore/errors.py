"""The one exception kd raises for anything a user can fix; the CLI turns it into a one-line error."""


class KdError(Exception):
    """A problem with the user's input, data or store, with a message that says what to do."""
