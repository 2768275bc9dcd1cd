"""``kd predict``: labels for new text from stdin or a file, with a run's student or teacher."""

from __future__ import annotations

import json
import sys

import click

from kdstore.predictor import Predictor
from kdstore.torchutil import DEVICES

from .common import open_store, run_option, store_options


@click.command()
@click.argument("path", required=False, default="-", metavar="[FILE|-]")
@run_option
@click.option("--model", "which", default="student", show_default=True, help="student, teacher, or a stage name.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@store_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line: label, confidence, probs.")
def predict(path, run, which, batch_size, device, db, as_json):
    """Predict a label for each line of text (stdin or FILE).

    Reading stdin, each line is answered as soon as it arrives (the model is loaded once); a FILE is
    predicted in length-sorted batches. Output: label<TAB>confidence<TAB>text, or JSON lines.

    \b
    Example:
      echo "质量很好" | kd predict --run r1
      kd predict --run r1 --model teacher --json reviews.txt
    """
    predictor = Predictor.from_run(open_store(db), run, which, device=device)
    if path == "-":
        for n, raw in enumerate(sys.stdin, start=1):
            _emit(predictor, [(n, raw)], batch_size, as_json)
            sys.stdout.flush()
    else:
        try:
            with open(path, encoding="utf-8") as fh:
                lines = list(enumerate(fh, start=1))
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(f"{path}: cannot read: {exc}") from None
        _emit(predictor, lines, batch_size, as_json)


def _emit(predictor: Predictor, lines: list[tuple[int, str]], batch_size: int, as_json: bool) -> None:
    items = [(n, raw.rstrip("\r\n").strip()) for n, raw in lines]
    texts = [t for _, t in items if t]
    results = iter(predictor.predict(texts, batch_size=batch_size))
    for n, text in items:
        if not text:
            if as_json:
                click.echo(json.dumps({"line": n, "error": "empty text"}))
            else:
                click.echo(f"line {n}: empty text, skipped", err=True)
            continue
        r = next(results)
        truncated = predictor.token_count(text) > predictor.max_len
        if as_json:
            click.echo(json.dumps({"line": n, "text": text, **r, "truncated": truncated}, ensure_ascii=False))
        else:
            if truncated:
                click.echo(f"line {n}: longer than {predictor.max_len} tokens, truncated", err=True)
            click.echo(f"{r['label']}\t{r['confidence']:.4f}\t{text}")
