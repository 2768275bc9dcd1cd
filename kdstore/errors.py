"""The one exception kd raises for anything a user can fix; the CLI turns it into a one-line error."""


class KdError(Exception):
    """A problem with the user's input, data or store, with a message that says what to do."""


class Terminated(BaseException):
    """A kill (SIGTERM, SIGHUP) while a stage runs. A ``BaseException``, as Ctrl-C's
    ``KeyboardInterrupt`` is, so that no library's ``except Exception`` (jieba's dictionary loader,
    say) swallows it and lets the stage go on to succeed; the CLI prints it as a one-line error."""
