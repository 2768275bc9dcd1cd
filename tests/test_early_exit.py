"""FastBERT-style early exit on CPU: a 4-layer BERT teacher taught through the real CLI, branches
self-distilled with ``train_early_exit`` in a real stage, then checked against the teacher itself;
and ``kd report`` on the teacher and early-exit stages (figures, confusion matrices, charts).
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import edit_labels, kd, labeled_rows, seeded, texts, write_tsv

from kdstore.batching import encode, pad
from kdstore.exit_speed import shares_line
from kdstore.early_exit import (
    SPEEDS,
    EarlyExitConfig,
    EarlyExitModel,
    EarlyExitPredictor,
    config_dict,
    early_exit_logits,
    is_early_exit,
    load_early_exit,
    max_prob_uncertainty,
    normalized_entropy,
    predict_logits,
    speed_tag,
    train_early_exit,
)
from kdstore.errors import KdError
from kdstore.runs import stage_scope
from kdstore.store import Store
from kdstore.vocab import build_vocab, make_tokenizer

LAYERS = 4


def save_tiny_bert_layers(all_texts: list[str], out: Path, layers: int = LAYERS) -> Path:
    """Like ``synthetic.save_tiny_bert``, with ``layers`` layers (early exit needs some depth)."""
    from transformers import BertConfig, BertForMaskedLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    tokens = build_vocab(all_texts)
    config = BertConfig(
        vocab_size=len(tokens), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    seeded(BertForMaskedLM, config).save_pretrained(out)
    make_tokenizer(tokens).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with a taught 4-layer teacher (run ``r``) and a trained early-exit stage."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("KD_DB", "KD_CONFIG", "KD_ARTIFACTS"):
            mp.delenv(name, raising=False)
        mp.setenv("KD_NO_PROGRESS", "1")
        d = tmp_path_factory.mktemp("early-exit")
        mp.chdir(d)
        rng = random.Random(0)
        files = {s: write_tsv(d / f"{s}.tsv", labeled_rows(rng, n)) for s, n in (("train", 60), ("dev", 20), ("test", 20))}
        files["unlabeled"] = d / "pool.txt"
        files["unlabeled"].write_text("\n".join(texts(rng, "很好", 15) + texts(rng, "太差", 15)) + "\n", encoding="utf-8")
        all_texts = [line.split("\t")[-1] for p in files.values() for line in p.read_text(encoding="utf-8").splitlines()]
        model_dir = save_tiny_bert_layers(all_texts, d / "tiny-bert")
        db = str(d / "kd.db")
        for split, path in files.items():
            kd("ingest", str(path), "--split", split, "--db", db)
        kd("teach", "--run", "r", "--model", str(model_dir), "--epochs", "20", "--patience", "20", "--lr", "3e-3",
           "--batch-size", "8", "--max-len", "32", "--db", db)
        store = Store.open(db)
        cfg = EarlyExitConfig(epochs=4, lr=5e-3, batch_size=16, speed=0.3, timing_repeats=2, device="cpu")
        with stage_scope(store, run="r", kind="distill", name="early-exit", config=config_dict(cfg)) as stage:
            out_dir = train_early_exit(store, stage, cfg, teacher_run="r")
        yield {"store": store, "db": db, "out_dir": out_dir, "cfg": cfg, "stage_id": stage.id}


def _stage(store: Store, name: str):
    return next(s for s in store.stages_of("r") if s.name == name)


def _batch(tokenizer, texts_: list[str], max_len: int = 32):
    return pad(encode(tokenizer, texts_, max_len=max_len), tokenizer.pad_token_id)


# pure helpers ----------------------------------------------------------------------------------
def test_normalized_entropy_by_hand():
    got = normalized_entropy(torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.9, 0.1]]))
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)  # 0.4690
    assert got.tolist() == pytest.approx([1.0, 0.0, h], abs=1e-6)
    assert h == pytest.approx(0.4690, abs=1e-4)
    four = normalized_entropy(torch.tensor([[0.25] * 4, [0.7, 0.1, 0.1, 0.1]]))
    h4 = -(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1)) / math.log(4)  # 0.6568
    assert four.tolist() == pytest.approx([1.0, h4], abs=1e-6)
    # the many-class effect the alternative avoids: p_max 0.9 with a flat tail over 99 classes
    flat = torch.tensor([[0.9] + [0.1 / 99] * 99])
    assert normalized_entropy(flat).item() == pytest.approx((-(0.9 * math.log(0.9)) - 0.1 * math.log(0.1 / 99)) / math.log(100), abs=1e-5)
    assert normalized_entropy(flat).item() == pytest.approx(0.1705, abs=1e-3)
    assert normalized_entropy(torch.tensor([[1.0]])).item() == 0.0


def test_max_prob_uncertainty_by_hand():
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.9, 0.1]])
    assert max_prob_uncertainty(p).tolist() == pytest.approx([0.5, 0.0, 0.1], abs=1e-6)
    flat = torch.tensor([[0.9] + [0.1 / 99] * 99])
    assert max_prob_uncertainty(flat).item() == pytest.approx(0.1, abs=1e-6)  # same as the binary 0.9
    assert max_prob_uncertainty(torch.tensor([[0.4, 0.35, 0.25]])).item() == pytest.approx(0.6, abs=1e-6)


def test_config_validation():
    EarlyExitConfig().validate()
    for bad in (dict(speed=1.5), dict(uncertainty="margin"), dict(temperature=0), dict(pooling="max"), dict(epochs=0),
                dict(max_loss=-0.5), dict(max_loss=101.0)):
        with pytest.raises(KdError):
            EarlyExitConfig(**bad).validate()


# the trained stage ---------------------------------------------------------------------------------
def test_speed_zero_is_exactly_the_teacher(trained):
    store = trained["store"]
    model, tokenizer, meta = load_early_exit(trained["out_dir"])
    assert meta["max_len"] == 32 and model.num_layers == LAYERS
    everything = store.samples(include_dropped=True)
    # on one batch, bit-for-bit the Hugging Face forward
    input_ids, mask = _batch(tokenizer, everything.texts[:40])
    full = model.teacher(input_ids=input_ids, attention_mask=mask).logits
    logits, layers = predict_logits(model, input_ids, mask, speed=0.0)
    assert torch.equal(logits, full)
    assert (layers == LAYERS).all()
    # over the store, the teacher stage's stored logits
    teacher_ids, teacher_logits = store.read_logits(_stage(store, "teach").id)
    ours, used = early_exit_logits(model, tokenizer, everything.texts, max_len=32, speed=0.0)
    order = {int(i): k for k, i in enumerate(everything.ids)}
    np.testing.assert_allclose(ours[[order[int(i)] for i in teacher_ids]], teacher_logits, atol=1e-5)
    assert (used == LAYERS).all()


def test_high_speed_uses_fewer_layers(trained):
    model, tokenizer, _ = load_early_exit(trained["out_dir"])
    dev = trained["store"].samples(splits=["dev", "test"], labeled=True)
    _, at_zero = early_exit_logits(model, tokenizer, dev.texts, max_len=32, speed=0.0)
    _, at_high = early_exit_logits(model, tokenizer, dev.texts, max_len=32, speed=0.9)
    _, at_one = early_exit_logits(model, tokenizer, dev.texts, max_len=32, speed=1.0)
    assert at_zero.mean() == LAYERS
    assert at_high.mean() < LAYERS
    assert (at_one == 1).all()  # normalized entropy is never above 1: everyone exits at the first branch
    _, by_max_prob = early_exit_logits(model, tokenizer, dev.texts, max_len=32, speed=0.5, uncertainty="max_prob")
    assert (by_max_prob == 1).all()  # binary: 1 - p_max <= 0.5 always


def test_stage_outputs_and_metrics_are_stored(trained):
    store = trained["store"]
    stage = _stage(store, "early-exit")
    assert stage.status == "succeeded" and is_early_exit(stage.artifact_path) and len(stage.artifact_sha256) == 64
    n = len(store.samples(include_dropped=True))
    ids, logits = store.read_logits(stage.id)
    assert len(ids) == n and np.isfinite(logits).all()
    final: dict[str, dict[str, float]] = {}
    for m in store.metrics(stage.id):
        final.setdefault(m.split, {})[m.name] = m.value
    for split in ("dev", "test"):
        assert {"accuracy", "macro_f1"} <= set(final[split])  # at the configured speed
        for s in SPEEDS:
            tag = f"{s:g}"
            assert {f"accuracy@{tag}", f"macro_f1@{tag}", f"layers@{tag}", f"speedup@{tag}", f"agreement@{tag}"} <= set(final[split])
        assert final[split]["layers@0"] == LAYERS and final[split]["agreement@0"] == 1.0
        assert final[split]["speedup@0"] == 1.0
        assert final[split]["layers@0.8"] <= final[split]["layers@0.1"] <= LAYERS
        assert final[split]["accuracy@0"] >= 0.8  # the teacher learned the separable task
    assert final["all"]["num_layers"] == LAYERS and final["all"]["pool_samples"] == 30
    for name in ("parameters", "size_mb", "latency_p50_ms", "latency_p99_ms", "throughput_samples_per_s"):
        assert final["all"][name] > 0, name  # CPU speed at full depth, as every model stage records it
    assert final["all"]["latency_p99_ms"] >= final["all"]["latency_p50_ms"]
    assert 1 <= final["all"]["layers"] <= LAYERS
    history = [m for m in store.metrics(stage.id, final=False) if m.step is not None]
    assert {m.name for m in history if m.split == "dev"} >= {"accuracy", "agreement", "layers", "kl"}
    print("\nCPU speed-ups (tiny 4-layer, 32-wide BERT; not representative):",
          {k: round(v, 2) for k, v in final["test"].items() if k.startswith(("speedup@", "layers@"))})


def test_saved_model_reloads_with_identical_outputs(trained, tmp_path):
    model, tokenizer, meta = load_early_exit(trained["out_dir"])
    texts_ = trained["store"].samples(splits=["test"]).texts
    before = early_exit_logits(model, tokenizer, texts_, max_len=32, speed=0.3)
    again = EarlyExitModel.load(model.save(tmp_path / "copy", tokenizer=tokenizer, **{k: meta[k] for k in ("max_len", "speed", "uncertainty")}))
    after = early_exit_logits(again, tokenizer, texts_, max_len=32, speed=0.3)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    for a, b in zip(model.branches.state_dict().values(), again.branches.state_dict().values()):
        assert torch.equal(a, b)


def test_predictor_one_sample_at_a_time(trained):
    slow = EarlyExitPredictor.from_directory(trained["out_dir"], device="cpu", speed=0.0)
    fast = EarlyExitPredictor.from_directory(trained["out_dir"], device="cpu", speed=1.0)
    assert fast.class_names == slow.class_names and fast.max_len == 32
    for text in ("这个很好", "那个太差了"):
        a, b = slow.predict([text])[0], fast.predict([text])[0]
        assert a["layer"] == LAYERS and b["layer"] == 1 and a["layers"] == LAYERS
        assert a["label"] in a["probs"] and abs(sum(b["probs"].values()) - 1) < 1e-5
    default = EarlyExitPredictor.from_directory(trained["out_dir"], device="cpu")
    assert default.speed == trained["cfg"].speed and default.uncertainty == "entropy"
    long, short = "很好" * 40, "这个很好"  # 80 characters: past max_len 32
    found = slow.predict([long, short, "😀😀"])  # (an emoji the tiny vocabulary lacks: all [UNK])
    assert [r["truncated"] for r in found] == [True, False, False]
    assert [r["unknown"] for r in found] == [False, False, True]
    assert np.allclose(slow.logits([long, short]), slow.logits([long, short], ids=slow.encode([long, short])[0]))


def test_predictor_refuses_one_str_for_its_texts(trained):
    """``predict("这个很好")`` answered each character as a text (four answers), as Artifact no longer does."""
    predictor = EarlyExitPredictor.from_directory(trained["out_dir"], device="cpu")
    for method in (predictor.predict, predictor.logits):
        with pytest.raises(KdError, match=r"^texts must be a list of texts, not one str: pass \[text\]$"):
            method("这个很好")
    assert predictor.predict([]) == [] and predictor.logits([]).shape == (0, 2)


# leaving the batch ---------------------------------------------------------------------------------
class LengthBranch(torch.nn.Module):
    """A test branch: certain (class 0) for rows with at most ``cut`` real tokens (or, with
    ``longer``, more than ``cut``), uniform otherwise."""

    def __init__(self, cut: int, *, longer: bool = False):
        super().__init__()
        self.cut, self.longer = cut, longer

    def forward(self, hidden, mask):
        n = mask.sum(dim=1)
        pick = (n > self.cut if self.longer else n <= self.cut).unsqueeze(1)
        certain = torch.tensor([20.0, -20.0], dtype=hidden.dtype).expand(len(mask), 2)
        return torch.where(pick, certain, torch.zeros_like(certain))


def test_exited_rows_leave_the_batch(trained):
    model, tokenizer, _ = load_early_exit(trained["out_dir"])
    model.branches = torch.nn.ModuleList(LengthBranch(cut=6) for _ in range(LAYERS - 1))
    seen: list[tuple[int, int]] = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape[:2]))) for layer in model.teacher.bert.encoder.layer]
    try:
        short = ["很好的", "太差了", "很好啊", "太差吧"]  # 3 characters: 5 tokens with [CLS] and [SEP]
        long_ = ["今天这个东西很好", "大家觉得那里太差", "我们已经可以很好", "这个时候比较太差"]  # 8 characters: 10 tokens
        input_ids, mask = _batch(tokenizer, short + long_)
        full = model.teacher(input_ids=input_ids, attention_mask=mask).logits
        seen.clear()
        logits, layers = predict_logits(model, input_ids, mask, speed=0.5)
        # layer 1 sees all 8 rows; the 4 short rows exit there and layers 2..4 see the 4 long rows only
        assert [rows for rows, _ in seen] == [8, 4, 4, 4]
        assert layers.tolist() == [1] * 4 + [LAYERS] * 4
        assert torch.equal(logits[:4], torch.tensor([[20.0, -20.0]] * 4))
        torch.testing.assert_close(logits[4:], full[4:], atol=1e-5, rtol=0)
        # when the long rows exit instead, the rest run on fewer padding columns too
        model.branches = torch.nn.ModuleList(LengthBranch(cut=100) if i == 0 else LengthBranch(cut=0) for i in range(LAYERS - 1))
        mixed = ["今天这个东西很好", "很好的", "太差了"]
        input_ids, mask = _batch(tokenizer, mixed)
        seen.clear()
        logits, layers = predict_logits(model, input_ids, mask, speed=0.5)
        assert layers.tolist() == [1, 1, 1] and [rows for rows, _ in seen] == [3]
        model.branches = torch.nn.ModuleList(LengthBranch(6, longer=i == 0) if i == 0 else LengthBranch(cut=0) for i in range(LAYERS - 1))
        full = model.teacher(input_ids=input_ids, attention_mask=mask).logits
        seen.clear()
        logits, layers = predict_logits(model, input_ids, mask, speed=0.5)
        assert layers.tolist() == [1, LAYERS, LAYERS]
        assert seen == [(3, 10), (2, 5), (2, 5), (2, 5)]  # 2 rows, trimmed from 10 to 5 columns
        torch.testing.assert_close(logits[1:], full[1:], atol=1e-5, rtol=0)
    finally:
        for h in hooks:
            h.remove()


def test_early_exit_refuses_a_classifier_that_is_not_bert_layout():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    net = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=20, dim=16, n_layers=1, n_heads=2, hidden_dim=16))
    with pytest.raises(KdError, match="needs a BERT-layout sequence classifier"):
        EarlyExitModel(net)
    from transformers import XLMRobertaXLConfig, XLMRobertaXLForSequenceClassification

    xl = XLMRobertaXLForSequenceClassification(XLMRobertaXLConfig(vocab_size=20, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                                                  intermediate_size=32, max_position_embeddings=20))
    with pytest.raises(KdError, match="this one is 'xlm-roberta-xl'"):  # its layout, but a final LayerNorm the layer-by-layer run would skip
        EarlyExitModel(xl)


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlm-roberta", "camembert", "ernie", "electra"])
def test_speed_zero_is_the_teacher_for_every_bert_layout_family(kind):
    """The layer-by-layer path (embeddings, ELECTRA's projection, RoBERTa's positions after the pad id,
    each family's head) gives the Hugging Face forward's logits, padded rows included; a high speed
    still answers from the first branch."""
    from transformers import CONFIG_MAPPING, AutoModelForSequenceClassification

    extra = {"embedding_size": 16} if kind == "electra" else {}
    config = CONFIG_MAPPING[kind](vocab_size=40, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=40, num_labels=2, pad_token_id=0, **extra)
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()
    model = EarlyExitModel(teacher).eval()
    ids = torch.randint(1, 40, (3, 8))
    mask = torch.ones_like(ids)
    ids[1, 5:], mask[1, 5:] = 0, 0
    with torch.no_grad():
        full = teacher(input_ids=ids, attention_mask=mask).logits
        logits, layers = predict_logits(model, ids, mask, speed=0.0)
        torch.testing.assert_close(logits, full, atol=1e-5, rtol=0)
        assert (layers == 3).all()
        _, layers = predict_logits(model, ids, mask, speed=1.0)
        assert (layers == 1).all()


def test_cli_distill_early_exit_and_predict_with_speed(trained):
    import json

    db = trained["db"]
    out = json.loads(kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--speed", "0.5",
                        "--db", db, "--json").stdout)
    assert out["status"] == "succeeded" and out["name"] == "distill-early-exit"
    assert "layers@0.5" in out["metrics"]["test"] and "speedup@0.8" in out["metrics"]["test"]
    full = json.loads(kd("predict", "--run", "r", "--model", "distill-early-exit", "--speed", "0", "--json",
                         "--db", db, input="这个很好\n").stdout)
    assert full["layer"] == LAYERS  # speed 0: every layer, the teacher's own head
    fast = json.loads(kd("predict", "--run", "r", "--model", "distill-early-exit", "--speed", "1", "--json",
                         "--db", db, input="这个很好\n").stdout)
    assert fast["layer"] == 1
    refused = kd("predict", "--run", "r", "--model", "teacher", "--speed", "0.5", "--db", db, ok=False)
    assert "--speed needs an early-exit model" in refused.output
    mixed = kd("distill", "--run", "r", "--student", "early-exit", "--augment", "mask", "--name", "x", "--db", db, ok=False)
    assert "extends one teacher" in mixed.output
    # one teacher named twice (a config's teacher-run and the same typed again) is one teacher: not refused as two
    again = json.loads(kd("distill", "--run", "r", "--student", "early-exit", "--teacher-run", "r", "--teacher-run", "r",
                          "--epochs", "1", "--name", "again", "--db", db, "--json").stdout)
    assert again["status"] == "succeeded" and again["config"]["teacher_runs"] == ["r"], again["config"]
    ignored = kd("distill", "--run", "r", "--student", "early-exit", "--alpha", "0.2", "--hard-weight", "1", "--pkd", "1", "--fsp", "1",
                 "--name", "x", "--db", db, ok=False)
    assert "--alpha, --hard-weight, --pkd, --fsp: for students, not --student early-exit" in ignored.output


# kd report on these stages --------------------------------------------------------------------------
PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "micro_precision", "micro_recall", "micro_f1", "n")
SPEED = ("parameters", "size_mb", "latency_p50_ms", "latency_p99_ms", "throughput_samples_per_s")


def _report(db: str, *args: str) -> dict[str, dict]:
    import json

    data = json.loads(kd("report", "--run", "r", *args, "--db", db, "--json").stdout)
    return {"classes": data["classes"], "plots": data.get("plots", []), **{s["name"]: s for s in data["stages"]}}


def test_report_figures_confusion_and_charts_of_the_teacher_and_early_exit(trained, tmp_path, monkeypatch):
    """After label edits (6 train labels flipped, a dev sample relabeled, another dropped), every model
    stage still shows its figures with the confusion matrix of the labels its metrics used; a stage
    run after the edits uses the new labels without the dropped sample. Detect flags the flips, and
    --plot draws confusion matrices, the speed/accuracy curve and the score histogram."""
    import json
    import shutil

    from kdstore.metrics import confusion_matrix

    copy = tmp_path / "copy"  # a copy: the other tests keep the module's store as it was built
    shutil.copytree(Path(trained["db"]).parent, copy)
    db = str(copy / "kd.db")
    store = Store.open(db)
    names = store.class_names()
    train, dev = store.samples(splits=["train"], labeled=True), store.samples(splits=["dev"], labeled=True)
    rows = [(int(i), names[1 - int(y)]) for i, y in zip(train.ids[:6], train.labels[:6])]
    rows += [(int(dev.ids[0]), names[1 - int(dev.labels[0])]), (int(dev.ids[1]), "drop")]
    edit_labels(db, "r", "review", dict(rows))
    kd("labels", "detect", "--run", "r", "--allow-in-sample", "--db", db)
    kd("predict", "--run", "r", "--model", "teacher", "--store", "--split", "dev", "--db", db)
    # an early-exit model's stored predictions say the speed it served at (its own default here) and where texts left
    served = json.loads(kd("predict", "--run", "r", "--model", "early-exit", "--store", "--split", "dev", "--db", db, "--json").stdout)
    assert served["config"]["speed"] is not None and 0.0 <= served["config"]["speed"] <= 1.0
    assert served["metrics"]["all"]["mean_exit_layer"] >= 1

    charts = tmp_path / "charts"
    report = _report(db, "--plot", str(charts))
    for name in ("teach", "early-exit"):
        st = report[name]
        for split in ("dev", "test"):
            m = st["metrics"][split]
            assert all(f in m for f in FIGURES), (name, split)
            assert m["micro_precision"] == m["micro_recall"] == m["micro_f1"] == m["accuracy"]  # one label a sample
            assert all(f"{f}[{c}]" in m for f in ("precision", "recall", "f1", "support") for c in names), (name, split)
            matrix = np.array(st["confusion"][split])
            assert matrix.shape == (2, 2) and matrix.sum() == m["n"] == 20
            assert np.trace(matrix) / matrix.sum() == pytest.approx(m["accuracy"])
            assert matrix.sum(axis=1).tolist() == [m[f"support[{c}]"] for c in names]
        assert all(st["metrics"]["all"][f] > 0 for f in SPEED), name
        assert st["metrics"]["all"]["latency_p99_ms"] >= st["metrics"]["all"]["latency_p50_ms"]
    after = np.array(report["predict-teach@dev"]["confusion"]["dev"])
    now = store.samples(splits=["dev"], labeled=True)  # current labels, the dropped sample left out
    ids, logits = store.read_logits(store.find_stage("r", "predict-teach@dev").id)
    pred = dict(zip(ids.tolist(), logits.argmax(1).tolist()))
    assert len(now) == 19 and after.tolist() == confusion_matrix(now.labels, np.array([pred[int(i)] for i in now.ids]), num_classes=2).tolist()
    assert report["predict-teach@dev"]["metrics"]["dev"]["n"] == 19  # the stored figures leave the dropped sample out too
    scores = report["detect"]["issue_scores"]
    assert scores and all(0 <= v <= 1 for v in scores)

    written = {Path(p).name for p in report["plots"]}
    assert {"r-teach-confusion-test.png", "r-early-exit-confusion-dev.png", "r-early-exit-early-exit-test.png",
            "r-detect-label-scores.png"} <= written == {p.name for p in charts.iterdir()}
    assert all((charts / p).read_bytes()[:8] == PNG for p in written)
    text = kd("report", "--run", "r", "--db", db).stdout
    assert "micro_recall" in text and "latency_p99_ms" in text and "dev confusion" in text
    speed = report["early-exit"]["metrics"]["all"]["speed"]  # (the early-exit model's latency is at its threshold: said)
    assert f"measured once after training at its serving speed {speed:g}: latency" in text
    assert "measured once after training: latency" in text  # (the teacher's says none)

    # --compare: the runs after one flag, or the flag repeated
    one = json.loads(kd("report", "--compare", "r", "r", "--db", db, "--json").stdout)
    assert one == json.loads(kd("report", "--compare", "r", "--compare", "r", "--db", db, "--json").stdout)
    assert {r["stage"] for r in one} >= {"teach", "early-exit"} and all(r["latency_p50_ms"] > 0 for r in one)
    assert len(one) == len({r["stage"] for r in one})  # a run named twice is compared once
    assert all(r["test_n"] == 20 and r["labels_digest"] is not None for r in one if r["stage"] == "teach")
    kd("labels", "set", "--run", "bare", f"{now.ids[0]}=drop", "--db", db)  # a run with no model: a row that says so
    bare = json.loads(kd("report", "--compare", "r", "bare", "--db", db, "--json").stdout)[-1]
    assert set(bare) == set(one[0]) and bare["note"] == "no succeeded model"  # every row has every key (a script reads them alike)
    assert {k: v for k, v in bare.items() if v is not None} == {"run": "bare", "note": "no succeeded model", "leads": []}
    assert all(r["note"] is None for r in one)
    kd("teach", "--run", "broken", "--model", str(tmp_path / "no-such-model"), "--db", db, ok=False)
    broken = json.loads(kd("report", "--compare", "broken", "--db", db, "--json").stdout)
    assert [(r["stage"], r["note"].split(":")[0]) for r in broken] == [("teach", "failed")]  # a failed model shows, with why
    assert broken[0]["status"] == "failed" and {r["status"] for r in one} == {"succeeded"}  # (a script needs no note parsing)
    header = next(line for line in kd("report", "--compare", "broken", "--db", db).stdout.splitlines() if " run " in line)
    assert "note" in header and "status" not in header  # (in the table the note says it)
    assert set(broken[0]) == set(one[0]) and broken[0]["test_accuracy"] is None  # a model row's keys, no figures
    piped = kd("report", "--compare", "r", "bare", "--db", db).stdout  # not a terminal: nothing cut to 80 columns
    assert "…" not in piped and "no succeeded model" in piped and "throughput_samples_per_s" in piped
    # a 120-column terminal: a row a figure, a column a model (a row a model was ~250 columns, every line wrapped;
    # the module's store holds 2 or 3 models of run r, as other tests of it ran first)
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # (rich's own switch: a terminal, as a user's)
    screen = re.sub(r"\x1b\[[0-9;]*m", "", kd("report", "--compare", "r", "bare", "--db", db).stdout).splitlines()
    assert max(map(len, screen)) <= 120, "\n".join(screen)
    header = next(line for line in screen if "figure" in line)
    assert [c.strip() for c in header.split("┃")[1:-1]] == ["figure", *(f"r/{r['stage']}" for r in one), "bare/-"]
    accuracy = next(line for line in screen if line.startswith("│ test_accuracy "))
    assert [c.strip() for c in accuracy.split("│")[2:-1]] == [f"{r['test_accuracy']:.4f}" for r in one] + [""]
    assert "note: bare/-: no succeeded model" in screen
    assert f"model: r/teach: {one[0]['model']}" in screen  # (a directory: below the table, not a column as wide)
    assert "…" not in kd("runs", "--db", db).stdout
    assert "go with --compare" in kd("report", "r", "--db", db, ok=False).stderr
    assert "needs the runs" in kd("report", "--compare", "--db", db, ok=False).stderr
    assert "no run 'nope'" in kd("report", "--compare", "r", "nope", "--db", db, ok=False).stderr


def test_serving_forms_of_the_branch_and_the_uncertainties_match_the_training_ones():
    from kdstore.early_exit import (
        Branch,
        entropy_of_logits,
        entropy_of_row,
        max_prob_of_logits,
        max_prob_of_row,
        max_prob_uncertainty,
        normalized_entropy,
    )

    torch.manual_seed(0)
    logits = torch.randn(6, 5) * 4
    logits[0] = torch.tensor([80.0, -80.0, 0.0, 0.0, 0.0])  # probabilities that underflow to 0
    probs = torch.softmax(logits, dim=-1)
    assert torch.allclose(entropy_of_logits(logits), normalized_entropy(probs), atol=1e-6)
    assert torch.allclose(max_prob_of_logits(logits), max_prob_uncertainty(probs), atol=1e-6)
    assert torch.equal(entropy_of_logits(torch.randn(3, 1)), torch.zeros(3))
    for row in logits.tolist() + [[0.0, 0.0], [3.0, -1.0], [7.0]]:  # the one-text forms, on Python floats
        t = torch.tensor([row])
        assert entropy_of_row(row) == pytest.approx(float(entropy_of_logits(t)[0]), abs=1e-6)
        assert max_prob_of_row(row) == pytest.approx(float(max_prob_of_logits(t)[0]), abs=1e-6)
    for pooling in ("mean", "cls"):
        branch = Branch(8, 4, 3, pooling=pooling).eval()
        hidden = torch.randn(2, 5, 8)
        mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
        assert torch.allclose(branch.infer(hidden, mask), branch(hidden, mask), atol=1e-6)
        full = torch.ones(2, 5, dtype=torch.long)
        assert torch.allclose(branch.infer(hidden, None), branch(hidden, full), atol=1e-6)  # no padding: a plain mean


def test_one_text_at_a_time_exits_where_the_batch_does(trained):
    """The serving loop decides on Python floats when one text is left; same layers and answers as
    the tensor path a padded batch takes."""
    model, tokenizer, _ = load_early_exit(trained["out_dir"])
    texts_ = trained["store"].samples(splits=["dev", "test"]).texts
    mixed = 0
    for uncertainty in ("entropy", "max_prob"):
        # the speeds at which texts leave at different layers, found on the batch path (fixed speeds held
        # such a mix for one trained model only: a surer teacher sent every text out at the first exit)
        grid = np.geomspace(1e-4, 0.95, 48)
        split = [float(speed) for speed in grid if len(set(early_exit_logits(
            model, tokenizer, texts_, max_len=32, speed=float(speed), uncertainty=uncertainty)[1].tolist())) > 1]
        for speed in split[:: max(1, len(split) // 3)][:3]:
            batch_logits, batch_layers = early_exit_logits(model, tokenizer, texts_, max_len=32, speed=speed, uncertainty=uncertainty)
            mixed += 1
            one = [early_exit_logits(model, tokenizer, [t], max_len=32, speed=speed, uncertainty=uncertainty, batch_size=1) for t in texts_]
            np.testing.assert_array_equal(np.concatenate([layers for _, layers in one]), batch_layers)
            np.testing.assert_allclose(np.concatenate([logits for logits, _ in one]), batch_logits, atol=1e-4)
    assert mixed >= 4  # some texts leave early and some go deeper: both kinds of decision were compared


# choosing the speed on dev ----------------------------------------------------------------------------
def test_exit_speed_curve_and_pick_by_hand():
    from kdstore.exit_speed import exit_layers, exit_predictions, pick_speed, speed_curve

    # 4 rows, 2 branches (3 layers): uncertainties per branch, branch answers, full-model answers
    u = np.array([[0.1, 0.05], [0.6, 0.2], [0.9, 0.8], [0.3, 0.9]])
    branch = np.array([[1, 0], [0, 1], [0, 0], [1, 1]])
    final = np.array([0, 1, 1, 1])
    labels = np.array([0, 1, 1, 1])  # the full model is right everywhere
    assert exit_layers(u, 0.0).tolist() == [3, 3, 3, 3]
    assert exit_layers(u, 0.25).tolist() == [1, 2, 3, 3]
    assert exit_layers(u, 0.35).tolist() == [1, 2, 3, 1]
    assert exit_predictions(branch, final, exit_layers(u, 0.35)).tolist() == [1, 1, 1, 1]
    # an exit layer outside 1..branches + 1 read a branch from the end (layer 0: the last branch's answer),
    # and layers or answers of other lengths were an IndexError of numpy's
    with pytest.raises(ValueError, match=r"layers must be exit layers in 1..3, got 0..3"):
        exit_predictions(branch, final, np.array([0, 3, 3, 3]))
    with pytest.raises(ValueError, match=r"final_pred must be \(4,\), got \(3,\)"):
        exit_predictions(branch, final[:3], exit_layers(u, 0.35))
    with pytest.raises(ValueError, match=r"layers must be \(4,\), got \(2,\)"):
        exit_predictions(branch, final, np.array([1, 2]))
    with pytest.raises(ValueError, match="layers must hold integer exit layers, got dtype float64"):
        exit_predictions(branch, final, np.array([1.0, 2.0, 3.0, 3.0]))
    curve = {r["speed"]: r for r in speed_curve(u, branch, final, labels, speeds=(0.0, 0.25, 0.35, 0.95))}
    assert curve[0.0]["loss_pt"] == 0.0 and curve[0.0]["layers"] == 3.0 and curve[0.0]["changed"] == 0
    assert curve[0.25]["loss_pt"] == 25.0 and curve[0.25]["layers"] == 2.25 and curve[0.25]["changed"] == 1
    # the paired differences are (1, 0, 0, 0): standard deviation 0.5, standard error 0.25
    assert curve[0.25]["se_pt"] == pytest.approx(25.0)
    assert curve[0.35]["layers"] == 1.75 and curve[0.35]["loss_pt"] == 25.0  # row 3 leaves at branch 1, rightly
    assert curve[0.95]["layers"] == 1.0 and curve[0.95]["loss_pt"] == 75.0  # rows 0-2 wrong at branch 1
    grid = (0.0, 0.25, 0.35, 0.95)
    assert pick_speed(u, branch, final, labels, max_loss=0.5, speeds=grid)["speed"] == 0.0
    assert pick_speed(u, branch, final, labels, max_loss=49.0, speeds=grid)["speed"] == 0.0  # 25 + 1 x 25 > 49
    assert pick_speed(u, branch, final, labels, max_loss=50.0, speeds=grid)["speed"] == 0.35  # fewer layers than 0.25
    assert pick_speed(u, branch, final, labels, max_loss=25.0, z=0.0, speeds=grid)["speed"] == 0.35
    assert pick_speed(u, branch, final, labels, max_loss=99.0, speeds=grid)["speed"] == 0.35  # 75 + 25 > 99
    assert pick_speed(u, branch, final, labels, max_loss=75.0, z=0.0, speeds=grid)["speed"] == 0.95
    # the walk stops at the first speed that fails: a later one that passes by luck is not taken
    u1, b1, f1, y1 = np.array([[0.2], [0.5], [0.5], [0.6]]), np.array([[1], [0], [0], [0]]), np.array([0, 0, 0, 1]), np.zeros(4, int)
    c1 = {r["speed"]: r for r in speed_curve(u1, b1, f1, y1, speeds=(0.2, 0.6))}
    assert (c1[0.2]["loss_pt"], c1[0.2]["se_pt"]) == (25.0, pytest.approx(25.0))
    assert c1[0.6]["loss_pt"] == 0.0 and c1[0.6]["se_pt"] == pytest.approx(100 * math.sqrt(2 / 3) / 2)  # 40.8
    assert pick_speed(u1, b1, f1, y1, max_loss=45.0, speeds=(0.2, 0.6))["speed"] == 0.0  # 0.2 fails (50 > 45)
    assert pick_speed(u1, b1, f1, y1, max_loss=25.0, z=0.0, speeds=(0.2, 0.6))["speed"] == 0.6
    with pytest.raises(ValueError, match="must match"):
        speed_curve(u, branch[:, :1], final, labels)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        pick_speed(u, branch, final, labels, max_loss=1.0, speeds=(0.5, 1.5))
    with pytest.raises(ValueError, match=">= 0"):
        pick_speed(u, branch, final, labels, max_loss=-1.0)


def test_speed_metrics_by_hand_and_no_speedup_where_nothing_exited():
    """accuracy@S, agreement@S (with speed 0), layers@S and speedup@S from hand-made measurements; a
    speed at which no text left early ran every layer and the branches: a timing that says it was
    faster (a busy machine slowed the speed-0 pass) is no speedup, while its measured overhead stays."""
    from kdstore.early_exit import speed_metrics

    def logits(pred):
        return np.eye(2, dtype=np.float32)[pred]

    labels = np.array([0, 1, 1, 0])
    measured = {
        0.0: {"logits": logits([0, 1, 0, 0]), "layers": np.array([3, 3, 3, 3]), "seconds": 2.0},
        0.1: {"logits": logits([0, 1, 0, 0]), "layers": np.array([3, 3, 3, 3]), "seconds": 0.5},  # noise: 4x
        0.3: {"logits": logits([0, 1, 0, 0]), "layers": np.array([3, 3, 3, 3]), "seconds": 2.5},
        0.5: {"logits": logits([0, 1, 1, 1]), "layers": np.array([1, 3, 2, 1]), "seconds": 1.0},
    }
    m = speed_metrics(measured, labels, ["a", "b"])
    assert (m["accuracy@0"], m["accuracy@0.5"]) == (0.75, 0.75)
    assert (m["agreement@0.1"], m["agreement@0.5"]) == (1.0, 0.5)
    assert (m["layers@0"], m["layers@0.5"]) == (3.0, 1.75)
    assert m["speedup@0"] == 1.0 and m["speedup@0.5"] == 2.0
    assert m["speedup@0.1"] == 1.0  # nothing exited: not 4x
    assert m["speedup@0.3"] == pytest.approx(0.8)  # the branches' cost, as measured
    # a --speed that six significant digits make one of the grid's has figures of its own (it overwrote 0.1's)
    close = speed_metrics({**measured, 0.1000001: measured[0.5]}, labels, ["a", "b"])
    assert (close["layers@0.1"], close["layers@0.1000001"]) == (3.0, 1.75)


def test_a_slowdown_where_nothing_exited_is_noise_unless_every_pass_shows_it():
    """On a busy machine the stage's speedup@0.8 read 0.40 with no text leaving early: two noisy timings
    of the same work. A slowdown the passes do not tell apart is recorded as 1; the layer-based
    speedup stands beside the wall clock."""
    from kdstore.early_exit import speed_metrics

    logits = np.eye(2, dtype=np.float32)[[0, 1, 0, 0]]
    full = np.array([3, 3, 3, 3])
    measured = {
        0.0: {"logits": logits, "layers": full, "seconds": 1.0, "spread": (0.9, 2.6)},
        0.8: {"logits": logits, "layers": full, "seconds": 2.5, "spread": (1.0, 3.0)},  # overlapping: noise
        0.5: {"logits": logits, "layers": full, "seconds": 1.25, "spread": (2.7, 2.9)},  # every pass slower: kept
        0.9: {"logits": logits, "layers": np.array([1, 1, 2, 3]), "seconds": 2.0, "spread": (1.0, 3.0)},
    }
    m = speed_metrics(measured, np.array([0, 1, 1, 0]), ["a", "b"])
    assert m["speedup@0.8"] == 1.0 and m["layer_speedup@0.8"] == 1.0
    assert m["speedup@0.5"] == pytest.approx(0.8) and m["layer_speedup@0.5"] == 1.0
    assert m["speedup@0.9"] == pytest.approx(0.5)  # texts exited: the wall clock as measured
    assert m["layer_speedup@0.9"] == pytest.approx(3 / 1.75) and m["layer_speedup@0"] == 1.0


def test_max_loss_on_a_dev_split_too_small_for_the_budget_is_warned(trained):
    from kdstore.exit_speed import coarse_budget

    # one answer lost, with its standard error: 0.2 and 0.5 points
    assert coarse_budget(1000, 0.5) is None and coarse_budget(400, 0.5) is None
    assert coarse_budget(20, 100.0) is None and coarse_budget(4, 0.0) is None and coarse_budget(0, 0.5) is None
    assert "one answer is 25 points and one answer lost counts 50" in coarse_budget(4, 0.5)
    assert "at least 400 dev samples" in coarse_budget(4, 0.5)
    # served at speed 0, no speed "passed because it lost no more dev answers than it gained": none faster could pass at all
    said = coarse_budget(4, 0.5, speed=0.0)
    assert "only a speed that changes no dev answer could pass, and speed 0 (every layer) is served" in said
    assert "passed because" not in said and "at least 400 dev samples" in said
    assert "the speed passed because it lost no more dev answers than it gained" in coarse_budget(4, 0.5, speed=0.3)
    # between 100 / budget and 200 / budget samples the rule still passes only speeds that lose no answer:
    # 300 samples, one answer lost is 0.33 + 0.33 points, over a 0.5 budget (it was not warned of)
    assert "on 300 labeled dev samples" in coarse_budget(300, 0.5) and coarse_budget(300, 0.5, z=0.0) is None
    from kdstore.exit_speed import pick_speed
    labels = np.zeros(300, dtype=int)
    final = labels.copy()
    branch = np.zeros((300, 2), dtype=int)
    branch[0, 0] = 1  # at speed 1 (every text exits at the first layer), one answer lost
    assert pick_speed(np.zeros((300, 2)), branch, final, labels, max_loss=0.5, speeds=[1.0])["speed"] == 0.0
    out = kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--max-loss", "0.5",
             "--name", "ee-coarse", "--db", trained["db"], "--json")
    warned = [w for w in json.loads(out.stdout)["warnings"] if "--max-loss 0.5" in w]
    assert len(warned) == 1 and "20 labeled dev samples" in warned[0] and "one answer is 5 points" in warned[0]
    assert "warning: --max-loss 0.5 chose the speed on 20 labeled dev samples" in out.stderr


def test_max_loss_on_a_teacher_that_trained_on_dev_is_warned_of(trained, tmp_path):
    """--max-loss chooses the serving speed on dev; on a teacher of `--split train --split dev` dev holds rows
    its layers and head learned, where exiting early loses less than on new text: the speed was chosen
    without a word (kd report notes the stage's dev figures only afterwards)."""
    import shutil

    copy = tmp_path / "copy"  # a copy: the other tests keep the module's store as it was built
    shutil.copytree(Path(trained["db"]).parent, copy)
    db = str(copy / "kd.db")
    kd("teach", "--run", "rd", "--model", str(copy / "tiny-bert"), "--split", "train", "--split", "dev", "--epochs", "2",
       "--batch-size", "8", "--max-len", "32", "--db", db)
    out = kd("distill", "--run", "rd", "--student", "early-exit", "--epochs", "1", "--max-loss", "100", "--db", db)
    assert ("warning: --max-loss chooses the serving speed on dev, which the teacher of run 'rd' trained on (--split dev)"
            in out.stderr), out.stderr
    plain = kd("distill", "--run", "rd", "--student", "early-exit", "--epochs", "1", "--name", "ee-2", "--db", db)
    assert "--max-loss" not in plain.stderr


def test_the_coarse_budget_warning_does_not_say_no_answer_was_lost_where_gains_offset_one():
    """kd distill --max-loss 2 on 80 dev texts warned that "the speed passed because no dev answer was
    lost" where the speed chosen had lost one dev answer and gained four (the rule passes a loss that
    gains offset): what the warning says must hold of every speed it can pass."""
    from kdstore.exit_speed import coarse_budget, pick_speed

    labels = np.zeros(80, dtype=int)
    final = labels.copy()
    final[1:5] = 1  # the full model wrong on rows 1-4
    branch = np.zeros((80, 1), dtype=int)
    branch[0, 0] = 1  # at the first layer: row 0 lost, rows 1-4 gained
    chosen = pick_speed(np.zeros((80, 1)), branch, final, labels, max_loss=2.0, speeds=[0.5])
    assert chosen["speed"] == 0.5 and chosen["changed"] == 5  # passed, one answer lost
    said = coarse_budget(80, 2.0, speed=chosen["speed"])
    assert "no dev answer was lost" not in said
    assert "lost no more dev answers than it gained" in said


def test_cli_max_loss_serves_at_the_speed_chosen_on_dev(trained):
    import json

    from kdstore.early_exit import all_exit_logits, calibrate_speed

    db = trained["db"]
    # a budget of 100 points lets every speed pass: the walk ends at the fastest one
    out = json.loads(kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--max-loss", "100",
                        "--name", "ee-budget", "--db", db, "--json").stdout)
    assert out["status"] == "succeeded"
    dev_metrics = out["metrics"]["dev"]
    chosen = dev_metrics["chosen_speed"]
    assert chosen > 0.5 and dev_metrics["chosen_layers"] < LAYERS
    assert dev_metrics["chosen_loss_pt"] + dev_metrics["chosen_se_pt"] <= 100.0
    assert out["metrics"]["all"]["speed"] == chosen
    store = Store.open(db)
    stage = _stage(store, "ee-budget")
    model, tokenizer, meta = load_early_exit(Path(stage.artifact_path))
    assert meta["speed"] == chosen  # kd predict serves at it by default
    dev = store.samples(splits=["dev"], labeled=True)
    again = calibrate_speed(model, tokenizer, dev.texts, dev.labels, max_len=32, max_loss=100.0)
    assert again["speed"] == chosen and again["layers"] == pytest.approx(dev_metrics["chosen_layers"])
    strict = calibrate_speed(model, tokenizer, dev.texts, dev.labels, max_len=32, max_loss=0.0, z=0.0)
    assert strict["loss_pt"] <= 0.0 and strict["layers"] >= again["layers"]
    with pytest.raises(KdError, match="held-out texts"):
        calibrate_speed(model, tokenizer, [], np.zeros(0, int), max_len=32, max_loss=0.5)
    # what the one-pass simulation says a speed does is what the serving loop does
    branches, final = all_exit_logits(model, tokenizer, dev.texts, max_len=32)
    from kdstore.exit_speed import exit_layers, exit_predictions

    u = normalized_entropy(torch.softmax(torch.from_numpy(branches), dim=-1)).numpy()
    for speed in (0.1, 0.3, 0.6, 0.9, chosen):
        logits, layers = early_exit_logits(model, tokenizer, dev.texts, max_len=32, speed=speed)
        sim = exit_layers(u, speed)
        np.testing.assert_array_equal(sim, layers)
        np.testing.assert_array_equal(exit_predictions(branches.argmax(-1), final.argmax(-1), sim), logits.argmax(1))
    refused = kd("distill", "--run", "r", "--student", "textcnn", "--speed", "0.5", "--max-loss", "1", "--db", db, ok=False)
    assert "--speed, --max-loss: for --student early-exit, not textcnn" in refused.output
    both = kd("distill", "--run", "r", "--student", "early-exit", "--speed", "0.5", "--max-loss", "1", "--name", "x", "--db", db, ok=False)
    assert "--speed or --max-loss, not both" in both.output


def test_a_damaged_branches_file_is_a_one_line_error(tmp_path):
    """A ``branches.pt`` that is no ``torch.save`` file (a Git LFS pointer checked out without the
    object, a damaged copy) is a KdError naming the directory, not torch's unpickling traceback."""
    from transformers import BertConfig, BertForSequenceClassification

    tokens = build_vocab(["很好太差一般"])
    config = BertConfig(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=16, num_labels=3, id2label={0: "neg", 1: "mid", 2: "pos"})
    torch.manual_seed(0)
    saved = EarlyExitModel(BertForSequenceClassification(config), branch_dim=8).save(
        tmp_path / "ee", tokenizer=make_tokenizer(tokens), max_len=16, speed=0.3, uncertainty="entropy")
    model, _, meta = load_early_exit(saved)
    assert len(model.branches) == 1 and meta["classes"] == ["neg", "mid", "pos"]
    # a hand-edited early_exit.json: one line naming the file and the field, not a traceback or an error about --speed
    good = (saved / "early_exit.json").read_text(encoding="utf-8")
    for field, value in (("speed", "fast"), ("speed", 2), ("max_len", 0), ("branch_dim", "8"), ("pooling", "max"),
                         ("classes", "neg"), ("uncertainty", "vibes")):
        (saved / "early_exit.json").write_text(json.dumps({**json.loads(good), field: value}), encoding="utf-8")
        with pytest.raises(KdError, match=rf"early_exit.json: field {field} is .*, not .*: re-train it"):
            EarlyExitPredictor.from_directory(saved, device="cpu")
    # fields that must agree with the saved model: the classes in its order (reordered ones turned the
    # head round but not the branches), the branches' width (torch's dozen-line size mismatch), a
    # max_len within its 16 positions (a long text ended in a traceback)
    for field, value, want in (("classes", ["pos", "mid", "neg"], r"the model's classes \[.neg., .mid., .pos.\], in that order"),
                               ("branch_dim", 16, "8, the width of the branches in branches.pt"),
                               ("max_len", 64, r"at most 16 \(the model's positions\)")):
        (saved / "early_exit.json").write_text(json.dumps({**json.loads(good), field: value}), encoding="utf-8")
        with pytest.raises(KdError, match=rf"early_exit.json: field {field} is .*, not {want}: re-train it"):
            EarlyExitPredictor.from_directory(saved, device="cpu")
    (saved / "early_exit.json").write_text(good[:40], encoding="utf-8")  # cut short: JSON's "line 3 column 14" named no file
    with pytest.raises(KdError, match=r"cannot load the early-exit model in .*: early_exit.json is not valid JSON \("):
        load_early_exit(saved)
    (saved / "early_exit.json").write_text(good, encoding="utf-8")
    (saved / "branches.pt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n", encoding="utf-8")
    with pytest.raises(KdError, match=r"cannot load the early-exit model in .*: branches.pt is not a PyTorch weights file$"):
        load_early_exit(saved)
    with pytest.raises(KdError, match="branches.pt is not a PyTorch weights file"):
        EarlyExitPredictor.from_directory(saved, device="cpu")
    for damaged in (b"", *(bytes(random.Random(seed).getrandbits(8) for _ in range(4000)) for seed in (7, 44))):
        (saved / "branches.pt").write_bytes(damaged)  # empty, or bytes torch's unpickler stops on with an IndexError or KeyError
        with pytest.raises(KdError, match=r"cannot load the early-exit model in .*: branches.pt is not a PyTorch weights file$"):
            load_early_exit(saved)


def test_predict_refuses_an_early_exit_json_whose_classes_are_reordered(trained):
    """``kd predict`` with an ``early_exit.json`` whose classes were reordered by hand: the teacher's
    head was turned round to the new order, the branches were not, so a text that left early got
    the other class's name. Refused, naming the file and the field."""
    path = Path(trained["out_dir"]) / "early_exit.json"
    good = path.read_text(encoding="utf-8")
    meta = json.loads(good)
    args = ("predict", "--run", "r", "--model", "early-exit", "--speed", "1", "--json", "--db", trained["db"])
    before = json.loads(kd(*args, input="这个很好\n").stdout)
    assert before["layer"] == 1  # (speed 1: the first branch answers)
    try:
        path.write_text(json.dumps({**meta, "classes": meta["classes"][::-1]}), encoding="utf-8")
        refused = kd(*args, input="这个很好\n", ok=False)
        assert refused.exit_code != 0 and "early_exit.json: field classes is" in refused.output
        assert "Traceback" not in refused.output and len(refused.output.strip().splitlines()) == 1
    finally:
        path.write_text(good, encoding="utf-8")
    assert json.loads(kd(*args, input="这个很好\n").stdout)["label"] == before["label"]


def test_an_early_exit_stage_missing_its_early_exit_json_is_named_an_early_exit_model(trained):
    """An early-exit stage's folder without ``early_exit.json`` (a partial copy of kd-artifacts) was
    loaded as a student ("cannot load the student ...: no student.json"), and with ``--speed`` refused
    as "run 'r' has none" of the early-exit models it has: both name the early-exit model and the file."""
    db = trained["db"]
    kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--name", "ee-no-json", "--db", db)
    path = Path(_stage(Store.open(db), "ee-no-json").artifact_path) / "early_exit.json"
    good = path.read_text(encoding="utf-8")
    try:
        path.unlink()
        for extra in ((), ("--speed", "0.3")):
            refused = kd("predict", "--run", "r", "--model", "ee-no-json", *extra, "--db", db, input="这个很好\n", ok=False)
            assert "cannot load the early-exit model in" in refused.output and "early_exit.json" in refused.output, refused.output
            assert "student" not in refused.output and "has none" not in refused.output
    finally:
        path.write_text(good, encoding="utf-8")


def test_a_config_file_speed_or_max_loss_gives_way_to_the_command_line(tmp_path, monkeypatch):
    """A kd.toml default serving ``speed`` does not turn ``--max-loss`` typed on the command line into
    "not both", nor a kd.toml ``max_loss`` a typed ``--speed``: the command line wins. Both typed, or
    both in the file, are still refused."""
    import kdstore.early_exit as ee

    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "dev.tsv", labeled_rows(random.Random(0), 4))), "--split", "dev", "--db", db)  # --max-loss needs dev
    with stage_scope(Store.open(db), run="r", kind="teach", name="teach", config={}):
        pass  # a run to take a teacher from (training itself is replaced below)
    seen: list[EarlyExitConfig] = []
    monkeypatch.setattr(ee, "train_early_exit", lambda store, stage, cfg, teacher_run=None: seen.append(cfg))
    conf = tmp_path / "kd.toml"
    monkeypatch.setenv("KD_CONFIG", str(conf))
    conf.write_text("[distill]\nspeed = 0.5\n", encoding="utf-8")
    kd("distill", "--run", "r", "--student", "early-exit", "--max-loss", "1", "--name", "a", "--db", db)
    assert seen[-1].max_loss == 1.0
    conf.write_text("[distill]\nmax_loss = 1.0\n", encoding="utf-8")
    kd("distill", "--run", "r", "--student", "early-exit", "--speed", "0.2", "--name", "b", "--db", db)
    assert (seen[-1].speed, seen[-1].max_loss) == (0.2, None)
    conf.write_text("[distill]\nspeed = 0.5\nmax_loss = 1.0\n", encoding="utf-8")
    both = kd("distill", "--run", "r", "--student", "early-exit", "--name", "c", "--db", db, ok=False)
    assert "--speed or --max-loss, not both" in both.output and len(seen) == 2


def test_max_loss_without_labeled_dev_samples_is_refused_before_a_stage_is_recorded(tmp_path, monkeypatch):
    """--max-loss chooses the speed on dev: a store without labeled dev samples is a one-line error
    that leaves no failed distill-early-exit stage behind (it was recorded, then failed)."""
    import kdstore.early_exit as ee

    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", labeled_rows(random.Random(0), 10))), "--split", "train", "--db", db)
    with stage_scope(Store.open(db), run="r", kind="teach", name="teach", config={}):
        pass  # a run to take a teacher from
    monkeypatch.setattr(ee, "train_early_exit", lambda *a, **k: pytest.fail("trained without dev samples"))
    refused = kd("distill", "--run", "r", "--student", "early-exit", "--max-loss", "0.5", "--db", db, ok=False)
    assert "--max-loss chooses the serving speed on the dev split, and the store has no labeled dev samples" in refused.output
    assert [s.name for s in Store.open(db).stages_of("r")] == ["teach"]


def test_a_typed_patience_without_labeled_dev_samples_is_warned_of(tmp_path, monkeypatch):
    """Early exit keeps the last epoch where no labeled dev sample judges the epochs: a typed --patience
    did nothing, said nowhere (a student's and a teacher's is warned of)."""
    import kdstore.early_exit as ee

    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", labeled_rows(random.Random(0), 10))), "--split", "train", "--db", db)
    with stage_scope(Store.open(db), run="r", kind="teach", name="teach", config={}):
        pass  # a run to take a teacher from
    monkeypatch.setattr(ee, "train_early_exit", lambda *a, **k: None)
    out = kd("distill", "--run", "r", "--student", "early-exit", "--patience", "1", "--db", db, "--json")
    assert "warning: --patience: not used, the store has no labeled dev samples" in out.stderr
    assert any(w.startswith("--patience: not used") for w in json.loads(out.stdout)["warnings"])
    quiet = kd("distill", "--run", "r", "--student", "early-exit", "--name", "b", "--db", db)  # (not typed: no warning)
    assert "--patience" not in quiet.stderr


def test_a_bad_branch_dim_dropout_or_patience_names_the_option_at_fault_and_its_value(tmp_path):
    """`--branch-dim 0` was told "--branch-dim must be positive and --dropout in [0, 1)" (and a config
    file's `dropout = 1.5` the same, blaming --branch-dim too), `--patience -2` no value: one line
    naming the option at fault and the value given, as a student's sizes and a teacher's patience are."""
    db = str(tmp_path / "never.db")
    for args, message in (
        (["--branch-dim", "0"], "Error: --branch-dim must be positive, got 0"),
        (["--dropout", "1.5"], "Error: --dropout must be in [0, 1), got 1.5"),
        (["--patience", "-2"], "Error: --patience must be at least 1, got -2"),
        # (0 was "must be positive", 0.05 "between 0.1 and 100": one range, and why)
        (["--temperature", "0"], "Error: --temperature must be between 0.1 and 100, got 0: past them the soft loss"),
    ):
        bad = kd("distill", "--run", "r", "--student", "early-exit", *args, "--db", db, ok=False)
        assert bad.output.strip().startswith(message) and bad.output.count("\n") == 1, (args, bad.output)
    assert not (tmp_path / "never.db").exists()


def test_distill_help_says_early_exit_reads_at_the_teachers_max_len():
    """Without --max-len the branches read at the teacher's own --max-len (so speed 0 is the
    teacher), not at the students' 128: the help says so."""
    text = " ".join(kd("distill", "--help").output.split())
    assert "(the (first) teacher's; 128 if it has none)" in text


def test_a_max_len_other_than_the_teachers_is_warned_of(tmp_path, monkeypatch):
    """Speed 0 is the teacher only at the teacher's own --max-len: another one (typed, or a config
    file's [distill] max-len meant for the students) made the branches and "the full model" read
    that many tokens, its accuracy@0 and flops@0 below the teacher's, said nowhere (a 48-token
    teacher's early exit at 8 tokens: test accuracy 0.65 at speed 0 against the teacher's 0.72)."""
    import kdstore.early_exit as ee

    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", labeled_rows(random.Random(0), 10))), "--split", "train", "--db", db)
    with stage_scope(Store.open(db), run="r", kind="teach", name="teach", config={"max_len": 32}):
        pass  # a 32-token teacher (training itself is replaced below)
    seen: list[EarlyExitConfig] = []
    monkeypatch.setattr(ee, "train_early_exit", lambda store, stage, cfg, teacher_run=None: seen.append(cfg))
    typed = kd("distill", "--run", "r", "--student", "early-exit", "--max-len", "16", "--name", "a", "--db", db)
    assert seen[-1].max_len == 16
    assert "warning: --max-len 16 is not the teacher's 32" in typed.stderr and "speed 0" in typed.stderr
    conf = tmp_path / "students.toml"
    conf.write_text("[distill]\nmax-len = 16\n", encoding="utf-8")
    monkeypatch.setenv("KD_CONFIG", str(conf))
    filed = kd("distill", "--run", "r", "--student", "early-exit", "--name", "b", "--db", db)
    assert "warning: --max-len 16 is not the teacher's 32" in filed.stderr and "[distill] max-len = 16" in filed.stderr
    monkeypatch.delenv("KD_CONFIG")
    # --uncertainty max_prob on 2 classes reads at most 0.5: --speed 0.5 exits every text at the first layer, said
    all_out = kd("distill", "--run", "r", "--student", "early-exit", "--uncertainty", "max_prob", "--speed", "0.5", "--name", "m1", "--db", db)
    assert ("warning: --speed 0.5 with --uncertainty max_prob on 2 classes: 1 - the top probability is at most 0.5, so every "
            "text exits at the first layer") in all_out.stderr, all_out.stderr
    some = kd("distill", "--run", "r", "--student", "early-exit", "--uncertainty", "max_prob", "--speed", "0.4", "--name", "m2", "--db", db)
    assert "every text exits" not in some.stderr
    for i, same in enumerate((["--max-len", "32"], [])):
        quiet = kd("distill", "--run", "r", "--student", "early-exit", *same, "--name", f"c{i}", "--db", db)
        assert "--max-len" not in quiet.stderr and seen[-1].max_len in (None, 32)


def test_predict_at_a_speed_that_exits_every_text_at_the_first_layer_warns(trained):
    """kd distill warned of --speed 0.5 with max_prob uncertainty on 2 classes (1 - the top probability is
    at most 0.5: every text exits at layer 1); kd predict --speed 0.6 on that model did so in silence."""
    db = trained["db"]
    kd("distill", "--run", "r", "--student", "early-exit", "--uncertainty", "max_prob", "--epochs", "1", "--name", "mp", "--db", db)
    at = kd("predict", "--run", "r", "--model", "mp", "--speed", "0.6", "--json", "--db", db, input="这个很好\n")
    assert json.loads(at.stdout)["layer"] == 1
    assert at.stderr == ("warning: --speed 0.6 with --uncertainty max_prob on 2 classes: 1 - the top probability is at most 0.5, "
                         "so every text exits at the first layer; a speed below 0.5 lets some go on\n")
    assert kd("predict", "--run", "r", "--model", "mp", "--speed", "0.3", "--db", db, input="这个很好\n").stderr == ""
    assert kd("predict", "--run", "r", "--model", "early-exit", "--speed", "0.6", "--db", db, input="这个很好\n").stderr == ""  # (entropy)


def test_speed_1_with_entropy_exits_every_text_at_the_first_layer_and_is_warned_of(trained, tmp_path, monkeypatch):
    """The normalized entropy is at most 1: --speed 1 exits every text at the first layer, as --speed 0.5 with
    max_prob on 2 classes does; that one was warned of, kd distill --speed 1 and kd predict --speed 1 said nothing."""
    import kdstore.early_exit as ee

    from kdstore.early_exit import first_layer_speed_note

    assert first_layer_speed_note(1.0, "entropy", 2) == (
        "--speed 1 with --uncertainty entropy: the normalized entropy is at most 1, so every text exits at the first layer; "
        "a speed below 1 lets some go on")
    assert first_layer_speed_note(0.99, "entropy", 2) is None
    at = kd("predict", "--run", "r", "--model", "early-exit", "--speed", "1", "--json", "--db", trained["db"], input="这个很好\n")
    assert json.loads(at.stdout)["layer"] == 1
    assert at.stderr == f"warning: {first_layer_speed_note(1.0, 'entropy', 2)}\n"
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", labeled_rows(random.Random(0), 10))), "--split", "train", "--db", db)
    with stage_scope(Store.open(db), run="r", kind="teach", name="teach", config={"max_len": 32}):
        pass  # (training itself is replaced below)
    monkeypatch.setattr(ee, "train_early_exit", lambda store, stage, cfg, teacher_run=None: None)
    said = kd("distill", "--run", "r", "--student", "early-exit", "--speed", "1", "--name", "e1", "--db", db)
    assert "warning: --speed 1 with --uncertainty entropy: the normalized entropy is at most 1" in said.stderr, said.stderr


def test_a_config_files_speed_that_exits_every_text_at_the_first_layer_is_warned_of_too(trained, tmp_path):
    """A kd.toml `[predict] speed = 1` serves an early-exit model at that speed as a typed --speed 1 does (every
    text at the first layer): the typed one was warned of, the config file's exited every text in silence."""
    db, conf = trained["db"], tmp_path / "kd.toml"
    conf.write_text("[predict]\nspeed = 1\n", encoding="utf-8")
    note = "warning: --speed 1 with --uncertainty entropy: the normalized entropy is at most 1"
    at = kd("predict", "--run", "r", "--model", "early-exit", "--json", "--config", str(conf), "--db", db, input="这个很好\n")
    assert json.loads(at.stdout)["layer"] == 1
    assert note in at.stderr, at.stderr
    stored = kd("predict", "--run", "r", "--model", "early-exit", "--store", "--split", "test", "--overwrite", "--config", str(conf), "--db", db)
    assert "speed 1: mean exit layer 1.00" in stored.stdout and note in stored.stderr, stored.output
    assert kd("predict", "--run", "r", "--model", "teacher", "--config", str(conf), "--db", db, input="这个很好\n").stderr == ""


def test_per_speed_figures_judge_against_the_labels_the_stage_read(trained, monkeypatch):
    """A label edit while the branches train (another process's `kd labels set`) changes neither the
    stage's figures nor its per-speed ones: accuracy@SPEED was over the labels at the end, accuracy
    (the same speed) over those the stage read, so the two disagreed."""
    import kdstore.early_exit as ee
    from kdstore import labels as lab

    store, db = trained["store"], trained["db"]
    dev = store.samples(splits=["dev"], labeled=True)
    names = store.class_names()
    real = ee.store_outputs

    def edited_meanwhile(*args, **kwargs):
        edit_labels(db, "meanwhile", "flip", {int(i): names[1 - int(y)] for i, y in zip(dev.ids, dev.labels)})
        return real(*args, **kwargs)

    monkeypatch.setattr(ee, "store_outputs", edited_meanwhile)
    cfg = EarlyExitConfig(epochs=1, lr=5e-3, batch_size=16, speed=0.3, timing_repeats=1, device="cpu")
    try:
        with stage_scope(store, run="r", kind="distill", name="ee-edited", config=config_dict(cfg)) as stage:
            train_early_exit(store, stage, cfg, teacher_run="r")
    finally:
        lab.undo(store, "meanwhile")
    m = {x.name: x.value for x in store.metrics(stage.id) if x.split == "dev"}
    assert m["accuracy"] == m["accuracy@0.3"] and m["macro_f1"] == m["macro_f1@0.3"]


def test_scoring_the_store_shows_a_bar_and_timing_runs_none(trained, monkeypatch, capsys):
    """The early-exit stage scored every sample of the store (and kd predict --store all of them) with
    nothing on screen: minutes at 200,000 texts. A named scoring shows a bar; the timing runs none."""
    import kdstore.progress as kp

    monkeypatch.delenv("KD_NO_PROGRESS", raising=False)
    monkeypatch.setattr(kp, "LOG_EVERY_S", 0.0)
    model, tokenizer, _ = load_early_exit(trained["out_dir"])
    texts = trained["store"].samples(include_dropped=True).texts[:40]
    capsys.readouterr()
    early_exit_logits(model, tokenizer, texts, max_len=32, speed=0.5, batch_size=8, label="logits")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("logits")]
    assert lines and "40/40" in lines[-1]
    early_exit_logits(model, tokenizer, texts, max_len=32, speed=0.5, batch_size=8)  # (measure's timing runs)
    assert capsys.readouterr().err == ""


def test_a_single_layer_teacher_is_refused_before_a_stage_is_recorded(tmp_path, monkeypatch):
    """A 1-layer teacher has no layer to exit after: a one-line error, and no failed
    distill-early-exit stage left behind (it was recorded, then failed inside the stage)."""
    import kdstore.early_exit as ee

    rows = labeled_rows(random.Random(0), 12)
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", rows)), "--split", "train", "--db", db)
    model = save_tiny_bert_layers([t for _, t in rows], tmp_path / "one-layer", layers=1)
    kd("teach", "--run", "r", "--model", str(model), "--epochs", "1", "--max-len", "16", "--db", db)
    monkeypatch.setattr(ee, "train_early_exit", lambda *a, **k: pytest.fail("trained a single-layer teacher"))
    refused = kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--db", db, ok=False)
    assert "the teacher has a single layer: there is nothing to exit early from" in refused.output
    assert [s.name for s in Store.open(db).stages_of("r")] == ["teach"]


def test_samples_ingested_after_the_teacher_ran_are_learned_from_without_logits_only(tmp_path):
    """The branches learn from the teacher network itself, not from its stored logits: a train sample
    ingested after the teacher ran stopped the stage ("run kd teach --logits-only first"), and pool
    texts ingested later were left out of the unlabeled pool the README says is included."""
    import json

    rng = random.Random(0)
    rows, late = labeled_rows(rng, 16), labeled_rows(rng, 2)[:1]
    pool = texts(rng, "很好", 3)
    db = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", rows)), "--split", "train", "--db", db)
    model = save_tiny_bert_layers([t for _, t in rows + late] + pool, tmp_path / "two-layer", layers=2)
    kd("teach", "--run", "r", "--model", str(model), "--epochs", "1", "--max-len", "16", "--db", db)
    kd("ingest", str(write_tsv(tmp_path / "late.tsv", late)), "--split", "train", "--db", db)
    (tmp_path / "pool.txt").write_text("\n".join(pool) + "\n", encoding="utf-8")
    kd("ingest", str(tmp_path / "pool.txt"), "--split", "unlabeled", "--db", db)
    result = kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--db", db, "--json")
    out = json.loads(result.stdout)
    assert out["status"] == "succeeded" and out["warnings"] == [], out["warnings"]
    learned = out["metrics"]["all"]
    assert (learned["train_samples"], learned["pool_samples"], learned["pool_without_logits"]) == (17, 3, 0)


def test_the_stage_config_records_the_max_len_the_branches_read_at(trained):
    """Without --max-len the branches read at the teacher's --max-len; the stage's configuration said
    max_len=None (kd report: "max_len=None"), where a student's records the length it read at."""
    import json

    out = json.loads(kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--name", "ee-len",
                        "--db", trained["db"], "--json").stdout)
    assert out["config"]["max_len"] == 32 == out["metrics"]["all"]["max_len"]


def test_early_exit_counts_the_texts_cut_to_max_len_and_warns_when_most_are(trained):
    """A news-topic user's early exit at a --max-len that cut every text it learned from said only that the
    length was not the teacher's: the other students count the texts cut (truncated of texts) and warn when
    most are, and this student recorded neither."""
    from transformers import AutoTokenizer

    store, db = trained["store"], trained["db"]
    data = store.samples(splits=["train", "unlabeled"])
    tokenizer = AutoTokenizer.from_pretrained(str(Path(db).parent / "tiny-bert"))
    longer = sum(len(tokenizer(t)["input_ids"]) > 4 for t in data.texts)
    assert longer > len(data.texts) / 2
    out = kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--max-len", "4", "--name", "ee-cut", "--db", db)
    figures = {m.name: m.value for m in store.metrics(_stage(store, "ee-cut").id) if m.split == "train" and m.step is None}
    assert figures["truncated"] == longer and figures["texts"] == len(data.texts)
    share = longer / len(data.texts)
    assert f"texts it learned from: {share:.0%} cut to --max-len 4 tokens" in out.stdout
    assert f"warning: {share:.0%} of the texts it learned from are longer than --max-len 4 tokens and were cut to fit" in out.stderr


def test_a_batch_served_under_autocast_takes_the_branches_half_precision_answers(trained):
    """On a GPU the serving loop runs under bf16/fp16 autocast, where a branch answers in half precision;
    rows that left early were written into the float32 result as they were, which torch refuses
    ('Index put requires the source and destination dtypes match'): kd predict, the stage's outputs and
    its per-speed figures crashed on a GPU as soon as some texts of a batch exited. The CPU's bf16
    autocast does what the GPU's does."""
    model, tokenizer, _ = load_early_exit(trained["out_dir"])
    dev = trained["store"].samples(splits=["dev", "test"], labeled=True)
    input_ids, mask = _batch(tokenizer, dev.texts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, layers = predict_logits(model, input_ids, mask, speed=0.5, uncertainty="max_prob")
    assert logits.dtype == torch.float32 and (layers == 1).all()  # binary: every text leaves at the first branch
    exact, _ = predict_logits(model, input_ids, mask, speed=0.5, uncertainty="max_prob")
    torch.testing.assert_close(logits, exact, atol=0.1, rtol=0.05)  # the same answers, in bf16's precision
    with torch.autocast("cpu", dtype=torch.bfloat16):  # and a batch where only some rows leave
        _, some = predict_logits(model, input_ids, mask, speed=0.9)
    assert 1 <= some.min() and some.max() <= LAYERS


def test_speed_for_a_model_without_exits_names_the_runs_early_exit_stages(trained, tmp_path):
    """--speed for a model that is no early-exit one said "(kd distill --student early-exit)" even of a
    run that has early-exit stages (the teacher, or a textcnn student distilled after them, chosen):
    the error names the stage served and the run's early-exit stages; a run with none is told so."""
    db = trained["db"]
    refused = kd("predict", "--run", "r", "--model", "teacher", "--speed", "0.5", "--db", db, input="这个很好\n", ok=False)
    line = refused.output.strip().splitlines()[-1]
    assert line.startswith("Error: --speed needs an early-exit model, and stage 'teach' is not one: run 'r' has ")
    assert "early-exit" in line.split(" has ", 1)[1] and "trains one" not in line
    stored = kd("predict", "--run", "r", "--model", "teacher", "--store", "--speed", "0.5", "--db", db, ok=False)
    assert "stage 'teach' is not one: run 'r' has " in stored.output
    assert not [s for s in Store.open(db).stages_of("r") if s.kind == "predict" and s.name == "predict-teach"]
    # a run whose only model is a teacher: no early-exit stage to name
    other = str(tmp_path / "kd.db")
    kd("ingest", str(write_tsv(tmp_path / "train.tsv", labeled_rows(random.Random(0), 4))), "--split", "train", "--db", other)
    (tmp_path / "model").mkdir()
    with stage_scope(Store.open(other), run="plain", kind="teach", name="teach", config={}) as stage:
        stage.record_artifact(tmp_path / "model")
    none = kd("predict", "--run", "plain", "--speed", "0.5", "--db", other, input="这个很好\n", ok=False)
    assert none.output.strip().splitlines()[-1] == (
        "Error: --speed needs an early-exit model, and run 'plain' has none (kd distill --student early-exit trains one)")


def test_the_distill_summary_names_the_serving_speed_and_the_mean_exit_layer(trained):
    """The summary's dev and test accuracies are at the serving speed, and --max-loss chooses that speed:
    it was said nowhere but in kd report. The summary names it, how it was chosen, and the mean exit layer."""
    db = trained["db"]
    out = kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--max-loss", "100", "--name", "ee-said",
             "--db", db).output
    stored = Store.open(db).metrics(_stage(Store.open(db), "ee-said").id)
    metrics = {m.name: m.value for m in stored if m.split == "all"}
    dev = {m.name: m.value for m in stored if m.split == "dev"}
    assert metrics["speed"] > 0.5  # every speed passes a 100-point budget: the fastest is served
    # the mean exit layer on dev, as the accuracies above it (over every sample it counted the train rows the branches learned)
    tag = speed_tag(metrics["speed"])
    flops = dev[f"flops@{tag}"] / dev["flops@0"]  # and what those exits cost, FastBERT's figure
    assert flops < 1
    assert (f"  serving speed {metrics['speed']:g} (chosen on dev for --max-loss 100): mean exit layer "
            f"{dev['layers@' + tag]:.2f} on dev of {LAYERS}, {flops:.0%} of the full model's FLOPs "
            f"(kd report --run r: every speed's figures)") in out
    # where the dev texts left at that speed (FastBERT's per-layer exits), stored and said
    shares = [dev[f"exit_share[{k}]"] for k in range(1, LAYERS + 1)]
    assert sum(shares) == pytest.approx(1.0) and f"exit_share[{LAYERS + 1}]" not in dev
    assert sum(k * v for k, v in enumerate(shares, 1)) == pytest.approx(dev["layers@" + speed_tag(metrics["speed"])])
    assert f"  exits by layer on dev: {shares_line(shares)}\n" in out
    plain = kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--speed", "0", "--name", "ee-said-0",
               "--db", db).output
    assert f"  serving speed 0: mean exit layer {LAYERS:.2f} on dev of {LAYERS}, 100% of the full model's FLOPs (kd report" in plain
    assert f"  exits by layer on dev: {LAYERS}: 100%\n" in plain


def test_early_exit_of_a_teacher_that_learned_next_to_nothing_is_warned_of_before_it_trains(trained):
    """`kd distill` of a teacher no better on dev than always answering one class says so before it
    trains (README); `--student early-exit`, whose branches copy that teacher, trained without a word
    and only its summary spoke of it afterwards."""
    from sqlalchemy import update

    from kdstore.schema import Metric

    db = trained["db"]
    store = Store.open(db)
    stage = _stage(store, "teach")
    dev = {m.name: m.value for m in store.metrics(stage.id) if m.split == "dev" and m.step is None}
    share = max(v for k, v in dev.items() if k.startswith("support[")) / dev["n"]

    def set_accuracy(value: float, macro_f1: float) -> None:
        with store.session() as s, s.begin():
            for name, v in (("accuracy", value), ("macro_f1", macro_f1)):
                s.execute(update(Metric).where(Metric.stage_id == stage.id, Metric.split == "dev", Metric.name == name,
                                               Metric.step.is_(None)).values(value=v))

    k = sum(1 for key, v in dev.items() if key.startswith("support[") and v)
    set_accuracy(share, 2 * share / (1 + share) / k)  # (its dev figures, as a teacher that always answers one class has them)
    try:
        out = kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--name", "ee-weak", "--json", "--db", db)
    finally:
        set_accuracy(dev["accuracy"], dev["macro_f1"])
        store.close()
    said = [w for w in json.loads(out.stdout)["warnings"] if w.startswith("the teacher of run 'r' has learned next to nothing")]
    assert len(said) == 1 and f"warning: {said[0]}" in out.stderr, out.stderr


def test_the_distill_summary_without_dev_samples_names_the_mean_exit_layer_on_test(trained):
    """With no labeled dev sample the summary's only figures are test's, and its mean exit layer was the
    one over every sample (the train rows the branches learned among them), unnamed: it is test's now."""
    from kdstore import labels as lab

    store, db = trained["store"], trained["db"]
    dev = store.samples(splits=["dev"], labeled=True)
    edit_labels(db, "no-dev", "drop-dev", {int(i): "drop" for i in dev.ids})
    try:
        out = kd("distill", "--run", "r", "--student", "early-exit", "--epochs", "1", "--name", "ee-no-dev", "--db", db).output
    finally:
        lab.undo(store, "no-dev")
    stored = store.metrics(_stage(store, "ee-no-dev").id)
    test = {m.name: m.value for m in stored if m.split == "test"}
    assert not any(m.split == "dev" and m.name == "accuracy" for m in stored)
    assert (f"  serving speed 0.3: mean exit layer {test['layers@0.3']:.2f} on test of {LAYERS}, "
            f"{test['flops@0.3'] / test['flops@0']:.0%} of the full model's FLOPs (kd report") in out


def test_predict_while_an_overwrite_parks_the_early_exit_stage_is_one_line_naming_it(trained, tmp_path, monkeypatch):
    """`kd distill --student early-exit --overwrite` started while `kd predict --speed` loaded the model:
    the folder moved away (parked) mid-load, and the error was the loader's "cannot load ... as a
    sequence classifier: Repo id must be in the form ..." (or the new model, written where the old
    one was, answered under the old stage's name). Refused, naming the stage that serves meanwhile."""
    import contextlib
    import shutil

    import kdstore.early_exit as ee

    copy = tmp_path / "copy"  # a copy: the other tests keep the module's store as it was built
    shutil.copytree(Path(trained["db"]).parent, copy)
    db = str(copy / "kd.db")
    real = ee.load_early_exit
    with contextlib.ExitStack() as replacing:
        def overwrite_starts(directory, device="cpu"):  # another process's --overwrite, between finding the stage and reading it
            replacing.enter_context(stage_scope(Store.open(db), run="r", kind="distill", name="early-exit", config={}, overwrite=True))
            return real(directory, device)

        monkeypatch.setattr(ee, "load_early_exit", overwrite_starts)
        refused = kd("predict", "--run", "r", "--model", "early-exit", "--speed", "0.5", "--db", db, input="这个很好\n", ok=False)
        line = refused.output.strip().splitlines()[-1]
        assert line.startswith("Error: stage 'early-exit' of run 'r' was replaced (an --overwrite started; until it ends, "
                               "--model early-exit~parked-"), refused.output
        assert line.endswith("serves it) while its model loaded: run this again") and "Traceback" not in refused.output
        monkeypatch.setattr(ee, "load_early_exit", real)
        parked = line.split("--model ")[1].split(" ")[0]
        served = json.loads(kd("predict", "--run", "r", "--model", parked, "--speed", "0.5", "--json", "--db", db, input="这个很好\n").stdout)
        assert served["layers"] == LAYERS  # the parked stage serves meanwhile, as the error says


def test_a_config_files_teacher_runs_refused_by_early_exit_name_the_file(tmp_path):
    """A kd.toml `[distill] teacher-run = ["a", "b"]` (several teachers, for the students) and a typed
    `kd distill --student early-exit` was refused as "at most one --teacher-run" with no word of the
    file: a --teacher-run never typed. The file's key is named, and nothing is written."""
    db = tmp_path / "kd.db"
    (tmp_path / "kd.toml").write_text('[distill]\nteacher-run = ["a", "b"]\n', encoding="utf-8")
    out = kd("distill", "--run", "r", "--student", "early-exit", "--db", str(db), ok=False).output
    assert "extends one teacher" in out and 'kd.toml: [distill] teacher-run = ["a", "b"])' in out, out
    assert not db.exists()


def test_predict_store_summary_names_the_speed_and_the_mean_exit_layer(trained):
    """`kd predict --store --speed 0.9` printed its accuracies without the speed they were at or how deep the
    texts went (stored as `mean_exit_layer`, said only by kd report): the summary names both, as kd distill's does."""
    db = trained["db"]
    out = kd("predict", "--run", "r", "--model", "early-exit", "--store", "--split", "test", "--speed", "0.9",
             "--overwrite", "--db", db).output
    store = Store.open(db)
    stage = _stage(store, "predict-early-exit@test")
    layers = next(m.value for m in store.metrics(stage.id) if m.split == "all" and m.name == "mean_exit_layer")
    stored = {m.name: m.value for m in store.metrics(stage.id) if m.split == "all"}
    shares = [stored.get(f"exit_share[{k}]") for k in range(1, LAYERS + 1)]
    assert None not in shares and sum(k * v for k, v in enumerate(shares, 1)) == pytest.approx(layers)
    assert f"  speed 0.9: mean exit layer {layers:.2f} of {LAYERS} over 20 samples (exits by layer {shares_line(shares)})" in out
    plain = kd("predict", "--run", "r", "--model", "teacher", "--store", "--split", "test", "--overwrite", "--db", db).output
    assert "mean exit layer" not in plain


def test_predict_store_again_at_another_speed_names_the_speed_of_the_stored_predictions(trained):
    """`kd predict --store --speed 0.2` after one at 0.9 was refused as "pass --overwrite to replace it",
    not saying that the stored predictions are at another speed, which --overwrite would lose."""
    db = trained["db"]
    kd("predict", "--run", "r", "--model", "early-exit", "--store", "--split", "dev", "--speed", "0.9", "--overwrite", "--db", db)
    out = kd("predict", "--run", "r", "--model", "early-exit", "--store", "--split", "dev", "--speed", "0.2", "--db", db, ok=False).output
    assert out.strip().endswith("pass --overwrite to replace it (its predictions are at speed 0.9; they would be replaced by "
                                "those at --speed 0.2)"), out
    same = kd("predict", "--run", "r", "--model", "early-exit", "--store", "--split", "dev", "--speed", "0.9", "--db", db, ok=False).output
    assert same.strip().endswith("pass --overwrite to replace it"), same


def test_predict_store_at_another_speed_over_one_marked_running_elsewhere_keeps_its_refusal(trained, tmp_path):
    """The speed note looked the stored predictions up as a succeeded stage: one marked running by a process on
    another machine (its refusal also ends "pass --overwrite to replace it") is none, and the refusal became
    find_stage's "no stage" error, which said the predictions were not there."""
    import shutil
    import sqlite3

    copy = tmp_path / "copy"  # a copy: the other tests keep the module's store as it was built
    shutil.copytree(Path(trained["db"]).parent, copy)
    db = str(copy / "kd.db")
    kd("predict", "--run", "r", "--model", "early-exit", "--store", "--split", "dev", "--speed", "0.9", "--overwrite", "--db", db)
    with sqlite3.connect(db) as c:  # (as a kd on another machine sharing the store leaves it while it runs)
        c.execute("UPDATE stages SET status = 'running', ended_at = NULL, host = 'gpu-box-7', process = '4242:1:m' "
                  "WHERE name = 'predict-early-exit@dev'")
    out = kd("predict", "--run", "r", "--model", "early-exit", "--store", "--split", "dev", "--speed", "0.2", "--db", db, ok=False).output
    line = out.strip().splitlines()[-1]
    assert line.startswith("Error: stage 'predict-early-exit@dev' of run 'r' is marked running by process 4242 on gpu-box-7"), out
    assert line.endswith("pass --overwrite to replace it"), out


def test_pick_speed_refuses_a_nan_budget_or_z():
    """``max_loss=nan`` (or ``z=nan``) passed ``max_loss < 0`` and failed no ``loss + z se > nan``
    comparison: every speed passed, and the fastest was chosen, losing 75 points here."""
    from kdstore.exit_speed import pick_speed

    u = np.array([[0.1, 0.05], [0.6, 0.2], [0.9, 0.8], [0.3, 0.9]])
    branch, final = np.array([[1, 0], [0, 1], [0, 0], [1, 1]]), np.array([0, 1, 1, 1])
    for bad in ({"max_loss": math.nan}, {"max_loss": 0.5, "z": math.nan}):
        with pytest.raises(ValueError, match=">= 0"):
            pick_speed(u, branch, final, final.copy(), speeds=(0.0, 0.25, 0.35, 0.95), **bad)


def test_exit_shares_count_where_the_rows_left():
    from kdstore.exit_speed import exit_shares, share_metrics, shares_line, stored_shares

    shares = exit_shares(np.array([1, 1, 3, 12, 1, 3, 12, 12]), 12)
    assert len(shares) == 12 and shares[0] == 3 / 8 and shares[2] == 2 / 8 and shares[11] == 3 / 8 and sum(shares) == 1.0
    assert shares_line(shares) == "1: 38%, 3: 25%, 12: 38%"
    assert shares_line(exit_shares(np.array([1] * 999 + [2]), 2)) == "1: 100%, 2: <1%"
    assert shares_line(exit_shares(np.array([1] + [2] * 199), 2)).startswith("1: <1%, ")  # 0.5%: not "1: 0%"
    back = stored_shares({"accuracy": 0.9, **share_metrics(shares), "exit_share[x": 1.0})
    assert back == shares  # exit_share[10] read as layer 10, not sorted as text
    assert exit_shares(np.array([], dtype=np.int64), 4) == [0.0] * 4 and stored_shares({}) == []
    with pytest.raises(ValueError, match="exit layers must be in 1..4, got 0..5"):
        exit_shares(np.array([0, 5]), 4)


@pytest.mark.parametrize("kind", ["bert", "electra"])
def test_early_exit_flops_are_what_torch_counts_for_the_layers_and_branches_run(kind):
    """FastBERT's cost figure: a text that leaves at layer k costs k layers and the k branches it passed
    (none at speed 0), plus the head only where it reaches the last layer; equal to
    torch.utils.flop_counter's count of the serving loop, and at speed 0 to the teacher's own FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CONFIG_MAPPING, AutoModelForSequenceClassification

    from kdstore.students import early_exit_flops, encoder_flops_config, flops_per_sample, mean_early_exit_flops

    extra = {"embedding_size": 16} if kind == "electra" else {}
    config = CONFIG_MAPPING[kind](vocab_size=40, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=40, num_labels=3, pad_token_id=0, **extra)
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()
    model = EarlyExitModel(teacher, branch_dim=24).eval()
    cfg = encoder_flops_config(config, 3)
    for length in (2, 7):
        ids = torch.randint(1, 40, (1, length))
        # speed 0: no branch, the teacher; a tiny speed: every branch, nobody leaves; 1.0: everybody leaves at layer 1
        for speed, want_layer in ((0.0, 3), (1e-9, 3), (1.0, 1)):
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                _, layers = predict_logits(model, ids, torch.ones_like(ids), speed=speed)
            assert int(layers[0]) == want_layer
            said = early_exit_flops(cfg, length, exit_layer=want_layer, branch_dim=24, branches=speed > 0)
            assert said == counter.get_total_flops(), (kind, length, speed)
        assert early_exit_flops(cfg, length, exit_layer=3, branch_dim=24, branches=False) == flops_per_sample(cfg, length)
    assert mean_early_exit_flops(cfg, [4, 6], [1, 3], branch_dim=24) == round(
        (early_exit_flops(cfg, 4, exit_layer=1, branch_dim=24) + early_exit_flops(cfg, 6, exit_layer=3, branch_dim=24)) / 2)
    assert mean_early_exit_flops(cfg, [], [], branch_dim=24) == 0
    with pytest.raises(ValueError, match="exit_layer must be in 1..3, got 4"):
        early_exit_flops(cfg, 4, exit_layer=4, branch_dim=24)


def test_the_stage_stores_flops_per_speed_and_at_the_serving_speed(trained):
    """flops@S per split falls as the speed rises (fewer layers), flops@0 is the teacher's, and the stage's
    flops_per_sample (what `kd report --compare` sets beside the students') is the serving speed's over the
    texts timed (test here), as the teacher's is at full depth."""
    store = trained["store"]
    final: dict[str, dict[str, float]] = {}
    for m in store.metrics(_stage(store, "early-exit").id):
        final.setdefault(m.split, {})[m.name] = m.value
    teacher = {m.name: m.value for m in store.metrics(_stage(store, "teach").id) if m.split == "all"}
    for split in ("dev", "test"):
        f = final[split]
        assert f["flops@0"] >= f["flops@0.1"] >= f["flops@0.8"] > 0
        if f["layers@0.8"] < LAYERS:
            assert f["flops@0.8"] < f["flops@0"]
    assert final["test"]["flops@0"] == teacher["flops_per_sample"]  # both over the test texts, at full depth
    assert final["all"]["flops_per_sample"] == final["test"]["flops@0.3"]  # the serving speed of the fixture


def test_exits_that_lose_what_the_full_model_knows_are_told_to_lower_the_speed_not_to_check_the_teacher():
    """An early exit at --speed 1 (every text at layer 1) scored 57.5 % on dev, below always answering 'neg'
    (58.3 %), while its own full model (speed 0, the teacher) scored 68.3 %: the warning said "check the
    teacher first, then --epochs", neither of which is at fault. It now names the speed and the full model's figure."""
    from commands.train import _majority_note as note

    dev = {"accuracy": 0.575, "accuracy@0": 0.6833, "support[pos]": 50, "support[neg]": 70}
    stage = {"kind": "distill", "metrics": {"dev": dev, "all": {"speed": 1.0}}, "config": {"student": "early-exit", "teacher_runs": []}}
    said = note("r4", stage)
    assert said.startswith("dev accuracy 57.5% at speed 1 is less than always answering 'neg' (58.3%)")
    assert "check the teacher" not in said and "--epochs" not in said and "\n" not in said
    assert "68.3%" in said and "a lower --speed" in said and "--max-loss" in said
    # a full model no better than the majority either: the teacher is what to check, as before
    weak = {"dev": {**dev, "accuracy@0": 0.5833}, "all": {"speed": 1.0}}
    assert "check the teacher first (`kd report --run r4`), then --epochs" in note("r4", {**stage, "metrics": weak})


def test_the_kept_epoch_of_tied_dev_accuracies_is_said_to_be_chosen_by_the_tie_breakers():
    """At --speed 0 (or any speed no text exits at) every epoch scores the full model's dev accuracy: the epoch
    kept was the one of the lowest branch KL on dev, yet the summary said "(the best dev accuracy)"."""
    from commands.train import _kept_line

    def stage(accuracy, agreement, kl):
        history = [{"step": e, "split": "train", "name": "loss", "value": 0.1} for e in range(1, len(accuracy) + 1)]
        for name, values in (("accuracy", accuracy), ("agreement", agreement), ("kl", kl)):
            history += [{"step": e, "split": "dev", "name": name, "value": v} for e, v in enumerate(values, 1)]
        return {"kind": "distill", "config": {"epochs": len(accuracy), "patience": 2, "student": "early-exit"}, "history": history,
                "metrics": {"all": {"best_epoch": 1}, "dev": {"accuracy": accuracy[0]}}}

    assert _kept_line(stage([0.75, 0.75], [1.0, 1.0], [0.0015, 0.002])) == \
        "kept epoch 1 of 2 (the lowest branch KL on dev: the epochs tied on dev accuracy and agreement with the full model)"
    assert _kept_line(stage([0.7, 0.7], [0.9, 0.8], [0.003, 0.002])) == \
        "kept epoch 1 of 2 (the best agreement with the full model: the epochs tied on dev accuracy)"
    assert _kept_line(stage([0.8, 0.7], [0.9, 0.95], [0.003, 0.002])) == "kept epoch 1 of 2 (the best dev accuracy)"
