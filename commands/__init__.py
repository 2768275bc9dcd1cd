"""The ``kd`` command line: a thin click layer over ``kdstore``."""


def main() -> None:
    """The ``kd`` console script. Ctrl-C in the second or two the command line takes to load (its
    imports, before click runs) ends it as a Ctrl-C later does, "Aborted!", not a traceback."""
    import sys

    try:
        from .cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("\nAborted!\n")
        sys.exit(1)
    run()
