"""``--match KIND:S:T[:WEIGHT]``: intermediate losses one by one (TextBrewer's intermediate_matches).

The parsing is pure (``kdstore.matches``); the matcher is checked against the layer-map options it
generalizes, on tiny BERTs built here (a 4-layer teacher, 2-layer students)."""

from __future__ import annotations

import pytest
import torch

from kdstore.distill import DistillConfig, IntermediateMatcher, student_shape
from kdstore.errors import KdError
from kdstore.matches import EMBEDDINGS, Match, check_matches, parse_match, parse_matches
from kdstore.students import StudentConfig, TransformerStudent


def test_a_match_is_parsed_spelled_back_and_checked():
    assert parse_match("hidden_mse:2:8") == Match("hidden_mse", 2, 8, 1.0)
    assert parse_match(" Attention-KL : 1 : 5 : 0.5 ") == Match("attention_kl", 1, 5, 0.5)
    assert parse_match("hidden_mse:emb:emb:2") == Match("hidden_mse", EMBEDDINGS, EMBEDDINGS, 2.0)
    for text in ("hidden_mse:emb:3:0.5", "nst:1:7:1", "pkd:0:0:1e-05"):
        assert parse_match(text).spelled == text and parse_match(parse_match(text).spelled) == parse_match(text)
    for text, said in (("hidden_mse:2", "give KIND:STUDENT_LAYER:TEACHER_LAYER[:WEIGHT]"),
                       ("fsp:1:2", "unknown loss 'fsp': choose from hidden_mse"),
                       ("attention_kl:emb:1", "attention_kl compares attentions, and the embeddings have none"),
                       ("hidden_mse:x:1", "the student layer must be a number counted from 0 (or emb), got 'x'"),
                       ("hidden_mse:1:-2", "the teacher layer must be counted from 0"),
                       ("hidden_mse:1:2:heavy", "the weight must be a number, got 'heavy'"),
                       ("hidden_mse:1:2:0", "a match of weight 0 teaches nothing"),
                       ("hidden_mse:1:2:nan", "the weight must be a finite number above 0"),
                       ("hidden_mse:1:2:inf", "the weight must be a finite number above 0")):
        with pytest.raises(KdError, match=said.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
            parse_match(text)
    with pytest.raises(KdError, match="the same loss on the same layers twice"):
        parse_matches(["hidden_mse:1:2", "hidden_mse:1:2:3"])
    assert len(parse_matches(["hidden_mse:1:2", "hidden_cos:1:2", "hidden_mse:1:3"])) == 3
    check_matches(parse_matches(["hidden_mse:emb:emb", "attention_kl:1:3"]), student_layers=2, teacher_layers=4)
    with pytest.raises(KdError, match=r"--match attention_kl:2:3:1: the student has no layer 2: its layers are 0 to 1$"):
        check_matches([parse_match("attention_kl:2:3")], student_layers=2, teacher_layers=4)
    with pytest.raises(KdError, match="the teacher has no layer 4"):
        check_matches([parse_match("nst:0:4")], student_layers=2, teacher_layers=4)



def test_an_attention_match_is_not_offered_emb_it_refuses():
    """`emb` is the embedding output, which has no attention: a refusal of an attention match's layer said
    "counted from 0 (or emb)" and "its layers are 0 to 1 (or emb)", and the emb it offered was then refused
    ("attention_kl compares attentions, and the embeddings have none"). A hidden-state match keeps it."""
    refusals = (("attention_kl:x:1", None), ("attention_mse:1:-2", None), ("attention_kl:5:1", (2, 4)), ("attention_mse:0:4", (2, 4)))
    for text, depths in refusals:
        with pytest.raises(KdError) as raised:
            if depths is None:
                parse_match(text)
            else:
                check_matches([parse_match(text)], student_layers=depths[0], teacher_layers=depths[1])
        assert "emb" not in str(raised.value), str(raised.value)
    for text in ("hidden_mse:x:1", "nst:1:-2"):
        with pytest.raises(KdError, match=r"\(or emb\)"):
            parse_match(text)
    with pytest.raises(KdError, match=r"its layers are 0 to 3 \(or emb\)"):
        check_matches([parse_match("pkd:0:4")], student_layers=2, teacher_layers=4)

def test_a_match_is_recorded_with_the_weight_it_ran_at():
    """A stage records its matches spelled (`matches`), to be passed back for a rerun: a weight spelled with
    six digits (`{:g}`) recorded `hidden_mse:1:3:0.3333333` as 0.333333 and 1234567 as 1.23457e+06, not the
    weights that ran. Spelled back, each parses to the same weight; a short one keeps its short spelling."""
    for text in ("hidden_mse:1:3:0.3333333", "attention_kl:0:1:1234567", f"nst:0:1:{2 / 3}", "pkd:emb:emb:0.1"):
        match = parse_match(text)
        assert parse_match(match.spelled) == match, (text, match.spelled)
    assert parse_match("pkd:emb:emb:0.1").spelled == "pkd:emb:emb:0.1"
    assert parse_match("hidden_mse:1:3").spelled == "hidden_mse:1:3:1"


def _nets(width: int):
    from transformers import AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=32, num_labels=2)
    teacher = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    bert = student_shape(config, DistillConfig(student="transformer", layers=2, width=width), 2)
    student = TransformerStudent(StudentConfig(kind="transformer", vocab_size=40, num_classes=2, layers=2, bert=bert)).eval()
    ids = torch.randint(1, 40, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return teacher, student, ids, mask


def test_matches_on_the_layer_map_equal_the_options_that_weigh_the_map():
    """--hidden-mse W averages the embedding match and each mapped layer's; --attention-kl W each mapped
    layer's: the same losses given as --match, each at W over their count, are the same figure."""
    teacher, student, ids, mask = _nets(width=16)
    mapped = IntermediateMatcher(student, teacher, DistillConfig(student="transformer", layers=2, hidden_mse=2.0, attention_kl=1.0,
                                                                  pkd=0.5, nst=0.25))
    assert mapped.map == [1, 3]
    matches = parse_matches([f"hidden_mse:emb:emb:{2 / 3}", f"hidden_mse:0:1:{2 / 3}", f"hidden_mse:1:3:{2 / 3}",
                             "attention_kl:0:1:0.5", "attention_kl:1:3:0.5", "pkd:0:1:0.25", "pkd:1:3:0.25",
                             "nst:0:1:0.125", "nst:1:3:0.125"])
    matched = IntermediateMatcher(student, teacher, DistillConfig(student="transformer", layers=2, matches=matches))
    logits, by_map = mapped(ids, mask)
    logits2, by_match = matched(ids, mask)
    # each loss under what it is a mean over (a --grad-accum piece weighs each by its own count's share)
    assert set(by_map) == set(by_match) == {"tokens", "pairs", "rows"} and all(v.item() > 0 for v in by_map.values())
    for n in by_map:
        torch.testing.assert_close(by_match[n], by_map[n], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits2, logits)
    # one match alone: its loss at its weight, on the layers it names (not the map's)
    one = IntermediateMatcher(student, teacher, DistillConfig(student="transformer", layers=2, matches=parse_matches(["attention_kl:1:0:3"])))
    from kdstore.losses import attention_kl

    s = student.net(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    t = teacher(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    alone = one(ids, mask)[1]
    torch.testing.assert_close(alone["tokens"], 3 * attention_kl(s[1], t[0], mask))
    assert alone["pairs"].item() == alone["rows"].item() == 0.0


def test_each_match_of_other_widths_learns_its_own_projection():
    """A narrower student: each vector-comparing match has a projection of its own (TextBrewer's per-match
    proj), trained with the student; attention and NST matches need none."""
    teacher, student, ids, mask = _nets(width=8)
    cfg = DistillConfig(student="transformer", layers=2, width=8,
                        matches=parse_matches(["hidden_mse:1:3", "hidden_cos:0:1:0.5", "attention_mse:0:1", "nst:1:2"]))
    matcher = IntermediateMatcher(student, teacher, cfg)
    kinds = [type(p).__name__ for p in matcher.match_proj]
    assert kinds == ["Linear", "Linear", "Identity", "Identity"]
    assert matcher.match_proj[0] is not matcher.match_proj[1]
    params = matcher.projection_parameters()
    assert sum(p.numel() for p in params) == 3 * (8 * 16 + 16)  # the map's shared one, and the two matches'
    _, loss = matcher(ids, mask)
    sum(loss.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for proj in matcher.match_proj[:2] for p in proj.parameters())
    assert all(p.grad is None for p in matcher.proj.parameters())  # (no loss on the map: the shared one unused)


def test_a_layer_several_teachers_lack_names_the_first_teacher_run():
    """With --teacher-run F --teacher-run A (a 1-layer and a 2-layer teacher), `--match hidden_mse:0:1` or
    `--layer-map 1` was refused as "the teacher has no layer 1: its layers are 0 to 0": of two teachers, which?
    A has that layer. The error names the first --teacher-run, whose layers a student copies and matches."""
    from transformers import BertConfig

    from kdstore.distill import check_student_shape

    first = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       max_position_embeddings=32)
    for options in ({"matches": tuple(parse_matches(["hidden_mse:0:1"]))}, {"layer_map": (1,), "hidden_mse": 1.0}):
        cfg = DistillConfig(student="transformer", layers=1, teacher_runs=("F", "A"), max_len=16, **options)
        with pytest.raises(KdError, match=r"layers are 0 to 0.*run 'F', the first --teacher-run"):
            check_student_shape(cfg, first, 2)
        one = DistillConfig(student="transformer", layers=1, teacher_runs=("F",), max_len=16, **options)
        with pytest.raises(KdError) as raised:  # one teacher: "the teacher" says which
            check_student_shape(one, first, 2)
        assert "--teacher-run" not in str(raised.value)


def test_a_textbrewer_hidden_layer_index_past_the_last_says_how_kd_counts():
    """TextBrewer's hidden-state `layer_T`/`layer_S` index `hidden_states`, where 0 is the embedding output:
    its last layer of a 4-layer teacher is 4, which kd counts as 3. `--match hidden_mse:1:4` was refused with
    "the teacher has no layer 4" alone; it says that TextBrewer's hidden layer N is N-1 here (emb its 0).
    An attention match counts alike in both: no such hint there."""
    with pytest.raises(KdError, match=r"the teacher has no layer 4 \(TextBrewer's hidden layer 4, counted from the embeddings as 0, "
                                      r"is 3 here; its 0 is emb\): its layers are 0 to 3 \(or emb\)"):
        check_matches([parse_match("hidden_mse:1:4")], student_layers=2, teacher_layers=4)
    with pytest.raises(KdError, match=r"the student has no layer 2 \(TextBrewer's hidden layer 2, .* is 1 here"):
        check_matches([parse_match("nst:2:3")], student_layers=2, teacher_layers=4)
    with pytest.raises(KdError) as raised:
        check_matches([parse_match("attention_kl:1:4")], student_layers=2, teacher_layers=4)
    assert "TextBrewer" not in str(raised.value)
    with pytest.raises(KdError) as raised:  # past the last by more: no TextBrewer index either
        check_matches([parse_match("hidden_mse:1:7")], student_layers=2, teacher_layers=4)
    assert "TextBrewer" not in str(raised.value)


def test_match_help_says_textbrewer_hidden_layers_count_the_embeddings():
    """A TextBrewer `{'layer_T': 8, 'layer_S': 2, 'feature': 'hidden'}` is `hidden_mse:1:7` here: its hidden
    indices count the embedding output as 0. Copied as `hidden_mse:2:8` it silently matched the layers above;
    the help and README say the shift."""
    from click.testing import CliRunner

    from commands.cli import cli

    shown = " ".join(CliRunner().invoke(cli, ["distill", "--help"]).output.split())
    assert "TextBrewer's hidden layer N (0: the embeddings) is N-1 here" in shown, shown
    from pathlib import Path

    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert "TextBrewer's hidden-state `layer_T`/`layer_S` count the embedding output as 0" in readme
