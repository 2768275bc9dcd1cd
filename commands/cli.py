"""The ``kd`` entry point: one group, each command a few lines over the library.

Commands are imported when they are used, so ``kd predict --artifact`` starts without loading the
training code (torch, transformers, the store) it does not need.
"""

from __future__ import annotations

import importlib
import os

import click

from kdstore import __version__

from .common import KdGroup

# name -> "module:attribute", in the order `kd --help` lists them
COMMANDS = {
    "ingest": "commands.data:ingest",
    "samples": "commands.data:samples",
    "classes": "commands.data:classes",
    "pretrain": "commands.train:pretrain",
    "teach": "commands.train:teach",
    "distill": "commands.train:distill",
    "labels": "commands.labels:labels",
    "predict": "commands.predict:predict",
    "export": "commands.export:export",
    "report": "commands.runs:report",
    "runs": "commands.runs:runs",
    "db": "commands.db:db",
}


DISTRIBUTED = ("pretrain", "teach", "distill")  # the commands that run as torchrun's ranks; the others run once


class LazyGroup(KdGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        typed = args[0] if args else ""
        if typed and typed not in COMMANDS and not typed.startswith("-") and not ctx.resilient_parsing:
            # click suggests from ``self.commands``, which a lazy group leaves empty: name the close ones here
            import difflib

            if typed.lower() == "help":
                hint = " `kd --help` lists the commands; `kd COMMAND --help` shows one's options and an example."
            else:
                close = difflib.get_close_matches(typed.lower(), list(COMMANDS))
                hint = f" Did you mean {close[0]!r}?" if close else ""
            raise click.UsageError(f"No such command {typed!r}.{hint}", ctx)
        name, command, rest = super().resolve_command(ctx, args)
        world = os.environ.get("WORLD_SIZE", "1")
        asks_help = any(a in ctx.help_option_names for a in rest)
        if name not in DISTRIBUTED and world.isdigit() and int(world) > 1 and not asks_help:
            # each rank would run it whole: stages written twice, or refused by the second rank
            raise click.UsageError(f"`kd {name}` runs in one process: run it without torchrun "
                                   f"(torchrun runs kd {', '.join(DISTRIBUTED)})")
        return name, command, rest

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kd")
def cli():
    """kd: distill a slow, accurate text classifier into a fast one, and fix wrong labels.

    \b
    Example: a pipeline, each step storing its results under one run id:
      kd ingest train.tsv && kd ingest dev.tsv --split dev
      kd pretrain --run r1 --minutes 5        # only when no pretrained model is at hand
      kd teach --run r1 --model pretrain:r1 --folds 5   # out-of-fold logits: kd labels detect needs them
      kd labels detect --run r1 && kd labels clean --run r1
      kd teach --run r1 --model pretrain:r1 --folds 5 --overwrite   # the teacher again, on the cleaned labels
      kd distill --run r1 --student textcnn
      echo "质量很好" | kd predict --run r1
      kd export --run r1 --out serve/r1 && echo "质量很好" | kd predict --artifact serve/r1
      kd report --run r1
    """


def main() -> None:
    cli(prog_name="kd")


if __name__ == "__main__":
    main()
