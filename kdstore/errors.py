"""The one exception kd raises for anything a user can fix; the CLI turns it into a one-line error."""


class KdError(Exception):
    """A problem with the user's input, data or store, with a message that says what to do."""


class Terminated(BaseException):
    """A kill (SIGTERM, SIGHUP) while a stage runs. A ``BaseException``, as Ctrl-C's
    ``KeyboardInterrupt`` is, so that no library's ``except Exception`` (jieba's dictionary loader,
    say) swallows it and lets the stage go on to succeed; the CLI prints it as a one-line error."""


class InterruptedAfterRecord(KeyboardInterrupt):
    """A Ctrl-C held while a stage's success was recorded, raised once the record stands. Still a
    ``KeyboardInterrupt`` (a script stops on it); the CLI prints its message, which says the stage
    succeeded, as a one-line error: click's bare "Aborted!" read as if nothing had been done (a
    clean's label edits stood)."""


def make_folder(folder, what: str) -> None:
    """Create ``folder`` (and its parents) for ``what`` to be written in (``kd labels export`` into
    ``sheets/``, as ``kd export`` and ``kd report --plot`` make theirs); a file in the way or a folder
    that cannot be made is a one-line ``KdError`` naming it ("No such file or directory" named none)."""
    from pathlib import Path

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocking = next((p for p in (folder, *folder.parents) if p.is_file()), None)  # (mkdir says only "File exists")
        if blocking is not None:
            raise KdError(f"cannot write {what}: {blocking} is a file, not a folder") from None
        raise KdError(f"cannot write {what}: cannot create the folder {folder}: {exc.strerror or exc}") from None
