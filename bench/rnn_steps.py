"""A BiGRU / BiLSTM student's training step on the CPU: kd's unpacked forward against a packed one.

    python bench/rnn_steps.py --json bench/out/rnn_steps.json        # lengths 64-512, about 10 minutes on 2 cores
    python bench/rnn_steps.py --lengths 64,128 --repeats 3           # a quick look

kd's ``BiRNN`` student (``kdstore.students``) runs its RNN over the padded batch on the CPU: one bidirectional
pass where every row is full; where some row is shorter, each direction once with its own weights, the backward
one over each row reversed within its length, each read at its row's last token (never after padding). Before,
it packed the rows
(``torch.nn.utils.rnn.pack_padded_sequence``); the two give the same logits and gradients
(tests/test_math.py checks it). This script times both on the same model, the same batches, side by side:

- a step is what ``kd distill`` does per batch: forward, a soft cross entropy on random teacher
  probabilities, backward, an AdamW step; the model is the default student (``kd distill --student bigru``
  or ``bilstm``: embeddings 128, hidden 128) over kd's default vocabulary size;
- for each ``--lengths`` L, two batches of ``--batch-size`` rows: *full* (every row L tokens: texts cut at
  ``--max-len L``) and *mixed* (row lengths drawn evenly from L/2 to L, padded to L: one length bucket
  of kd's batching);
- after one untimed step of each, each round times every (kind, length, batch, form) once, the forms in
  alternating order; a figure is
  the median over ``--repeats`` rounds with the min-max; the first round's logits of both forms are
  compared and the script refuses to report when they differ.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import command_words, commit_words, machine_info, spread  # noqa: E402

VOCAB = 21128  # kd pretrain's default vocabulary size (and bert-base-chinese's)
FORMS = ("unpacked (kd)", "packed (before)")


def packed_forward(model, input_ids, attention_mask):
    """The BiRNN student's forward as it was: the rows packed, the final states of both directions."""
    import torch

    x = torch.nn.utils.rnn.pack_padded_sequence(model.embed(input_ids), attention_mask.sum(1).clamp(min=1).cpu(),
                                                batch_first=True, enforce_sorted=False)
    _, state = model.rnn(x)
    h = state[0] if isinstance(state, tuple) else state
    return model.mlp(torch.cat([h[0], h[1]], dim=1))


def batches(length: int, rows: int, seed: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (rows, length), generator=g)
    mixed = torch.randint(length // 2, length + 1, (rows,), generator=g)
    mask = (torch.arange(length).view(1, -1) < mixed.view(-1, 1)).long()
    return {"full": (ids, torch.ones_like(ids)), "mixed": (ids * mask, mask)}


def step(model, forward, optimizer, ids, mask, target) -> tuple[float, object]:
    import torch

    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    logits = forward(ids, mask)
    loss = -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start, logits.detach()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default="64,128,256,512", help="comma-separated token lengths")
    ap.add_argument("--kinds", default="bigru,bilstm")
    ap.add_argument("--batch-size", type=int, default=32, help="kd distill's default batch size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    args = ap.parse_args(argv)

    import torch

    from kdstore.students import BiRNN, StudentConfig

    lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not lengths or min(lengths) < 2 or any(k not in ("bigru", "bilstm") for k in kinds) or args.repeats < 1 or args.batch_size < 1:
        ap.error("--lengths of at least 2 tokens, --kinds among bigru,bilstm, --repeats and --batch-size of at least 1")
    torch.manual_seed(args.seed)
    cases = []  # (kind, length, batch name, model, optimizers per form, ids, mask, target)
    for kind in kinds:
        for length in lengths:
            for name, (ids, mask) in batches(length, args.batch_size, args.seed + length).items():
                model = BiRNN(StudentConfig(kind=kind, vocab_size=VOCAB, num_classes=2, dropout=0.0))
                optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # (lr 0: every step sees the same weights)
                target = torch.softmax(torch.randn(args.batch_size, 2), dim=-1)
                cases.append((kind, length, name, model, optimizer, ids, mask, target))
    for _, _, _, model, optimizer, ids, mask, target in cases:  # warm-up: one step of each form, not timed
        step(model, model, optimizer, ids, mask, target)
        step(model, lambda i, m, model=model: packed_forward(model, i, m), optimizer, ids, mask, target)
    seconds: dict[tuple, dict[str, list[float]]] = {}
    for r in range(args.repeats):
        for kind, length, name, model, optimizer, ids, mask, target in cases:
            forms = {FORMS[0]: model, FORMS[1]: lambda i, m, model=model: packed_forward(model, i, m)}
            order = list(forms.items()) if r % 2 == 0 else list(reversed(forms.items()))
            got = {}
            for form, forward in order:
                took, got[form] = step(model, forward, optimizer, ids, mask, target)
                seconds.setdefault((kind, length, name), {f: [] for f in FORMS})[form].append(took)
            if r == 0 and not torch.allclose(got[FORMS[0]], got[FORMS[1]], atol=1e-5):
                print(f"{kind} {length} {name}: the two forms gave different logits: no figures", file=sys.stderr)
                return 1
            s = seconds[(kind, length, name)]
            print(f"round {r + 1}/{args.repeats} {kind} L={length} {name}: "
                  + ", ".join(f"{f.split()[0]} {v[-1]:.3f} s" for f, v in s.items()), file=sys.stderr, flush=True)
    res = {
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "rows": [{"kind": k, "length": L, "batch": b,
                  **{f: {**spread(v), "rounds": v} for f, v in s.items()}}
                 for (k, L, b), s in seconds.items()],
        "machine": machine_info(),
        "command": "python bench/rnn_steps.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(markdown(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, ensure_ascii=False))
    return 0


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"- **Command:** {command_words(res['command'])}",
        f"- **Commit:** {commit_words(m)}",
        f"- **Machine:** {m['cpu']}, {m['cores']} cores, torch {m.get('torch')} ({res['threads']} threads)",
        f"- **Step:** forward, soft cross entropy, backward, AdamW; {res['batch_size']} rows a batch; "
        f"median of {res['repeats']} rounds (min-max); both forms gave the same logits.",
        "",
        "| student | tokens | batch | unpacked (kd), s | packed (before), s | packed / unpacked |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for row in res["rows"]:
        u, p = row[FORMS[0]], row[FORMS[1]]
        lines.append(f"| {row['kind']} | {row['length']} | {row['batch']} | {u['median']:.3f} ({u['min']:.3f}–{u['max']:.3f}) | "
                     f"{p['median']:.3f} ({p['min']:.3f}–{p['max']:.3f}) | {p['median'] / u['median']:.1f}× |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
