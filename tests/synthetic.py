"""Synthetic, separable review-like data and a tiny BERT for the end-to-end tests.

A marker word decides the label (很好 → pos, 太差 → neg) inside random filler characters, so a 2-layer
BERT learns the task in a few steps on a CPU. ``flip`` injects label noise at known rows.
"""

from __future__ import annotations

import random
from pathlib import Path

from click.testing import CliRunner

from commands.cli import cli
from kdstore.vocab import build_vocab, make_tokenizer

FILLER = "今天我们的这个东西那里时候大家已经可以还是觉得非常一般比较"
MARKERS = {"pos": "很好", "neg": "太差"}


def texts(rng: random.Random, marker: str, n: int) -> list[str]:
    out = []
    for _ in range(n):
        left = "".join(rng.choice(FILLER) for _ in range(rng.randint(3, 10)))
        right = "".join(rng.choice(FILLER) for _ in range(rng.randint(0, 6)))
        out.append(f"{left}{marker}{right}")
    return out


def labeled_rows(rng: random.Random, n: int) -> list[tuple[str, str]]:
    rows = [(label, t) for label, marker in MARKERS.items() for t in texts(rng, marker, n // 2)]
    rng.shuffle(rows)
    return rows


def flip(rows: list[tuple[str, str]], rng: random.Random, fraction: float) -> tuple[list[tuple[str, str]], set[int]]:
    """The rows with ``fraction`` of their binary labels flipped, and the flipped row indices."""
    flipped = {i for i in range(len(rows)) if rng.random() < fraction}
    other = {"pos": "neg", "neg": "pos"}
    return [(other[l] if i in flipped else l, t) for i, (l, t) in enumerate(rows)], flipped


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    return path


def corpus_files(folder: Path, seed: int, *, pool_per_class: int) -> dict[str, Path]:
    """train/dev/test TSVs (60/20/20 rows) and an unlabeled pool file in ``folder``, keyed by split."""
    rng = random.Random(seed)
    files = {split: write_tsv(folder / f"{split}.tsv", labeled_rows(rng, n)) for split, n in (("train", 60), ("dev", 20), ("test", 20))}
    files["unlabeled"] = folder / "pool.txt"
    pool = texts(rng, MARKERS["pos"], pool_per_class) + texts(rng, MARKERS["neg"], pool_per_class)
    files["unlabeled"].write_text("\n".join(pool) + "\n", encoding="utf-8")
    return files


def tiny_bert_for(files: dict[str, Path], out: Path) -> Path:
    """``save_tiny_bert`` with the vocabulary of every text in ``files``."""
    all_texts = [line.split("\t")[-1] for p in files.values() for line in p.read_text(encoding="utf-8").splitlines()]
    return save_tiny_bert(all_texts, out)


def save_tiny_bert(all_texts: list[str], out: Path) -> Path:
    """A 2-layer, 32-wide BERT with a character vocabulary of ``all_texts``, as a Hugging Face dir."""
    from transformers import BertConfig, BertForMaskedLM

    tokens = build_vocab(all_texts)
    config = BertConfig(
        vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    seeded(BertForMaskedLM, config).save_pretrained(out)
    make_tokenizer(tokens).save_pretrained(out)
    return out


def seeded(model_class, config, seed: int = 0):
    """``model_class(config)`` with weights drawn from ``seed``, leaving torch's global generator as it
    was: unseeded, a tiny teacher's weights depended on the tests run before (a clock-bound pretrain
    draws a varying number of numbers), and a detection-quality test passed or failed by test order."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model_class(config)


def tiny_roberta_for(files: dict[str, Path], out: Path) -> Path:
    """A 2-layer, 32-wide RoBERTa (positions numbered after the padding id, no pooler, a two-layer
    head) over the same character vocabulary as ``tiny_bert_for``: a teacher that is not BERT."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    all_texts = [line.split("\t")[-1] for p in files.values() for line in p.read_text(encoding="utf-8").splitlines()]
    tokens = build_vocab(all_texts)
    tokenizer = make_tokenizer(tokens)
    config = RobertaConfig(
        vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64 + 2, type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )
    seeded(RobertaForMaskedLM, config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def kd(*args: str, input: str | None = None, ok: bool = True):
    """Run the real CLI in-process and check its exit status."""
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result


def edit_labels(db: str, run: str, name: str, decisions: dict[int, str]) -> None:
    """Label edits of any samples, flagged or not, as clean stage ``name`` of ``run``: the library
    path a review sheet's rows take (``stage_scope`` + ``labels.apply``; ``kd labels import``
    decides detected issues only); ``decisions``: sample id → ``drop`` or a class name."""
    from kdstore import labels as lab
    from kdstore.runs import stage_scope
    from kdstore.store import Store

    store = Store.open(db)
    names = store.class_names()
    try:
        with stage_scope(store, run=run, kind="clean", name=name, config={}) as stage:
            lab.apply(store, stage.id, [
                lab.Decision(i, None, "drop", None) if d == "drop" else lab.Decision(i, None, "relabel", names.index(d))
                for i, d in decisions.items()
            ], reason="test")
    finally:
        store.close()


def kill_9_inside_stage(db: str, folder: Path, *, run: str, inside: str = "", kind: str = "teach", name: str | None = None) -> str:
    """A ``--overwrite`` stage of ``kind`` (teach), ``name`` (its kind's default) and ``run`` started in a child process, ``inside`` (Python lines
    indented four spaces, ``store``, ``st`` and ``numpy`` at hand) run in it, then the child killed
    with SIGKILL, as an OOM killer would: returns the killed stage's id."""
    import subprocess
    import sys

    script = Path(folder) / "killed.py"
    script.write_text(
        "import sys, time, numpy\n"
        "from kdstore.runs import stage_scope\n"
        "from kdstore.store import Store\n"
        "store = Store.open(sys.argv[1])\n"
        f"with stage_scope(store, run={run!r}, kind={kind!r}, name={name!r}, config={{}}, overwrite=True) as st:\n"
        f"{inside}"
        "    print(st.id, flush=True)\n"
        "    time.sleep(120)\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen([sys.executable, str(script), db], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.isdigit(), proc.stderr.read()
        proc.kill()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    return line


def terminate_when_ready(script: Path, *args: str, ready: str) -> tuple[int, str]:
    """Run ``script`` (with ``args``) in a Python process, SIGTERM it once its first line of output is
    ``ready``; its exit status and standard error."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == ready, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, err


def quick_speed_figures(mp, *, single: int = 5, batch: int = 20) -> None:
    """Every teach and distill stage ends by timing its model (``kdstore.speed.measure``: 100 texts one
    at a time, then 1,000 in batches), most of a tiny 1-epoch stage's time: with ``mp`` (a
    MonkeyPatch), the same code times ``single`` texts alone and ``batch`` in batches instead. For
    tests that read no speed figure."""
    import functools

    import kdstore.distill
    import kdstore.early_exit
    import kdstore.teacher
    from kdstore.speed import measure

    for module in (kdstore.teacher, kdstore.distill, kdstore.early_exit):
        mp.setattr(module, "measure", functools.partial(measure, single=single, batch=batch))
