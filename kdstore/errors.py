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
    clean's label edits stood). Raised too by a Ctrl-C inside a stage, once its failure is recorded
    (saying so, where "Aborted!" said nothing of the stage)."""


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


def write_whole(path, text: str, what: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` (``what`` it is: "the review sheet") or leave no part of it: a write cut
    short (a full disk, a file-size limit) removes what it wrote, which a rerun refused as existing or a
    reader took for the whole, and is a one-line ``KdError`` naming the file ("No space left on device"
    named none). A device or a pipe (/dev/full) is not removed."""
    import contextlib
    from pathlib import Path

    path = Path(path)
    try:
        handle = path.open("w", encoding=encoding, newline="")  # as built: csv's \r\n, not \r\r\n on Windows
    except OSError as exc:
        raise KdError(f"{path}: cannot write {what}: {exc.strerror or exc}") from None
    try:
        with handle:
            handle.write(text)
    except OSError as exc:
        with contextlib.suppress(OSError):
            if path.is_file():
                path.unlink()
        raise KdError(f"{path}: cannot write {what}: {exc.strerror or exc}") from None
