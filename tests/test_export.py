"""``kd export`` and serving from the exported folder (``kd predict --artifact``), and ``kd predict --store``.

One store is built for the module through the real CLI (tiny BERT teacher, an out-of-fold teacher,
every student kind); each export is served through ``kdstore.serving`` and compared with the PyTorch
model kd predicts with. ``kd export`` is invoked through ``kd`` itself: invoked as a command object, it
kept a help option of ``--help`` alone, and ``kd export -h`` failed for the rest of the process.

An ONNX export takes seconds (torch.onnx's dynamo exporter), a TorchScript one a fraction of a second:
the tests that only serve, inspect or damage a TextCNN ONNX export share one (``cnn_onnx``, copied
where a test alters it), and the tests about where an export is written or what it replaces (not
about a format) export TorchScript. ONNX export itself is checked for every kind of model in
``test_export_serves_the_same_logits_as_pytorch``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import random
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from synthetic import kd, labeled_rows, save_tiny_bert, texts, write_tsv

from kdstore.predictor import Predictor
from kdstore.errors import KdError
from kdstore.schema import iso_utc
from kdstore.serving import Artifact
from kdstore.store import Store

RUN = "r"
STUDENT_ARGS = ["--epochs", "1", "--batch-size", "16", "--embed-dim", "16", "--num-filters", "8", "--hidden", "16", "--max-len", "32"]
STUDENTS = ["textcnn", "bigru", "bilstm", "transformer"]


def _module_env(mp: pytest.MonkeyPatch, folder: Path) -> None:
    """What the autouse env fixture does for a test (it is per test), for a module fixture."""
    for name in ("KD_DB", "KD_CONFIG", "KD_ARTIFACTS"):
        mp.delenv(name, raising=False)
    mp.setenv("KD_NO_PROGRESS", "1")
    mp.chdir(folder)


def kd_export(*args: str, ok: bool = True):
    """Run ``kd export`` through ``kd`` (its ``-h`` as every command's)."""
    return kd("export", *args, ok=ok)


def python_snippet(code: str, **options) -> subprocess.CompletedProcess:
    """``code`` run by a fresh Python with this checkout importable (for what must not load in pytest's
    process, or would end it): its exit status and output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, **options)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A store with run ``r`` (teacher + every student) and run ``oof`` (a 2-fold teacher)."""
    root = tmp_path_factory.mktemp("export-store")
    with pytest.MonkeyPatch.context() as mp:  # the autouse env fixture is per test; this one is per module
        _module_env(mp, root)
        rng = random.Random(1)
        files = {split: write_tsv(root / f"{split}.tsv", labeled_rows(rng, n)) for split, n in (("train", 48), ("dev", 16), ("test", 16))}
        pool = root / "pool.txt"
        pool.write_text("\n".join(texts(rng, "很好", 5) + texts(rng, "太差", 5)) + "\n", encoding="utf-8")
        all_texts = [l.split("\t")[-1] for p in files.values() for l in p.read_text(encoding="utf-8").splitlines()]
        model = save_tiny_bert(all_texts + pool.read_text(encoding="utf-8").split(), root / "tiny-bert")
        db = str(root / "store" / "kd.db")
        (root / "store").mkdir()
        for split, path in [*files.items(), ("unlabeled", pool)]:
            kd("ingest", str(path), "--split", split, "--db", db)
        kd("teach", "--run", RUN, "--model", str(model), "--epochs", "8", "--lr", "2e-3", "--batch-size", "8", "--max-len", "32", "--db", db)
        for student in STUDENTS:
            extra = ["--layers", "1"] if student == "transformer" else []
            kd("distill", "--run", RUN, "--student", student, *STUDENT_ARGS, *extra, "--db", db)
        kd("teach", "--run", "oof", "--model", str(model), "--folds", "2", "--epochs", "1", "--lr", "2e-3", "--batch-size", "8", "--max-len", "32", "--db", db)
    return root / "store" / "kd.db"


@pytest.fixture(scope="module")
def cnn_onnx(built, tmp_path_factory) -> tuple[Path, str]:
    """``kd export --run r --model distill-textcnn --out .../cnn --json`` (ONNX): the folder and what
    the command printed. Shared read-only; a test that alters an export alters a copy. It is outside
    the store's folder, so that a test can take the store away while it serves this export."""
    root = tmp_path_factory.mktemp("export-cnn")
    with pytest.MonkeyPatch.context() as mp:
        _module_env(mp, root)
        out = kd_export("--run", RUN, "--model", "distill-textcnn", "--out", str(root / "cnn"), "--db", str(built), "--json")
    return root / "cnn", out.stdout


def fresh_texts() -> list[str]:
    """Texts the models never saw: short, long (truncated at 32 tokens), Latin, unknown characters."""
    rng = random.Random(7)
    out = texts(rng, "很好", 6) + texts(rng, "太差", 6)
    return out + ["好", "这个东西太差了" * 12, "Hello WORLD 很好 123", "🙂🙂 太差 ¥", "很好" * 40]


# (run, --model, format, stage name)
CASES = [
    (RUN, "distill-textcnn", "onnx", "distill-textcnn"),
    (RUN, "distill-transformer", "onnx", "distill-transformer"),
    (RUN, "teacher", "onnx", "teach"),
    (RUN, "distill-bigru", "onnx", "distill-bigru"),
    (RUN, "distill-bilstm", "onnx", "distill-bilstm"),
    ("oof", "teacher", "onnx", "teach"),
    (RUN, "distill-textcnn", "torchscript", "distill-textcnn"),
    (RUN, "teacher", "torchscript", "teach"),
    (RUN, "distill-transformer", "torchscript", "distill-transformer"),
    (RUN, "distill-bigru", "torchscript", "distill-bigru"),
]


@pytest.mark.parametrize("run, which, fmt, stage_name", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_export_serves_the_same_logits_as_pytorch(built, tmp_path, run, which, fmt, stage_name, capfd):
    db = str(built)
    capfd.readouterr()
    import logging

    from transformers.utils import logging as hf_logging

    getattr(logging.Logger.warning_once, "cache_clear", lambda: None)()  # transformers says each thing once a process
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # as in a fresh `kd export` process (this one ran kd teach, which quiets it)
    try:
        out = kd_export("--run", run, "--model", which, "--format", fmt, "--db", db, "--overwrite")
    finally:
        hf_logging.set_verbosity(level)
    assert "loss_type" not in capfd.readouterr().err  # the exporters' and transformers' chatter stays out of kd's output
    path = Path(out.stdout.strip())
    assert f"`kd predict --artifact {shlex.quote(str(path))}` serves it" in out.stderr  # (the next step, not the folder alone)
    store = Store.open(db)
    assert path == (store.artifact_root / run / f"export-{stage_name}-{fmt}").resolve()
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["verification"]["max_abs_logit_diff"] < 1e-4

    sample = fresh_texts()
    reference = Predictor.from_run(store, run, which, device="cpu").logits(sample)
    served = Artifact.load(path, device="cpu").logits(sample)
    diff = float(np.abs(served - reference).max())
    print(f"\n{run}/{which}/{fmt}: max |logit difference| {diff:.3e} over {len(sample)} texts")
    assert diff < 1e-4, f"{run}/{which}/{fmt}: exported logits differ by {diff:.3e}"
    assert (served.argmax(1) == reference.argmax(1)).all()

    # the CLI: same lines, labels and probabilities as `kd predict --run`, file (batched) and stdin
    f = tmp_path / "in.txt"
    f.write_text("\n".join(sample[:3]) + "\n\n" + "\n".join(sample[3:]) + "\n", encoding="utf-8")
    ours = [json.loads(l) for l in kd("predict", "--artifact", str(path), "--json", str(f)).stdout.splitlines()]
    theirs = [json.loads(l) for l in kd("predict", "--run", run, "--model", which, "--json", str(f), "--db", db).stdout.splitlines()]
    assert [r["line"] for r in ours] == [r["line"] for r in theirs] == list(range(1, len(sample) + 2))
    assert ours[3] == {"line": 4, "error": "empty text"}
    for a, b in zip(ours, theirs):
        exact = lambda r: {k: v for k, v in r.items() if k not in ("probs", "confidence")}  # noqa: E731
        assert a.keys() == b.keys() and exact(a) == exact(b)
        if "probs" in a:
            assert abs(a["confidence"] - b["confidence"]) < 1e-5
            assert max(abs(a["probs"][k] - b["probs"][k]) for k in b["probs"]) < 1e-5
    assert any(r.get("truncated") for r in ours)
    tsv = kd("predict", "--artifact", str(path), input="很好很好\n\n太差\n")
    lines = tsv.stdout.splitlines()  # one line for each line read: the empty one has empty fields
    assert lines[1] == "\t\t" and [l.split("\t")[2] for l in lines] == ["很好很好", "", "太差"]
    lines = [lines[0], lines[2]]
    assert all(l.split("\t")[0] in ("pos", "neg") and 0 < float(l.split("\t")[1]) <= 1 for l in lines)
    assert "warning: line 2: empty text, skipped" in tsv.stderr


def test_a_config_files_split_and_speed_apply_only_where_they_can(built, cnn_onnx, tmp_path, monkeypatch):
    """Top-level keys apply to every command that has the option: `split` (meant for samples or
    teach) and `speed` (meant for an early-exit model) do not stop `kd predict` of a file."""
    db = str(built)
    path = cnn_onnx[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kd.toml").write_text(f'db = "{db}"\nsplit = "dev"\nspeed = 0.5\n', encoding="utf-8")
    for args in (["--run", RUN, "--model", "distill-textcnn"], ["--artifact", str(path)]):
        out = kd("predict", *args, "--json", input="很好很好\n")
        assert json.loads(out.stdout)["label"] in ("pos", "neg"), args
    typed = kd("predict", "--run", RUN, "--split", "dev", input="很好\n", ok=False)  # typed, it still has to fit
    assert "--split goes with --store" in typed.output
    stored = json.loads(kd("predict", "--run", RUN, "--model", "distill-bigru", "--store", "--json").stdout)
    assert stored["name"] == "predict-distill-bigru@dev" and stored["config"]["speed"] is None


def test_manifest_files_and_hashes(built, cnn_onnx, tmp_path):
    """``cnn_onnx`` is ``kd export --out DIR --json``: what it printed is the manifest, plus the path."""
    db = str(built)
    out, stdout = cnn_onnx
    printed = json.loads(stdout)
    path = Path(printed.pop("path"))
    assert path == out.resolve()
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    assert printed == manifest

    store = Store.open(db)
    stage = store.find_stage(RUN, "distill-textcnn")
    assert manifest["run"] == RUN and manifest["format"] == "onnx" and manifest["model_file"] == "model.onnx"
    assert manifest["stage"] == {
        "name": "distill-textcnn", "kind": "distill", "artifact_sha256": stage.artifact_sha256,
        "ended_at": iso_utc(stage.ended_at),
    }
    assert manifest["model"]["kind"] == "student" and manifest["model"]["student"]["kind"] == "textcnn"
    assert manifest["model"]["student"]["num_filters"] == 8
    # the sizes a TextCNN is built from, not every option's value (a BiGRU's manifest showed "layers": 4 and kernel widths)
    assert set(manifest["model"]["student"]) == {"kind", "vocab_size", "num_classes", "pad_id", "bert", "embed_dim", "kernel_sizes",
                                                 "num_filters", "dropout"}
    assert manifest["max_len"] == 32 and manifest["inputs"]["special_tokens"] is False
    assert manifest["inputs"]["truncation"] == "to max_len (32) tokens"  # (it said "special tokens included" of none)
    assert manifest["inputs"]["min_len"] == 4 and manifest["inputs"]["pad_id"] == 0
    assert manifest["kd_version"] and manifest["exported_at"] and manifest["exporter"]["onnx_opset"] >= 17
    assert manifest["tokenizer"]["runtime"] == "tokenizers"
    names = store.class_names()
    assert manifest["classes"] == names
    assert (path / "classes.txt").read_text(encoding="utf-8") == "".join(f"{i}\t{n}\n" for i, n in enumerate(names))
    final = {}
    for m in store.metrics(stage.id):
        if m.split in ("dev", "test"):
            final.setdefault(m.split, {})[m.name] = m.value
    assert manifest["metrics"] == final and set(final) == {"dev", "test"}
    # counts are ints, as kd report --json gives them ("n": 16, not 16.0)
    assert type(manifest["metrics"]["dev"]["n"]) is int and type(manifest["metrics"]["test"]["support[pos]"]) is int
    assert type(manifest["metrics"]["dev"]["accuracy"]) is float

    # every file but the manifest is listed, with its sha256
    on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk and {"model.onnx", "tokenizer.json", "classes.txt"} <= on_disk
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == digest

    # dynamic batch and sequence axes
    import onnx

    graph = onnx.load(str(path / "model.onnx")).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in [*graph.input, *graph.output]}
    assert isinstance(dims["input_ids"][0], str) and isinstance(dims["input_ids"][1], str)
    assert dims["attention_mask"] == dims["input_ids"] and dims["logits"] == [dims["input_ids"][0], len(names)]

    teacher = json.loads(kd_export("--run", "oof", "--model", "teacher", "--format", "torchscript", "--out", str(tmp_path / "oof"), "--db", db, "--json").stdout)
    assert teacher["model"]["kind"] == "teacher" and teacher["model"]["teacher"]["folds"] == 2
    assert "averaged" in teacher["model"]["teacher"]["ensemble"]
    assert teacher["inputs"]["special_tokens"] is True and teacher["model_file"] == "model.pt"
    assert teacher["inputs"]["truncation"].endswith(" tokens, special tokens included")
    assert teacher["model"]["teacher"]["num_hidden_layers"] == 2


def test_artifact_serves_without_the_store(built, cnn_onnx, tmp_path):
    """Move the export away from where it was written, take away the store it was exported from and
    all its artifacts (the module's store folder, moved aside for this test and put back after it),
    and serve it."""
    served = tmp_path / "served"
    shutil.copytree(cnn_onnx[0], served)
    expected = kd("predict", "--run", RUN, "--model", "distill-textcnn", "--json", "--db", str(built), input="这个很好\n那个太差\n").stdout
    store_dir = built.parent
    aside = tmp_path / "store-aside"
    store_dir.rename(aside)
    try:
        assert not store_dir.exists()
        got = kd("predict", "--artifact", str(served), "--json", input="这个很好\n那个太差\n").stdout
        assert [json.loads(l)["label"] for l in got.splitlines()] == [json.loads(l)["label"] for l in expected.splitlines()]
        assert not store_dir.exists()  # nothing was created

        # the serving path needs neither the store (nor SQLAlchemy) nor kd's training code, nor torch or transformers for ONNX;
        # then through the kd group, with a kd.toml of the command's own options: no other command is looked at
        # (one process for both: what either loads is still loaded at the second check)
        code = (
            "import sys; from pathlib import Path; from click.testing import CliRunner\n"
            "bad = ['kdstore.distill', 'kdstore.teacher', 'kdstore.students', 'kdstore.predictor', 'kdstore.export', 'torch', 'transformers',\n"
            "       'kdstore.store', 'kdstore.schema', 'sqlalchemy', 'alembic']\n"
            "def serve(command, args):\n"
            "    r = CliRunner().invoke(command, args, input='很好\\n')\n"
            "    assert r.exit_code == 0, r.output\n"
            "    print(r.stdout.strip()); print('loaded:', [m for m in bad if m in sys.modules], flush=True)\n"
            "from commands.predict import predict\n"
            f"serve(predict, ['--artifact', {str(served)!r}])\n"
            "Path('kd.toml').write_text(\"db = 'elsewhere.db'\\n[predict]\\nbatch_size = 64\\n\", encoding='utf-8')\n"
            "from commands.cli import cli\n"
            f"serve(cli, ['predict', '--artifact', {str(served)!r}])\n"
        )
        proc = python_snippet(code, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "kd.toml").is_file()  # the second was served with it there
        assert [l for l in proc.stdout.splitlines() if l.startswith("loaded:")] == ["loaded: []"] * 2, proc.stdout
        assert not store_dir.exists()
    finally:  # the store back, for the other tests
        shutil.rmtree(store_dir, ignore_errors=True)
        aside.rename(store_dir)


def test_bad_inputs_are_one_line_errors(built, cnn_onnx, tmp_path, error_line, monkeypatch):
    db = str(built)
    unknown = kd_export("--run", RUN, "--model", "distill-nothing", "--db", db, ok=False)
    assert "no succeeded 'distill-nothing' stage" in error_line(unknown)
    no_run = kd_export("--run", "nosuchrun", "--db", db, ok=False)
    assert "no run 'nosuchrun'" in error_line(no_run)
    missing = kd("predict", "--artifact", str(tmp_path / "nowhere"), ok=False)
    assert "does not exist" in error_line(missing)
    (tmp_path / "empty").mkdir()
    assert "manifest.json is missing" in error_line(kd("predict", "--artifact", str(tmp_path / "empty"), ok=False))

    blocker = tmp_path / "a-file"  # --out under a file: the error names --out, not the temporary folder beside it
    blocker.write_text("x", encoding="utf-8")
    line = error_line(kd_export("--run", RUN, "--model", "distill-textcnn", "--out", str(blocker / "out"), "--db", db, ok=False))
    assert line == f"Error: {blocker / 'out'}: cannot write the export there: {blocker} is a file, not a folder"
    good = tmp_path / "good"  # an ONNX export of distill-textcnn
    shutil.copytree(cnn_onnx[0], good)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(good, corrupt)
    with open(corrupt / "model.onnx", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00garbage\x00")
    assert "does not match its sha256" in error_line(kd("predict", "--artifact", str(corrupt), input="很好\n", ok=False))
    (corrupt / "model.onnx").unlink()
    assert "model.onnx is missing" in error_line(kd("predict", "--artifact", str(corrupt), input="很好\n", ok=False))
    shutil.copytree(good, tmp_path / "no-tokenizer")
    (tmp_path / "no-tokenizer" / "tokenizer.json").unlink()
    assert "tokenizer.json is missing" in error_line(kd("predict", "--artifact", str(tmp_path / "no-tokenizer"), input="很好\n", ok=False))

    # the transformers tokenizer (used when tokenizer.json would not give kd's ids) serves the same
    slow = tmp_path / "hf-tokenizer"
    shutil.copytree(good, slow)
    manifest = json.loads((slow / "manifest.json").read_text(encoding="utf-8"))
    manifest["tokenizer"]["runtime"] = "transformers"
    (slow / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    sample = fresh_texts()
    np.testing.assert_array_equal(Artifact.load(slow).logits(sample), Artifact.load(good).logits(sample))
    assert [r["unknown"] for r in Artifact.load(slow).predict(["🙂🙂", "很好", "🙂 很好"])] == [True, False, False]
    del manifest["inputs"]
    (slow / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert "is incomplete" in error_line(kd("predict", "--artifact", str(slow), input="很好\n", ok=False))

    # an existing export is replaced only with --overwrite; a folder that is not an export never
    # (replaced by a TorchScript export: the format is not the point, and it exports in a fraction of the time)
    again = kd_export("--run", RUN, "--model", "distill-textcnn", "--format", "torchscript", "--out", str(good), "--db", db, ok=False)
    assert "--overwrite" in error_line(again)
    kd_export("--run", RUN, "--model", "distill-textcnn", "--format", "torchscript", "--out", str(good), "--db", db, "--overwrite")
    assert json.loads((good / "manifest.json").read_text(encoding="utf-8"))["format"] == "torchscript" and not (good / "model.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary folders left
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me", encoding="utf-8")
    refused = kd_export("--run", RUN, "--out", str(other), "--db", db, "--overwrite", ok=False)
    assert "not a kd export" in error_line(refused) and (other / "notes.txt").exists()
    # a quoted ~ (no shell expands it) is the home folder, not a folder called ~ in the working directory
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(other)
    refused = kd_export("--run", RUN, "--out", "~/mine", "--db", db, "--overwrite", ok=False)
    assert error_line(refused).startswith(f"Error: {other} is not empty and is not a kd export") and not (other / "~").exists()
    assert kd("predict", "--artifact", "~/good", input="很好\n").stdout.strip()
    monkeypatch.chdir(tmp_path)
    # another program's manifest.json does not make a folder an export ...
    (other / "manifest.json").write_text('{"name": "my web app"}', encoding="utf-8")
    refused = kd_export("--run", RUN, "--out", str(other), "--db", db, "--overwrite", ok=False)
    assert "not a kd export" in error_line(refused) and (other / "notes.txt").exists()
    # ... and files put into a real export are not deleted with it
    (good / "sub").mkdir()
    (good / "sub" / "NOTES.md").write_text("mine", encoding="utf-8")
    refused = kd_export("--run", RUN, "--model", "distill-textcnn", "--out", str(good), "--db", db, "--overwrite", ok=False)
    assert "holds files kd export did not write (sub/NOTES.md)" in error_line(refused) and (good / "sub" / "NOTES.md").exists()
    # the class names served are the sha256-checked classes.txt's: an edited manifest is refused
    edited = tmp_path / "edited"
    shutil.copytree(good, edited)
    manifest = json.loads((edited / "manifest.json").read_text(encoding="utf-8"))
    manifest["classes"] = manifest["classes"][::-1]
    (edited / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert "one of them was edited" in error_line(kd("predict", "--artifact", str(edited), input="很好\n", ok=False))
    # any character may be in a class name (JSONL labels): one with a line separator still loads
    from kdstore.serving import classes_text, sha256_file

    odd = tmp_path / "odd-names"
    shutil.copytree(good, odd)
    manifest = json.loads((odd / "manifest.json").read_text(encoding="utf-8"))
    manifest["classes"] = ["p\ts", "ne\u2028g"]
    (odd / "classes.txt").write_bytes(classes_text(manifest["classes"]).encode("utf-8"))
    manifest["files"]["classes.txt"] = sha256_file(odd / "classes.txt")
    (odd / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert Artifact.load(odd).class_names == ["p\ts", "ne\u2028g"]
    assert "leave out --run" in kd("predict", "--artifact", str(good), "--run", RUN, ok=False).output


def test_predict_store_writes_a_predict_stage(built, tmp_path):
    copy = tmp_path / "copy"  # a copy: the other tests keep the module's store as it was built
    shutil.copytree(built.parent, copy)
    db = str(copy / "kd.db")
    report = json.loads(kd("predict", "--run", RUN, "--model", "distill-textcnn", "--store", "--db", db, "--json").stdout)
    assert report["name"] == "predict-distill-textcnn" and report["kind"] == "predict" and report["status"] == "succeeded"
    # run and stage up front, as every other command that writes a stage prints them (a script reads report["stage"])
    assert report["run"] == RUN and report["stage"] == "predict-distill-textcnn" and list(report)[:2] == ["run", "stage"]
    assert set(report["metrics"]) == {"train", "dev", "test", "all"}
    assert report["config"]["model_stage"] == "distill-textcnn" and report["config"]["split"] is None
    store = Store.open(db)
    stage = store.find_stage(RUN, "predict-distill-textcnn")
    everything = store.samples(include_dropped=True)
    ids, logits = store.read_logits(stage.id)
    assert ids.tolist() == everything.ids.tolist()
    assert report["metrics"]["all"]["samples"] == len(everything) == 90
    # the same model over the same texts: the distill stage's own stored outputs
    distill_ids, distill_logits = store.read_logits(store.find_stage(RUN, "distill-textcnn").id)
    assert distill_ids.tolist() == ids.tolist()
    np.testing.assert_allclose(logits, distill_logits, atol=1e-4)
    from sqlalchemy import func, select

    from kdstore.schema import Prediction

    with store.engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(Prediction).where(Prediction.stage_id == stage.id)).scalar_one()
    assert n == len(everything)

    test_only = kd("predict", "--run", RUN, "--model", "teacher", "--store", "--split", "test", "--db", db)
    assert "stage predict-teach@test succeeded: 16 samples" in test_only.stdout and "test: accuracy" in test_only.stdout
    assert len(store.read_logits(store.find_stage(RUN, "predict-teach@test").id)[0]) == 16
    again = kd("predict", "--run", RUN, "--model", "distill-textcnn", "--store", "--db", db, ok=False)
    assert "--overwrite" in again.output
    assert "another --run" not in again.output  # (it predicts with this run's model: another run has none)
    kd("predict", "--run", RUN, "--model", "distill-textcnn", "--store", "--split", "dev", "--db", db)  # beside the whole-store one
    assert len(store.read_logits(store.find_stage(RUN, "predict-distill-textcnn@dev").id)[0]) == 16
    assert len(store.read_logits(store.find_stage(RUN, "predict-distill-textcnn").id)[0]) == 90
    assert "goes with --store" in kd("predict", "--run", RUN, "--split", "dev", "--db", db, ok=False).output
    assert "leave out FILE" in kd("predict", "somefile.txt", "--run", RUN, "--store", "--db", db, ok=False).output
    # a predict stage is not a model
    assert "not a model" in kd_export("--run", RUN, "--model", "predict-teach@test", "--db", db, ok=False).output


def test_predict_store_refuses_text_piped_on_stdin(built, tmp_path, error_line):
    """`echo 很好 | kd predict --run r --store` predicted the store's samples, wrote a stage and said
    nothing of the text piped in; a config file's `store = true` gives way to it, as to a FILE."""
    copy = tmp_path / "copy"  # a copy: the other tests keep the module's store as it was built
    shutil.copytree(built.parent, copy)
    db = str(copy / "kd.db")
    stages = lambda: [s.name for s in Store.open(db).stages_of(RUN)]  # noqa: E731
    before = stages()
    out = kd("predict", "--run", RUN, "--model", "distill-textcnn", "--store", "--db", db, input="很好\n", ok=False)
    assert error_line(out) == "Error: --store predicts the store's samples, not the text piped on stdin: leave out --store to predict that"
    assert stages() == before
    (tmp_path / "stored.toml").write_text("[predict]\nstore = true\n", encoding="utf-8")
    piped = kd("predict", "--config", str(tmp_path / "stored.toml"), "--run", RUN, "--model", "distill-textcnn", "--db", db, input="很好\n")
    assert piped.stdout.endswith("\t很好\n") and len(piped.stdout.splitlines()) == 1
    assert stages() == before
    kd("predict", "--config", str(tmp_path / "stored.toml"), "--run", RUN, "--model", "distill-textcnn", "--db", db)  # nothing piped: the store
    assert stages() == [*before, "predict-distill-textcnn"]


def test_predictor_refuses_one_str_and_answers_no_texts_with_none(built):
    """``Predictor.predict("这个很好")`` answered each character as a text (four answers), as
    ``Artifact.predict`` no longer does; ``[]`` is no answers, and no logits of a row as wide as the classes."""
    store = Store.open(str(built))
    for run, which in ((RUN, "distill-textcnn"), (RUN, "teacher"), ("oof", "teacher")):
        predictor = Predictor.from_run(store, run, which, device="cpu")
        for method in (predictor.predict, predictor.logits):
            with pytest.raises(KdError, match=r"^texts must be a list of texts, not one str: pass \[text\]$"):
                method("这个很好")
            with pytest.raises(KdError, match=r"^texts\[1\] is NoneType, not a str$"):
                method(["很好", None])
        assert predictor.predict([]) == [] and predictor.logits([]).shape == (0, 2)
        assert len(predictor.predict(("这个很好",))) == 1


def test_predict_store_on_a_split_all_dropped_says_why_it_has_no_figures(built, tmp_path):
    """`kd predict --store --split dev` with every dev sample dropped printed the samples predicted and
    no dev line at all: nothing said why the split asked for had no figures."""
    copy = tmp_path / "copy"  # a copy: the other tests keep the module's store as it was built
    shutil.copytree(built.parent, copy)
    db = str(copy / "kd.db")
    dev = Store.open(db).samples(splits=["dev"]).ids.tolist()
    kd("labels", "set", "--run", RUN, *[f"{i}=drop" for i in dev[:3]], "--db", db)
    out = kd("predict", "--run", RUN, "--model", "distill-textcnn", "--store", "--split", "dev", "--db", db).stdout
    assert "dev: accuracy" in out and f"(n={len(dev) - 3})" in out and "no figures" not in out
    kd("labels", "set", "--run", RUN, *[f"{i}=drop" for i in dev[3:]], "--db", db)
    out = kd("predict", "--run", RUN, "--model", "distill-textcnn", "--store", "--split", "dev", "--overwrite", "--db", db).stdout
    assert out.splitlines()[1:] == [f"  dev: no figures: its {len(dev)} labeled samples are all dropped "
                                    "(`kd samples --split dev --dropped` shows them)"], out


def test_early_exit_stage_is_refused_naming_what_can_be_exported(built, tmp_path, error_line):
    copy = tmp_path / "copy"  # a copy: the other tests keep the module's store as it was built
    shutil.copytree(built.parent, copy)
    db = str(copy / "kd.db")
    # fold students (votes for kd labels detect) cannot be exported either: the list leaves them out
    kd("distill", "--run", RUN, "--folds", "2", "--name", "votes", *STUDENT_ARGS, "--db", db)
    # nor are they what kd predict serves by default (it served them, kd export another student)
    result = kd("predict", "--run", RUN, "--db", db, input="很好\n")
    assert result.stderr.startswith(f"note: --model student is 'distill-transformer', the latest distill stage of run {RUN!r} "
                                    "that is no fold students (kd distill --folds) (also: "), result.stderr
    kd("distill", "--run", RUN, "--student", "early-exit", "--epochs", "1", "--db", db)
    line = error_line(kd_export("--run", RUN, "--model", "distill-early-exit", "--format", "torchscript", "--db", db, ok=False))
    assert "'distill-early-exit' is an early-exit model" in line and "kd predict --model distill-early-exit" in line
    assert line.endswith("with --model: teach, distill-textcnn, distill-bigru, distill-bilstm, distill-transformer"), line
    # the default, student, is the latest student that can be exported (it was the early-exit one, refused)
    result = kd_export("--run", RUN, "--format", "torchscript", "--out", str(tmp_path / "x"), "--db", db, "--json")
    assert json.loads(result.stdout)["stage"]["name"] == "distill-transformer"
    # and says so: kd predict --run r serves the early-exit model, the export another one
    assert result.stderr == (f"warning: the latest student of run {RUN!r}, distill-early-exit, is an early-exit model and cannot be "
                             f"exported (kd predict --run {RUN} serves it); exporting the latest one that can be: distill-transformer\n")
    line = error_line(kd_export("--run", RUN, "--model", "votes", "--db", db, ok=False))
    assert "'votes' holds 2 fold students" in line  # and, as for early exit, what can be exported instead
    assert line.endswith("with --model: teach, distill-textcnn, distill-bigru, distill-bilstm, distill-transformer"), line
    assert not list((copy / "kd-artifacts" / "kd.db" / RUN).glob("export-distill-early-exit*"))
    kd_export("--run", RUN, "--model", "teach", "--format", "torchscript", "--overwrite", "--db", db)  # what it names exports
    # an early-exit model of another run, on run r's teacher: that run has nothing to export, the teacher's does
    kd("distill", "--run", "ee", "--teacher-run", RUN, "--student", "early-exit", "--epochs", "1", "--db", db)
    line = error_line(kd_export("--run", "ee", "--db", db, ok=False))
    assert line.endswith(f"run 'ee' has no other model: export its teacher with `kd export --run {RUN} --model teach`"), line


def test_predictions_of_a_model_older_than_a_new_class_are_refused_with_what_stores_them(built, tmp_path, error_line):
    """A class added after the models were trained: `kd predict --store` refused each of them, saying only that
    its predictions "cannot be stored against the store's labels", not what would store them."""
    copy = tmp_path / "copy"
    shutil.copytree(built.parent, copy)
    db = str(copy / "kd.db")
    kd("predict", "--run", RUN, "--model", "teach", "--store", "--split", "test", "--db", db)  # (stored before the new class)
    (tmp_path / "more.tsv").write_text("neutral\t一般般吧\n", encoding="utf-8")
    kd("ingest", str(tmp_path / "more.tsv"), "--db", db)
    line = error_line(kd("predict", "--run", RUN, "--model", "teach", "--store", "--db", db, ok=False))
    assert "its predictions cannot be stored against the store's labels: `kd teach --run r --model " in line, line
    # its earlier predictions' stage: "pass --overwrite", which was then refused for the classes (review predict36)
    again = error_line(kd("predict", "--run", RUN, "--model", "teach", "--store", "--split", "test", "--db", db, ok=False))
    assert "its predictions cannot be stored against the store's labels" in again and "--overwrite to replace" not in again, again
    assert line.endswith("retrains it on them; `kd predict` without --store serves it as it is"), line
    line = error_line(kd("predict", "--run", RUN, "--model", "distill-textcnn", "--store", "--db", db, ok=False))
    assert line.endswith("labels: once its teacher knows them, `kd distill --run r --student textcnn --name distill-textcnn --overwrite` (with the "
                         "options `kd report --run r` lists for it) retrains it; `kd predict` without --store serves it as it is"), line
    # without --store it answers as it is, and says which class it never answers (kd report alone said so); its export too
    said = kd("predict", "--run", RUN, "--model", "distill-textcnn", "--db", db, input="很好\n").stderr
    assert "warning: distill-textcnn was trained on neg, pos; the store has since added neutral, which it never answers" in said, said
    exported = kd_export("--run", RUN, "--model", "teach", "--format", "torchscript", "--out", str(tmp_path / "served"), "--db", db).stderr
    assert "warning: teach was trained on neg, pos; the store has since added neutral, which the export never answers" in exported, exported


def test_predicting_an_empty_file_says_so(built, tmp_path):
    """An empty FILE (an export not yet written) printed nothing and exited 0, as if predicted."""
    (tmp_path / "empty.txt").write_bytes(b"")
    result = kd("predict", "--run", RUN, "--model", "teach", str(tmp_path / "empty.txt"), "--db", str(built))
    assert (result.stdout, result.stderr) == ("", f"warning: {tmp_path / 'empty.txt'} is empty: nothing to predict\n")
    # so does standard input that ends before any line (`kd predict < empty.txt`, a grep that matched nothing)
    result = kd("predict", "--run", RUN, "--model", "teach", "--db", str(built), input=b"")
    assert (result.stdout, result.stderr) == ("", "warning: standard input is empty: nothing to predict\n")
    # a byte-order mark alone is no line either (Notepad's empty file saved as "UTF-8 with BOM"): it got an answer line
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf")
    result = kd("predict", "--run", RUN, "--model", "teach", str(tmp_path / "bom.txt"), "--db", str(built))
    assert (result.stdout, result.stderr) == ("", f"warning: {tmp_path / 'bom.txt'} is empty: nothing to predict\n")
    result = kd("predict", "--run", RUN, "--model", "teach", "--db", str(built), input=b"\xef\xbb\xbf")
    assert (result.stdout, result.stderr) == ("", "warning: standard input is empty: nothing to predict\n")


def test_predict_input_that_is_not_utf8_is_a_one_line_error(built, cnn_onnx, tmp_path, error_line):
    db = str(built)
    bad = "很好\n".encode() + b"\xff\xfe\xe5\n"
    out = kd("predict", "--run", RUN, "--model", "distill-textcnn", "--db", db, input=bad, ok=False)
    assert error_line(out) == "Error: <stdin>: line 2: not valid UTF-8 (byte 0xff): convert it to UTF-8 first"
    assert out.stdout.count("\t") == 2  # line 1 was answered before line 2 arrived
    f = tmp_path / "in.txt"
    f.write_bytes("很好\n太差\n".encode() + b"ok \xe5\xbe\n")
    out = kd("predict", str(f), "--run", RUN, "--model", "distill-textcnn", "--db", db, ok=False)
    assert error_line(out) == f"Error: {f}: line 3: not valid UTF-8 (byte 0xe5): convert it to UTF-8 first"
    assert out.stdout == ""  # a file is read whole before anything is predicted
    out = kd("predict", "--artifact", str(cnn_onnx[0]), input=b"\xc3\n", ok=False)
    assert "<stdin>: line 1: not valid UTF-8" in error_line(out)
    # a UTF-8 line of Chinese that ends inside a character (a file cut by `head -c`): no conversion to run
    f.write_bytes("很好\n太差了".encode()[:-1])
    out = kd("predict", str(f), "--run", RUN, "--model", "distill-textcnn", "--db", db, ok=False)
    assert error_line(out) == (f"Error: {f}: line 2: not valid UTF-8 (byte 0xe4): the line ends inside a character: cut short "
                               "(a file cut by `head -c`, a text cut at a byte limit?): complete or remove it")


def test_predict_from_stdin_with_stdout_closed_is_no_traceback(built, tmp_path):
    """`kd predict < texts >&-` (stdout closed, as a FILE's answers are written nowhere) ended in an
    AttributeError traceback: the answers of each read from stdin were flushed to a stdout that is None."""
    env = {**os.environ, "KD_DB": str(built), "KD_NO_PROGRESS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    for args in (["--run", RUN, "--model", "distill-textcnn"], ["--run", RUN, "--model", "distill-textcnn", "--json"]):
        proc = subprocess.run(["sh", "-c", 'exec "$0" -m commands.cli predict "$@" >&-', sys.executable, *args],
                              input="这个很好\n那个太差\n".encode(), capture_output=True, env=env, cwd=tmp_path, timeout=120)
        assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()


def test_predict_from_stdin_into_head_says_nothing_of_the_lines_head_never_read(built, tmp_path):
    """`cat texts | kd predict | head -n 1`: once the reader had gone, kd still warned of the cut lines it had
    predicted ("103 of 318 texts longer than 64 tokens, truncated"), lines no one read; a FILE said nothing."""
    env = {**os.environ, "KD_DB": str(built), "KD_NO_PROGRESS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    texts = "".join(f"{i}这个东西非常很好大家已经觉得比较一般今天我们的那里时候还是可以这个东西非常很好大家已经觉得\n" for i in range(20000))
    proc = subprocess.run(["sh", "-c", '"$0" -m commands.cli predict "$@" | head -n 1 >/dev/null', sys.executable,
                           "--run", RUN, "--model", "distill-textcnn"],
                          input=texts.encode(), capture_output=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.stderr == b"", proc.stderr.decode()


def test_predict_json_lines_with_a_lone_surrogate_escape_are_a_one_line_error(built, tmp_path, error_line):
    """JSON may escape half an emoji ("\\ud83d"): no UTF-8 text, which the tokenizer (and a --json
    line echoing it under "input") failed on with a traceback; kd ingest refuses it in one line too."""
    db = str(built)
    f = tmp_path / "in.jsonl"
    f.write_text('{"id": 1, "text": "很好"}\n{"id": 2, "text": "\\ud800很好"}\n', encoding="utf-8")
    out = kd("predict", str(f), "--run", RUN, "--model", "teacher", "--text-field", "text", "--json", "--db", db, ok=False)
    assert error_line(out) == (f"Error: {f}: line 2: field 'text': contains a lone surrogate escape "
                               "(\\ud800-\\udfff without its pair, e.g. an emoji cut in half): not valid Unicode")
    assert out.stdout == ""  # a FILE is read whole first: nothing predicted
    stdin = '{"id": 1, "text": "很好"}\n{"id": 2, "text": "太差", "note": {"\\udc00": 1}}\n'
    out = kd("predict", "--run", RUN, "--model", "distill-textcnn", "--text-field", "text", "--json", "--db", db, input=stdin, ok=False)
    assert "<stdin>: line 2: field 'note': contains a lone surrogate escape" in error_line(out)
    assert [json.loads(l)["input"] for l in out.stdout.splitlines()] == [{"id": 1}]  # the line before it was answered
    # a pair of escapes is one character, as it should be
    ok = kd("predict", "--run", RUN, "--model", "distill-textcnn", "--text-field", "text", "--json", "--db", db,
            input='{"text": "\\ud83d\\ude00很好"}\n')
    assert json.loads(ok.stdout)["text"] == "\U0001f600很好"
    # UTF-16 without a byte-order mark (ASCII text: NULs on every line) is said to be so, not "binary data"
    out = kd("predict", "--run", RUN, "--model", "distill-textcnn", "--db", db, input="good\nbad\n".encode("utf-16-le"), ok=False)
    assert "<stdin>: line 1: the input looks UTF-16LE encoded, without a byte-order mark: convert it to UTF-8 first" in out.output
    out = kd("predict", "--run", RUN, "--model", "distill-textcnn", "--db", db, input="good\nbad\n".encode("utf-16-be"), ok=False)
    assert "<stdin>: line 1: the input looks UTF-16BE encoded" in out.output
    out = kd("predict", "--run", RUN, "--model", "distill-textcnn", "--db", db, input=b"good\nbad\x00bytes\n", ok=False)
    assert "<stdin>: line 2: binary data (NUL byte): not a text file" in out.output
    # a line of control characters only is an empty text to the tokenizer: said so, not predicted from nothing
    lines = [json.loads(l) for l in kd("predict", "--run", RUN, "--model", "distill-textcnn", "--json", "--db", db,
                                       input="\x01\x7f\n很好\n\ufffd\ufffd\n").stdout.splitlines()]
    assert lines[0] == {"line": 1, "error": "empty text"} and lines[1]["text"] == "很好"
    assert lines[2] == {"line": 3, "error": "empty text"}  # (U+FFFD alone: what a failed conversion left; BERT drops it)


def test_predict_option_mistakes_are_caught_before_any_model_or_store_opens(tmp_path):
    """`--text-field ""` (or a --speed out of [0, 1]) was refused only after the model had loaded (minutes
    for a big teacher), and `kd predict - --store` (stdin named, then the store asked for) was taken as --store silently."""
    db = str(tmp_path / "none.db")  # no store there: an option error must come first
    out = kd("predict", "--run", RUN, "--text-field", "", "--db", db, input="很好\n", ok=False)
    assert "Invalid value for --text-field: name the field" in out.output
    out = kd("predict", "-", "--run", RUN, "--store", "--db", db, ok=False)
    assert "leave out FILE" in out.output
    for bad in ("1.5", "-0.1"):  # (refused by the early-exit model, once loaded)
        for store in ([], ["--store"]):
            out = kd("predict", "--run", RUN, "--speed", bad, *store, "--db", db, input="很好\n", ok=False)
            assert "Invalid value for --speed: must be in [0, 1]" in out.output, out.output
    assert not (tmp_path / "none.db").exists()


def test_predict_overwrite_without_store_is_refused_not_ignored(tmp_path):
    """`kd predict --overwrite` replaces a predict-STAGE stage, which only --store writes: without it
    (texts from stdin or a FILE, or an --artifact) the option did nothing, without a word."""
    db = str(tmp_path / "none.db")
    for source in (["--run", RUN, "--db", db], ["--artifact", str(tmp_path / "no-export")]):
        out = kd("predict", *source, "--overwrite", input="很好\n", ok=False)
        assert out.exit_code == 2 and "Error: --overwrite goes with --store" in out.output, out.output
    assert not (tmp_path / "none.db").exists()


def test_predict_artifact_with_a_typed_db_is_refused_not_ignored(cnn_onnx, tmp_path):
    """`kd predict --artifact DIR --db STORE` served the export and never opened STORE, without a word, where
    a typed --run or --model is refused: a --db of a store that does not exist, or of another store than the
    export's, looked read. KD_DB (the environment's store) stays ignored, as the artifact needs none."""
    db = str(tmp_path / "none.db")
    out = kd("predict", "--artifact", str(cnn_onnx[0]), "--db", db, input="很好\n", ok=False)
    assert out.exit_code == 2 and "Error: --artifact serves the export without a store: leave out --db" in out.output, out.output
    assert not (tmp_path / "none.db").exists()
    os.environ["KD_DB"] = db  # (the autouse fixture puts the environment back)
    try:
        assert kd("predict", "--artifact", str(cnn_onnx[0]), input="很好\n").stdout.strip()
    finally:
        del os.environ["KD_DB"]
    assert not (tmp_path / "none.db").exists()


def test_predict_file_missing_or_bad_is_refused_before_any_model_or_store_opens(tmp_path, error_line):
    """A mistyped FILE, or a bad line in it, was found only once the model had loaded (minutes for a big teacher)."""
    db = str(tmp_path / "none.db")  # no store there: the FILE's error must come first
    out = kd("predict", "typo.txt", "--run", RUN, "--db", db, ok=False)
    assert error_line(out) == "Error: typo.txt: cannot read: No such file or directory"
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "很好"}\n{"body": "太差"}\n', encoding="utf-8")
    out = kd("predict", str(f), "--run", RUN, "--text-field", "text", "--db", db, ok=False)
    assert error_line(out) == f"Error: {f}: line 2: no field 'text' (its fields: 'body')"
    f.write_bytes("很好\n".encode() + b"\xff\n")
    out = kd("predict", str(f), "--artifact", str(tmp_path / "no-export"), ok=False)
    assert error_line(out) == f"Error: {f}: line 2: not valid UTF-8 (byte 0xff): convert it to UTF-8 first"
    assert not (tmp_path / "none.db").exists()


def test_predict_json_lines_that_do_not_parse_say_where_and_why_as_kd_ingest_does(tmp_path, error_line):
    """--text-field of a line that is no JSON said Python's message cut short, "not JSON (Unterminated string
    starting at)", with no column; a pretty-printed JSON array (`json.dump(rows, f, indent=2)`, a `.json`
    file) was "not JSON (Expecting value)" and a pretty-printed object "Expecting property name enclosed in
    double quotes", where kd ingest names the column and says kd reads one object a line."""
    f = tmp_path / "in.jsonl"
    none = ["--artifact", str(tmp_path / "no-export"), "--text-field", "text"]  # the FILE is checked before a model loads
    f.write_text('{"text": "很好"}\n{"text": "太差\n', encoding="utf-8")  # cut short
    out = kd("predict", str(f), *none, ok=False)
    assert error_line(out) == (f"Error: {f}: line 2: not JSON (Unterminated string starting at column 10): "
                               "--text-field reads one JSON object a line"), out.output
    f.write_text('[\n  {"text": "很好"},\n  {"text": "太差"}\n]\n', encoding="utf-8")
    out = kd("predict", str(f), *none, ok=False)
    assert error_line(out) == (f"Error: {f}: line 1: not JSON (Expecting value at column 2): "
                               "--text-field reads one JSON object a line, not a JSON array"), out.output
    f.write_text('{\n  "text": "很好"\n}\n', encoding="utf-8")
    out = kd("predict", str(f), *none, ok=False)
    assert error_line(out) == (f"Error: {f}: line 1: not JSON (Expecting property name enclosed in double quotes at column 2): "
                               "the object goes on past its line: --text-field reads one JSON object a line, as `jq -c` writes them"), out.output


def test_predict_json_line_errors_name_a_config_files_text_field(tmp_path, error_line):
    """`[predict] text-field = "text"` in kd.toml (for the JSON lines a pipeline predicts), then plain
    lines predicted: "line 1: not JSON ...: --text-field reads one JSON object a line" named no file,
    to a user who typed no --text-field."""
    (tmp_path / "kd.toml").write_text('[predict]\ntext-field = "text"\n', encoding="utf-8")
    f = tmp_path / "in.txt"
    f.write_text("很好\n", encoding="utf-8")
    none = ["--artifact", str(tmp_path / "no-export")]  # the FILE is checked before a model loads
    out = kd("predict", str(f), *none, ok=False)
    assert error_line(out) == (f"Error: {f}: line 1: not JSON (Expecting value at column 1): "
                               '--text-field reads one JSON object a line (kd.toml: [predict] text-field = "text")'), out.output
    f.write_text('{"body": "很好"}\n', encoding="utf-8")
    out = kd("predict", str(f), *none, ok=False)
    assert error_line(out) == f"Error: {f}: line 1: no field 'text' (its fields: 'body') (kd.toml: [predict] text-field = \"text\")"


def test_predict_of_a_json_array_file_warns_that_it_is_predicted_as_it_stands(tmp_path):
    """A `.json` file of records (pandas' `to_json(orient="records")`: one line) was predicted as one text,
    the whole array, with no word (a first line that is a JSON object is warned of); pretty-printed, its
    brackets and each object's line were answered as texts, silently too. A text that starts with a
    bracket is no JSON: no warning."""
    f = tmp_path / "reviews.json"
    none = ["--artifact", str(tmp_path / "no-export")]  # the FILE is read (and warned of) before a model loads
    for content in ('[{"id": 1, "review": "很好"}, {"id": 2, "review": "太差"}]\n', '[\n  {"id": 1, "review": "很好"}\n]\n'):
        f.write_text(content, encoding="utf-8")
        out = kd("predict", str(f), *none, ok=False)
        assert (f"warning: {f}: line 1 starts a JSON array, predicted as it stands: kd predict reads one text a line; "
                f"`jq -c '.[]' {f} | kd predict --text-field review` reads its objects' texts") in out.stderr, out.output
    f.write_text("[好评] 很好\n[差评] 太差\n", encoding="utf-8")
    assert "JSON" not in kd("predict", str(f), *none, ok=False).stderr


def test_predict_of_an_image_or_a_compressed_file_names_what_it_is(tmp_path, error_line):
    """A PNG given to kd predict was "not valid UTF-8 (byte 0x89): it reads as GBK/GB18030 ...: iconv
    -f GB18030 -t UTF-8 shot.png > utf8-shot.png"; a gzip was "binary data", not "decompress it"."""
    import gzip

    shot = tmp_path / "shot.png"
    shot.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    out = kd("predict", str(shot), "--artifact", str(tmp_path / "no-export"), ok=False)
    assert error_line(out) == f"Error: {shot}: a PNG image, not a text file"
    texts_gz = tmp_path / "texts.txt.gz"
    texts_gz.write_bytes(gzip.compress("很好\n".encode()))
    out = kd("predict", str(texts_gz), "--artifact", str(tmp_path / "no-export"), ok=False)
    assert error_line(out) == f"Error: {texts_gz}: a gzip-compressed file, not text: decompress it first (gunzip -k {texts_gz})"


def test_predict_input_in_gbk_names_the_encoding_as_kd_ingest_does(cnn_onnx, tmp_path, error_line):
    """A GBK file (what Excel and Notepad save on Chinese Windows) was told only "not valid UTF-8 ...:
    convert it to UTF-8 first", where kd ingest of the same file names GBK/GB18030 and the iconv
    command; input whose earlier text is UTF-8 Chinese gets no iconv (it would garble that text). A
    line starting with a byte-order mark named a byte of the mark, not the one that failed."""
    f = tmp_path / "gbk.txt"
    for head, line in ((b"ok\n", "质量很好"), (b"", "太差了")):  # ("太" is CC AB in GBK: U+032B in UTF-8, 0xb2 fails)
        f.write_bytes(head + f"{line}\n".encode("gbk"))
        bad = line.encode("gbk")[2 if line == "太差了" else 0]
        out = kd("predict", str(f), "--artifact", str(tmp_path / "no-export"), ok=False)
        gbk = (f"not valid UTF-8 (byte 0x{bad:02x}): it reads as GBK/GB18030 (as Excel and Notepad save on Chinese Windows): "
               "convert it to UTF-8 first, e.g. ")
        assert error_line(out) == f"Error: {f}: line {1 + bool(head)}: {gbk}iconv -f GB18030 -t UTF-8 {f} > {tmp_path / 'utf8-gbk.txt'}"
    out = kd("predict", "--artifact", str(cnn_onnx[0]), input=b"ok\n" + "太差了\n".encode("gbk"), ok=False)
    warned, said = out.stderr.splitlines()  # ("ok" is all [UNK] to the tiny vocabulary: line 1 answered, and warned of)
    assert warned.startswith("warning: line 1: the model's vocabulary holds none of its tokens")
    assert said == f"Error: <stdin>: line 2: {gbk}pipe it through iconv -f GB18030 -t UTF-8"
    assert out.stdout.count("\t") == 2  # line 1 was answered
    f.write_bytes("很好\n".encode() + "太差了\n".encode("gbk"))  # UTF-8 Chinese before: no iconv of the whole file
    out = kd("predict", str(f), "--artifact", str(tmp_path / "no-export"), ok=False)
    assert error_line(out) == f"Error: {f}: line 2: not valid UTF-8 (byte 0xb2): convert it to UTF-8 first"
    out = kd("predict", "--artifact", str(cnn_onnx[0]), input="很好\n".encode() + "太差了\n".encode("gbk"), ok=False)
    assert error_line(out) == "Error: <stdin>: line 2: not valid UTF-8 (byte 0xb2): convert it to UTF-8 first"
    f.write_bytes("這個產品非常好用\n".encode("cp950"))  # Big5 (Taiwan, Hong Kong) reads as GBK too, garbled: named as kd ingest names it
    out = kd("predict", str(f), "--artifact", str(tmp_path / "no-export"), ok=False)
    assert error_line(out).startswith(f"Error: {f}: line 1: not valid UTF-8 (byte 0xb3): it reads as Big5 ") and "iconv -f CP950 -t UTF-8" in out.output
    f.write_bytes(b"\xef\xbb\xbfok \xff\n")  # the byte that failed, after the mark
    out = kd("predict", str(f), "--artifact", str(tmp_path / "no-export"), ok=False)
    assert error_line(out) == f"Error: {f}: line 1: not valid UTF-8 (byte 0xff): convert it to UTF-8 first"


def test_predict_input_in_utf16_of_chinese_without_a_mark_is_named_not_taken_for_gbk(cnn_onnx, tmp_path, error_line):
    """UTF-16 without its byte-order mark whose first line is Chinese alone holds no NUL byte before its
    first line end: line 1 was told "reads as GBK/GB18030", with an iconv that garbles it (kd ingest of
    the same file names UTF-16LE)."""
    # (one line: a single NUL byte, its line end's; it was called GBK)
    for codec, data in [(c, t.encode(c)) for c in ("utf-16-le", "utf-16-be") for t in ("质量很好\n太差了\n", "质量很好\n")]:
        f = tmp_path / "u16.txt"
        f.write_bytes(data)
        name = codec.upper().replace("UTF-16-", "UTF-16")
        want = f"line 1: the input looks {name} encoded, without a byte-order mark: convert it to UTF-8 first, e.g. "
        assert error_line(kd("predict", str(f), "--artifact", str(tmp_path / "no-export"), ok=False)) == (
            f"Error: {f}: {want}iconv -f {name} -t UTF-8 {f} > {tmp_path / 'utf8-u16.txt'}")
        out = kd("predict", "--artifact", str(cnn_onnx[0]), input=data, ok=False)
        assert error_line(out) == f"Error: <stdin>: {want}pipe it through iconv -f {name} -t UTF-8" and out.stdout == ""


@pytest.mark.parametrize("depth", [101, 500, 100_000])
def test_predict_json_lines_nested_too_deep_are_one_line_errors(tmp_path, error_line, depth):
    """A JSON line of arrays nested in one another (``[[[...]]]``) was a RecursionError traceback: from
    the parser past ~900 levels, from the lone-surrogate check past ~400, and so from the hint a first
    line of JSON gets without --text-field. 100 levels are read; deeper is one line naming it."""
    nested = "[" * (depth - 1) + "]" * (depth - 1)
    f = tmp_path / "deep.jsonl"
    f.write_text(f'{{"text": "很好"}}\n{{"text": "太差", "x": {nested}}}\n', encoding="utf-8")
    out = kd("predict", str(f), "--artifact", str(tmp_path / "no-export"), "--text-field", "text", ok=False)
    assert error_line(out) == f"Error: {f}: line 2: arrays or objects nested more than 100 deep"
    f.write_text(f'{{"text": "很好", "x": {nested}}}\n', encoding="utf-8")  # no --text-field: a text, not read as JSON
    out = kd("predict", str(f), "--artifact", str(tmp_path / "no-export"), ok=False)
    assert out.stderr.splitlines()[-1].startswith("Error: no exported model at ")  # past the FILE's check, to the model
    from kdstore.jsonl import loads_strict

    value = loads_strict('{"x": ' + "[" * 99 + "]" * 99 + "}")  # 100 deep: read
    for _ in range(99):
        value = value["x"] if isinstance(value, dict) else value[0]
    assert value == []


def test_a_number_json_has_no_room_for_names_its_field():
    """NaN, Infinity and 1e400 are refused naming the field that holds them (an error named the line
    alone: which of a wide line's fields?); in an array, or alone, they are named as numbers."""
    from kdstore.jsonl import loads_strict

    cases = (('{"text": "好", "score": 1e400}', "field 'score': the number 1e400 is out of range"),
             ('{"meta": {"p": -Infinity}}', "field 'p': -Infinity is not a JSON number"),
             ('{"xs": [1, NaN]}', "NaN is not a JSON number"),
             ("1e400", "the number 1e400 is out of range"))
    for line, said in cases:
        with pytest.raises(ValueError) as caught:
            loads_strict(line)
        assert str(caught.value) == said, line
    assert loads_strict('{"x": 1e300, "y": [2.5]}') == {"x": 1e300, "y": [2.5]}


def test_out_dot_exports_into_the_current_folder(built, tmp_path, monkeypatch, error_line):
    """`--out .` (or a path ending in `..`) has no name of its own: it is the folder it resolves to.
    (TorchScript: where the export goes is the same for both formats, and it exports in a fraction of the time.)"""
    here = tmp_path / "serve"
    here.mkdir()
    monkeypatch.chdir(here)
    ts = ("--run", RUN, "--model", "distill-textcnn", "--format", "torchscript", "--db", str(built))
    out = kd_export(*ts, "--out", ".")
    assert Path(out.stdout.strip()) == here.resolve()
    assert (here / "manifest.json").is_file() and (here / "model.pt").is_file()
    assert "manifest.json" in os.listdir(".")  # filled in place: the folder the shell is in (a rename left it a deleted one)
    assert [p.name for p in tmp_path.iterdir()] == ["serve"]  # no temporary or old folder left beside it
    # replacing it from inside left the shell in the deleted folder (`ls` empty, `--artifact .` "not a kd export")
    again = kd_export(*ts, "--out", ".", "--overwrite", ok=False)
    assert error_line(again).endswith("the working directory is in it: run kd export from outside it")
    assert (here / "manifest.json").is_file()
    monkeypatch.chdir(tmp_path)
    kd_export(*ts, "--out", str(here), "--overwrite")
    assert (here / "manifest.json").is_file() and [p.name for p in tmp_path.iterdir()] == ["serve"]


def test_folders_a_killed_export_left_are_removed_by_the_next_one(built, tmp_path):
    """`kill -9` of `kd export` left its hidden `.OUT.xxxx` folder (or the old export it was
    replacing) beside --out for good. The next export of that --out removes the ones whose owner
    process is gone, and leaves any other folder alone. (TorchScript: the folders beside --out are
    the same for both formats, and it exports in a fraction of the time.)"""
    out = tmp_path / "out"
    dead, foreign, live = tmp_path / ".out.k1ll3d", tmp_path / ".out.mine", tmp_path / ".out.old-2026"
    for folder in (dead, foreign, live):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"half")
    # the owner file of a process that has ended (the killed export), and of this live process
    from kdstore.export import OWNER, _claim

    child = os.fork()  # (a forked child: a new interpreter spent seconds importing torch to write one file)
    if child == 0:
        code = 1
        try:
            _claim(dead)
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(child, 0)[1] == 0 and (dead / OWNER).is_file()  # ended, and reaped: its process is gone
    _claim(live)
    ts = ("--run", RUN, "--model", "distill-textcnn", "--format", "torchscript", "--db", str(built))
    kd_export(*ts, "--out", str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.mine", ".out.old-2026", "out"]
    assert not (out / OWNER).exists() and OWNER not in json.loads((out / "manifest.json").read_text(encoding="utf-8"))["files"]
    kd_export(*ts, "--out", str(out), "--overwrite")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.mine", ".out.old-2026", "out"]  # the replaced one is gone too
    assert Artifact.load(out).class_names  # and the new one serves


def test_torchscript_export_serves_on_the_cpu_it_was_traced_on(built, tmp_path, monkeypatch, error_line):
    """torch.jit.trace records the CPU as the device of the tensors the model makes (torch.arange,
    the attention masks): --device auto serves a TorchScript export on the CPU even where CUDA is."""
    import torch

    path = Path(kd_export("--run", RUN, "--model", "distill-bigru", "--format", "torchscript", "--out", str(tmp_path / "ts"), "--db", str(built)).stdout.strip())
    sample = fresh_texts()
    expected = Artifact.load(path, device="cpu").logits(sample)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    np.testing.assert_array_equal(Artifact.load(path, device="auto").logits(sample), expected)
    line = error_line(kd("predict", "--artifact", str(path), "--device", "cuda", input="很好\n", ok=False))
    assert "a TorchScript export was traced on the CPU" in line and "--format onnx" in line


def test_predict_json_keeps_one_object_a_line_for_unicode_line_separators():
    """U+2028, U+2029 and U+0085 in a text: str.splitlines() of --json output still gives one object a line."""
    from commands.predict import _emit

    class Fixed:
        max_len = 32

        def predict(self, texts, batch_size=256):
            return [{"label": "pos", "confidence": 0.9, "probs": {"pos": 0.9, "neg": 0.1}, "truncated": False} for _ in texts]

    lines = [(1, "很好\u2028下一行"), (2, "a\u2029b\x85c"), (3, "好")]
    import click

    out = CliRunner().invoke(click.command()(lambda: _emit(Fixed(), lines, 8, True)), []).stdout
    got = [json.loads(l) for l in out.splitlines()]
    assert [g["text"] for g in got] == [t for _, t in lines]
    assert [g["line"] for g in got] == [1, 2, 3]


def test_predict_tsv_writes_no_nul_of_a_json_text():
    """A JSON line's text may hold \\u0000 (--text-field): the tab-separated output wrote the NUL as it was,
    which csv readers and kd ingest refuse ("line contains NUL"); a space, as a tab or a line break."""
    from commands.predict import _emit

    class Fixed:
        max_len = 32

        def predict(self, texts, batch_size=256):
            return [{"label": "pos", "confidence": 0.9, "probs": {"pos": 0.9, "neg": 0.1}, "truncated": False} for _ in texts]

    import click

    out = CliRunner().invoke(click.command()(lambda: _emit(Fixed(), [(1, "很\x00好\t的")], 8, False)), []).stdout
    assert out == "pos\t0.9000\t很 好 的\n"


@pytest.mark.parametrize("manifest", [
    {"format_version": 1, "model_file": ["model.onnx"], "files": {"model.onnx": "0"}},
    {"format_version": 1, "model_file": "model.onnx", "files": ["model.onnx"]},
])
def test_a_malformed_manifest_is_a_one_line_error(tmp_path, manifest):
    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(KdError, match="manifest.json is malformed"):
        Artifact.load(tmp_path)


@pytest.mark.parametrize("runtime, module", [("tokenizers", "tokenizers"), ("transformers", "transformers")])
def test_a_missing_tokenizer_library_is_a_one_line_error(tmp_path, monkeypatch, error_line, runtime, module):
    """A lean serving box (onnxruntime, no tokenizers): one line naming the package, as for onnxruntime."""
    from kdstore.serving import FORMAT_VERSION, sha256_file

    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / "classes.txt").write_text("0\tpos\n1\tneg\n", encoding="utf-8")
    manifest = {
        "format_version": FORMAT_VERSION, "format": "onnx", "model_file": "model.onnx", "classes": ["pos", "neg"], "max_len": 8,
        "inputs": {"special_tokens": False, "pad_id": 0}, "stage": {"name": "s"}, "model": {"kind": "student"},
        "tokenizer": {"runtime": runtime}, "files": {n: sha256_file(tmp_path / n) for n in ("model.onnx", "classes.txt")},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    line = error_line(kd("predict", "--artifact", str(tmp_path), input="很好\n", ok=False))
    assert line == f"Error: serving this export needs the {module} library" + (" (its tokenizer)" if module == "transformers" else "") + f": pip install {module}"


def test_an_export_is_checked_on_distinct_store_texts(tmp_path):
    """Dev and test texts first, then others: the dev texts were taken twice when the store had
    fewer than 128 of them (the manifest said "102 store texts" for 82)."""
    from kdstore.export import _verify_texts
    from kdstore.ingest import IngestOptions, ingest

    store = Store.open(str(tmp_path / "kd.db"))
    ingest(store, "pos\t好一\nneg\t差二\n".encode(), "dev.tsv", IngestOptions(split="dev"))
    ingest(store, "pos\t好三\nneg\t差四\npos\t好五\n".encode(), "t.tsv", IngestOptions())
    texts = _verify_texts(store, max_len=8)
    assert texts[:5] == ["好一", "差二", "好三", "差四", "好五"] and len(texts) == 7  # + one longer than max_len, one character
    store.close()


def test_a_stage_replaced_while_it_is_exported_keeps_its_figures_in_the_manifest(built, tmp_path, monkeypatch):
    """`kd distill --overwrite` ending while `kd export` of the stage it replaces runs deletes that
    stage: the manifest, its figures read last, came out with `"metrics": {}` (the model exported
    was the old one all the same). The figures are read with the model. (TorchScript: the manifest's
    figures are the same for both formats, and it exports in a fraction of the time.)"""
    from sqlalchemy import delete

    from kdstore import export as exp
    from kdstore.schema import Stage

    with Store.open(str(built)).engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db = tmp_path / "kd.db"
    db.write_bytes(built.read_bytes())
    store = Store.open(str(db))
    stage_id = store.find_stage(RUN, "distill-textcnn").id
    verify = exp._verify_texts

    def replaced_meanwhile(*args, **kwargs):  # the replacement succeeds: the stage it replaced goes
        with store.engine.begin() as conn:
            conn.execute(delete(Stage).where(Stage.id == stage_id))
        return verify(*args, **kwargs)

    monkeypatch.setattr(exp, "_verify_texts", replaced_meanwhile)
    path = Path(kd_export("--run", RUN, "--model", "distill-textcnn", "--format", "torchscript", "--out", str(tmp_path / "out"), "--db", str(db)).stdout.strip())
    store.close()
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["metrics"]["dev"]["accuracy"] >= 0 and manifest["metrics"]["test"]["n"] == 16


def test_an_out_folder_filled_while_the_export_ran_is_not_replaced(built, tmp_path, monkeypatch, error_line):
    """Two `kd export --out X` at once both found X free; the second renamed the first's export aside
    and deleted it, with no --overwrite (and files a person put there meanwhile with it). (TorchScript:
    the folder is put in place the same way for both formats, and it exports in a fraction of the time.)"""
    from kdstore import export as exp

    out = tmp_path / "out"
    verify = exp._verify_texts

    def filled_meanwhile(*args, **kwargs):
        out.mkdir()
        (out / "notes.txt").write_text("mine", encoding="utf-8")
        return verify(*args, **kwargs)

    monkeypatch.setattr(exp, "_verify_texts", filled_meanwhile)
    refused = kd_export("--run", RUN, "--model", "distill-textcnn", "--format", "torchscript", "--out", str(out), "--db", str(built), ok=False)
    assert "was filled while this export ran" in error_line(refused) and "nothing replaced" in error_line(refused)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and [p.name for p in tmp_path.iterdir()] == ["out"]  # no folder left beside it


def test_predict_student_is_the_latest_succeeded_distill_stage_whatever_their_names(built, tmp_path):
    """`--model student` took a stage *named* `distill` first: one left running or failed (a killed
    `kd distill --name distill`) made kd predict serve the teacher, and a succeeded one was served
    over later students (the note calling it the latest; kd export picked the latest)."""
    from synthetic import kill_9_inside_stage

    copy = tmp_path / "copy"  # a copy: the other tests keep the module's store as it was built
    shutil.copytree(built.parent, copy)
    db = str(copy / "kd.db")
    kill_9_inside_stage(db, tmp_path, run=RUN, kind="distill")  # stage `distill`, running, its process gone
    out = kd("predict", "--run", RUN, "--json", "--db", db, input="很好\n")
    assert "--model student is 'distill-transformer'" in out.stderr
    expected = kd("predict", "--run", RUN, "--model", "distill-transformer", "--json", "--db", db, input="很好\n").stdout
    assert out.stdout == expected
    kd("distill", "--run", RUN, "--name", "distill", *STUDENT_ARGS, "--db", db)
    kd("distill", "--run", RUN, "--name", "late", "--student", "bigru", *STUDENT_ARGS, "--db", db)
    out = kd("predict", "--run", RUN, "--json", "--db", db, input="很好\n")
    assert "--model student is 'late'" in out.stderr
    assert out.stdout == kd("predict", "--run", RUN, "--model", "late", "--json", "--db", db, input="很好\n").stdout
    exported = kd_export("--run", RUN, "--format", "torchscript", "--out", str(tmp_path / "x"), "--db", db, "--json")
    assert json.loads(exported.stdout)["stage"]["name"] == "late" and "warning" not in exported.stderr  # the model kd predict serves


def test_a_torchscript_textcnn_export_pads_widths_as_kd_predict_does(built, cnn_onnx, tmp_path):
    """PyTorch's CPU convolution keeps one oneDNN primitive per input shape, so kd predict pads
    TextCNN batches to a multiple of 8 tokens; a TorchScript export was served at every exact width
    (a width per length: 20,000 texts of the default TextCNN held 800 MB, 470 MB rounded). The
    manifest records the multiple; ONNX Runtime, with no such cache, keeps the exact width."""
    db = str(built)
    ts = Path(kd_export("--run", RUN, "--model", "distill-textcnn", "--format", "torchscript", "--out", str(tmp_path / "ts"), "--db", db).stdout.strip())
    onnx = cnn_onnx[0]  # (served only: the module's ONNX export of the same stage)
    assert json.loads((ts / "manifest.json").read_text(encoding="utf-8"))["inputs"]["pad_multiple"] == 8
    assert json.loads((onnx / "manifest.json").read_text(encoding="utf-8"))["inputs"]["pad_multiple"] == 1
    sample = fresh_texts()
    reference = Predictor.from_run(Store.open(db), RUN, "distill-textcnn", device="cpu").logits(sample)
    for path, multiple in ((ts, 8), (onnx, 1)):
        artifact = Artifact.load(path, device="cpu")
        widths, run = [], artifact._run
        artifact._run = lambda ids, mask: widths.append(ids.shape[1]) or run(ids, mask)  # noqa: E731 (the widths served)
        served = np.concatenate([artifact.logits([t]) for t in sample])  # one text a batch: a width per length
        assert all(w % multiple == 0 for w in widths) and (multiple == 1) == (len(set(widths)) > 4), (path, widths)
        np.testing.assert_allclose(served, reference, atol=1e-4)
    # an export made before the manifest said so serves at the exact width, as it did
    older = tmp_path / "older"
    shutil.copytree(ts, older)
    manifest = json.loads((older / "manifest.json").read_text(encoding="utf-8"))
    del manifest["inputs"]["pad_multiple"]
    (older / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert Artifact.load(older).pad_multiple == 1
    with pytest.raises(KdError, match="batch_size must be at least 1"):  # (it served rows of zeros)
        Artifact.load(onnx).logits(sample, batch_size=0)


def test_out_under_a_device_or_fifo_names_it(built, tmp_path, error_line):
    """`--out /dev/null/x` (or under a FIFO) said only "File exists": the check for what blocks
    --out looked for regular files."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    line = error_line(kd_export("--run", RUN, "--model", "distill-textcnn", "--out", str(fifo / "out"), "--db", str(built), ok=False))
    assert line == f"Error: {fifo / 'out'}: cannot write the export there: {fifo} is a file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def test_a_full_disk_while_exporting_is_named_not_blamed_on_the_model(built, tmp_path, error_line, monkeypatch):
    """A full disk during torch.onnx.export read "torch.onnx could not export this model ... try
    --format torchscript": the user went after the model, not the disk. (The failure is injected: a
    full disk cannot be made here.)"""
    import errno

    import torch

    def full(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("failed to save the ONNX program") from exc

    monkeypatch.setattr(torch.onnx, "export", full)
    out = tmp_path / "onnx"
    line = error_line(kd_export("--run", RUN, "--model", "distill-textcnn", "--out", str(out), "--db", str(built), ok=False))
    assert line == f"Error: {tmp_path}: cannot write the export there: No space left on device"
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".onnx.")]


def test_the_verify_text_longer_than_max_len_is_so_in_tokens(tmp_path):
    """The export is checked on a text longer than max_len, so truncation is checked too; it was made
    twice max_len *characters* long, which in English words is a few dozen tokens: with max_len 32
    no text the export was checked on was cut (and kd export said "one longer than --max-len")."""
    from kdstore.batching import encode_flagged
    from kdstore.export import _verify_texts
    from kdstore.ingest import IngestOptions, ingest
    from kdstore.vocab import build_vocab, make_tokenizer

    store = Store.open(str(tmp_path / "kd.db"))
    rows = "pos\tgreat phone, works well\nneg\tbroken on day one\npos\tlove it, fast delivery\n"
    ingest(store, rows.encode(), "dev.tsv", IngestOptions(split="dev"))
    tokenizer = make_tokenizer(build_vocab(["great phone works well broken on day one love it fast delivery"]))
    encode = lambda texts: encode_flagged(tokenizer, texts, max_len=32)  # noqa: E731 (as Predictor.encode)
    texts = _verify_texts(store, 32, encode)
    assert len(texts) == 5 and texts[:3] == ["great phone, works well", "broken on day one", "love it, fast delivery"]
    assert encode(texts)[1] == [False, False, False, True, False]  # the long one is cut at 32 tokens
    store.close()


def test_a_damaged_manifest_field_or_a_model_that_does_not_fit_it_is_one_line(built, cnn_onnx, tmp_path, error_line):
    """The manifest has no sha256 of its own: a hand-edited or damaged field kd never writes ended in
    a traceback (``"max_len": -1``, ``"pad_id": 1e20``, a min_len of 10**12: "cannot allocate 7 TiB"),
    or was served wrong without a word (``"max_len": 0``: every text unread; ``"special_tokens":
    "false"`` read as true). A model that fails on its inputs, or gives another number of scores than
    the manifest names classes, is one line naming the model file, not onnxruntime's or torch's traceback."""
    from kdstore.serving import classes_text, sha256_file

    db = str(built)
    for fmt in ("onnx", "torchscript"):  # (ONNX: the module's export, only copied here)
        good = cnn_onnx[0] if fmt == "onnx" else Path(kd_export("--run", RUN, "--model", "distill-textcnn", "--format", fmt, "--out", str(tmp_path / fmt), "--db", db).stdout.strip())
        model = good / json.loads((good / "manifest.json").read_text(encoding="utf-8"))["model_file"]
        cases = [
            ("max_len", -1, "field max_len is -1, not a whole number from 1 to 2147483647"),
            ("max_len", 0, "field max_len is 0, not a whole number from 1"),
            ("max_len", 10**30, "field max_len is 1000000000000000000000000000000, not"),
            ("max_len", "32", 'field max_len is "32", not a whole number'),
            ("pad_id", 10**20, "field inputs.pad_id is 100000000000000000000, not a whole number from 0 to 9223372036854775807"),
            ("pad_id", -1, "field inputs.pad_id is -1, not"),
            ("min_len", 10**12, "field inputs.min_len is 1000000000000, not a whole number from 0 to 65536"),
            ("pad_multiple", 0, "field inputs.pad_multiple is 0, not a whole number from 1 to 65536"),
            ("special_tokens", "false", 'field inputs.special_tokens is "false", not true or false'),
            ("classes", "neg", 'field classes is "neg", not a list of class names'),
            ("min_len", None, "field inputs.min_len is null, not a whole number from 0 to 65536"),  # (a TypeError, no field named)
            ("stage", None, "field stage is null, not an object"),
            ("pad_id", 10**6, f"{model}: the model failed on a batch of 2 texts ("),  # in range, but no token of its vocabulary
        ]
        for field, value, expected in cases:
            edited = tmp_path / f"{fmt}-{field}"
            shutil.rmtree(edited, ignore_errors=True)
            shutil.copytree(good, edited)
            manifest = json.loads((edited / "manifest.json").read_text(encoding="utf-8"))
            (manifest["inputs"] if field in manifest["inputs"] else manifest)[field] = value
            (edited / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
            line = error_line(kd("predict", "--artifact", str(edited), input="很好\n好\n", ok=False))
            assert expected.replace(str(model), str(edited / model.name)) in line and line.startswith("Error: "), (fmt, field, line)
            if expected.startswith("field"):
                assert f"{edited / 'manifest.json'}: field" in line and line.endswith("re-run `kd export`")
        # three classes named (classes.txt and its sha256 edited to match) for a model of two
        three = tmp_path / f"{fmt}-three"
        shutil.copytree(good, three)
        manifest = json.loads((three / "manifest.json").read_text(encoding="utf-8"))
        manifest["classes"] = ["neg", "pos", "meh"]
        (three / "classes.txt").write_bytes(classes_text(manifest["classes"]).encode("utf-8"))
        manifest["files"]["classes.txt"] = sha256_file(three / "classes.txt")
        (three / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        line = error_line(kd("predict", "--artifact", str(three), input="很好\n", ok=False))
        assert line == f"Error: {three / model.name} gives scores of shape [1, 2] for 1 texts, where manifest.json names 3 classes: re-run `kd export`"
        assert kd("predict", "--artifact", str(good), input="很好\n").stdout.split("\t")[0] in ("pos", "neg")  # the export itself serves


def test_an_onnx_model_failing_on_its_inputs_prints_kds_one_line_alone(cnn_onnx, tmp_path):
    """A model that fails on its inputs (a manifest's ``pad_id`` past the vocabulary) is one line naming
    the model file: onnxruntime's own logger wrote its error to the process's stderr too (a
    ``[E:onnxruntime:...]`` line, unseen by CliRunner), ahead of kd's. Run in a subprocess to see fd 2."""
    edited = tmp_path / "edited"
    shutil.copytree(cnn_onnx[0], edited)
    manifest = json.loads((edited / "manifest.json").read_text(encoding="utf-8"))
    manifest["inputs"]["pad_id"] = 10**6
    (edited / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    env = {**os.environ, "KD_NO_PROGRESS": "1", "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "commands.cli", "predict", "--artifact", str(edited)], input="很好\n",
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {edited / 'model.onnx'}: the model failed on a batch of 1 texts ("), proc.stderr


def test_the_readmes_python_serves_an_onnx_export_as_kd_predict_does(cnn_onnx):
    """The README's code for serving an export without kd (onnxruntime, tokenizers and the manifest):
    the same labels and confidences as ``kd predict --artifact``, on a text shorter than the TextCNN's
    widest kernel (padded to ``min_len``: unpadded, it failed or answered otherwise), a long one, and
    one of unknown characters only."""
    folder = cnn_onnx[0]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    code = readme.split("### Serving an export without kd", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = re.sub(r"^folder = .*$", f"folder = {str(folder)!r}", code, count=1, flags=re.M)
    code = re.sub(r"^print\(.*$", "", code, flags=re.M)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    sample = ["好", "很好", "这个东西太差了" * 12, "🙂🙂"]
    got = namespace["predict"](sample)
    served = [json.loads(l) for l in kd("predict", "--artifact", str(folder), "--json", input="\n".join(sample) + "\n").stdout.splitlines()]
    assert [label for label, _ in got] == [r["label"] for r in served]
    assert max(abs(conf - r["confidence"]) for (_, conf), r in zip(got, served)) < 1e-5
    assert namespace["predict"]([]) == []  # no texts, no answers (max() of min_len alone was a TypeError)


def test_the_readmes_python_answers_no_texts_of_an_rnn_export(built, tmp_path):
    """The README's serving code promises ``predict([])`` a batch of none; with a BiGRU or BiLSTM export
    it sent ONNX Runtime a batch of 0 rows, whose GRU/LSTM kernel aborts the whole process
    ("terminate called without an active exception", SIGABRT): one empty request killed the server.
    Run in a fresh Python, as a serving team runs it (no kd imported)."""
    folder = Path(kd_export("--run", RUN, "--model", "distill-bigru", "--out", str(tmp_path / "rnn"), "--db", str(built)).stdout.strip())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    code = readme.split("### Serving an export without kd", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = re.sub(r"^folder = .*$", f"folder = {str(folder)!r}", code, count=1, flags=re.M)
    code = re.sub(r"^print\(.*$", "", code, flags=re.M)
    code += "\nprint(predict([]), len(predict(['很好'])))\nimport sys; assert 'kdstore' not in sys.modules\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] 1"


def test_runs_delete_removes_a_stages_exports_at_their_default_place(built, tmp_path):
    """A deleted stage's exports in the run's artifact folder (``kd export`` without ``--out``) stayed,
    serving a model the store no longer has, and kept the run's folder after the run was deleted; an
    export written elsewhere with ``--out``, one holding a file of the user's, and another stage's stay.
    (A copy of the module's store: its stages' models are the module's, its artifact folder its own.)"""
    db = tmp_path / "kd.db"
    with sqlite3.connect(built) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    exported = lambda which, *args: Path(kd_export("--run", RUN, "--model", which, "--format", "torchscript", *args, "--db", str(db)).stdout.strip())  # noqa: E731
    cnn, rnn, teacher = exported("distill-textcnn"), exported("distill-bigru"), exported("teacher")
    elsewhere = exported("distill-textcnn", "--out", str(tmp_path / "serve"))
    (teacher / "notes.txt").write_text("mine", encoding="utf-8")
    assert cnn.parent == rnn.parent == teacher.parent == (tmp_path / "kd-artifacts" / "kd.db" / RUN).resolve()

    args = ["runs", "delete", "--run", RUN, "--stage", "distill-textcnn", "--stage", "teach"]
    dry = json.loads(kd(*args, "--dry-run", "--json", "--db", str(db)).stdout)
    assert dry["exports"] == [str(cnn)] and cnn.is_dir()
    assert any(str(teacher) in w and "kept" in w for w in dry["warnings"])
    out = kd(*args, "--yes", "--db", str(db))
    assert f"deleted export {cnn}" in out.stdout
    assert f"warning: {teacher} is an export of a stage deleted now, kept: it holds files kd export did not write" in out.stderr
    assert not cnn.exists() and rnn.is_dir() and (teacher / "notes.txt").is_file() and (elsewhere / "model.pt").is_file()
    assert (built.parent / "kd-artifacts" / "kd.db" / RUN / "distill-textcnn").is_dir()  # the module's own store: untouched


def test_an_export_into_a_stages_folder_is_refused(built, tmp_path, error_line):
    """``--out`` inside a stage's folder (``RUN/STAGE``, beside its model) was written there, and
    ``kd distill --overwrite`` or ``kd runs delete`` of that stage removed the export with the folder,
    without a word. (A copy of the module's store: its artifact folder is its own.)"""
    db = tmp_path / "kd.db"
    with sqlite3.connect(built) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    inside = tmp_path / "kd-artifacts" / "kd.db" / RUN / "distill-bigru" / "serve"
    out = kd_export("--run", RUN, "--model", "distill-bigru", "--format", "torchscript", "--out", str(inside), "--db", str(db), ok=False)
    assert error_line(out).startswith(f"Error: {inside} is inside the folder of stage 'distill-bigru' of run '{RUN}'")
    assert not inside.exists()


def test_runs_delete_names_an_export_of_a_replaced_model_it_keeps(built, tmp_path):
    """An export at a stage's default place of the model an ``--overwrite`` replaced is not the
    stage's (another sha256): ``kd runs delete`` kept it and said nothing, "deleted run" while the
    run's folder stayed, serving a model the store no longer has."""
    db = tmp_path / "kd.db"
    with sqlite3.connect(built) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    old = Path(kd_export("--run", RUN, "--model", "distill-textcnn", "--format", "torchscript", "--db", str(db)).stdout.strip())
    kd("distill", "--run", RUN, "--student", "textcnn", *STUDENT_ARGS, "--seed", "3", "--overwrite", "--db", str(db))
    dry = json.loads(kd("runs", "delete", "--run", RUN, "--stage", "distill-textcnn", "--dry-run", "--json", "--db", str(db)).stdout)
    assert dry["exports"] == []
    assert any(w.startswith(f"{old} is kept: it is at the export place of a stage this would delete") for w in dry["warnings"])


def test_runs_delete_removes_an_export_made_while_its_stage_was_parked(built, tmp_path):
    """``kd export`` of a stage parked by an ``--overwrite`` (killed, or running) writes RUN/export-NAME~parked-ID-FORMAT;
    once the replacement failed and the stage had its name back, ``kd runs delete`` looked for RUN/export-NAME-FORMAT
    alone and left that folder behind for good, serving a model the store no longer has, without a word."""
    db = tmp_path / "kd.db"
    with sqlite3.connect(built) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    rename = lambda old, new: sqlite3.connect(db).execute("UPDATE stages SET name = ? WHERE name = ?", (new, old)).connection.commit()  # noqa: E731
    rename("distill-textcnn", "distill-textcnn~parked-99")  # (as an --overwrite that is running, or was killed, leaves it)
    parked = Path(kd_export("--run", RUN, "--model", "distill-textcnn~parked-99", "--format", "torchscript", "--db", str(db)).stdout.strip())
    assert parked.name == "export-distill-textcnn~parked-99-torchscript"
    rename("distill-textcnn~parked-99", "distill-textcnn")  # (the replacement failed: the stage has its name back)
    dry = json.loads(kd("runs", "delete", "--run", RUN, "--stage", "distill-textcnn", "--dry-run", "--json", "--db", str(db)).stdout)
    assert dry["exports"] == [str(parked)], dry
    kd("runs", "delete", "--run", RUN, "--stage", "distill-textcnn", "--yes", "--db", str(db))
    assert not parked.exists()


def test_export_without_model_exports_the_parked_student_kd_predict_serves(built, tmp_path):
    """While ``kd distill --overwrite`` replaces the latest student, it waits as ``NAME~parked-ID`` and
    ``kd predict --run`` serves it (README): ``kd export --run`` passed over it for an older student and
    warned that the parked one "is fold students (kd distill --folds) and cannot be exported"."""
    db = tmp_path / "kd.db"
    with sqlite3.connect(built) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    with sqlite3.connect(db) as c:  # (as an --overwrite that is running, or was killed, leaves it)
        c.execute("UPDATE stages SET name = ? WHERE name = ?", ("distill-transformer~parked-99", "distill-transformer"))
    assert Predictor.from_run(Store.open(str(db)), RUN, device="cpu").stage_name == "distill-transformer~parked-99"
    out = kd_export("--run", RUN, "--format", "torchscript", "--out", str(tmp_path / "x"), "--db", str(db))
    assert "fold students" not in out.stderr and "cannot be exported" not in out.stderr, out.stderr
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stage"]["name"] == "distill-transformer~parked-99"


def test_runs_delete_dry_run_does_not_call_a_parked_export_it_deletes_kept(built, tmp_path):
    """A `kd distill --overwrite` killed with -9, the old student exported as it waited parked: `kd runs delete
    --stage NAME --dry-run` (a store given by a relative --db) listed that export among those it deletes, and warned
    it was kept, "not an export of its model": the dead stage, which has no model folder, looked for it by another
    spelling of the same folder."""
    from synthetic import kill_9_inside_stage

    shutil.copytree(built.parent, tmp_path / "copy")
    db = "copy/kd.db"  # (relative: the test's working directory is tmp_path)
    kd("distill", "--run", RUN, "--name", "fresh", *STUDENT_ARGS, "--db", db)  # (trained here: its folder recorded in the copy)
    kill_9_inside_stage(db, tmp_path, run=RUN, kind="distill", name="fresh")
    name = next(st["name"] for st in json.loads(kd("report", "--run", RUN, "--json", "--db", db).stdout)["stages"]
                if st["name"].startswith("fresh~parked-"))
    parked = Path(kd_export("--run", RUN, "--model", name, "--format", "torchscript", "--db", db).stdout.strip())
    dry = json.loads(kd("runs", "delete", "--run", RUN, "--stage", "fresh", "--dry-run", "--json", "--db", db).stdout)
    assert [Path(p).resolve() for p in dry["exports"]] == [parked.resolve()], dry
    assert not [w for w in dry["warnings"] if parked.name in w], dry["warnings"]


def test_exporting_again_over_an_export_of_a_replaced_model_says_it_is_stale(built, tmp_path, error_line):
    """After ``kd distill --overwrite``, ``kd export`` of the stage without ``--overwrite`` found its
    default folder holding the export of the model replaced since and said only "already holds an
    export": read as "exported already", the old model went on being served."""
    db = tmp_path / "kd.db"
    with sqlite3.connect(built) as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    args = ("--run", RUN, "--model", "distill-textcnn", "--format", "torchscript", "--db", str(db))
    old = Path(kd_export(*args).stdout.strip())
    line = error_line(kd_export(*args, ok=False))
    assert "already holds an export" in line and "replaced" not in line  # the same model: exported already
    assert f"already holds an export of stage 'distill-textcnn' of run {RUN!r}: pass --overwrite" in line  # (which one: --overwrite replaces it)
    other = error_line(kd_export("--run", RUN, "--model", "teacher", "--format", "torchscript", "--out", str(old), "--db", str(db), ok=False))
    # another stage's export in the --out given: named, so that --overwrite does not replace it unawares
    assert f"already holds an export of stage 'distill-textcnn' of run {RUN!r}, not of stage 'teach': pass --overwrite" in other, other
    kd("distill", "--run", RUN, "--student", "textcnn", *STUDENT_ARGS, "--seed", "3", "--overwrite", "--db", str(db))
    line = error_line(kd_export(*args, ok=False))
    assert line.startswith(f"Error: {old} holds the export of the model stage 'distill-textcnn' of run 'r' had before") and "--overwrite" in line
    assert Path(kd_export(*args, "--overwrite").stdout.strip()) == old


def test_artifact_refuses_one_str_or_a_non_text_for_its_texts(cnn_onnx):
    """``Artifact.predict("这个很好")`` answered each character as a text (four answers, the first one's
    label taken for the text's), and ``["很好", None]`` ended in a TypeError from the tokenizer."""
    artifact = Artifact.load(cnn_onnx[0])
    for method in (artifact.predict, artifact.logits):
        with pytest.raises(KdError, match=r"^texts must be a list of texts, not one str: pass \[text\]$"):
            method("这个很好")
        with pytest.raises(KdError, match=r"^texts\[1\] is NoneType, not a str$"):
            method(["很好", None])
    assert len(artifact.predict(("这个很好", "那个太差"))) == 2 and artifact.logits(["这个很好"]).shape == (1, 2)


def test_artifact_serves_a_numpy_array_of_texts(cnn_onnx):
    """``Artifact.predict(df["text"].values)``, a numpy array of texts as pandas gives them, ended in
    numpy's "The truth value of an array with more than one element is ambiguous" traceback."""
    artifact = Artifact.load(cnn_onnx[0])
    texts = ["这个很好", "那个太差"]
    for array in (np.array(texts), np.array(texts, dtype=object)):
        assert artifact.predict(array) == artifact.predict(texts)
        np.testing.assert_array_equal(artifact.logits(array), artifact.logits(texts))
    assert artifact.predict(np.array([], dtype=object)) == [] and artifact.logits(np.array([])).shape == (0, 2)


def test_artifact_says_which_texts_its_vocabulary_holds_nothing_of(cnn_onnx):
    """As the store's model does (``unknown``): an emoji-only text is all [UNK] to it."""
    answers = Artifact.load(cnn_onnx[0]).predict(["🙂🙂", "很好", "🙂 很好", "Hello"])
    assert [r["unknown"] for r in answers] == [True, False, False, True]  # (the tiny vocabulary has no Latin letter)
    out = kd("predict", "--artifact", str(cnn_onnx[0]), input="很好\n🙂🙂\n")
    assert out.stderr.splitlines() == ["warning: line 2: the model's vocabulary holds none of its tokens (all unknown): "
                                       "its answer says nothing of its text"]


def test_a_sentencepiece_teachers_all_unknown_texts_are_marked_in_the_store_and_its_export(tmp_path):
    """An XLM-R style teacher (SentencePiece Unigram) reads an emoji-only text as ``▁ <unk>``: the word-start
    marker standing alone made it a text token, so the text was ``"unknown": false`` from the store's model;
    its export, whose tokenizer.json names the Unigram's unknown token by id, marked no text at all."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaTokenizerFast

    rng = random.Random(3)
    files = {split: write_tsv(tmp_path / f"{split}.tsv", labeled_rows(rng, n)) for split, n in (("train", 24), ("dev", 8))}
    chars = sorted({c for p in files.values() for line in p.read_text(encoding="utf-8").splitlines() for c in line.split("\t")[1]})
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("<mask>", 0.0), ("\u2581", -2.0)] + [(c, -5.0) for c in chars]
    backend = Tokenizer(models.Unigram(pieces, unk_id=3))
    backend.normalizer, backend.pre_tokenizer, backend.decoder = normalizers.NFKC(), pre_tokenizers.Metaspace(), decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                           special_tokens=[("<s>", 0), ("</s>", 2)])
    tok = XLMRobertaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>")
    assert tok.convert_ids_to_tokens(tok("😀")["input_ids"]) == ["<s>", "\u2581", "<unk>", "</s>"]
    model = tmp_path / "tiny-xlmr"
    XLMRobertaForSequenceClassification(XLMRobertaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=66, num_labels=2, pad_token_id=tok.pad_token_id)).save_pretrained(model)
    tok.save_pretrained(model)
    db = str(tmp_path / "kd.db")
    for split, path in files.items():
        kd("ingest", str(path), "--split", split, "--db", db)
    kd("teach", "--run", "spm", "--model", str(model), "--epochs", "1", "--max-len", "32", "--db", db)
    lines = "很好\n😀😀\n🙂 🎉\n好😀\n"
    store = [json.loads(l)["unknown"] for l in kd("predict", "--run", "spm", "--model", "teacher", "--json", "--db", db, input=lines).stdout.splitlines()]
    assert store == [False, True, True, False]
    out = Path(kd_export("--run", "spm", "--model", "teacher", "--format", "torchscript", "--out", str(tmp_path / "ts"), "--db", db).stdout.strip())
    served = [json.loads(l)["unknown"] for l in kd("predict", "--artifact", str(out), "--json", input=lines).stdout.splitlines()]
    assert served == store


def test_a_full_disk_while_saving_a_torchscript_model_is_one_line_not_an_abort(tmp_path):
    """``torch.jit.save`` onto a full disk aborted the whole process (``terminate called after throwing
    an instance of 'c10::Error'``, exit 134), leaving its hidden folder beside --out. (``/dev/full``:
    a real full disk; in a subprocess, as the abort would end pytest too.)"""
    code = (
        "import torch\nfrom pathlib import Path\nfrom kdstore.errors import KdError\nfrom kdstore.export import _write_torchscript\n"
        "m = torch.nn.Linear(4, 2)\n"
        "try:\n    _write_torchscript(m, (torch.zeros(3, 4),), Path('/dev/full'))\n"
        "except KdError as exc:\n    print(exc)\n"
    )
    done = python_snippet(code)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip() == "/: cannot write the export there: No space left on device"


def test_a_full_disk_while_saving_the_tokenizer_is_named_as_one_line():
    """The model fit, then the tokenizer did not: the tokenizers library's own ``Exception: No space
    left on device (os error 28)`` (no OSError) ended ``kd export`` in a traceback. (``/dev/full``:
    the library's real error.)"""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    from kdstore.export import _raise_if_unwritable

    try:
        Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save("/dev/full")
    except Exception as exc:  # (the Rust library raises a bare Exception)
        error = exc
    with pytest.raises(KdError) as found:
        _raise_if_unwritable(error, Path("/data/.m.x1y2/tokenizer.json"))
    assert str(found.value) == "/data: cannot write the export there: No space left on device"


def test_an_int8_export_is_smaller_keeps_the_float_models_classes_and_serves(built, tmp_path, error_line):
    """`kd export --int8`: the teacher's ONNX weights quantized to int8 (ONNX Runtime's dynamic
    quantization) in its own default folder; checked by the share of texts whose class stays the
    float model's, served by `kd predict --artifact` as any export; refused in one line for
    TorchScript; and listed with the stage's exports that `kd runs delete` removes."""
    db = str(built)
    store = Store.open(db)
    out = kd_export("--run", RUN, "--model", "teacher", "--int8", "--db", db, "--json")
    manifest = json.loads(out.stdout)
    path = Path(manifest["path"])
    try:
        assert path == (store.artifact_root / RUN / "export-teach-onnx-int8").resolve()
        quantized = manifest["exporter"]["quantization"]
        assert quantized["weights"] == "int8" and quantized["bytes_after"] < quantized["bytes_before"]  # (about 4x on a real teacher)
        assert quantized["bytes_after"] == (path / "model.onnx").stat().st_size
        check = manifest["verification"]
        assert check["argmax_agreement"] >= check["min_agreement"] == 0.98 and check["texts"] > 50

        sample = fresh_texts()
        reference = Predictor.from_run(store, RUN, "teacher", device="cpu").logits(sample)
        served = Artifact.load(path, device="cpu").logits(sample)
        assert served.shape == reference.shape and float(np.abs(served - reference).max()) < 1.0  # near, not equal
        lines = kd("predict", "--artifact", str(path), input="这个很好\n那个太差\n").stdout.splitlines()
        assert len(lines) == 2 and all(l.split("\t")[0] in store.class_names() for l in lines)

        planned = json.loads(kd("runs", "delete", "--run", RUN, "--stage", "teach", "--dry-run", "--json", "--db", db).stdout)
        assert str(path) in planned["exports"]  # (a dry run: nothing deleted)
        # texts counted, not a share: 507 of 508 read "the float model's class on 99.8%", and 9,995 of 10,000 "on 100.0%"
        said = kd_export("--run", RUN, "--model", "teacher", "--int8", "--out", str(tmp_path / "q"), "--db", db).stderr
        agreed = round(check["argmax_agreement"] * check["texts"])
        assert f"the float model's class on {agreed} of {check['texts']} texts" in said, said
        # in MiB, as kd report's size_mb (it said MB, of 10**6 bytes: one model's size told 5 % apart)
        assert f"int8 weights ({quantized['bytes_before'] / 2**20:.1f} -> {quantized['bytes_after'] / 2**20:.1f} MiB)" in said, said
    finally:
        shutil.rmtree(path, ignore_errors=True)

    refused = kd_export("--run", RUN, "--model", "teacher", "--int8", "--format", "torchscript", "--out", str(tmp_path / "ts"), "--db", db, ok=False)
    assert "--int8 quantizes an ONNX export" in error_line(refused) and not (tmp_path / "ts").exists()


def test_int8_against_a_config_files_format_names_the_file(built, tmp_path, monkeypatch, error_line):
    """A typed --int8 with `[export] format = "torchscript"` in kd.toml: the refusal names the file's
    key (it said "use --format onnx" to a user who had typed no --format), as the reverse case names
    the file's `int8 = true`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kd.toml").write_text('[export]\nformat = "torchscript"\n', encoding="utf-8")
    refused = kd_export("--run", RUN, "--model", "teacher", "--int8", "--out", str(tmp_path / "ts"), "--db", str(built), ok=False)
    assert error_line(refused).endswith('(kd.toml: [export] format = "torchscript")'), refused.output
    (tmp_path / "kd.toml").write_text("[export]\nint8 = true\n", encoding="utf-8")
    refused = kd_export("--run", RUN, "--model", "teacher", "--format", "torchscript", "--out", str(tmp_path / "ts"), "--db", str(built), ok=False)
    assert error_line(refused).endswith("(kd.toml: [export] int8 = true)"), refused.output
    assert not (tmp_path / "ts").exists()


def test_an_rnn_student_exported_twice_in_one_process_keeps_its_dynamic_axes(built, tmp_path):
    """torch.onnx exported a BiGRU student a second time in one process (a notebook, bench/speed.py's
    float and int8 exports) with its sequence axis fixed at the example's 5 tokens: every longer batch
    was refused, and the export reported as damaged. Each export now has both axes dynamic. (The file's
    parity test exported it already: this int8 export, a float export quantized, is a further one.)"""
    import onnx

    from kdstore.export import export_model

    store = Store.open(str(built))
    sample = fresh_texts()
    reference = Predictor.from_run(store, RUN, "distill-bigru", device="cpu").logits(sample)
    path, _ = export_model(store, RUN, which="distill-bigru", fmt="onnx", out=tmp_path / "e", int8=True)
    inputs = onnx.load(str(path / "model.onnx")).graph.input
    assert all(d.dim_param for i in inputs for d in i.type.tensor_type.shape.dim), [i.type.tensor_type.shape for i in inputs]
    served = Artifact.load(path, device="cpu").logits(sample)  # (texts of 1 to 32 tokens)
    assert np.abs(served - reference).max() < 1.0


def test_a_full_disk_while_quantizing_to_int8_is_named_not_blamed_on_onnxruntime(tmp_path):
    """`kd export --int8` onto a disk with room for the float model but not for the copy
    quantize_dynamic writes (onnx's C++ shape inference cuts it short without a word) read
    "onnxruntime could not quantize this model (DecodeError ...): export it without --int8": the user
    blamed the model. (A file-size limit stands for the full disk; in a subprocess, as it would
    limit pytest too.)"""
    code = (
        "import resource, signal\nimport numpy as np, onnx\nfrom onnx import helper, numpy_helper, TensorProto\n"
        "from pathlib import Path\nfrom kdstore.errors import KdError\nfrom kdstore.export import _quantize\n"
        "w = numpy_helper.from_array(np.ones((256, 256), dtype=np.float32), 'w')\n"
        "g = helper.make_graph([helper.make_node('MatMul', ['x', 'w'], ['y'])], 'g', "
        "[helper.make_tensor_value_info('x', TensorProto.FLOAT, ['b', 256])], [helper.make_tensor_value_info('y', TensorProto.FLOAT, ['b', 256])], [w])\n"
        f"path = Path({str(tmp_path / 'tmp' / 'model.onnx')!r})\npath.parent.mkdir()\n"
        "onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)]), path)\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size // 2,) * 2)\n"
        "try:\n    _quantize(path, external=False)\n"
        "except KdError as exc:\n    print(exc)\n"
    )
    done = python_snippet(code)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip() == f"{tmp_path}: cannot write the export there: File too large"
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == ["model.onnx"]  # (the cut copy removed)


def test_int8_without_onnxruntime_does_not_send_the_user_to_torchscript(tmp_path, monkeypatch):
    """`kd export --int8` on a box without the serve extra said "--format onnx needs onnxruntime: ...
    (or use --format torchscript)", and --format torchscript with --int8 is refused: the user went
    round in a circle. It names --int8 and the way out without it."""
    from kdstore.export import export_model

    store = Store.open(str(tmp_path / "kd.db"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    with pytest.raises(KdError) as found:
        export_model(store, RUN, int8=True)
    assert str(found.value) == "--int8 needs onnxruntime: pip install 'kd[serve]' (or export without --int8, with --format torchscript)"
    with pytest.raises(KdError) as found:
        export_model(store, RUN)
    assert str(found.value) == "--format onnx needs onnxruntime: pip install 'kd[serve]' (or use --format torchscript)"
    store.close()


def test_int8_of_a_model_too_large_for_one_onnx_file_is_refused_before_the_export(built, tmp_path, monkeypatch):
    """--int8 cannot quantize weights stored beside model.onnx (over 1.8 GB): refused before the float
    export's minutes, not after them, and nothing is written (the limit lowered to stand in for such a model)."""
    from kdstore import export

    calls = []
    monkeypatch.setattr(export, "ONNX_SINGLE_FILE_LIMIT", 1)
    monkeypatch.setattr(export, "_write_onnx", lambda *a, **k: calls.append(a))
    with pytest.raises(KdError, match="over 1.8 GB"):
        export.export_model(Store.open(str(built)), RUN, which="distill-textcnn", fmt="onnx", out=tmp_path / "big", int8=True)
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_an_export_refused_for_its_options_does_not_say_it_is_exporting_another_student(built, tmp_path, error_line):
    """``kd export --run R --int8 --format torchscript`` where R's latest student is early-exit: the one line
    refusing the options, not first a warning "exporting the latest one that can be: ..." for an export
    that never ran."""
    copy = tmp_path / "copy"
    shutil.copytree(built.parent, copy)
    db = str(copy / "kd.db")
    kd("distill", "--run", RUN, "--student", "early-exit", "--epochs", "1", "--db", db)
    line = error_line(kd_export("--run", RUN, "--int8", "--format", "torchscript", "--db", db, ok=False))
    assert "--int8 quantizes an ONNX export" in line, line
