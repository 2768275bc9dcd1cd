"""The ``kd`` entry point: one group, each command a few lines over the library."""

from __future__ import annotations

import click

from kdstore import __version__

from .common import KdGroup
from .data import classes, ingest, samples
from .db import db
from .labels import labels
from .predict import predict
from .runs import report, runs
from .train import distill, pretrain, teach


@click.group(cls=KdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kd")
def cli():
    """kd: distill a slow, accurate text classifier into a fast one, and fix wrong labels.

    \b
    Example: a pipeline, each step storing its results under one run id:
      kd ingest train.tsv && kd ingest dev.tsv --split dev
      kd pretrain --run r1 --minutes 5        # only when no pretrained model is at hand
      kd teach --run r1 --model pretrain:r1
      kd distill --run r1 --student textcnn
      kd labels detect --run r1 && kd labels clean --run r1
      echo "质量很好" | kd predict --run r1
      kd report --run r1
    """


for command in (ingest, samples, classes, pretrain, teach, distill, labels, predict, report, runs, db):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="kd")


if __name__ == "__main__":
    main()
