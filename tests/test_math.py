"""The pure functions: losses against hand-computed values, metrics, masking, batching, schedules, vocab."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdstore.batching import bucketed_batches, micro_batches, pad, sorted_batches
from kdstore.context_free import collapsed, frequency_loss, learned_nothing
from kdstore.losses import distillation_loss, kl_soft, logit_mse, soft_cross_entropy
from kdstore.masking import IGNORE, mask_tokens
from kdstore.pretrain import masked_positions
from kdstore.metrics import chance_macro_f1, classification_metrics, confusion_matrix, hardly_beats_majority, missed_classes, versus_majority
from kdstore.schedules import layer_decay_scales, layer_depths, linear, over_steps, warmup_linear_decay, warmup_linear_decay_step
from kdstore.textkey import normalize, text_hash
from kdstore.vocab import SPECIALS, build_vocab
from kdstore.torchutil import StepLosses, host_floats

UNIFORM = torch.tensor([[0.0, 0.0]])
LN3 = torch.tensor([[math.log(3.0), 0.0]])  # softmax = (0.75, 0.25)


def test_micro_batches_split_rows_into_pieces_whose_weighted_mean_losses_add_up():
    """--grad-accum K: K consecutive pieces, each weighed by its share of the rows, so that the pieces' mean
    losses so weighed add up to the mean over the rows (and their gradients to its gradient); always K pieces
    (every torchrun rank runs as many), an empty one the first row at share 0."""
    rows = np.array([7, 3, 9, 1, 4, 8, 2])
    assert micro_batches(rows, 1) == [(rows, 1.0)]
    pieces = micro_batches(rows, 3)
    assert [p.tolist() for p, _ in pieces] == [[7, 3, 9], [1, 4], [8, 2]]
    assert [w for _, w in pieces] == [3 / 7, 2 / 7, 2 / 7]
    losses = np.array([0.5, 1.5, 2.0, 0.25, 3.0, 1.0, 0.75])
    by_row = dict(zip(rows.tolist(), losses))
    assert sum(w * np.mean([by_row[i] for i in p]) for p, w in pieces) == pytest.approx(losses.mean())
    few = micro_batches(np.array([5, 6]), 4)  # fewer rows than pieces: still 4 passes, two of them weighing nothing
    assert [(p.tolist(), w) for p, w in few] == [([5], 0.5), ([6], 0.5), ([5], 0.0), ([5], 0.0)]
    with pytest.raises(ValueError):
        micro_batches(rows, 0)


def test_kl_soft_matches_hand_computation():
    expected_t1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kl_soft(UNIFORM, LN3, temperature=1.0).item() == pytest.approx(expected_t1, abs=1e-6)
    # T = 2: teacher logits halved, result scaled by T^2 = 4
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    expected_t2 = 4 * (p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5))
    assert kl_soft(UNIFORM, LN3, temperature=2.0).item() == pytest.approx(expected_t2, abs=1e-6)
    assert kl_soft(LN3, LN3, temperature=3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_soft_cross_entropy_and_mse():
    assert soft_cross_entropy(UNIFORM, LN3, temperature=1.0).item() == pytest.approx(math.log(2), abs=1e-6)
    # T = 2: a uniform student's log-probabilities stay log 0.5 whatever the teacher, so the cross
    # entropy is still log 2, scaled by T^2 = 4
    assert soft_cross_entropy(UNIFORM, LN3, temperature=2.0).item() == pytest.approx(4 * math.log(2), abs=1e-6)
    # a non-uniform student at T = 2: logits (log 9, 0) / 2 -> probabilities (0.75, 0.25)
    p = math.sqrt(3) / (math.sqrt(3) + 1)  # teacher (log 3, 0) / 2
    expected = -4 * (p * math.log(0.75) + (1 - p) * math.log(0.25))
    assert soft_cross_entropy(torch.tensor([[math.log(9.0), 0.0]]), LN3, temperature=2.0).item() == pytest.approx(expected, abs=1e-6)
    assert logit_mse(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)).item() == pytest.approx(2.5)
    # the teacher's per-sample shift is no target: raw logits and log-probabilities teach alike
    raw = torch.tensor([[2.0, -1.0, 0.5]])
    student = torch.tensor([[0.3, 0.1, -0.2]])
    assert logit_mse(student, raw).item() == pytest.approx(logit_mse(student, torch.log_softmax(raw, -1)).item())
    assert logit_mse(student, raw).item() == pytest.approx(((student - (raw - 0.5)) ** 2).mean().item())


def test_distillation_loss_mixes_hard_and_soft_and_skips_hard_for_unlabeled():
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    labels = torch.tensor([0, -1])
    kl_a = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    expected = (0.5 * kl_a + 0.5 * math.log(2) + 0.0) / 2  # sample B: soft only, and KL(p||p) = 0
    got = distillation_loss(student, teacher, labels, alpha=0.5, temperature=1.0)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    hard_only = distillation_loss(student[:1], teacher[:1], labels[:1], alpha=0.0, temperature=1.0)
    assert hard_only.item() == pytest.approx(math.log(2), abs=1e-6)
    with pytest.raises(ValueError):
        distillation_loss(student, teacher, labels, alpha=1.5, temperature=1.0)
    # untied, alpha is a loss weight of its own (TextBrewer's kd_loss_weight), past 1 too
    assert distillation_loss(student, teacher, labels, alpha=2.0, temperature=1.0, hard_weight=1.0).item() == \
        pytest.approx(2.0 * distillation_loss(student, teacher, labels, alpha=1.0, temperature=1.0, hard_weight=0.5).item(), abs=1e-6)
    with pytest.raises(ValueError, match="alpha must be a non-negative number"):
        distillation_loss(student, teacher, labels, alpha=-0.5, temperature=1.0, hard_weight=1.0)
    # the hard weight on its own (not 1 - alpha): labeled 1.0 * soft + 2.0 * hard, unlabeled soft alone
    untied = distillation_loss(student, teacher, labels, alpha=1.0, temperature=1.0, hard_weight=2.0)
    assert untied.item() == pytest.approx((kl_a + 2.0 * math.log(2) + 0.0) / 2, abs=1e-6)
    # untied, alpha weighs the unlabeled sample's soft loss too (TextBrewer's KD weight): here it is not 0
    both = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    flat = torch.zeros(2, 2)  # each sample's soft loss is kl_a, the labeled one's hard loss log 2
    untied = distillation_loss(flat, both, labels, alpha=0.5, temperature=1.0, hard_weight=1.0)
    assert untied.item() == pytest.approx((0.5 * kl_a + math.log(2) + 0.5 * kl_a) / 2, abs=1e-6)
    tied = distillation_loss(flat, both, labels, alpha=0.5, temperature=1.0)
    assert tied.item() == pytest.approx((0.5 * kl_a + 0.5 * math.log(2) + kl_a) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="hard_weight"):
        distillation_loss(student, teacher, labels, alpha=0.5, temperature=1.0, hard_weight=-1.0)


def test_distillation_loss_refuses_shapes_that_would_broadcast():
    """A (1, K) teacher broadcast over a batch of K-class students, and a (B, 1) column of labels
    spread the per-row losses into a (B, B) table: both gave a loss, without a word."""
    student, teacher, labels = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, -1, 2])
    with pytest.raises(ValueError, match=r"both be \(batch, classes\), got \(4, 3\) and \(1, 3\)"):
        distillation_loss(student, teacher[:1], labels, alpha=0.5, temperature=2.0)
    with pytest.raises(ValueError, match=r"labels must be \(4,\), one class id \(or -1\) a row, got \(4, 1\)"):
        distillation_loss(student, teacher, labels.view(4, 1), alpha=0.5, temperature=2.0)
    with pytest.raises(ValueError, match=r"per-sample temperatures must be \(4,\)"):
        distillation_loss(student, teacher, labels, alpha=0.5, temperature=torch.full((4, 1), 2.0))
    assert distillation_loss(student, teacher, labels, alpha=0.5, temperature=torch.full((4,), 2.0)) == \
        pytest.approx(float(distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0)))


def test_distillation_loss_edge_weights_and_a_batch_without_labels_by_hand():
    """alpha 1 ignores the labels, alpha 0 leaves an unlabeled sample its soft loss whole, a batch of
    unlabeled samples only has no hard loss averaged over zero rows (no NaN), hard weight 0 is alpha * soft."""
    student = torch.tensor([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[math.log(3.0), 0.0], [0.0, math.log(3.0)]])
    kl_a = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # KL((.75, .25) || (.5, .5)), either order of the classes
    for labels in (torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([-1, -1])):
        assert distillation_loss(student, teacher, labels, alpha=1.0, temperature=1.0).item() == pytest.approx(kl_a, abs=1e-6)
    mixed = torch.tensor([0, -1])
    # alpha 0, tied: the labeled sample learns from its label alone (log 2), the unlabeled one from the teacher (kl_a)
    assert distillation_loss(student, teacher, mixed, alpha=0.0, temperature=1.0).item() == pytest.approx((math.log(2) + kl_a) / 2, abs=1e-6)
    unlabeled = torch.tensor([-1, -1])
    loss = distillation_loss(student, teacher, unlabeled, alpha=0.3, temperature=1.0)
    assert loss.item() == pytest.approx(kl_a, abs=1e-6)  # tied: the soft loss at full weight
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    untied = distillation_loss(student, teacher, unlabeled, alpha=0.3, temperature=1.0, hard_weight=2.0)
    assert untied.item() == pytest.approx(0.3 * kl_a, abs=1e-6)  # untied: alpha * soft, no hard term
    assert distillation_loss(student, teacher, mixed, alpha=0.3, temperature=1.0, hard_weight=0.0).item() == pytest.approx(0.3 * kl_a, abs=1e-6)
    # T = 1 is the textbook KL (no factor), as torch computes it
    s, t = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[1.0, 0.0, -1.0]])
    reference = torch.nn.functional.kl_div(torch.log_softmax(s, -1), torch.log_softmax(t, -1), log_target=True, reduction="sum")
    assert kl_soft(s, t, temperature=1.0).item() == pytest.approx(reference.item(), abs=1e-6)


def test_balanced_class_weights_and_the_losses_they_weigh_by_hand():
    """--class-weight balanced: n / (C x n_c) over the labeled rows (-1 left out), a class with no row 0;
    the rows' weights average 1. Each labeled row's hard loss is times its class's weight; the soft loss
    and the unlabeled rows are as they were; the weighted cross entropy is a mean over rows."""
    from kdstore.losses import balanced_class_weights, weighted_cross_entropy

    labels = torch.tensor([0] * 6 + [1] * 3 + [2] + [-1, -1])
    w = balanced_class_weights(labels, 4)
    assert w.tolist() == pytest.approx([10 / 18, 10 / 9, 10 / 3, 0.0])
    assert float(w[labels[labels >= 0]].mean()) == pytest.approx(1.0)
    assert balanced_class_weights(torch.tensor([-1]), 2).tolist() == [0.0, 0.0]  # no labeled row: nothing weighs
    with pytest.raises(ValueError, match="below num_classes 2"):
        balanced_class_weights(torch.tensor([0, 2]), 2)

    logits, gold = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([0, 1, 1])
    rows = torch.nn.functional.cross_entropy(logits, gold, reduction="none")
    cw = torch.tensor([0.5, 2.0])
    assert weighted_cross_entropy(logits, gold).item() == pytest.approx(rows.mean().item())
    assert weighted_cross_entropy(logits, gold, cw).item() == pytest.approx(((0.5 * rows[0] + 2 * rows[1] + 2 * rows[2]) / 3).item())

    student = torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0], [math.log(3.0), 0.0]])
    kl_a = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    mixed = torch.tensor([0, -1, 1])  # row 0 class 0, row 1 unlabeled, row 2 class 1
    got = distillation_loss(student, teacher, mixed, alpha=0.5, temperature=1.0, class_weights=cw)
    expected = ((0.5 * kl_a + 0.5 * 0.5 * math.log(2)) + 0.0 + (0.5 * kl_a + 0.5 * 2.0 * math.log(2))) / 3
    assert got.item() == pytest.approx(expected, abs=1e-6)
    ones = distillation_loss(student, teacher, mixed, alpha=0.5, temperature=1.0, class_weights=torch.ones(2))
    assert ones.item() == pytest.approx(distillation_loss(student, teacher, mixed, alpha=0.5, temperature=1.0).item())


def test_distillation_loss_gradients_flow_to_student_only():
    student = torch.zeros(2, 3, requires_grad=True)
    teacher = torch.randn(2, 3)
    distillation_loss(student, teacher, torch.tensor([1, -1]), alpha=0.3, temperature=2.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_metrics_against_hand_computation():
    y_true, y_pred = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])
    m = classification_metrics(y_true, y_pred, num_classes=3, class_names=["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["f1[a]"] == pytest.approx(0.5) and m["f1[b]"] == pytest.approx(0.8) and m["f1[c]"] == 0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert m["macro_precision"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert m["macro_recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert confusion_matrix(y_true, y_pred, num_classes=3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    with pytest.raises(ValueError, match="outside"):
        classification_metrics(np.array([0, 3]), np.array([0, 1]), num_classes=3)


def test_macro_average_skips_classes_absent_from_both():
    m = classification_metrics(np.array([0, 1]), np.array([0, 1]), num_classes=3)
    assert m["macro_f1"] == pytest.approx(1.0)


def test_mask_tokens_rules():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (64, 40))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    special = (ids == 2) | (ids == 3)
    corrupted, labels = mask_tokens(ids, special, mask_id=4, vocab_size=100, probability=0.15, generator=gen, first_regular_id=5)
    chosen = labels != IGNORE
    assert not (chosen & special).any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(corrupted[~chosen], ids[~chosen])
    rate = chosen.float().mean().item()
    assert 0.10 < rate < 0.22
    masked_share = (corrupted[chosen] == 4).float().mean().item()
    assert 0.65 < masked_share < 0.95
    again, _ = mask_tokens(ids, special, mask_id=4, vocab_size=100, probability=0.15, generator=torch.Generator().manual_seed(0), first_regular_id=5)
    assert torch.equal(again, corrupted)  # deterministic under a seed


def test_batching_covers_every_index_once_and_groups_lengths():
    lengths = np.random.default_rng(0).integers(1, 100, size=1000)
    batches = bucketed_batches(lengths, 32, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 10  # random batches would spread ~90
    ordered = sorted_batches(lengths, 100)
    assert all(np.all(np.diff(lengths[np.concatenate(ordered)]) >= 0) for _ in [0])
    for bad in (0, -3):  # a negative size gave no batches at all: every row left unscored, as zeros
        with pytest.raises(ValueError, match="at least 1"):
            sorted_batches(lengths, bad)
    ids, mask = pad([[5, 6, 7], [8]], 0, min_len=4)
    assert ids.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]] and mask.sum().item() == 4
    ids, mask = pad([[5, 6, 7, 1, 2], [8]], 0, multiple=4)  # rounded up: 5 -> 8
    assert ids.shape == (2, 8) and mask.sum().item() == 6 and pad([[5] * 8], 0, multiple=4)[0].shape == (1, 8)


def test_scoring_a_large_pool_spreads_long_texts_over_its_progress_bar():
    """Scoring ran its length-sorted batches shortest first, and its bar counts texts: a minute into a
    380,000-text pool (a 2-core CPU, kd distill's logits) it said 27 s left of 65 s, at the start 10 s of
    37 s. The batches are the same (so are the logits), run in an order whose every part holds short
    and long texts alike, so that the texts counted track the work done."""
    from kdstore.predictor import student_logits
    from kdstore.students import StudentConfig, build_student
    from kdstore.teacher import score
    from kdstore.vocab import build_vocab, make_tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    rng = np.random.default_rng(0)
    texts = ["好" * int(n) for n in rng.integers(1, 60, size=1200)]
    tokenizer = make_tokenizer(build_vocab(texts + ["差"]))
    student = build_student(StudentConfig(kind="textcnn", vocab_size=len(tokenizer), num_classes=2, embed_dim=8, num_filters=4)).eval()
    teacher = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=16, num_labels=2)).eval()
    for model, run in ((student, lambda: student_logits(student, tokenizer, texts, max_len=64, device=torch.device("cpu"), batch_size=32)),
                       (teacher, lambda: score(teacher, tokenizer, texts, max_len=64, batch_size=32, device=torch.device("cpu")))):
        widths = []  # the tokens of each batch, in the order run
        hook = model.register_forward_pre_hook(lambda m, args, kwargs: widths.append(
            (kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]).numel()), with_kwargs=True)
        first = run()
        hook.remove()
        done = np.cumsum(widths) / np.sum(widths)
        quarter, half = done[len(done) // 4 - 1], done[len(done) // 2 - 1]  # the work done when the bar shows 1/4, 1/2 of the texts
        assert 0.15 < quarter < 0.35 and 0.4 < half < 0.6, (type(model).__name__, quarter, half)
        assert first.shape == (len(texts), 2)


def test_schedules():
    assert warmup_linear_decay(0.0, warmup=0.1) == 0.0
    assert warmup_linear_decay(0.05, warmup=0.1) == pytest.approx(0.5)
    assert warmup_linear_decay(0.1, warmup=0.1) == pytest.approx(1.0)
    assert warmup_linear_decay(0.55, warmup=0.1) == pytest.approx(0.5)
    assert warmup_linear_decay(1.0, warmup=0.1) == 0.0
    assert linear(4.0, 1.0, 0.5) == pytest.approx(2.5) and linear(4.0, 1.0, 2.0) == 1.0
    # --temperature 4 --temperature-end 1 over 4 steps: the last step is at the end value
    assert [over_steps(4.0, 1.0, s, 4) for s in range(4)] == pytest.approx([4.0, 3.0, 2.0, 1.0])
    assert over_steps(4.0, 1.0, 0, 1) == 4.0 and over_steps(0.9, None, 3, 4) == 0.9


def test_no_optimizer_step_trains_at_a_learning_rate_of_0():
    """Each step's factor is the schedule at the step's middle: taken at its start, the first step was at 0,
    and a training of one step (`kd teach --epochs 1` on fewer texts than a batch) left the model as it was."""
    assert warmup_linear_decay_step(0, 1, warmup=0.1) == pytest.approx(0.5 / 0.9)
    for total in (1, 2, 3, 9, 10, 100):
        factors = [warmup_linear_decay_step(s, total, warmup=0.1) for s in range(total)]
        assert min(factors) > 0 and max(factors) <= 1.0
    # 10 steps, a warm-up of one: step 0 at the middle of the ramp, then the decay from its start
    assert warmup_linear_decay_step(0, 10, warmup=0.1) == pytest.approx(0.5)
    assert warmup_linear_decay_step(1, 10, warmup=0.1) == pytest.approx(0.85 / 0.9)
    assert warmup_linear_decay_step(0, 4, warmup=0.0) == pytest.approx(0.875)


def test_layer_decay_scales_follow_depth():
    names = [
        "bert.embeddings.word_embeddings.weight", "bert.embeddings.LayerNorm.bias",
        "bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.1.output.dense.bias",
        "bert.encoder.layer.10.output.dense.bias", "bert.pooler.dense.weight", "classifier.weight",
    ]
    assert layer_depths(names) == [0, 0, 1, 2, 11, 12, 12]
    scales = layer_decay_scales(names, 0.5)
    assert scales == [0.5 ** 12, 0.5 ** 12, 0.5 ** 11, 0.5 ** 10, 0.5, 1.0, 1.0]
    assert layer_decay_scales(names, 1.0) == [1.0] * len(names)
    # other architectures' names: "layers.i" (e.g. DistilBERT-like) and position embeddings
    assert layer_depths(["embeddings.position_embeddings.weight", "transformer.layers.0.ffn.weight", "head.bias"]) == [0, 1, 2]
    # ALBERT's shared group, GPT-2's blocks and token embeddings
    assert layer_depths(["albert.embeddings.word_embeddings.weight", "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight", "classifier.bias"]) == [0, 1, 2]
    # ALBERT with num_hidden_groups > 1: group 1 runs after group 0 (its layers are the upper ones), each group's
    # albert_layers numbered from 0 again (both groups were at one depth, one rate)
    assert layer_depths(["albert.embeddings.word_embeddings.weight", "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight",
                         "albert.encoder.albert_layer_groups.1.albert_layers.0.ffn.weight", "classifier.bias"]) == [0, 1, 2, 3]
    assert layer_depths(["albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight", "albert.encoder.albert_layer_groups.0.albert_layers.1.ffn.weight",
                         "albert.encoder.albert_layer_groups.1.albert_layers.0.ffn.weight", "albert.encoder.albert_layer_groups.1.albert_layers.1.ffn.weight",
                         "classifier.bias"]) == [1, 2, 3, 4, 5]
    assert layer_depths(["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_fc.bias", "score.weight"]) == [0, 0, 1, 2, 3]
    # the encoder's parts outside its layers: DeBERTa-v2's relative-position table and its norm (the norm was at the
    # head's rate, the table at the embeddings'), MPNet's relative bias, ALBERT's embedding projection
    assert layer_depths(["deberta.embeddings.word_embeddings.weight", "deberta.encoder.layer.0.attention.self.query_proj.weight",
                         "deberta.encoder.rel_embeddings.weight", "deberta.encoder.LayerNorm.weight", "pooler.dense.weight",
                         "classifier.weight"]) == [0, 1, 0, 0, 2, 2]
    assert layer_depths(["mpnet.encoder.relative_attention_bias.weight", "mpnet.encoder.layer.1.output.dense.bias", "classifier.dense.bias"]) == [0, 2, 3]
    assert layer_depths(["albert.encoder.embedding_hidden_mapping_in.weight", "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight",
                         "albert.pooler.weight"]) == [0, 1, 2]
    # a pre-LayerNorm encoder's final norm, after its last layer (MegatronBERT's encoder.ln, as Erlangshen-MegatronBert;
    # XLM-RoBERTa-XL's and RoBERTa-PreLayerNorm's encoder.LayerNorm): not at the embeddings' rate, as DeBERTa-v2's table norm
    assert layer_depths(["bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.query.weight",
                         "bert.encoder.layer.1.output.dense.bias", "bert.encoder.ln.weight", "classifier.weight"]) == [0, 1, 2, 3, 3]
    assert layer_depths(["roberta.embeddings.word_embeddings.weight", "roberta.encoder.layer.0.output.dense.bias",
                         "roberta.encoder.LayerNorm.weight", "classifier.out_proj.bias"]) == [0, 1, 2, 2]
    with pytest.raises(ValueError, match="layer decay"):
        layer_decay_scales(names, 0.0)
    with pytest.raises(ValueError, match="numbered encoder layers"):  # names it cannot place: refused, not guessed
        layer_decay_scales(["word_vectors.weight", "encoder.rnn.weight", "classifier.weight"], 0.8)
    assert layer_decay_scales(["word_vectors.weight", "classifier.weight"], 1.0) == [1.0, 1.0]  # no decay: nothing to place


def test_vocab_and_text_keys():
    tokens = build_vocab(["好好好 ab", "好差", "罕"], min_count=1)
    assert tokens[: len(SPECIALS)] == SPECIALS
    assert tokens[len(SPECIALS)] == "好"  # most frequent first
    assert {"a", "##a", "b", "##b", "差", "罕"} <= set(tokens) and "##好" not in tokens
    assert "罕" not in build_vocab(["好好", "罕"], min_count=2)
    # a Latin word with one rare letter was one [UNK] at --min-count 2: letters and digits seen once stay
    rare_letter = build_vocab(["好好 zoom", "好 too 7"], min_count=2)
    assert {"z", "##z", "7", "##7", "m", "##m"} <= set(rare_letter) and "##o" in rare_letter
    # full-width ones too: ＧＯＯＤ with its ｄ and ｇ seen once was one [UNK] (review i18n29)
    assert {"ｇ", "##ｄ", "７"} <= set(build_vocab(["好好 ＧＯＯＤ ｏｏ", "好 ７"], min_count=2))
    # what is punctuation is the tokenizer's call, not Python's newer Unicode tables': ⹗ (U+2E57) and ؝
    # (U+061D) stay inside a word, and were kept as words of their own only, making the word [UNK]
    from kdstore.vocab import make_tokenizer

    texts = ["ab⹗c好", "好⹗؝", "x؝y"]
    tokenizer = make_tokenizer(build_vocab(texts, min_count=1))
    assert all(tokenizer.unk_token_id not in tokenizer(t)["input_ids"] for t in texts)
    assert normalize("  ＡＢＣ　好\t\n") == "abc 好"
    assert text_hash("ＡＢＣ 好") == text_hash("abc  好") != text_hash("abc 差")


def test_count_chars_normalizes_each_distinct_character_once(monkeypatch):
    """Every text went through BERT's normalizer whole: a 20-million-character --corpus line took a
    minute and 4 GB to count. The counts are those of the normalized texts, spaces left out."""
    from collections import Counter

    import kdstore.vocab as vocab

    texts = ["ＡＢＣ好\t好 Café", "ΣΑΣ σς 한국어\x00\u200b\u3000①", "好" * 100_000 + "差"]
    normalize = vocab._normalizer()
    expected = Counter(ch for text in texts for ch in normalize(text) if not ch.isspace())
    seen: list[str] = []
    monkeypatch.setattr(vocab, "_normalizer", lambda: lambda text: seen.append(text) or normalize(text))
    counts = vocab.count_chars(texts)
    assert counts == expected and counts["好"] == 100_002 and counts["e"] == 1 and counts["ᄒ"] == 1
    assert sum(map(len, seen)) == len(set("".join(texts)))  # each distinct character once, not 100,000 of 好


def test_whole_word_masking_chooses_words_whole():
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 50, (32, 12))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    # words of two tokens: positions (1,2), (3,4), ... share the group of their first token
    groups = torch.tensor([-1] + [1 + 2 * (i // 2) for i in range(11)]).repeat(32, 1)
    _, labels = mask_tokens(ids, special, mask_id=4, vocab_size=50, probability=0.3, generator=gen, groups=groups)
    chosen = labels != IGNORE
    for a in range(1, 11, 2):
        assert torch.equal(chosen[:, a], chosen[:, a + 1])  # both tokens of a word or neither


@pytest.mark.parametrize("words", [False, True])
def test_short_texts_are_masked_at_the_mask_probability(words):
    """One position (one word) forced in every row masked texts of two or three tokens at 40-100 %, not
    the 15 % asked; only a batch with nothing chosen at all gets one, its whole word."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 50, (4000, 4))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True  # [CLS] and three tokens; with words, tokens 2 and 3 are one word
    groups = torch.tensor([-1, 1, 2, 2]).repeat(4000, 1) if words else None
    _, labels = mask_tokens(ids, special, mask_id=4, vocab_size=50, probability=0.15, generator=gen, groups=groups)
    rate = (labels != IGNORE)[:, 1:].float().mean().item()
    assert 0.13 < rate < 0.17, rate
    for seed in range(20):  # a batch of one short row: nothing drawn, still one word chosen
        _, labels = mask_tokens(ids[:1], special[:1], mask_id=4, vocab_size=50, probability=0.01,
                                generator=torch.Generator().manual_seed(seed), groups=None if groups is None else groups[:1])
        chosen = (labels != IGNORE)[0].tolist()
        assert chosen in ([False, True, False, False], [False, False, True, True]) if words else sum(chosen) == 1
    _, labels = mask_tokens(ids[:2], torch.ones_like(special[:2]), mask_id=4, vocab_size=50, probability=0.5, generator=gen)
    assert (labels == IGNORE).all()  # a batch of special tokens only: nothing to choose


def test_token_groups_follow_word_boundaries():
    from kdstore.segment import token_groups, word_starts

    # [CLS] 质 量 很 好 [SEP] with words 质量 | 很 | 好
    offsets = [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (0, 0)]
    assert token_groups(offsets, [0, 2, 3]) == [-1, 1, 1, 3, 4, -1]
    starts = word_starts("质量很好")
    assert starts[0] == 0 and all(a < b for a, b in zip(starts, starts[1:]))


def test_whole_word_masking_keeps_a_words_wordpieces_in_one_group():
    """jieba cuts ｉＰｈｏｎｅ into letters and Pokémon into Pok, é, mon: their ## pieces were groups of
    their own, each letter masked alone and guessed from the rest of its word, which whole-word
    masking is there to prevent."""
    from kdstore.pretrain import PretrainConfig, _encode_with_groups
    from kdstore.segment import token_groups
    from kdstore.vocab import build_vocab, make_tokenizer

    # [CLS] 我 p ##o ##k ##e ##m [SEP], jieba's words 我 | Pok | é | m
    offsets = [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (0, 0)]
    assert token_groups(offsets, [0, 1, 4, 5]) == [-1, 1, 2, 2, 2, 5, 6, -1]  # (as jieba has it)
    assert token_groups(offsets, [0, 1, 4, 5], [False, False, False, True, True, True, True, False]) == [-1, 1, 2, 2, 2, 2, 2, -1]
    texts = ["新买的ｉＰｈｏｎｅ很好用", "我的Pokémon卡片"]
    tokenizer = make_tokenizer(build_vocab(texts))
    ids, groups, _ = _encode_with_groups(tokenizer, texts, PretrainConfig(max_len=32))
    for row, group in zip(ids, groups.batch([0, 1])):
        tokens = tokenizer.convert_ids_to_tokens([int(x) for x in row])
        assert len(group) == len(tokens)
        for k, token in enumerate(tokens):
            if token.startswith("##"):
                assert group[k] == group[k - 1], list(zip(tokens, group))
    assert groups.batch([0])[0][4:11] == [4, 4, 4, 4, 4, 4, 10]  # ｉ ##ｐ ... ##ｅ, then 很


def test_word_groups_segment_only_the_texts_a_batch_draws(monkeypatch):
    # pre-training segmented every text of the store before its first step (most of a short run's
    # time), and set jieba's log level once per text (each call clears every logger's cache)
    import jieba

    from kdstore import segment
    from kdstore.pretrain import PretrainConfig, _encode_with_groups
    from kdstore.vocab import build_vocab, make_tokenizer

    texts = ["质量很好，物流也快", "屏幕太暗了", "hello world 不错", "价格便宜量又足", "客服态度很差"]
    tokenizer = make_tokenizer(build_vocab(texts))
    levels, cuts = [], []
    segment.jieba_module.cache_clear()
    monkeypatch.setattr(jieba, "setLogLevel", lambda level: levels.append(level))
    real = segment.word_starts
    monkeypatch.setattr("kdstore.pretrain.word_starts", lambda text: cuts.append(text) or real(text))
    ids, groups, cut = _encode_with_groups(tokenizer, texts, PretrainConfig(max_len=8))
    full = tokenizer(texts, truncation=True, max_length=8, return_offsets_mapping=True)
    assert [list(x) for x in ids] == full["input_ids"]
    assert cuts == []  # nothing segmented before training
    assert groups.batch([3, 1, 3]) == [segment.token_groups(full["offset_mapping"][i], real(texts[i])) for i in (3, 1, 3)]
    groups.batch([1, 0])
    assert cuts == [texts[3], texts[1], texts[0]]  # each text once, when first drawn
    assert len(levels) == 1


def test_word_groups_segment_only_the_part_of_a_long_text_its_tokens_cover(monkeypatch):
    # a corpus line of a whole article was segmented in full for its first --max-len tokens
    from kdstore import segment
    from kdstore.pretrain import PretrainConfig, _encode_with_groups
    from kdstore.vocab import build_vocab, make_tokenizer

    article = "质量很好，物流也快。" * 300 + "屏幕太暗了"
    texts = [article, "质量很好物流也快" * 3]  # (no break in the second: the block it cuts into is kept whole)
    tokenizer = make_tokenizer(build_vocab(texts))
    cuts = []
    monkeypatch.setattr("kdstore.pretrain.word_starts", lambda text: cuts.append(text) or segment.word_starts(text))
    _, groups, _ = _encode_with_groups(tokenizer, texts, PretrainConfig(max_len=16))
    full = tokenizer(texts, truncation=True, max_length=16, return_offsets_mapping=True)["offset_mapping"]
    assert groups.batch([0, 1]) == [segment.token_groups(full[i], segment.word_starts(texts[i])) for i in (0, 1)]
    assert cuts == [article[:14], texts[1]]  # 质量很好，物流也快。质量很好: through the word the 14th token is in


def test_word_groups_of_a_line_without_punctuation_segment_a_margin_past_the_cut(monkeypatch):
    """A corpus line of one jieba block (no punctuation or space) was segmented whole: jieba's HMM
    takes time in the square of a run of single characters (10 s for 50,000, hours for a megabyte
    line: kd pretrain never reached its first step). The groups come out as the whole line's."""
    from kdstore import segment
    from kdstore.pretrain import SEGMENT_MARGIN, PretrainConfig, _encode_with_groups
    from kdstore.vocab import build_vocab, make_tokenizer

    texts = ["质量很好物流也快" * 6_000, "很好" * 20_000]
    tokenizer = make_tokenizer(build_vocab(texts))
    cuts = []
    monkeypatch.setattr("kdstore.pretrain.word_starts", lambda text: cuts.append(text) or segment.word_starts(text))
    _, groups, _ = _encode_with_groups(tokenizer, texts, PretrainConfig(max_len=16))
    full = tokenizer(texts, truncation=True, max_length=16, return_offsets_mapping=True)["offset_mapping"]
    expected = [segment.token_groups(full[0], segment.word_starts(texts[0])), segment.token_groups(full[1], segment.word_starts(texts[1][:2000]))]
    assert groups.batch([0, 1]) == expected
    assert cuts == [texts[0][: 14 + SEGMENT_MARGIN], texts[1][: 14 + SEGMENT_MARGIN]]


def test_word_groups_of_a_megabyte_line_come_from_a_prefix(monkeypatch):
    """Whole-word masking handed the tokenizer the whole corpus line (with offsets): a fast
    tokenizer that truncates keeps every cut-off piece, seconds and about a gigabyte for a
    megabyte line; the ids were already read from a prefix. The groups come out the same."""
    from kdstore import segment
    from kdstore.pretrain import PretrainConfig, _encode_with_groups
    from kdstore.vocab import build_vocab, make_tokenizer

    article = "质量很好，物流也快。" * 100_000
    word = "好" + "x" * 5000 + " 书"  # a word the 4,096-character prefix cuts: one [UNK] only when whole
    texts = [article, word, "屏幕太暗了"]
    tokenizer = make_tokenizer(build_vocab(texts))
    _, groups, _ = _encode_with_groups(tokenizer, texts, PretrainConfig(max_len=16))
    full = tokenizer(texts, truncation=True, max_length=16, return_offsets_mapping=True)["offset_mapping"]
    expected = [segment.token_groups(full[i], segment.word_starts(t)) for i, t in enumerate([article[:40], *texts[1:]])]
    seen = []
    real = tokenizer.__class__.__call__
    monkeypatch.setattr(tokenizer.__class__, "__call__", lambda self, t, **kw: seen.append(max(map(len, t))) or real(self, t, **kw))
    assert groups.batch([0, 1, 2]) == expected
    assert seen == [4096, len(word)]  # the prefixes, then the text whose prefix gave other ids, whole


def test_student_flops_by_hand():
    from kdstore.students import StudentConfig, flops_per_sample

    cnn = StudentConfig(kind="textcnn", vocab_size=10, num_classes=2, embed_dim=4, kernel_sizes=(2,), num_filters=3)
    # one conv of width 2 over 5 tokens: 4 windows x (4*3*2) MACs, x2 for FLOPs; then 3 -> 2 linear
    assert flops_per_sample(cnn, 5) == 2 * 4 * 3 * 2 * 4 + 2 * 3 * 2
    gru = StudentConfig(kind="bigru", vocab_size=10, num_classes=2, embed_dim=4, hidden=3)
    assert flops_per_sample(gru, 5) == 2 * 3 * 2 * (4 * 3 + 3 * 3) * 5 + 2 * (2 * 3 * 3 + 3 * 2)


def test_mean_flops_per_sample_averages_each_texts_flops_by_hand():
    """kd distill's flops_per_sample: the mean of each timed text's FLOPs, not the FLOPs of a text of
    the mean length (rounded), which understated a transformer's attention (it grows with the square)."""
    from transformers import BertConfig

    from kdstore.students import StudentConfig, mean_flops_per_sample, student_bert_config

    h, inter, c = 32, 64, 3
    bert = student_bert_config(BertConfig(vocab_size=50, hidden_size=h, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=inter), layers=1, hidden=None, num_classes=c)
    tiny = StudentConfig(kind="transformer", vocab_size=50, num_classes=c, bert=bert)

    def by_hand(n):  # one layer: q, k, v, o and the feed-forward, then scores and their weighted sum, pooler and head
        return 2 * n * (4 * h * h + 2 * h * inter) + 2 * 2 * n * n * h + 2 * (h * h + h * c)

    assert mean_flops_per_sample(tiny, [4, 10]) == (by_hand(4) + by_hand(10)) // 2
    assert mean_flops_per_sample(tiny, [4, 10]) > by_hand(7)  # the old figure: a text of the mean length
    cnn = StudentConfig(kind="textcnn", vocab_size=10, num_classes=2, embed_dim=4, kernel_sizes=(2,), num_filters=3)
    # 2 and 3 tokens: 1 and 2 windows of 4*3*2 MACs; the mean, 2.5, rounded to 2 gave 1 window
    assert mean_flops_per_sample(cnn, np.array([2, 3])) == 2 * 4 * 3 * 2 * 1.5 + 2 * 3 * 2
    assert mean_flops_per_sample(cnn, []) == 0


def test_electra_student_flops_count_the_embedding_projection():
    """An ELECTRA student's embeddings (narrower than its layers) are projected to the hidden size
    for every token: that matrix product was left out of its FLOPs."""
    from transformers import BertConfig, ElectraConfig

    from kdstore.students import StudentConfig, flops_per_sample, student_bert_config

    def flops(config, length):
        bert = student_bert_config(config, layers=2, hidden=None, num_classes=3)
        return flops_per_sample(StudentConfig(kind="transformer", vocab_size=50, num_classes=3, bert=bert), length)

    sizes = dict(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
    h, inter, length = 32, 64, 7
    plain = 2 * (2 * length * (4 * h * h + 2 * h * inter) + 4 * length * length * h) + 2 * (h * h + h * 3)
    assert flops(BertConfig(**sizes), length) == plain
    assert flops(ElectraConfig(embedding_size=32, **sizes), length) == plain  # as wide: no projection
    assert flops(ElectraConfig(embedding_size=16, **sizes), length) == plain + 2 * length * 16 * h


def test_student_flops_equal_torch_flop_counter_on_short_texts_too():
    """``flops_per_sample`` (2 FLOPs per multiply-add) is what ``torch.utils.flop_counter`` counts for
    one text run alone, for each student kind and at every length: a TextCNN runs on at least its widest
    kernel's width (a 2-token text was counted as 1 window of width 4 and 1 of width 3, where the model
    convolves 4 positions: 3, 2 and 1 windows), a BiRNN on at least one step (an empty text counted 0)."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, ElectraConfig

    from kdstore.students import StudentConfig, build_student, flops_per_sample, student_bert_config

    sizes = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    configs = [StudentConfig(kind=k, vocab_size=50, num_classes=3, embed_dim=16, num_filters=8, hidden=12)
               for k in ("textcnn", "bigru")]
    configs += [StudentConfig(kind="transformer", vocab_size=50, num_classes=3,
                              bert=student_bert_config(c, layers=1, hidden=w, num_classes=3))
                for c in (BertConfig(**sizes), ElectraConfig(embedding_size=16, **sizes)) for w in (None, 64)]
    for cfg in configs:
        model = build_student(cfg).eval()
        for length in (0, 1, 2, 3, 9) if cfg.kind != "transformer" else (2, 3, 9):  # (a transformer's [CLS] and [SEP])
            width = max(length, model.min_len)  # as kd pads a text for this model
            ids = torch.zeros(1, width, dtype=torch.long)
            ids[0, :length] = 7
            mask = (torch.arange(width) < length).long().unsqueeze(0)
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(ids, mask)
            assert flops_per_sample(cfg, length) == counter.get_total_flops(), (cfg.kind, length)


@pytest.mark.parametrize("kind", ["bert", "roberta", "electra"])
def test_student_parameter_count_from_the_configuration_equals_the_built_models(kind):
    """``parameter_count`` (what sizes are refused by, before anything is built) counts what
    ``build_student`` makes, for every student kind and transformer family and width."""
    from transformers import CONFIG_MAPPING

    from kdstore.students import StudentConfig, build_student, parameter_count, student_bert_config
    from kdstore.torchutil import count_parameters

    extra = {"embedding_size": 16} if kind == "electra" else {}
    teacher = CONFIG_MAPPING[kind](vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=70, **extra)
    configs = [StudentConfig(kind="transformer", vocab_size=60, num_classes=3,
                             bert=student_bert_config(teacher, layers=2, hidden=width, num_classes=3)) for width in (None, 64)]
    configs += [StudentConfig(kind=k, vocab_size=60, num_classes=3, embed_dim=7, kernel_sizes=(1, 3), num_filters=4, hidden=5)
                for k in ("textcnn", "bigru", "bilstm")]
    for cfg in configs:
        assert parameter_count(cfg) == count_parameters(build_student(cfg)), cfg.kind


def test_a_student_width_its_heads_do_not_divide_names_widths_that_build():
    """kd distill has no --heads: a student width other than the teacher's gets width // 64 heads, and one
    they do not divide was refused as "not divisible by 2 heads", with no option to change them by."""
    from transformers import BertConfig

    from kdstore.errors import KdError
    from kdstore.students import student_bert_config

    teacher = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    with pytest.raises(KdError, match=r"--width 200 is not divisible by its 3 attention heads .* such as 198 or 201$"):
        student_bert_config(teacher, layers=1, hidden=200, num_classes=2)
    for width in (198, 201):  # the widths it names build
        assert student_bert_config(teacher, layers=1, hidden=width, num_classes=2)["num_attention_heads"] == 3


def test_default_relation_heads_that_do_not_divide_a_width_name_the_default_and_heads_that_do():
    """A 768-wide student (12 heads) of a 1024-wide teacher (16 heads) with --value-relation and no
    --relation-heads was refused as "--relation-heads 12 does not divide the teacher's width 1024",
    naming an option never typed, and no head count that both widths take."""
    from kdstore.distill import DistillConfig, relation_heads
    from kdstore.errors import KdError

    cfg = DistillConfig(student="transformer", value_relation=1.0)
    with pytest.raises(KdError) as err:
        relation_heads(cfg, (768, 12), (1024, 16))
    message = str(err.value)
    assert "the default --relation-heads" in message and "(the smaller head count, 12)" in message
    assert "does not divide the teacher's width 1024" in message and message.endswith("give --relation-heads 8 (or 4, 16)")
    assert relation_heads(DistillConfig(student="transformer", value_relation=1.0, relation_heads=8), (768, 12), (1024, 16)) == 8
    with pytest.raises(KdError, match=r"^--relation-heads 5 does not divide the student's width 768$"):  # typed: as before
        relation_heads(DistillConfig(student="transformer", value_relation=1.0, relation_heads=5), (768, 12), (1024, 16))
    assert relation_heads(cfg, (384, 6), (768, 12)) == 6  # a default that divides both: as before


def test_textcnn_pools_over_real_windows_only_in_both_forms():
    """TextCNN (conv1d and the as_matmul form that ONNX exports use) against -inf masked max pooling."""
    from kdstore.students import StudentConfig, TextCNN

    torch.manual_seed(0)
    model = TextCNN(StudentConfig(kind="textcnn", vocab_size=50, num_classes=3, embed_dim=6, num_filters=5)).eval()
    ids = torch.randint(1, 50, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padded row
    mask[2, 2:] = 0  # shorter than the wider kernels: their first window alone (the text, then padding)
    ids[mask == 0] = 0

    def reference(input_ids, attention_mask):
        x = model.embed(input_ids).transpose(1, 2)
        pooled = []
        for conv in model.convs:
            k = conv.kernel_size[0]
            h = torch.relu(torch.nn.functional.conv1d(x, conv.weight, conv.bias))
            first = torch.zeros(input_ids.shape[1] - k + 1, dtype=torch.bool)
            first[0] = True
            valid = attention_mask[:, k - 1 :].unsqueeze(1).bool() | ((attention_mask.sum(1) < k).view(-1, 1, 1) & first)
            pooled.append(h.masked_fill(~valid, float("-inf")).max(dim=2).values)
        return model.out(torch.cat(pooled, dim=1))

    with torch.no_grad():
        expected = reference(ids, mask)
        for as_matmul in (False, True):
            model.as_matmul = as_matmul
            assert torch.allclose(model(ids, mask), expected, atol=1e-5)
            # padding never changes a row's logits, a row shorter than a kernel's width included
            assert torch.allclose(model(ids[1:2, :5], mask[1:2, :5]), model(ids[1:2], mask[1:2]), atol=1e-5)
            short = model(ids[2:3, : model.min_len], mask[2:3, : model.min_len])
            assert torch.allclose(short, model(ids[2:3], mask[2:3]), atol=1e-5)
            assert torch.allclose(short, expected[2:3], atol=1e-5)


def test_masked_lm_loss_equals_the_full_head_loss():
    """Its masked positions found on the host (``masked_positions``: on a GPU, boolean indexing made
    the host wait for the forward pass each step), kd's loss is BertForMaskedLM's own."""
    from transformers import BertConfig, BertForMaskedLM

    from kdstore.pretrain import masked_lm_loss, masked_positions

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=20)).eval()
    ids = torch.randint(5, 30, (3, 10))
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, IGNORE)
    labels[:, 2], labels[1, 5] = ids[:, 2], ids[1, 5]
    full = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    positions, targets = masked_positions(labels)
    assert positions.tolist() == [2, 12, 15, 22] and torch.equal(targets, labels[labels != IGNORE])  # (row by row)
    assert masked_lm_loss(model, ids, mask, positions, targets).item() == pytest.approx(full.item(), abs=1e-5)
    empty = masked_lm_loss(model, ids, mask, *masked_positions(torch.full_like(ids, IGNORE)))  # nothing masked: zero, not NaN
    assert empty.item() == 0.0 and empty.requires_grad


def test_replace_tokens_marks_only_real_replacements():
    from kdstore.electra import replace_tokens

    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
    labels = torch.full_like(ids, IGNORE)
    labels[0, 1], labels[0, 3], labels[1, 2] = 5, 7, 9  # chosen positions, row-major: (0,1), (0,3), (1,2)
    positions, _ = masked_positions(labels)
    disc, replaced = replace_tokens(ids, positions, torch.tensor([11, 7, 12]))
    assert disc.tolist() == [[2, 11, 6, 7, 3], [2, 8, 12, 3, 0]]  # the sample 7 equals the original
    assert replaced.tolist() == [[False, True, False, False, False], [False, False, True, False, False]]
    assert ids.tolist()[0] == [2, 5, 6, 7, 3]  # the input is not modified
    with pytest.raises(ValueError, match="2 samples for 3 chosen"):
        replace_tokens(ids, positions, torch.tensor([1, 2]))


def _rtd_inputs(labels, ids, regular, mask):
    """What kd pretrain gives ReplacedTokenDetection after ``corrupted`` and the attention mask:
    positions, targets, the original ids and the flat indexes of the scored tokens (found on the host)."""
    positions, targets = masked_positions(labels)
    return positions, targets, ids, (regular & mask.bool()).flatten().nonzero().squeeze(1)


def test_replaced_token_detection_never_samples_a_special_token():
    """The generator sampled from the whole vocabulary: a [CLS] or [PAD] put mid-text for the
    discriminator to find. With the special ids' logits highest, the samples are regular ids still."""
    from transformers import BertConfig, BertForMaskedLM, BertModel

    from kdstore.electra import ReplacedTokenDetection

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=20)
    rtd = ReplacedTokenDetection(BertModel(cfg, add_pooling_layer=False), BertForMaskedLM(cfg), first_regular_id=5)
    with torch.no_grad():
        rtd.generator.cls.predictions.bias.zero_()
        rtd.generator.cls.predictions.bias[:5] = 50.0  # the special ids all but certain
    ids = torch.randint(5, 30, (4, 10))
    labels = torch.full_like(ids, -100)
    labels[:, 2:8] = ids[:, 2:8]
    corrupted = ids.clone()
    corrupted[:, 2:8] = 4
    captured = {}
    rtd.discriminator.register_forward_hook(lambda m, args, kwargs, out: captured.update(ids=kwargs["input_ids"]), with_kwargs=True)
    rtd(corrupted, torch.ones_like(ids), *_rtd_inputs(labels, ids, torch.ones_like(ids, dtype=torch.bool), torch.ones_like(ids)))
    assert bool((captured["ids"] >= 5).all())


def test_replaced_token_detection_shares_embeddings_and_learns():
    from transformers import BertConfig, BertForMaskedLM, BertModel

    from kdstore.electra import ReplacedTokenDetection

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=20)
    gen_cfg = BertConfig.from_dict({**cfg.to_dict(), "num_hidden_layers": 1})
    rtd = ReplacedTokenDetection(BertModel(cfg, add_pooling_layer=False), BertForMaskedLM(gen_cfg), weight=50.0)
    disc = rtd.discriminator
    assert rtd.generator.bert.embeddings is disc.embeddings
    assert rtd.generator.cls.predictions.decoder.weight is disc.embeddings.word_embeddings.weight
    names = {n for n, _ in rtd.named_parameters()}  # shared weights are counted once
    assert not any(n.startswith("generator.bert.embeddings") for n in names)

    ids = torch.randint(5, 30, (8, 12))
    ids[:, 0], ids[:, -1] = 2, 3
    regular = torch.ones_like(ids, dtype=torch.bool)
    regular[:, 0] = regular[:, -1] = False
    mask = torch.ones_like(ids)
    corrupted, labels = mask_tokens(ids, ~regular, mask_id=4, vocab_size=30, probability=0.3,
                                    generator=torch.Generator().manual_seed(1), first_regular_id=5)
    total, mlm, det = rtd(corrupted, mask, *_rtd_inputs(labels, ids, regular, mask))
    assert total.item() == pytest.approx(mlm.item() + 50.0 * det.item(), rel=1e-5)
    assert 0 < det.item() < 2 and mlm.item() > 0
    total.backward()
    for part in (disc.encoder, rtd.generator.bert.encoder, rtd.head, disc.embeddings):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())

    opt = torch.optim.AdamW(rtd.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        opt.zero_grad()
        loss = rtd(corrupted, mask, *_rtd_inputs(labels, ids, regular, mask))[0]
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first  # both parts learn on a fixed batch

    # a batch with nothing chosen and nothing to score (special tokens only): zero losses, no NaN
    nothing = torch.full_like(ids, -100)
    total, mlm, det = rtd(ids, mask, *_rtd_inputs(nothing, ids, torch.zeros_like(regular), mask))
    assert total.item() == mlm.item() == det.item() == 0.0
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in rtd.parameters() if p.grad is not None)


def test_intermediate_losses():
    from kdstore.losses import attention_kl, hidden_mse, relation_kl

    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0]])
    h = torch.randn(1, 4, 6)
    assert hidden_mse(h, h, mask).item() == 0.0
    other = h.clone()
    other[0, 3] += 100.0  # a padding position does not count
    assert hidden_mse(h, other, mask).item() == 0.0
    other[0, 0] += 1.0  # one real token off by 1 in every feature: mean over 3 tokens = 1/3
    assert hidden_mse(h, other, mask).item() == pytest.approx(1 / 3)
    att = torch.softmax(torch.randn(1, 2, 4, 4), dim=-1)
    assert attention_kl(att, att, mask).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full((1, 3, 4, 4), 0.25)
    point = torch.zeros(1, 1, 4, 4)
    point[..., 0] = 1.0  # teacher puts everything on key 0: KL(point || uniform) = log 4
    assert attention_kl(uniform, point, mask).item() == pytest.approx(math.log(4), abs=1e-5)
    v = torch.randn(1, 4, 8)
    assert relation_kl(v, v, mask, heads=2).item() == pytest.approx(0.0, abs=1e-6)
    assert relation_kl(torch.randn(1, 4, 4), v, mask, heads=2).item() > 0  # widths may differ
    w = torch.randn(1, 4, 8, requires_grad=True)
    relation_kl(w, v, mask, heads=4).backward()
    assert torch.isfinite(w.grad).all()
    # a half-precision teacher's values (a float16 checkpoint): same loss, no overflow of the mask fill
    half = relation_kl(w.detach().half(), v.half(), mask, heads=4)
    assert half.item() == pytest.approx(relation_kl(w.detach().half().float(), v.half().float(), mask, heads=4).item(), rel=1e-4)


def test_relation_losses_against_hand_computation():
    """One relation head of width 1, three tokens, the last one padding (never a key or a query)."""
    from kdstore.losses import query_key_relation_kl, relation_kl

    mask = torch.tensor([[1, 1, 0]])
    pad = 50.0  # a large value on the padding token: it must change nothing
    sig = 1 / (1 + math.exp(-1))  # softmax([1, 0])[0]
    kl_row = sig * math.log(2 * sig) + (1 - sig) * math.log(2 * (1 - sig))  # KL(softmax([1, 0]) || uniform)
    zeros = torch.tensor([[[0.0], [0.0], [pad]]])
    # values (1, 0): relations x x^T = [[1, 0], [0, 0]]; a zero student relates uniformly
    values = torch.tensor([[[1.0], [0.0], [pad]]])
    assert relation_kl(zeros, values, mask, heads=1).item() == pytest.approx(kl_row / 2, abs=1e-6)
    # queries (1, 1), keys (1, 0): both rows are softmax([1, 0]); with the queries as keys too
    # (the value-relation form) every row would be uniform and the loss 0
    q, k = torch.tensor([[[1.0], [1.0], [pad]]]), torch.tensor([[[1.0], [0.0], [pad]]])
    assert query_key_relation_kl(zeros, zeros, q, k, mask, heads=1).item() == pytest.approx(kl_row, abs=1e-6)
    assert query_key_relation_kl(zeros, zeros, q, q, mask, heads=1).item() == pytest.approx(0.0, abs=1e-6)
    # two relation heads over width 2, each head a copy of the case above: the same figure
    q2, k2, z2 = (torch.cat([x, x], dim=2) for x in (q, k, zeros))
    assert query_key_relation_kl(z2, z2, q2, k2, mask, heads=2).item() == pytest.approx(kl_row, abs=1e-6)
    with pytest.raises(ValueError, match="not divisible"):
        query_key_relation_kl(zeros, zeros, q2, k2, mask, heads=2)


def test_best_checkpoint_keeps_the_best_epoch_and_stops_on_patience():
    from kdstore.torchutil import BestCheckpoint

    model = torch.nn.Linear(1, 1, bias=False)
    best = BestCheckpoint(patience=2)
    stops = []
    for epoch, (score, weight) in enumerate([(0.5, 1.0), (0.7, 2.0), (0.6, 3.0), (0.7, 4.0)], start=1):
        model.weight.data.fill_(weight)
        stops.append(best.update(score, model, epoch))
    assert stops == [False, False, False, True]  # a tie is no improvement
    best.restore(model)
    assert best.epoch == 2 and model.weight.item() == 2.0


def test_best_checkpoint_counts_no_score_of_the_warmup_toward_patience():
    """A score taken while the learning rate still warms up is kept when best, but a worse one does not
    count toward --patience: the first epoch after the warmup starts the count."""
    from kdstore.torchutil import BestCheckpoint

    model = torch.nn.Linear(1, 1, bias=False)
    best = BestCheckpoint(patience=2)
    scores = [(0.6, True), (0.5, True), (0.4, True), (0.5, False), (0.7, False), (0.6, False), (0.6, False)]
    stops = [best.update(score, model, epoch, warming=warming) for epoch, (score, warming) in enumerate(scores, start=1)]
    assert stops == [False, False, False, False, False, False, True] and best.epoch == 5
    assert BestCheckpoint(patience=1).update(0.5, model, 1, warming=True) is False


def test_a_tie_of_dev_scores_goes_to_the_lower_dev_loss():
    """A small dev set all right at epoch 1 (near-uniform probabilities) kept that barely trained
    epoch over a confident one of the same macro-F1."""
    from kdstore.torchutil import BestCheckpoint

    model = torch.nn.Linear(1, 1, bias=False)
    best = BestCheckpoint(patience=2)
    stops = []
    for epoch, (score, loss) in enumerate([(1.0, 0.69), (1.0, 0.25), (1.0, 0.25), (0.9, 0.1), (1.0, 0.3)], start=1):
        model.weight.data.fill_(float(epoch))
        stops.append(best.update(score, model, epoch, loss=loss))
    assert stops == [False, False, False, True, True]  # epoch 3 ties both: no improvement; epoch 4 scores less
    best.restore(model)
    assert best.epoch == 2 and model.weight.item() == 2.0


def test_mean_log_loss_by_hand():
    from kdstore.metrics import mean_log_loss

    logits = np.array([[0.0, 0.0], [2.0, 0.0], [1000.0, 0.0]])
    expected = (np.log(2) + np.log(1 + np.exp(-2.0)) + (1000.0 + 0.0)) / 3  # the third is wrong by 1000
    assert mean_log_loss([0, 0, 1], logits) == pytest.approx(expected)
    assert mean_log_loss(np.array([], dtype=int), np.zeros((0, 2))) == 0.0
    with pytest.raises(ValueError, match="outside 0..1"):
        mean_log_loss([2], [[0.0, 1.0]])
    with pytest.raises(ValueError, match="2 labels for 1 rows"):
        mean_log_loss([0, 1], [[0.0, 1.0]])


def test_mean_log_loss_refuses_labels_that_are_not_one_dimensional():
    """A column of labels (``df[["label"]].values``, shape (N, 1)) broadcast against the rows' indexes and
    gave the mean of an (N, N) matrix: 1.34 where the loss is 0.088, with no error."""
    from kdstore.metrics import mean_log_loss

    logits = np.array([[2.0, 0.0], [0.0, 3.0]])
    with pytest.raises(ValueError, match=r"y_true must be a 1-D array of class ids, got shape \(2, 1\)"):
        mean_log_loss([[0], [1]], logits)


def test_balanced_class_weights_refuse_labels_that_are_not_class_ids():
    """Float labels were truncated (0.9 read as class 0) and a 2-D array flattened: weights of other classes
    than the rows have, with no error."""
    from kdstore.losses import balanced_class_weights

    with pytest.raises(ValueError, match="labels must hold integer class ids, got dtype float64 with non-integer values such as 0.9"):
        balanced_class_weights([0.9, 0.9, 1.2], 2)
    with pytest.raises(ValueError, match=r"labels must be a 1-D array of class ids, got shape \(2, 2\)"):
        balanced_class_weights([[0, 0], [0, 1]], 2)
    assert balanced_class_weights(np.array([0.0, 1.0, 1.0, -1.0]), 2).tolist() == pytest.approx([1.5, 0.75])  # whole floats are ids


def test_encode_flags_truncated_texts_from_one_call_fast_or_slow(tmp_path):
    from synthetic import save_tiny_bert
    from transformers import AutoTokenizer

    from kdstore.batching import encode, encode_flagged

    texts = ["很好", "很好" * 20, "质量很好，物流也快" * 3, "abc def", "很" * 14, "很" * 15]
    tokenizer = AutoTokenizer.from_pretrained(save_tiny_bert(texts, tmp_path / "tok"))
    full = [len(x) for x in tokenizer(texts)["input_ids"]]
    expected = [n > 16 for n in full]
    ids, cut = encode_flagged(tokenizer, texts, max_len=16)
    assert ids == encode(tokenizer, texts, max_len=16) and all(len(x) <= 16 for x in ids)
    assert cut == expected and cut[:2] == [False, True] and cut[-2:] == [False, True]  # 14 + 2 fit, 15 + 2 do not

    class Slow:  # a tokenizer without Rust encodings: answered by a second, untruncated call
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def __call__(self, *args, **kwargs):
            self.calls += 1
            return dict(self.inner(*args, **kwargs))

    slow = Slow(tokenizer)
    assert encode_flagged(slow, texts, max_len=16) == (ids, expected) and slow.calls == 2
    assert encode_flagged(tokenizer, [], max_len=16) == ([], [])


def test_per_sample_temperatures_by_hand():
    from kdstore.losses import MIN_TEMPERATURE, sample_temperatures

    student = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    teacher = torch.tensor([[3.0, 0.0], [3.0, 0.0], [3.0, 0.0]])
    # flsw: the cosine of the logit vectors centred on their mean (two classes: +-(a-b)/2): 1, -1 and
    # 0 for the tie (a zero vector, up to the 1e-4 in the norms); w = (1 - cos)^2
    w = torch.tensor([0.0, 4.0, 1.0])
    flsw = sample_temperatures(student, teacher, base=2.0, kind="flsw", beta=0.5, gamma=2.0)
    assert torch.allclose(flsw, 2.0 + 0.5 * (w.mean() - w), atol=1e-3)
    assert flsw[1] < flsw[2] < flsw[0]  # the sample pointing away from the teacher gets the sharpest targets
    # a teacher's logits or its log-probabilities (how several teachers' targets are stored), the
    # student's logits shifted by a constant: the same temperatures
    shifted = sample_temperatures(student + 5.0, torch.log_softmax(teacher, dim=-1), base=2.0, kind="flsw", beta=0.5, gamma=2.0)
    assert torch.allclose(shifted, flsw, atol=1e-5)
    # FLSW's cosine is not ruled by the long tail of a 10-class teacher's log-probabilities: a student
    # opposite the teacher was 0.89 of the way to agreeing with it, all 10 temperatures within 0.01
    teacher10 = torch.full((3, 10), -1.0)
    teacher10[:, 0] = 9.0
    student10 = torch.stack([teacher10[0], teacher10[0].roll(1), torch.zeros(10)])
    w10 = torch.tensor([0.0, (1 + 10 / 90) ** 2, 1.0])  # agreeing, opposite (cos -1/9), unsure (a zero vector)
    for t10 in (teacher10, torch.log_softmax(teacher10, dim=-1)):
        got = sample_temperatures(student10, t10, base=2.0, kind="flsw", beta=1.0, gamma=2.0)
        assert torch.allclose(got, 2.0 + (w10.mean() - w10), atol=1e-3), got
    # cwsm: w = 1 / (max student probability + 1e-3)
    p = torch.tensor([1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-2)), 0.5])
    w = 1 / (p + 1e-3)
    assert torch.allclose(sample_temperatures(student, teacher, base=2.0, kind="cwsm", beta=0.5), 2.0 + 0.5 * (w.mean() - w), atol=1e-5)
    assert torch.equal(sample_temperatures(student, teacher, base=3.0, kind="constant"), torch.full((3,), 3.0))
    assert sample_temperatures(student, teacher, base=0.2, kind="flsw", beta=100.0).min() == MIN_TEMPERATURE
    with pytest.raises(ValueError, match="unknown temperature schedule"):
        sample_temperatures(student, teacher, base=1.0, kind="fancy")


def test_soft_losses_take_one_temperature_per_sample():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    temps = torch.tensor([0.5, 1.0, 2.0, 4.0])
    for fn in (kl_soft, soft_cross_entropy):
        # each row as with its own scalar temperature, but the T^2 factor is one number for the batch
        rows = torch.stack([fn(student[i : i + 1], teacher[i : i + 1], temperature=float(t))[0] / float(t) ** 2 for i, t in enumerate(temps)])
        assert torch.allclose(fn(student, teacher, temperature=temps, scale=9.0), 9.0 * rows, atol=1e-5)
        assert torch.allclose(fn(student, teacher, temperature=temps), float(temps.mean()) ** 2 * rows, atol=1e-5)
        assert torch.allclose(fn(student, teacher, temperature=2.0, scale=1.0), fn(student, teacher, temperature=2.0) / 4, atol=1e-6)
    loss = distillation_loss(student, teacher, torch.tensor([0, -1, 2, -1]), alpha=0.5, temperature=temps, scale=4.0)
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_a_lower_per_sample_temperature_gets_the_larger_gradient():
    s = torch.tensor([[1.0, 0.0, -1.0]] * 3, requires_grad=True)
    t = torch.tensor([[0.0, 2.0, 0.0]] * 3)
    kl_soft(s, t, temperature=torch.tensor([0.5, 2.0, 3.5]), scale=4.0).sum().backward()
    norms = s.grad.norm(dim=-1)
    assert norms[0] > norms[1] > norms[2]  # the sample meant to get sharper targets learns the most


def test_hidden_cosine_and_patient_kd_by_hand():
    from kdstore.losses import hidden_cosine, patient_kd

    mask = torch.tensor([[1, 1, 0]])
    s = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    t = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]])  # token 1: same direction; token 2: 45 degrees; token 3 padded
    assert hidden_cosine(s, t, mask).item() == pytest.approx((0.0 + (1 - 2 ** -0.5)) / 2, abs=1e-6)
    assert hidden_cosine(3 * t, t, torch.ones(1, 3)).item() == pytest.approx(0.0, abs=1e-6)  # scale does not count
    cls_s, cls_t = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[6.0, 8.0], [0.0, 2.0]])
    # row 1: same direction -> 0; row 2: (1,0) vs (0,1) -> squared distance 2; mean 1
    assert patient_kd(cls_s, cls_t).item() == pytest.approx(1.0, abs=1e-6)


def test_attention_mse_by_hand_over_real_token_pairs_with_head_counts_that_differ():
    from kdstore.losses import attention_mse

    mask = torch.tensor([[1, 1, 0]])
    t = torch.zeros(1, 1, 3, 3)
    t[0, 0, :, 0] = 1.0  # every query on token 0
    s = torch.zeros(1, 2, 3, 3)
    s[0, 0, :, 0], s[0, 1, :, 1] = 1.0, 1.0  # averaged over 2 heads: half on token 0, half on token 1
    s[0, :, 2, 2] = 7.0  # a padded query: not counted
    # real pairs (q, k) in {0,1}^2: errors (0.5-1)^2 and 0.5^2 per query -> mean 0.25
    assert attention_mse(s, t, mask).item() == pytest.approx(0.25, abs=1e-6)
    assert attention_mse(t, t, mask).item() == 0.0


def test_fsp_compares_the_flow_matrices_of_two_stretches_by_hand():
    from kdstore.losses import fsp

    mask = torch.tensor([[1, 1, 0]])
    x_in = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])  # the padded token must not count
    x_out = torch.tensor([[[2.0, 0.0], [0.0, 4.0], [9.0, 9.0]]])
    # G = x_in^T x_out / 2 over real tokens = [[1, 0], [0, 2]]; the teacher's flow is identity: G_t = [[.5, 0], [0, .5]]
    t_in = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    got = fsp(x_in, x_out, t_in, t_in, mask)
    assert got.item() == pytest.approx(((1 - 0.5) ** 2 + (2 - 0.5) ** 2) / 4, abs=1e-6)
    assert fsp(x_in, x_out, x_in, x_out, mask).item() == 0.0


def test_neuron_selectivity_matches_token_similarities_across_widths():
    from kdstore.losses import neuron_selectivity

    mask = torch.tensor([[1, 1, 0]])
    s = torch.tensor([[[1.0, 1.0], [1.0, -1.0], [5.0, 5.0]]])  # width 2: similarities / 2: [[1, 0], [0, 1]]
    t = torch.tensor([[[2.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0] * 4]])  # width 4: [[1, 1], [1, 1]]
    assert neuron_selectivity(s, t, mask).item() == pytest.approx(0.5, abs=1e-6)  # two of four real pairs off by 1
    x = s[..., :1]  # one feature copied 4 times and 2 times: the same similarities once divided by the width
    assert neuron_selectivity(x.repeat(1, 1, 4), x.repeat(1, 1, 2), mask).item() == 0.0


def test_probability_shift_swaps_only_where_the_teacher_is_wrong():
    from kdstore.losses import probability_shift

    teacher = torch.tensor([[3.0, 1.0, 0.0], [3.0, 1.0, 0.0], [0.0, 2.0, 5.0], [4.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 0, -1])  # right; wrong (gold 1); wrong (gold 0); unlabeled
    out = probability_shift(teacher, labels)
    expected = torch.tensor([[3.0, 1.0, 0.0], [1.0, 3.0, 0.0], [5.0, 2.0, 0.0], [4.0, 0.0, 1.0]])
    assert torch.equal(out, expected)
    assert torch.equal(out.argmax(1)[:3], labels[:3])
    assert torch.equal(teacher[1], torch.tensor([3.0, 1.0, 0.0]))  # the input is not changed


def test_layer_map_spreads_student_layers_evenly_over_the_teacher():
    from kdstore.students import layer_map

    assert layer_map(4, 12) == [2, 5, 8, 11]
    assert layer_map(3, 6) == [1, 3, 5]
    assert layer_map(4, 2) == [0, 0, 1, 1]  # deeper than its teacher: layers repeat, none before the first
    assert layer_map(1, 12) == [11]
    for s in range(1, 9):
        for t in range(1, 13):
            m = layer_map(s, t)
            assert m[0] >= 0 and m[-1] == t - 1 and m == sorted(m), (s, t, m)


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlm-roberta", "ernie", "electra"])
def test_a_full_depth_student_initialised_from_its_teacher_computes_the_teacher(kind):
    """--init-from-teacher copies every part (embeddings, their projection, layers, pooler, head) for
    each BERT-layout family: at the teacher's depth the student is the teacher, logit for logit."""
    from transformers import CONFIG_MAPPING, AutoModelForSequenceClassification

    from kdstore.students import StudentConfig, TransformerStudent, init_from_teacher, student_bert_config

    extra = {"embedding_size": 16} if kind == "electra" else {}
    config = CONFIG_MAPPING[kind](vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=70, num_labels=3, pad_token_id=0, **extra)
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()
    bert = student_bert_config(config, layers=3, hidden=None, num_classes=3)
    student = TransformerStudent(StudentConfig(kind="transformer", vocab_size=60, num_classes=3, bert=bert)).eval()
    assert init_from_teacher(student, teacher) == [0, 1, 2]
    ids = torch.randint(1, 60, (4, 9))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    with torch.no_grad():
        torch.testing.assert_close(student(ids, mask), teacher(input_ids=ids, attention_mask=mask).logits, rtol=0, atol=1e-6)
        assert set(student.internals(ids, mask)[3]) == {"query", "key", "value"}  # MiniLM's relation losses read them


def test_check_finite_names_the_first_weight_that_is_not():
    from kdstore.errors import KdError
    from kdstore.torchutil import check_finite

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    check_finite(net, when="in epoch 1")  # a healthy model passes
    with torch.no_grad():
        net[1].bias.fill_(float("inf"))
    with pytest.raises(KdError, match=r"^training diverged in epoch 3: weight 1.bias is no longer finite \(nan or inf\); lower --lr$"):
        check_finite(net, when="in epoch 3")


def test_a_late_divergence_stops_and_keeps_the_best_epoch(capsys):
    """Diverging after a dev-scored epoch stops training and keeps that epoch (hours of teacher
    training are not thrown away); with no epoch to fall back on it is an error."""
    from kdstore.errors import KdError
    from kdstore.torchutil import BestCheckpoint, stop_if_diverged

    net, best = torch.nn.Linear(2, 2), BestCheckpoint(patience=3)
    assert stop_if_diverged(net, best, epoch=1) is False
    with torch.no_grad():
        net.weight.fill_(float("nan"))
    with pytest.raises(KdError, match="training diverged in epoch 1 \\(fold0\\): weight weight"):
        stop_if_diverged(net, best, epoch=1, tag="fold0/")
    with torch.no_grad():
        net.weight.fill_(0.5)
    best.update(0.8, net, 1)
    with torch.no_grad():
        net.weight.fill_(float("nan"))
    assert stop_if_diverged(net, best, epoch=2) is True
    assert "stopped, keeping epoch 1" in capsys.readouterr().err
    assert stop_if_diverged(net, best, epoch=2, warn=False) is True  # a torchrun rank other than 0: rank 0 says it
    assert capsys.readouterr().err == ""
    best.restore(net)
    assert bool((net.weight == 0.5).all())


def test_missed_classes_are_those_of_enough_samples_the_model_got_none_right():
    names = ["合规", "夸大", "极限词", "医疗"]
    y_true = np.array([0] * 20 + [1] * 5 + [2] * 4 + [3] * 2)
    y_pred = np.array([0] * 20 + [1] * 4 + [0] + [0] * 4 + [0, 0])  # 极限词 never answered, 医疗 too but 2 samples
    figures = classification_metrics(y_true, y_pred, num_classes=4, class_names=names)
    assert figures["macro_f1"] > 0.4  # the figure that said nothing of which class
    assert missed_classes(figures) == [("极限词", 4)]
    assert missed_classes(figures, min_support=2) == [("极限词", 4), ("医疗", 2)]
    assert missed_classes(classification_metrics(y_true, y_true, num_classes=4, class_names=names)) == []
    assert missed_classes({}) == []


def test_chance_macro_f1_is_the_best_a_model_that_learned_nothing_reaches():
    """Checked against classification_metrics of each baseline's answers: always the majority class, at
    random in the classes' shares, and each class alike at random (their expected confusion matrices)."""
    rng = np.random.default_rng(0)
    for counts in ([50, 50], [67, 47, 12], [900, 100], [10, 10, 10, 10], [5]):
        y = np.repeat(np.arange(len(counts)), counts)
        k = len(counts)
        figures = []
        always = np.full_like(y, int(np.argmax(counts)))
        figures.append(classification_metrics(y, always, num_classes=k)["macro_f1"])
        for weights in (np.array(counts) / sum(counts), np.full(k, 1 / k)):  # many draws: the expectation
            draws = [classification_metrics(y, rng.choice(k, size=len(y), p=weights), num_classes=k)["macro_f1"] for _ in range(400)]
            figures.append(float(np.mean(draws)))
        assert chance_macro_f1(dict(enumerate(counts))) == pytest.approx(max(figures), abs=0.02), counts
    assert chance_macro_f1({"pos": 50, "neg": 50}) == pytest.approx(0.5)
    assert chance_macro_f1({"pos": 0}) is None and chance_macro_f1({}) is None


def test_hardly_beats_majority_follows_detects_rule_on_dev_support():
    # 528 of 1000 are neg: a model must close a tenth of the way from 52.8 % to 100 % (57.52 %)
    support = {"pos": 472, "neg": 528}
    assert hardly_beats_majority(0.528, support) == ("neg", pytest.approx(0.528))
    assert hardly_beats_majority(0.5751, support) == ("neg", pytest.approx(0.528))
    assert hardly_beats_majority(0.5753, support) is None
    assert hardly_beats_majority(0.90, {"a": 95, "b": 5}) == ("a", pytest.approx(0.95))  # 0.5 point of room needed
    assert hardly_beats_majority(0.96, {"a": 95, "b": 5}) is None
    assert hardly_beats_majority(0.5, {}) is None and hardly_beats_majority(None, support) is None
    # the warning's words follow the comparison: 0 % against 100 % is not "hardly more than"
    assert [versus_majority(a, 0.528) for a in (0.56, 0.528, 0.0)] == ["hardly more than", "no more than", "less than"]


def test_a_clock_bounded_bar_shows_the_budget_left_as_its_eta():
    from kdstore.progress import EtaColumn, progress

    with progress(disable=True) as bar:
        budget = bar.add_task("pre-train", total=None, unit="step", left_s=83.4)  # --minutes alone: no total
        plain = bar.add_task("dev", total=None, unit="samples")
        both = bar.add_task("pre-train", total=1000, unit="step", left_s=30.0)  # --steps and --minutes
        column = EtaColumn()
        assert column.render(bar.tasks[budget]).plain == "0:01:23"
        assert column.render(bar.tasks[plain]).plain == ""  # rich's own: nothing to estimate from
        bar.update(budget, left_s=0.0)
        assert column.render(bar.tasks[budget]).plain == "0:00:00"
        assert column.render(bar.tasks[both]).plain == "0:00:30"  # no rate yet: the budget, not "-:--:--"


def test_a_finished_bar_shows_its_mean_rate_not_its_last_seconds():
    from kdstore.progress import RateColumn, progress

    now = [0.0]
    with progress(disable=True) as bar:
        bar.get_time = lambda: now[0]
        task = bar.add_task("teach", total=420, unit="step")
        for t in range(1, 101):  # 1 step a second for 90 s, then 330 steps in the last 10 s
            now[0] = float(t)
            bar.update(task, advance=1 if t <= 90 else 33)
        assert bar.tasks[task].finished
        assert RateColumn().render(bar.tasks[task]).plain == "4.2 step/s"  # 420 / 100 s


def test_a_bar_whose_steps_take_longer_than_the_rate_window_shows_a_rate_and_an_eta():
    """`kd labels detect --tfidf-member` on 100k rows: a fold took longer than rich's 30 s speed window,
    so its bar said "0.0 fold/s" and no ETA for minutes."""
    from kdstore.progress import EtaColumn, RateColumn, progress

    now = [0.0]
    with progress(disable=True) as bar:
        bar.get_time = lambda: now[0]
        task = bar.add_task("tf-idf folds", total=5, unit="fold")
        for t in (40.0, 80.0):  # a fold each 40 s, a field updated between them
            now[0] = t
            bar.advance(task)
            now[0] = t + 5
            bar.update(task, description="tf-idf folds")
        assert bar.tasks[task].speed in (None, 0.0)  # rich's own window holds no step
        assert RateColumn().render(bar.tasks[task]).plain == "1.4 fold/min"  # 2 in 85 s (0.0 fold/s, rounded)
        assert EtaColumn().render(bar.tasks[task]).plain == "0:02:07"  # 3 folds at 2 / 85 s


def test_kd_no_progress_off_values_keep_the_bars(monkeypatch):
    from kdstore.progress import no_progress

    for value, off in (("1", True), ("yes", True), ("", False), ("0", False), ("false", False), ("No", False)):
        monkeypatch.setenv("KD_NO_PROGRESS", value)
        assert no_progress() is off, value
    monkeypatch.delenv("KD_NO_PROGRESS")
    assert no_progress() is False


def test_metrics_refuse_fractional_labels_and_mismatched_class_names():
    # 0.6 and 1.7 were truncated to 0 and 1: accuracy 1.0
    with pytest.raises(ValueError, match="y_true must hold integer class ids.*0.6"):
        classification_metrics(np.array([0.6, 1.7]), np.array([0, 1]), num_classes=2)
    with pytest.raises(ValueError, match="y_pred must hold integer class ids"):
        confusion_matrix([0, 1], [np.nan, 1.0], num_classes=2)
    with pytest.raises(ValueError, match="integer class ids"):
        confusion_matrix(["1", "0"], [1, 0], num_classes=2)
    # an infinite id is named too (inf equals its rounding: building the message was an IndexError)
    with pytest.raises(ValueError, match="y_true must hold integer class ids.*such as -?inf"):
        classification_metrics(np.array([0.0, np.inf]), np.array([0, 1]), num_classes=2)
    with pytest.raises(ValueError, match="y_pred must hold integer class ids.*such as -inf"):
        confusion_matrix([0, 1], np.array([1.0, -np.inf]), num_classes=2)
    assert confusion_matrix(np.array([0.0, 1.0]), [0, 0], num_classes=2).tolist() == [[1, 0], [1, 0]]
    assert classification_metrics([], [], num_classes=2)["n"] == 0.0  # an empty list is float to numpy
    # two names for three classes left class 2 out silently; three for two was an IndexError
    with pytest.raises(ValueError, match="class_names has 2 names for num_classes=3"):
        classification_metrics([0, 1, 2], [0, 1, 2], num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        confusion_matrix([], [], num_classes=-1)


def test_exit_speed_takes_lists():
    from kdstore.exit_speed import exit_layers, exit_predictions, pick_speed

    assert exit_layers([[0.1, 0.9], [0.9, 0.9]], 0.5).tolist() == [1, 3]
    assert exit_predictions([[1, 0], [1, 0]], [0, 0], [1, 3]).tolist() == [1, 0]
    best = pick_speed([[0.1], [0.9]], [[1], [0]], [1, 1], [1, 1], max_loss=0.0)
    assert best["speed"] == 0.1 and best["loss_pt"] == 0.0


def test_decode_rows_checks_every_row_width():
    from kdstore import vectors

    with pytest.raises(ValueError, match="not all 2 float32 values wide"):  # 4 + 12 bytes passed as 2 rows of 8
        vectors.decode_rows([b"\0" * 4, b"\0" * 12], 2)
    m = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(vectors.decode_rows(vectors.encode_rows(m), 2), m)
    assert vectors.encode_rows(np.zeros((2, 0))) == [b"", b""]


def test_stratified_folds_refuse_nan_and_2d_labels():
    from kdstore.errors import KdError
    from kdstore.folds import stratified_folds

    with pytest.raises(KdError, match="integer class ids"):  # NaN matched no class: its fold was uninitialized memory
        stratified_folds(np.array([0, 0, np.nan, np.nan]), 2, seed=0)
    with pytest.raises(KdError, match="1-D"):
        stratified_folds(np.array([[0, 0], [1, 1]]), 2, seed=0)
    assert sorted(stratified_folds(np.array([0.0, 0.0, 1.0, 1.0]), 2, seed=0).tolist()) == [0, 0, 1, 1]


def test_split_long_texts_by_hand():
    """kd pretrain --long-texts split: a text over the limit becomes consecutive pieces, each ending after
    the last sentence end that leaves it at least half full, else at the limit; nothing is lost but the
    whitespace at a cut."""
    from kdstore.chunking import split_long_texts

    assert split_long_texts(["短句", "正好六个字啊"], max_chars=6) == (["短句", "正好六个字啊"], 0)
    text = "今天很好。明天也好吧！后天呢"  # ends after 今天很好。 (5) and 明天也好吧！ (11)
    assert split_long_texts([text], max_chars=8) == (["今天很好。", "明天也好吧！", "后天呢"], 1)
    assert split_long_texts(["一二三四五六七八九十"], max_chars=4) == (["一二三四", "五六七八", "九十"], 1)  # no sentence end: at the limit
    assert split_long_texts(["好。一二三四五六"], max_chars=6) == (["好。一二三四", "五六"], 1)  # an end too early: a piece under half full
    assert split_long_texts(["甲乙丙丁    戊己"], max_chars=4) == (["甲乙丙丁", "戊己"], 1)  # a piece of spaces alone: dropped
    pieces, _ = split_long_texts(["这是一个很长的句子。" * 50], max_chars=126)
    assert "".join(pieces) == "这是一个很长的句子。" * 50 and max(map(len, pieces)) <= 126
    with pytest.raises(ValueError, match="max_chars must be at least 1"):
        split_long_texts(["好"], max_chars=0)


def test_lr_factor_step_by_hand():
    """kd distill's learning-rate factor: a warmup ramp from 0 (taken at the middle of each step), then
    1 (constant) or down to 0 at the end (linear, kd teach's schedule)."""
    from kdstore.schedules import lr_factor_step, warmup_linear_decay_step

    assert [lr_factor_step(s, 10, schedule="constant", warmup=0.0) for s in range(10)] == [1.0] * 10
    assert [lr_factor_step(s, 10, schedule="constant", warmup=0.2) for s in range(4)] == pytest.approx([0.25, 0.75, 1.0, 1.0])
    assert [lr_factor_step(s, 4, schedule="linear", warmup=0.0) for s in range(4)] == pytest.approx([0.875, 0.625, 0.375, 0.125])
    assert all(lr_factor_step(s, 10, schedule="linear", warmup=0.2) == warmup_linear_decay_step(s, 10, warmup=0.2) for s in range(10))
    with pytest.raises(ValueError, match="schedule must be one of constant, linear"):
        lr_factor_step(0, 10, schedule="cosine", warmup=0.0)
    with pytest.raises(ValueError, match=r"warmup must be a fraction of training in \[0, 1\]"):
        lr_factor_step(0, 10, schedule="constant", warmup=1.5)


def test_soft_losses_and_warmup_refuse_impossible_settings():
    s, t = torch.randn(2, 3), torch.randn(2, 3)
    for bad in (0.0, -1.0, float("nan")):  # 0: NaN loss; negative: the targets turned around, silently
        with pytest.raises(ValueError, match="temperature must be a positive number"):
            kl_soft(s, t, temperature=bad)
        with pytest.raises(ValueError, match="temperature must be a positive number"):
            distillation_loss(s, t, torch.tensor([0, -1]), alpha=0.5, temperature=bad)
    for bad in (-0.1, 1.5):  # 1.5: the factor never reached 1
        with pytest.raises(ValueError, match="warmup must be a fraction"):
            warmup_linear_decay(0.0, warmup=bad)


def test_tfidf_oof_probs_check_labels_against_texts():
    from kdstore.tfidf import oof_probs

    texts = ["今天天气很好", "天气不错啊", "很好很好", "糟糕的一天", "太糟糕了", "真糟糕啊"]
    with pytest.raises(ValueError, match=r"one class id per text \(6\)"):  # the 6th row came back all zeros
        oof_probs(texts, np.array([0, 0, 0, 1, 1]), num_classes=2, folds=2)
    with pytest.raises(ValueError, match=r"class ids 0\.\.1"):
        oof_probs(texts, np.array([0, 0, 0, 2, 2, 2]), num_classes=2, folds=2)


def test_a_bar_written_to_a_file_logs_a_plain_line_while_it_runs(monkeypatch, capsys):
    """rich draws a bar on a non-terminal only when it ends: a log of an hour's training showed nothing."""
    import kdstore.progress as kp

    monkeypatch.delenv("KD_NO_PROGRESS", raising=False)
    monkeypatch.setattr(kp, "LOG_EVERY_S", 0.0)
    with kp.progress() as bar:
        task = bar.add_task("teach fold0", total=4, unit="step")
        bar.advance(task)
        bar.update(task, advance=1)
    err = capsys.readouterr().err.splitlines()
    assert [l.split()[2] for l in err if l.startswith("teach fold0") and "━" not in l] == ["1/4", "2/4"]
    monkeypatch.setattr(kp, "LOG_EVERY_S", 3600.0)
    with kp.progress() as bar:
        bar.advance(bar.add_task("quiet", total=2, unit="step"))
    assert sum("quiet" in l for l in capsys.readouterr().err.splitlines()) == 1  # the final bar only


def test_a_bar_written_to_a_file_keeps_its_counts_and_rate_whole(monkeypatch, capsys):
    """At rich's 80 columns a log's bar of a large ingest read `150000/150…` and its rate spilled onto a second line."""
    import kdstore.progress as kp

    monkeypatch.delenv("KD_NO_PROGRESS", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    with kp.progress() as bar:
        task = bar.add_task("checking against the store", total=150000, unit="rows")
        bar.update(task, advance=150000)
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(lines) == 1 and "150000/150000" in lines[0] and "rows/s" in lines[0], lines


def test_scaled_step_says_whether_the_scaler_took_the_step():
    """An fp16 step whose gradients overflowed is skipped by the scaler; teach's learning-rate
    schedule advanced over it all the same (warm-up ended early on a GPU without bf16)."""
    from kdstore.torchutil import scaled_step

    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=True)  # the CPU's scaler: the same bookkeeping as a GPU's
    assert scaled_step(scaler, (w * torch.tensor([float("inf"), 1.0])).sum(), opt, [w], max_norm=1.0) is False
    assert torch.equal(w.detach(), torch.ones(2)) and scaler.get_scale() == 2.0 ** 15  # skipped, scale halved
    opt.zero_grad()
    assert scaled_step(scaler, w.sum(), opt, [w], max_norm=10.0) is True and not torch.equal(w.detach(), torch.ones(2))
    plain = torch.amp.GradScaler("cpu", enabled=False)  # bf16 or fp32: every step is taken
    opt.zero_grad()
    assert scaled_step(plain, w.sum(), opt, [w], max_norm=10.0) is True


def test_frequency_loss_is_the_entropy_of_the_counts():
    assert frequency_loss([1, 1]) == pytest.approx(math.log(2))
    assert frequency_loss([2, 1, 1, 0]) == pytest.approx(1.5 * math.log(2))  # a zero count is no token
    assert frequency_loss([7]) == 0.0
    for bad, message in (([], "at least one token"), ([0, 0], "at least one token"), ([3, -1], "negative")):
        with pytest.raises(ValueError, match=message):
            frequency_loss(bad)


def test_collapsed_means_context_learned_and_lost():
    """The H200 run that ended at 6.65 nats against 6.56 for frequencies alone: caught once its loss
    is back at the bar after having been 0.5 below it; a run on its way down, or one never below, is not."""
    assert collapsed([7.1, 5.9, 5.4, 6.6], 6.56)
    assert collapsed([7.1, 6.06, 6.56], 6.56)  # back exactly at the bar, from exactly the margin below
    assert not collapsed([7.1, 5.9, 5.4, 6.5], 6.56)  # worse, still below the bar
    assert not collapsed([7.1, 6.2, 6.7], 6.56)  # never the margin below: young or never learning (learned_nothing's)
    assert not collapsed([5.0], 6.56)
    with pytest.raises(ValueError, match="non-empty"):
        collapsed([], 6.56)


def test_learned_nothing_needs_enough_texts():
    assert learned_nothing(3.22, 3.0, texts_seen=200_000)
    assert learned_nothing(3.0, 3.0, texts_seen=1_000_000)
    assert not learned_nothing(3.22, 3.0, texts_seen=16_000)  # 1,000 steps of 16 on a CPU: kd pretrain warns instead
    assert not learned_nothing(2.9, 3.0, texts_seen=1_000_000)


def test_step_losses_are_read_once_and_shown_every_so_often():
    """The per-step losses of a training loop stay tensors until the epoch's end (no .item() a step:
    a GPU waited for the host at every one); the bar shows the first step's loss, then every 50th's."""
    log = StepLosses(every=3, digits=2)
    shown = [log.add(torch.tensor(v), weight) for v, weight in [(1.0, 1.0), (2.0, 0.5), (3.0, 1.0), (4.0, 0.0), (5.0, 1.0), (6.0, 1.0)]]
    assert shown == ["1.00", "1.00", "3.00", "3.00", "3.00", "6.00"]  # the loss itself, not its rank's weighted share
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in log.values)
    assert log.floats() == [1.0, 1.0, 3.0, 0.0, 5.0, 6.0]
    assert host_floats([]) == [] and host_floats([0.5, 2]) == [0.5, 2.0]
    with_grad = torch.tensor(2.0, requires_grad=True) * 1.5  # a loss still in its graph is kept detached
    log.add(with_grad)
    assert not log.values[-1].requires_grad and log.floats()[-1] == 3.0


def test_step_losses_keep_no_tensor_a_step():
    """An epoch's losses go into one buffer, not a tensor each: a 400k-text pool's 6,500 steps kept as
    many tiny tensors among the steps' freed temporaries, and the allocator could neither reuse nor
    return that memory (a textcnn distill grew from 0.85 GB to 1.8 GB in its one epoch)."""
    import gc
    import warnings

    def live_tensors() -> int:
        with warnings.catch_warnings():  # (isinstance on torch.distributed's deprecated reduce_op warns)
            warnings.simplefilter("ignore", FutureWarning)
            return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())

    log = StepLosses()
    log.add(torch.tensor(0.0))
    before = live_tensors()
    for i in range(1, 2000):
        log.add(torch.tensor(float(i)) * 2.0, 0.5)
    assert live_tensors() - before <= 2  # (the buffer, regrown as it fills)
    assert log.floats() == [float(i) for i in range(2000)]



@pytest.mark.parametrize("kind", ["bigru", "bilstm"])
def test_an_rnn_student_reads_its_rows_unpacked_with_the_logits_and_gradients_of_packed_ones(kind, monkeypatch):
    """A packed GRU is slow on the CPU at long texts (bench/rnn_steps.py: a training step of 32 rows of 512 tokens
    2.3 s packed, 0.45 s unpacked): each direction is read where it has read its row's tokens and no padding."""
    from kdstore.students import BiRNN, StudentConfig

    torch.manual_seed(0)
    model = BiRNN(StudentConfig(kind=kind, vocab_size=50, num_classes=3, embed_dim=6, hidden=5, dropout=0.0))
    ids = torch.randint(1, 50, (4, 9))
    full = torch.ones_like(ids)
    padded = full.clone()
    padded[1, 5:] = 0
    padded[2, 1:] = 0  # one token
    padded[3, :] = 0  # none (read as its first token, as packing at length 1 did)
    pack = torch.nn.utils.rnn.pack_padded_sequence

    def packed(input_ids, attention_mask):  # as before
        x = pack(model.embed(input_ids), attention_mask.sum(1).clamp(min=1), batch_first=True, enforce_sorted=False)
        _, state = model.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        return model.mlp(torch.cat([h[0], h[1]], dim=1))

    packs = []
    monkeypatch.setattr(torch.nn.utils.rnn, "pack_padded_sequence", lambda *a, **k: packs.append(1) or pack(*a, **k))
    for mask in (full, padded):
        logits = []
        for forward in (packed, model):
            model.zero_grad()
            out = forward(ids, mask)
            (out * torch.arange(1.0, 4.0)).sum().backward()
            logits.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
        (expected, expected_grads), (got, grads) = logits
        assert torch.allclose(got, expected, atol=1e-6)
        assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(grads, expected_grads))
    assert not packs
    # the GPU's path (cuDNN reads packed rows) gives them too
    assert torch.allclose(model.packed(model.embed(ids), padded.sum(1).clamp(min=1)), packed(ids, padded), atol=1e-6)
    assert packs


@pytest.mark.parametrize("kind", ["bigru", "bilstm"])
def test_an_rnn_student_runs_each_direction_once_over_a_padded_batch(kind, monkeypatch):
    """Rows of several lengths ran the bidirectional RNN twice (over the rows, then over them shifted for the
    backward direction): both directions twice, half of it thrown away. Each direction runs once now."""
    from kdstore.students import BiRNN, StudentConfig

    model = BiRNN(StudentConfig(kind=kind, vocab_size=50, num_classes=3, embed_dim=6, hidden=5, dropout=0.0))
    steps = []  # (directions, tokens) of each RNN call
    for where in (torch, torch._VF):  # (nn.GRU and nn.LSTM call torch._VF's)
        for name in ("gru", "lstm"):
            real = getattr(where, name)
            monkeypatch.setattr(where, name, lambda x, *a, real=real: steps.append((2 if a[6] else 1, x.shape[1])) or real(x, *a))
    ids = torch.randint(1, 50, (3, 8))
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0
    model(ids, mask).sum().backward()
    assert sum(d * n for d, n in steps) == 2 * 8, steps
