"""B5's tokenization figure on its own: the 500,000-text pool through ``kdstore.batching.encode``.

    python bench/tokenization.py --json bench/out/tokenization.json          # 500,000 texts, 5 rounds
    python bench/tokenization.py --rows 20000 --repeat 2                 # a quick look

The pool is bench/ingest.py's (``build_pool``, seed 0), the one bench/scale.py scores. The tokenizer is
kd's own, built as ``kd pretrain`` builds it (``kdstore.vocab``: characters of the labeled review texts,
train, dev and test). Timed side by side in each round, in one process:

- ``kdstore.batching.encode``, what kd calls everywhere (training, scoring, predicting): a lookup per
  character for a character-level BERT tokenizer (``kdstore.char_encoder``);
- ``kdstore.batching.tokenizer_encode``: the same texts through the Hugging Face fast tokenizer itself,
  in one batched call (the protocol's "fast tokenizer, batched").

Both give the same ids: the script checks it on every text and refuses to report otherwise. A figure is
the median over the rounds, with the min-max; the tokenizer uses every core (``TOKENIZERS_PARALLELISM``),
the character path one.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import machine_info, meets, shared_dir, shown, spread  # noqa: E402

TARGET_S = 3.0  # B5: per-character tokenization of 500k texts, 17-21 s in the reference tool


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=500_000, help="pool size (the protocol: 500,000)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds (the protocol's medians are over at least 5; fewer: not judged)")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    args = ap.parse_args(argv)

    import numpy as np

    from bench.ingest import build_pool
    from kdstore.batching import char_encoder, encode, tokenizer_encode
    from kdstore.vocab import build_vocab, make_tokenizer

    data = shared_dir() / "data" / "reviews"
    if not (data / "train.tsv").exists():
        print(f"benchmark data not found under {data} (set KD_SHARED)", file=sys.stderr)
        return 2
    texts, origin = build_pool(args.rows)
    labeled = [line.split("\t", 1)[-1] for name in ("train.tsv", "dev.tsv", "test.tsv")
               for line in (data / name).read_text(encoding="utf-8").splitlines()]
    from kdstore.pretrain import PretrainConfig

    defaults = PretrainConfig()  # kd pretrain's own --min-count and vocabulary size
    tokenizer = make_tokenizer(build_vocab(labeled, min_count=defaults.min_count, max_size=defaults.max_vocab))
    if char_encoder(tokenizer) is None:
        print("kd's tokenizer did not take the character path", file=sys.stderr)
        return 1
    ways = {
        "kdstore.batching.encode (character path)": lambda: encode(tokenizer, texts, max_len=args.max_len),
        "kdstore.batching.tokenizer_encode (fast tokenizer, batched)": lambda: tokenizer_encode(tokenizer, texts, max_len=args.max_len),
    }
    encode(tokenizer, texts[:1000], max_len=args.max_len)  # warm-up: the per-character table
    tokenizer_encode(tokenizer, texts[:1000], max_len=args.max_len)
    seconds: dict[str, list[float]] = {k: [] for k in ways}
    outputs: dict[str, list] = {}
    lengths = None
    for r in range(args.repeat):
        for name, fn in (ways.items() if r % 2 == 0 else reversed(ways.items())):
            gc.collect()  # each path starts with the same heap, none pays for the other's garbage
            start = time.perf_counter()
            ids = fn()
            seconds[name].append(time.perf_counter() - start)
            if r == 0:
                outputs[name] = ids
            del ids
        if r == 0:  # the same ids from both paths, checked once, then let go before the next rounds
            first, second = outputs.values()
            differ = sum(a != b for a, b in zip(first, second))
            if differ:
                print(f"{differ} texts got different ids from the two paths: no figures", file=sys.stderr)
                return 1
            lengths = np.array([len(x) for x in first])
            del first, second
            outputs.clear()
        print(f"round {r + 1}/{args.repeat}: " + ", ".join(f"{k.split()[0]} {v[-1]:.2f} s" for k, v in seconds.items()), file=sys.stderr)
    res = {
        "rows": len(texts),
        "pool": origin,
        "max_len": args.max_len,
        "mean_tokens": float(lengths.mean()),
        "identical_ids": True,
        "seconds": {k: {**spread(v), "rounds": v} for k, v in seconds.items()},
        "machine": machine_info(),
        "command": "python bench/tokenization.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(markdown(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, ensure_ascii=False))
    return 0


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"- **Command:** `{res['command']}`",
        f"- **Commit:** `{m['commit']}`" + (" (with uncommitted changes in kdstore/, migrations/, commands/ or bench/)" if m.get("kdstore_dirty") else ""),
        f"- **Machine:** {m['cpu']}, {m['cores']} cores; Python {m['python']}",
        f"- **Texts:** {res['rows']:,} ({res['pool']}); mean {res['mean_tokens']:.1f} tokens after the cut at {res['max_len']}; "
        "both paths gave the same ids for every text.",
        "",
        "| path | seconds (median; min-max) | texts/s | B5 target ≤ 3 s for 500,000 |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, s in res["seconds"].items():
        judged = (f"**{'met' if meets(s['median'], TARGET_S, at_most=True) else 'not met'}**" if res["rows"] >= 500_000 and len(s["rounds"]) >= 5
                  else "not judged (fewer texts)" if res["rows"] < 500_000 else f"not judged ({len(s['rounds'])} rounds, the protocol's medians are over 5)")
        lines.append(f"| {name} | {shown(s['median'], '.2f', TARGET_S, at_most=True)} ({s['min']:.2f}–{s['max']:.2f}) | {res['rows'] / s['median']:,.0f} | {judged} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
