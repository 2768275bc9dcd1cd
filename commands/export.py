"""``kd export``: a run's student or teacher as a folder that serves on its own (ONNX or TorchScript)."""

from __future__ import annotations

import shlex

import click

from kdstore.errors import KdError, Terminated
from kdstore.serving import MODEL_FILES

from .common import KdPath, check_file_model, json_option, open_store, print_json, run_option, store_options


@click.command()
@run_option
@click.option("--format", "fmt", type=click.Choice(tuple(MODEL_FILES)), default="onnx", show_default=True, help="onnx: model.onnx for ONNX Runtime; torchscript: model.pt for torch.jit.")
@click.option("--model", "which", default="student", show_default=True, help="student (the latest one that can be exported), teacher, or a stage name.")
@click.option("--out", type=KdPath(file_okay=False), help="Folder to write (default: RUN/export-STAGE-FORMAT in the store's model folder: kd-artifacts/STORE/ beside a SQLite file, or KD_ARTIFACTS).")
@click.option("--int8/--no-int8", is_flag=True, help="ONNX only: weights quantized to int8 (ONNX Runtime dynamic quantization), in "
              "RUN/export-STAGE-onnx-int8 by default: a transformer's file smaller (int8 matrices) and faster on a CPU; TextCNN and "
              "the RNNs mostly shrink. Checked by the share of texts whose class stays the float model's (at least 98%).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in that folder.")
@store_options
@json_option
def export(run, fmt, which, out, int8, overwrite, db, as_json):
    """Export a trained model as a self-contained folder for serving.

    The folder holds the model (model.onnx with dynamic batch and sequence axes, or model.pt), the
    tokenizer, classes.txt and manifest.json (stage, model configuration, max_len, dev/test figures, the sha256 of
    every file). The export is checked against the PyTorch model on the store's texts before it is
    written. `kd predict --artifact DIR` serves it without the store; --json prints the manifest
    (with the folder as "path").

    \b
    Example:
      kd export --run r1                                   # the latest student, as ONNX
      kd export --run r1 --model teacher --format torchscript --out serve/teacher
      kd export --run r1 --model teacher --int8               # a smaller, faster teacher on a CPU
      kd predict --artifact kd-artifacts/kd.db/r1/export-distill-textcnn-onnx reviews.txt
    """
    from kdstore.export import export_model, student_passed_over
    from kdstore.report import classes_added

    try:
        store = open_store(db)
        check_file_model(store, run, which)
        passed_over = student_passed_over(store, run) if which == "student" and store.run_exists(run) else None
        path, manifest = export_model(store, run, which=which, fmt=fmt, out=out, overwrite=overwrite, int8=int8)
        if passed_over:  # (once exported: an export refused, --int8 with --format torchscript say, exported no other student)
            click.echo(f"warning: {passed_over}", err=True)
        added = classes_added(list(manifest["classes"]), store.class_names())
        if added:  # (served by the export in silence: never the new class)
            click.echo(f"warning: {manifest['stage']['name']} was {added}, which the export never answers", err=True)
    except (KdError, Terminated) as exc:  # also one line when the command is invoked outside the kd group
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json({**manifest, "path": str(path)})
        return
    check = manifest["verification"]
    quantized = manifest["exporter"].get("quantization")
    # (in MiB, kd report's size_mb: in MB the two told one model's size 5 % apart)
    agreed = (f"int8 weights ({quantized['bytes_before'] / 2**20:.1f} -> {quantized['bytes_after'] / 2**20:.1f} MiB): the float model's class "
              f"on {round(check['argmax_agreement'] * check['texts'])} of" if quantized else "max |logit difference| " + f"{check['max_abs_logit_diff']:.2e} on")
    click.echo(
        f"exported stage {manifest['stage']['name']} of run {run} as {fmt}: {agreed} "
        f"{check['texts']} texts (the store's, one longer than --max-len, one of one character); "
        f"`kd predict --artifact {shlex.quote(str(path))}` serves it",  # (the next step: the folder alone was printed)
        err=True,
    )
    click.echo(str(path))
