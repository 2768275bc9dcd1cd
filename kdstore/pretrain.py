"""``kd pretrain``: a BERT-style encoder pre-trained on the store's own text, by masked-LM or by
ELECTRA's replaced-token detection (``--objective electra``, :mod:`kdstore.electra`).

This is what makes kd work end to end where no pretrained model can be downloaded: the result is a
Hugging Face directory (config, weights, tokenizer) that ``kd teach --model pretrain:RUN`` fine-tunes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .batching import bucketed_batches, check_grad_accum, encode_flagged, micro_batches, pad, unknown_fraction
from .chunking import split_long_texts
from .context_free import collapsed, frequency_loss, learned_nothing, measured_loss
from .distributed import SINGLE, Dist
from .electra import ReplacedTokenDetection
from .errors import KdError
from .jsonl import text_key
from .masking import IGNORE, mask_tokens
from .progress import progress
from .resume import TrainingState, random_state, recorded_again, recording, set_random_state, settings_key
from .runs import StageHandle
from .names import SPLITS
from .schedules import check_lr, check_steps, warmup_linear_decay
from .segment import jieba_module, token_groups, word_starts
from .serving import sha256_file
from .store import Store
from .torchutil import adam_options, autocast, check_finite, count_parameters, decay_exempt, grad_scaler, host_floats, pick_device, saving_model, scaled_update, set_seed, to_device
from .vocab import SPECIALS, count_chars, make_tokenizer, vocab_from_counts

MODEL_SUBDIR = "model"
# fp16 steps the grad scaler may skip in a row (it halves its scale each time: 2^16 is back to 1 in 16)
# before the loss itself is taken as not finite, rather than --steps waited for forever
MAX_SKIPPED_STEPS = 100
# the steps before the 50th whose loss the bar shows (read on every rank alike: a collective)
EARLY_SHOWN = frozenset((1, 5, 10, 20, 30, 40))
OBJECTIVES = ("mlm", "electra")
# config.json's record of the positions a model was trained on (kd pretrain's --max-len, then the longest
# --max-len a kd teacher fine-tuned it with): past it, position vectors are as initialised, at random
TRAINED_POSITIONS = "kd_trained_positions"


MAX_POSITIONS = 16_384  # --max-len at most: a position table, and attention memory in its square, past any text classified here


LONG_TEXTS = ("split", "cut")
SAVE_EVERY_S = 600.0  # seconds of training between two saves of the state `kd pretrain --resume` continues from


@dataclass(frozen=True)
class PretrainConfig:
    layers: int = 6
    hidden: int = 384
    heads: int = 0  # 0: hidden // 64 (at least 1)
    intermediate: int = 0  # 0: 4 * hidden
    max_len: int = 128
    batch_size: int = 64
    grad_accum: int = 1  # K >= 2: each batch run as K pieces whose gradients add up (the same steps in less memory)
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.06
    steps: int = 0  # 0: run for ``minutes``
    minutes: float = 0.0
    mask_prob: float = 0.15
    objective: str = "mlm"  # or "electra": replaced-token detection with a small generator
    generator_layers: int = 0  # electra: 0 = a third of --layers (at least 1), same width
    rtd_weight: float = 50.0  # electra: weight of the detection loss (the paper's lambda)
    wwm: bool = True  # whole-word masking over jieba's segmentation
    min_count: int = 2
    max_vocab: int = 21128
    corpus: tuple[str, ...] = field(default_factory=tuple)
    splits: tuple[str, ...] = field(default_factory=tuple)  # the store's splits whose texts it reads; () = every split
    long_texts: str = "split"  # a text longer than max_len: "split" into pieces read whole, or "cut" to its first max_len tokens
    seed: int = 42
    device: str = "auto"

    def validate(self) -> None:
        # one option a message: a message naming several was followed by a config file's value of one
        # that was fine (`--steps -1` typed: "... (kd.toml: [pretrain] minutes = 10)")
        for option, value in (("--steps", self.steps), ("--minutes", self.minutes)):
            if value < 0:
                raise KdError(f"{option} cannot be negative, got {value:g}")
        if self.steps == 0 and self.minutes == 0:
            raise KdError("give a training budget: --steps N or --minutes M")
        check_steps(self.steps)
        for option, value, least in (("--hidden", self.hidden, 1), ("--heads", self.heads, 0), ("the feed-forward width", self.intermediate, 0),
                                     ("--batch-size", self.batch_size, 1), ("--min-count", self.min_count, 1),
                                     ("--layers", self.layers, 1), ("--max-len", self.max_len, 8)):
            if value < least:
                zero = " (0: auto)" if option == "--heads" else ""
                raise KdError(f"{option} must be at least {least}{zero}, got {value}")
        check_lr(self.lr)
        check_grad_accum(self.grad_accum, self.batch_size)
        if self.long_texts not in LONG_TEXTS:
            raise KdError(f"--long-texts must be one of {', '.join(LONG_TEXTS)}, got {self.long_texts!r}")
        if not 0.0 <= self.warmup < 1.0 or self.weight_decay < 0:
            raise KdError("the warm-up share must be in [0, 1) and the weight decay >= 0")
        if self.max_vocab <= len(SPECIALS):
            raise KdError(f"the vocabulary must be larger than its {len(SPECIALS)} special tokens")
        if self.hidden % self.n_heads:
            # (the default heads, hidden // 64, were named as if typed: "--hidden 200 is not divisible by 3 heads")
            # (heads given are named as the option: a config file's `heads = 3` is then named with the file)
            heads = f"--heads {self.heads}" if self.heads else f"{self.n_heads} heads (the default, --hidden / 64): pass --heads, a divisor of {self.hidden}"
            raise KdError(f"--hidden {self.hidden} is not divisible by {heads}")
        if self.max_len > MAX_POSITIONS:  # (99999999: a position table and attention no machine holds; the kernel killed kd)
            raise KdError(f"--max-len {self.max_len} is past {MAX_POSITIONS} tokens: a model kd pre-trains reads at most that many")
        if not 0.0 < self.mask_prob < 1.0:
            raise KdError(f"--mask-prob must be in (0, 1), got {self.mask_prob}")
        if self.objective not in OBJECTIVES:
            raise KdError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.generator_layers < 0 or self.rtd_weight <= 0:
            raise KdError("--generator-layers must be 0 (auto) or more, and the detection weight positive")
        bad = [x for x in self.splits if x not in SPLITS]
        if bad:
            raise KdError(f"unknown split {bad[0]!r}: choose from {', '.join(SPLITS)}")
        if self.generator_layers and self.objective != "electra":
            raise KdError("--generator-layers sizes ELECTRA's generator: add --objective electra, or leave it out")
        if self.generator_layers > self.layers:  # (a generator deeper than the discriminator it feeds: ELECTRA's
            # replaced tokens become too hard to detect, and the time goes to a network that is thrown away)
            raise KdError(f"--generator-layers {self.generator_layers} is more than --layers {self.layers}: ELECTRA's "
                          "generator is the smaller network (a quarter to a half of it works best; 0 takes a third)")
        self.check_fits_memory()

    def check_fits_memory(self) -> None:
        """Refuse, in one line, sizes whose weights alone (the vocabulary's rows left out: not yet built)
        would not fit this machine's memory, as a student's are (``StudentConfig.check_fits_memory``):
        PyTorch failed the stage with its allocation traceback (``--hidden 100000``: 40 GB a matrix)."""
        from .students import StudentConfig, machine_memory, parameter_count

        memory = machine_memory()
        if memory is None:  # no way to tell (Windows): left to PyTorch
            return
        bert = {"hidden_size": self.hidden, "intermediate_size": self.intermediate or 4 * self.hidden,
                "vocab_size": len(SPECIALS), "max_position_embeddings": max(512, self.max_len), "type_vocab_size": 2}
        layers = self.layers + (self.n_generator_layers if self.objective == "electra" else 0)
        params = parameter_count(StudentConfig(kind="transformer", vocab_size=len(SPECIALS), num_classes=1,
                                               layers=layers, bert={**bert, "num_hidden_layers": layers}))
        if 4 * params > memory:
            raise KdError(f"an encoder of these sizes has over {params:,} parameters ({4 * params / 2**30:,.1f} GiB in float32), "
                          f"more than this machine's {memory / 2**30:,.1f} GiB of memory: lower --layers, --hidden")

    @property
    def n_generator_layers(self) -> int:
        return self.generator_layers or max(1, self.layers // 3)

    @property
    def n_heads(self) -> int:
        return self.heads or max(1, self.hidden // 64)


def read_corpus(paths: tuple[str, ...], digests: dict[str, str] | None = None) -> list[str]:
    """The non-blank lines of plain-text corpora, read as ``kd ingest`` reads a file: UTF-8, a
    byte-order mark dropped (it stayed on the first line), another encoding refused naming the line;
    lines end at ``\n`` (a bare ``\r`` in a file without one), not at the other characters
    ``str.splitlines`` breaks at (U+2028, U+0085, form feed, ...), which cut a text in two; a file
    with no text at all (blank lines, or lines of zero-width characters only, which ``kd ingest``
    refuses as empty texts: skipped here) is refused, as ``kd ingest`` refuses it; so are JSON lines
    and a table (every line holding the same tabs), whose keys or other columns would be learned as text.
    ``digests``: filled with each path's sha256 of the bytes read (a pipe, ``--corpus <(xzcat news.xz)``,
    can be read once only; a file, not twice to record it)."""
    from .textfile import _line_end, decode
    from .textkey import unseen

    lines: list[str] = []
    for p in paths:
        try:
            data = _stdin_bytes() if str(p) == "-" else Path(p).read_bytes()
        except OSError as exc:
            raise KdError(f"{p}: cannot read corpus: {exc.strerror or exc}") from None
        if digests is not None:
            digests[str(p)] = hashlib.sha256(data).hexdigest()
        content = decode(data, "<stdin>" if str(p) == "-" else str(p), "txt")  # (stdin: "pipe it through iconv", as kd ingest - says)
        # a line of zero-width or format characters only (U+200B, a BOM) is as blank to the tokenizer
        found = [t for t in (l.strip() for l in content.split(_line_end(content))) if t and not unseen(t)]
        if not found:
            raise KdError(f"{p}: no text in the corpus (the file is empty or every line is blank)")
        if found[0].startswith("{") and found[0].endswith("}"):  # (JSON lines: their keys and braces would be learned as text)
            try:
                obj = json.loads(found[0])
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                first = next(n for n, l in enumerate(content.split(_line_end(content)), 1) if l.strip() == found[0])
                key = text_key(obj, "text")  # (`内容` beside an id, as kd predict's hint names it)
                path = shlex.quote(str(p))
                jq = f"jq -r .{key} {path}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else f"jq -r {shlex.quote('.' + json.dumps(key, ensure_ascii=False))} {path}"
                raise KdError(f"{p}: line {first}: a JSON object: --corpus reads one plain text a line, and the keys and "
                              f"braces would be learned as text; write the texts alone ({jq})")
        tabs = found[0].count("\t")
        if tabs and len(found) > 1 and all(t.count("\t") == tabs for t in found):
            # a table (label<TAB>text, as kd ingest reads a TSV): its labels would be learned as text, a test
            # file's beside the texts they judge (kd predict warns of such lines; a long run is refused here)
            first = next(n for n, l in enumerate(content.split(_line_end(content)), 1) if l.strip() == found[0])
            # the column of the longest cells is the text (text<TAB>label too: cut -f2 kept the labels alone);
            # where none is longest, kd ingest's label<TAB>text, and of more columns no default says which
            widths = [sum(len(t.split("\t")[c]) for t in found) for c in range(tabs + 1)]
            column = str(widths.index(max(widths)) + 1) if widths.count(max(widths)) == 1 else "2" if tabs == 1 else "N"
            raise KdError(f"{p}: line {first}: {tabs + 1} tab-separated columns on every line: --corpus reads one plain text "
                          f"a line, and the other columns (a label, an id) would be learned as text; write the text column "
                          f"alone (cut -f{column} {shlex.quote(str(p))})")
        lines.extend(found)
    return lines


def check_enough_texts(stored: list[str], corpus: list[str], cfg: PretrainConfig) -> None:
    """Refuse fewer than 2 texts to pre-train on, as ``--long-texts split`` would make them of the store's
    texts ``stored`` (any 2 of them tell) and ``--corpus``'s ``corpus``."""
    texts = stored + corpus
    if len(texts) < 2 and cfg.long_texts == "split":
        texts, _ = split_long_texts(texts, max_chars=cfg.max_len - 2)
    if len(texts) >= 2:
        return
    of = f" of split {', '.join(cfg.splits)}" if cfg.splits else ""
    if corpus:  # (its text counted too: "the store has fewer than 2 texts" read as if --corpus were not)
        raise KdError(f"fewer than 2 texts to pre-train on: {len(stored)}{of} in the store and {len(corpus)} in --corpus: "
                      "ingest some text first, or give --corpus more lines")
    raise KdError(f"the store has fewer than 2 texts{of} to pre-train on: ingest some text first")


def pretrain(store: Store, stage: StageHandle, cfg: PretrainConfig, dist: Dist = SINGLE, *,
             corpus: list[str] | None = None, resume: bool = False, stage_config: dict | None = None) -> Path | None:
    """Build a vocabulary, pre-train an encoder within the budget (masked LM, or ELECTRA's
    discriminator with ``objective="electra"``), save it; returns its directory. ``corpus``: the texts of
    ``cfg.corpus`` already read (``read_corpus``), else read here.

    Under torchrun every rank builds the same vocabulary and batches and trains on its share of each
    global batch (DDP); rank 0 decides when the time budget is spent, saves the model and records
    figures (``None`` is returned on the other ranks).

    Every ``SAVE_EVERY_S`` seconds of training (at a 50-step figure) rank 0 saves the training state
    beside the stage (:mod:`kdstore.resume`, with ``stage_config``, the stage's config); ``resume`` goes
    on from it: with ``--steps`` (one process) to the very model of a run never stopped.
    """
    from transformers import BertConfig, BertForMaskedLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    cfg.validate()
    rng = set_seed(cfg.seed)
    device = pick_device(cfg.device)
    add_metrics = dist.on_main(store.add_metrics)

    # every text as ingested, not the augmented ones (kd distill --augment): their [UNK] spellings and
    # word swaps are no language to learn, and --augment-n 4 would outweigh the store's own texts;
    # of the --split splits only, when given (test's texts, say, left out of a strict evaluation)
    stored = store.samples(splits=cfg.splits or None, include_dropped=True, where="parent_id IS NULL")
    dist.agree("texts", stored)
    corpus = read_corpus(cfg.corpus) if corpus is None else corpus  # (kd pretrain read it before the stage)
    check_enough_texts(stored.texts, corpus, cfg)
    texts = stored.texts + corpus
    split = 0
    if cfg.long_texts == "split":  # every character learned, not a long line's first --max-len tokens alone
        texts, split = split_long_texts(texts, max_chars=cfg.max_len - 2)  # ([CLS] and [SEP]; a character is at most a token)
    counts = count_chars(texts)
    tokens = vocab_from_counts(counts, min_count=cfg.min_count, max_size=cfg.max_vocab)
    # each rank reads --corpus from its own disk: unlike files would give unlike vocabularies, and DDP
    # would average the gradients of unlike embeddings
    dist.agree_on("--corpus texts or vocabularies", "\n".join(corpus), "\n".join(tokens))
    # (the ASCII letters and digits kept below --min-count, to spell words, are no vocabulary on their
    # own: every other character of the texts would be [UNK], and the model would learn next to nothing)
    if len(tokens) == len(SPECIALS) or max(counts.values(), default=0) < cfg.min_count:
        # (the option first: a config file's min-count is then named with the file; the texts counted as read, not as split)
        raise KdError(f"--min-count {cfg.min_count}: no character occurs that many times in the {len(stored.texts) + len(corpus)} texts: lower it")
    tokenizer = make_tokenizer(tokens)
    ids, groups, cut = _encode_with_groups(tokenizer, texts, cfg)
    lengths = [len(x) for x in ids]
    special_ids = torch.tensor([tokenizer.convert_tokens_to_ids(t) for t in SPECIALS])
    baseline = _frequency_loss(ids, special_ids)  # what a model that learned no context scores
    # characters below --min-count, of the text tokens (every id but [PAD], [CLS], [SEP], [MASK]): kd pretrain warns when many
    unk_share = unknown_fraction(ids, tokenizer.unk_token_id, special_ids.tolist()) or 0.0
    if np.isnan(baseline):  # (every token [UNK] or special: a NaN bar, a masked-LM loss of 0, and a success on record)
        longest = tokenizer.backend_tokenizer.model.max_input_chars_per_word
        raise KdError(f"every word of the {len(texts)} texts is [UNK]: none is in the vocabulary built from them (a word "
                      f"of over {longest} characters without a space, or one holding a character seen fewer than "
                      f"--min-count {cfg.min_count} times, is one [UNK]), so there is nothing to pre-train on")

    model_cfg = BertConfig(
        vocab_size=len(tokens),
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.n_heads,
        intermediate_size=cfg.intermediate or 4 * cfg.hidden,
        max_position_embeddings=max(512, cfg.max_len),
        pad_token_id=tokenizer.pad_token_id,
    )
    # the positions past --max-len start and stay random: said in config.json, for whoever fine-tunes the folder
    setattr(model_cfg, TRAINED_POSITIONS, cfg.max_len)
    if cfg.objective == "electra":
        from transformers import BertModel

        gen_cfg = BertConfig.from_dict({**model_cfg.to_dict(), "num_hidden_layers": cfg.n_generator_layers})
        objective = ReplacedTokenDetection(
            BertModel(model_cfg, add_pooling_layer=False), BertForMaskedLM(gen_cfg), weight=cfg.rtd_weight,
            first_regular_id=len(SPECIALS),
        ).to(device)
        model = objective.discriminator  # what is kept and saved
    else:
        objective = MaskedLMLoss(BertForMaskedLM(model_cfg).to(device))
        model = objective.model
    net = dist.wrap(objective)
    optimizer = torch.optim.AdamW(_decay_groups(objective, cfg.weight_decay), lr=cfg.lr, **adam_options(device))
    gen = torch.Generator().manual_seed(cfg.seed + dist.rank)  # each rank masks its own share

    measured = measured_loss(cfg.objective)  # (what the frequency bar is held against)
    scaler = grad_scaler(device)
    budget_s = cfg.minutes * 60.0
    start, step, recent, recent_rtd, windows = time.monotonic(), 0, [], [], []
    shown = "-"  # the loss the bar shows: the mean of the last 50 steps, when they are read (of those taken, early on)
    seen = 0  # texts of the steps taken (a store smaller than --batch-size makes smaller batches)
    skipped = 0  # fp16 steps the scaler skipped in a row
    # the training state saved as it goes, and what a --resume takes back from it
    state = TrainingState(store, stage.run, name=stage.name, config=stage_config or config_dict(cfg), resume=resume, writes=dist.is_main,
                          key={"settings": settings_key(settings_dict(cfg)), "texts": _texts_digest(stored.texts), "corpus": _texts_digest(corpus)})
    saved = state.load() if resume else None
    # (its figures, which the saved state keeps and a resume records again)
    add_metrics = recording(add_metrics, recorded_again(add_metrics, stage.id, saved["rows"] if saved is not None else []))
    position = 0  # batches of the current pass already trained on (a resumed pass's skipped)
    if saved is not None:
        objective.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if saved["scaler"]:
            scaler.load_state_dict(saved["scaler"])
        step, seen, windows, position = saved["step"], saved["seen"], saved["windows"], saved["position"]
        recent = [torch.tensor(v, device=device) for v in saved["recent"]]
        recent_rtd = [torch.tensor(v, device=device) for v in saved["recent_rtd"]]
        set_random_state(rng, saved["random"])
        rng.bit_generator.state = saved["pass_random"]  # (the pass it was in, drawn again: its first `position` batches skipped)
        if dist.rank == 0:  # (each other rank masks anew, from where it is: torchrun's masks are each rank's own anyway)
            gen.set_state(saved["masks"])
        else:
            gen.manual_seed(cfg.seed + dist.rank + 7919 * step)
        start -= saved["seconds"]
    last_save = time.monotonic()
    net.train()
    with progress(extra="loss {task.fields[loss]}") as bar:
        task = bar.add_task("pre-train", total=cfg.steps or None, loss="-", unit="step", left_s=budget_s or None, completed=step)
        done = False
        while not done:
            pass_random = rng.bit_generator.state  # (before the pass's shuffle: what a resume draws it from again)
            # (a save at the end of a pass skips all of it, once: the pass after is drawn and trained on)
            skip, position = position, 0
            for at_batch, batch in enumerate(bucketed_batches(lengths, cfg.batch_size, rng)):
                if at_batch < skip:
                    continue
                elapsed = time.monotonic() - start - (groups.seconds if groups is not None else 0.0)
                frac = max(step / cfg.steps if cfg.steps else 0.0, elapsed / budget_s if budget_s else 0.0)
                if budget_s:
                    frac = dist.broadcast_object(frac)  # rank 0's clock: every rank stops at the same step
                if frac >= 1.0:
                    done = True
                    break
                idx, weight = dist.split_batch(batch)
                input_ids, mask = pad([ids[i] for i in idx], tokenizer.pad_token_id)
                special = torch.isin(input_ids, special_ids)
                corrupted, labels = mask_tokens(
                    input_ids, special, mask_id=tokenizer.mask_token_id, vocab_size=len(tokens),
                    probability=cfg.mask_prob, generator=gen, first_regular_id=len(SPECIALS),
                    groups=None if groups is None else pad(groups.batch(idx), -1)[0],
                )
                # a step's rate is that of the middle of its share of --steps, not of its start: the warm-up
                # gave the first step a rate of 0 (--steps 1 saved the random initialisation, whatever --lr)
                at = max(frac, (step + 0.5) / cfg.steps) if cfg.steps else frac
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * warmup_linear_decay(at, warmup=cfg.warmup)
                # each loss is a mean over this rank's masked (and, for ELECTRA, scored) tokens: weigh
                # it by its share of the whole batch's tokens, so torchrun trains as one process would
                positions, targets = masked_positions(labels)
                scored = (~special & mask.bool()).flatten().nonzero().squeeze(1)  # (ELECTRA's scored tokens)
                counts = [positions.numel(), scored.numel()]
                shares = dist.share_weights([c if weight else 0 for c in counts])
                pieces = micro_batches(np.arange(len(idx)), cfg.grad_accum)  # (one, the whole share, unless --grad-accum)
                recent_mlm = recent_rtd_step = 0.0
                for k, (rows, part) in enumerate(pieces):
                    piece = (corrupted, mask, positions, targets, input_ids, scored)
                    weights = shares
                    if len(pieces) > 1:  # this piece's rows, its tokens' means weighed by their share of the batch's tokens
                        at_rows = torch.as_tensor(rows)
                        p_labels, p_mask = labels[at_rows], mask[at_rows]
                        p_positions, p_targets = masked_positions(p_labels)
                        p_scored = (~special[at_rows] & p_mask.bool()).flatten().nonzero().squeeze(1)
                        piece = (corrupted[at_rows], p_mask, p_positions, p_targets, input_ids[at_rows], p_scored)
                        weights = [w * n / c if c and part else 0.0 for w, n, c in zip(shares, (p_positions.numel(), p_scored.numel()), counts)]
                    with dist.accumulating(net, last=k == len(pieces) - 1):
                        with autocast(device):
                            if cfg.objective == "electra":
                                loss, mlm, rtd = net(*(to_device(t, device) for t in piece))
                                step_loss = mlm * weights[0] + objective.weight * rtd * weights[1]
                                recent_rtd_step = recent_rtd_step + rtd.detach().float() * weights[1]
                            else:
                                loss = mlm = net(*(to_device(t, device) for t in piece[:4]))
                                step_loss = loss * weights[0]
                        scaler.scale(step_loss).backward()
                    recent_mlm = recent_mlm + mlm.detach().float() * weights[0]
                if cfg.objective == "electra":
                    recent_rtd.append(recent_rtd_step)
                stepped = scaled_update(scaler, optimizer, objective.parameters(), max_norm=1.0)
                optimizer.zero_grad(set_to_none=True)
                step += stepped  # (an fp16 step the scaler skipped is no step of --steps, nor of the warm-up)
                seen += len(batch) if stepped else 0
                skipped = 0 if stepped else skipped + 1
                if skipped >= MAX_SKIPPED_STEPS:  # (every rank alike: the scaler reads the gradients DDP averaged)
                    # a scale halved this often fixes no overflow of the gradients: the loss itself is not finite,
                    # and --steps would never be reached (nor the end of --minutes told apart from no time)
                    raise _unresumable(state, f"training diverged by step {step}: the fp16 grad scaler skipped the last {skipped} steps "
                                  f"(the loss is {loss.item()}); lower --lr")
                # this rank's part of the batch's mean (see _loss_figures), kept on the device: an .item() a step
                # made a GPU wait for the host each step, the next batch's masking and kernel launches no longer
                # overlapping the step before (read every 50 steps, one transfer)
                recent.append(recent_mlm)
                del recent[:-50], recent_rtd[:-50]
                if stepped and step % 50 == 0:
                    figures = _loss_figures(recent, recent_rtd, dist)  # (every rank alike: each stops at the same step)
                    add_metrics(stage.id, "train", figures, step=step)
                    _check_finite(state, objective, when=f"by step {step}")
                    windows.append(figures["mlm_loss"])
                    shown = f"{figures['mlm_loss']:.3f}"
                    if collapsed(windows, baseline):  # no more steps bring it back: stop now, not at the end of --minutes
                        raise _unresumable(state, f"training diverged by step {step}: the {measured} fell to {min(windows):.2f} and is back at "
                                      f"{windows[-1]:.2f}, no better than predicting each character by its frequency "
                                      f"({baseline:.2f}); a teacher fine-tuned from the model would answer one class: lower --lr (now {cfg.lr:g})")
                    if dist.is_main and time.monotonic() - last_save >= SAVE_EVERY_S:  # (rank 0's alone: no collective)
                        state.save({
                            "step": step, "seen": seen, "windows": windows, "position": at_batch + 1, "pass_random": pass_random,
                            "recent": host_floats(recent), "recent_rtd": host_floats(recent_rtd) if recent_rtd else [],
                            "random": random_state(rng), "masks": gen.get_state(), "rows": add_metrics.rows,
                            "seconds": time.monotonic() - start - (groups.seconds if groups is not None else 0.0),
                            "model": {k: v.detach().cpu() for k, v in objective.state_dict().items()},
                            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                        }, {"step": step, "seconds": elapsed})
                        last_save = time.monotonic()
                elif stepped and step in EARLY_SHOWN:  # (a slow model's first 50 steps took minutes under a bar saying "-")
                    shown = f"{_loss_figures(recent, recent_rtd, dist)['mlm_loss']:.3f}"
                bar.update(task, advance=int(stepped), loss=shown,
                           left_s=max(budget_s - elapsed, 0.0) if budget_s else None)  # --minutes: the ETA is the budget left
        if step:  # the bar ends on the loss recorded, the last 50 steps', not the one read at the last 50th step (or step 5)
            losses = _loss_figures(recent, recent_rtd, dist)  # a collective: every rank (step is every rank's), before rank 0 goes on alone
            bar.update(task, loss=f"{losses['mlm_loss']:.3f}")

    if step == 0:  # every rank sees it (rank 0's clock decides): an untrained model is no result
        raise KdError(f"--minutes {cfg.minutes:g} ran out before the first training step: give it more time or --steps")
    _check_finite(state, objective, when=f"by step {step}")
    if learned_nothing(losses["mlm_loss"], baseline, texts_seen=seen):
        raise _unresumable(state, f"after {step} steps ({seen:,} texts) the {measured} is {losses['mlm_loss']:.2f}, no better than predicting each "
                      f"character by its frequency ({baseline:.2f}): the model learned no context, and a teacher fine-tuned "
                      f"from it may answer one class; check --lr (now {cfg.lr:g}): too high a rate collapses a model to this, "
                      "too low leaves it where it started")
    if not dist.is_main:
        return None
    out = stage.artifact_dir / MODEL_SUBDIR
    with saving_model(out):
        model.save_pretrained(out)
        tokenizer.model_max_length = model_cfg.max_position_embeddings  # what plain transformers truncates to
        tokenizer.save_pretrained(out)
    stage.record_artifact(out)
    store.add_metrics(
        stage.id,
        "train",
        {
            **losses,
            "frequency_loss": baseline,  # the loss of knowing no context (kd pretrain warns when mlm_loss is no better)
            "steps": step,
            "seconds": time.monotonic() - start - (groups.seconds if groups is not None else 0.0),
            "texts": len(texts),
            "truncated": int(sum(cut)),  # texts cut to --max-len tokens: their ends are never learned (kd pretrain warns when most are)
            "split_texts": split,  # texts longer than --max-len read as several pieces (--long-texts split), counted in texts as their pieces
            "vocab_size": len(tokens),
            "unk_share": unk_share,  # of the text tokens, [UNK]: a character seen fewer than --min-count times
            "parameters": count_parameters(model),
            **({"processes": dist.world} if dist.active else {}),
        },
    )
    return out


def _unresumable(state: TrainingState, message: str) -> KdError:
    """The error of a failure that ``--resume`` (the same options, --lr included) would only repeat: a loss
    no better than the frequencies', a collapse, a divergence. Its saved state goes with it, so that the
    error offers no resume (it offered one beside "check --lr", which a resume cannot change)."""
    state.finish()
    return KdError(message)


def _check_finite(state: TrainingState, module: torch.nn.Module, *, when: str) -> None:
    """``check_finite``, its failure one ``--resume`` would repeat (``_unresumable``)."""
    try:
        check_finite(module, when=when)
    except KdError as exc:
        raise _unresumable(state, str(exc)) from None


def _texts_digest(texts: list[str]) -> str:
    """sha256 of the texts pre-trained on, in order."""
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _frequency_loss(ids: list[list[int]], special_ids: torch.Tensor) -> float:
    """``context_free.frequency_loss`` of the tokens masking may choose (every id but the specials)."""
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64)
    counts = np.bincount(flat[~np.isin(flat, special_ids.numpy())])
    return frequency_loss(counts.tolist()) if counts.sum() else float("nan")


def _decay_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: ``weight_decay`` on the matrices, none on biases and LayerNorm weights (as BERT's
    and ELECTRA's own pre-training, Hugging Face's run_mlm and ``kd teach`` have it)."""
    named = decay_exempt(module)
    return [
        {"params": [p for _, p, exempt in named if not exempt], "weight_decay": weight_decay},
        {"params": [p for _, p, exempt in named if exempt], "weight_decay": 0.0},
    ]


def _loss_figures(recent: list, recent_rtd: list, dist: Dist = SINGLE) -> dict[str, float]:
    """The mean of the last 50 steps: the (generator's) masked-LM loss, and ELECTRA's detection loss.

    Each entry is one rank's mean times its ``share_weights`` weight: summed over the ranks and
    divided by their number, that is the step's mean over every rank's tokens (a collective: every
    rank calls this at the same step)."""
    recent = (dist.sum_across(host_floats(recent[-50:])) / dist.world).tolist()
    recent_rtd = (dist.sum_across(host_floats(recent_rtd[-50:])) / dist.world).tolist() if recent_rtd else []
    out = {"mlm_loss": float(np.mean(recent[-50:])) if recent else float("nan")}
    if recent_rtd:
        out["rtd_loss"] = float(np.mean(recent_rtd[-50:]))
    return out


class MaskedLMLoss(torch.nn.Module):
    """``masked_lm_loss`` as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return masked_lm_loss(self.model, input_ids, attention_mask, positions, targets)


def masked_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positions, targets)`` of ``mask_tokens``'s labels: the flat index of each chosen token in
    the batch, row by row, and its original id. Found on the host, where the labels are made: on
    the GPU, ``hidden[labels != -100]`` made the host wait for the forward pass at every step."""
    flat = labels.flatten()
    positions = (flat != IGNORE).nonzero().squeeze(1)
    return positions, flat[positions]


def masked_lm_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
                   targets: torch.Tensor) -> torch.Tensor:
    """MLM cross entropy with the vocabulary head applied to the masked positions only
    (``masked_positions``).

    Same loss as ``BertForMaskedLM(labels=...)``, but the ``hidden x vocab`` projection runs on
    ~15% of the positions instead of all of them, which is most of a small model's step time.
    """
    hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    if not positions.numel():  # a batch of special tokens only: a zero loss, still a step on every rank
        return model.cls(hidden[:, :1]).sum() * 0.0
    logits = model.cls(hidden.flatten(0, 1).index_select(0, positions))
    return torch.nn.functional.cross_entropy(logits.float(), targets)


def _encode_with_groups(tokenizer, texts: list[str], cfg: PretrainConfig):
    """Token ids per text, for whole-word masking a ``_WordGroups`` that gives a batch's
    word-group ids per token, and whether each text was cut to ``max_len``."""
    ids, cut = encode_flagged(tokenizer, texts, max_len=cfg.max_len)
    return ids, (_WordGroups(tokenizer, texts, cfg.max_len, ids) if cfg.wwm else None), cut


class _WordGroups:
    """Whole-word masking's group ids (``token_groups``) of the texts a batch draws, segmented by jieba
    the first time a batch needs them and kept: a run of a few steps over a large store segments the
    texts it trains on, not all of them. ``seconds`` (spent segmenting) stays out of the training
    clock, as when every text was segmented before training."""

    def __init__(self, tokenizer, texts: list[str], max_len: int, ids):
        jieba_module()  # a missing jieba stops the stage before training, not at its first step
        self.tokenizer, self.texts, self.max_len, self.ids = tokenizer, texts, max_len, ids
        self.pieces = {i for t, i in tokenizer.get_vocab().items() if t.startswith("##")}  # a word's later pieces
        self.known: dict[int, list[int]] = {}
        self.seconds = 0.0

    def batch(self, idx) -> list[list[int]]:
        todo = [i for i in dict.fromkeys(int(i) for i in idx) if i not in self.known]
        if todo:
            started = time.monotonic()
            # a long text goes to the tokenizer as a prefix (as char_encoder.bounded does): a fast
            # tokenizer that truncates keeps every cut-off piece, a gigabyte and seconds for a
            # megabyte corpus line; the prefix's offsets are taken when its ids are the text's own
            limit = max(4096, 32 * self.max_len)
            offsets = self._offsets([self.texts[i][:limit] for i in todo])
            redo = [k for k, (i, (got, _)) in enumerate(zip(todo, offsets))
                    if len(self.texts[i]) > limit and list(got) != list(self.ids[i])]
            if redo:
                for k, whole in zip(redo, self._offsets([self.texts[todo[k]] for k in redo])):
                    offsets[k] = whole
            for i, (got, found) in zip(todo, offsets):
                starts = word_starts(_segmented_part(self.texts[i], max((e for _, e in found), default=0)))
                self.known[i] = token_groups(found, starts, [x in self.pieces for x in got])
            self.seconds += time.monotonic() - started
        return [self.known[int(i)] for i in idx]

    def _offsets(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        enc = self.tokenizer(
            texts, truncation=True, max_length=self.max_len, return_offsets_mapping=True,
            return_attention_mask=False, return_token_type_ids=False,
        )
        return list(zip(enc["input_ids"], enc["offset_mapping"]))


# characters past the cut (inside one of jieba's blocks) that it still reads: its words are a few
# characters long, and its segmentation before the cut is the whole block's (measured on real words,
# repeated ones and random characters alike)
SEGMENT_MARGIN = 256


def _segmented_part(text: str, end: int) -> str:
    """The start of ``text`` that jieba segments as it segments the whole text up to character
    ``end`` (where the tokens kept under --max-len end): through the end of jieba's block (a run of
    its Han, Latin and digit characters) holding ``end``, or ``SEGMENT_MARGIN`` characters past
    ``end`` where the block runs on. A corpus line of a whole article was segmented in full for the
    first --max-len tokens, about 20 times the work for 3,000 characters; a line of one block (text
    without punctuation or spaces) still was, and jieba's HMM takes time in the square of a run of
    single characters: 10 s for 50,000 of them, hours for a megabyte line."""
    block = jieba_module().re_han_default
    inside = 0 < end < len(text) and block.match(text[end - 1]) and block.match(text, end)
    return text[: min(inside.end(), end + SEGMENT_MARGIN) if inside else end]


def _stdin_bytes() -> bytes:
    """``--corpus -``: standard input, as ``kd ingest -`` reads it; refused under torchrun, whose
    processes share the pipe: one read it all, and the other found no text ("the file is empty")."""
    import sys

    if Dist.from_env().active:
        raise KdError("--corpus -: under torchrun every process reads --corpus, and standard input reaches only one "
                      "of them: write the text to a file and give that file (on every host)")
    stream = getattr(sys.stdin, "buffer", sys.stdin)
    if stream is None:
        raise KdError("--corpus -: standard input is closed: name a file, or pipe the text in")
    return stream.read()


def config_dict(cfg: PretrainConfig, corpus_sha256: dict[str, str] | None = None) -> dict:
    """``corpus_sha256``: ``read_corpus``'s digests of what it read, else each file is hashed here."""
    d = settings_dict(cfg)
    # each file as an absolute path with its sha256: a relative path names another file (or none)
    # from another working directory, and a corpus edited since is no longer what the model read;
    # a pipe (`<(xzcat news.xz)`, /dev/stdin, `-`) as named, its path resolving to no file ("pipe:[1147256]")
    files = [Path(p) for p in cfg.corpus]  # (`-`: standard input, even beside a file of that name)
    d["corpus"] = [str(f.resolve()) if f.is_file() and str(f) != "-" else str(f) for f in files]
    d["corpus_sha256"] = [(corpus_sha256 or {}).get(str(f)) or (sha256_file(f) if f.is_file() and str(f) != "-" else None) for f in files]
    return d


def settings_dict(cfg: PretrainConfig) -> dict:
    """The settings as the stage's config records them (``config_dict`` less the corpus files' paths and digests)."""
    d = asdict(cfg)
    d["splits"] = [s for s in SPLITS if s in cfg.splits] if cfg.splits else list(SPLITS)  # the splits read, default included
    # the sizes "0 (auto)" stood for, as the model has them (the report showed heads=0, intermediate=0)
    d["heads"], d["intermediate"] = cfg.n_heads, cfg.intermediate or 4 * cfg.hidden
    if cfg.objective == "electra":  # (and ELECTRA's generator_layers=0: the depth it had, a third of --layers)
        d["generator_layers"] = cfg.n_generator_layers
    return d


def trained_positions(config) -> int | None:
    """How many positions a model's config.json says were trained (``None``: it does not say)."""
    n = getattr(config, TRAINED_POSITIONS, None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
