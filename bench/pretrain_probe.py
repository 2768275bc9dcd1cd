"""A pre-training stability probe (the first GPU sitting's: docs/gpu-2026-12-04/probe.json).

Three `kd pretrain` runs side by side on one GPU, 6 x 384 at batch 256 (lr 5e-4 seeds 1 and 2, lr
2e-4 seed 1), each its own store of the train texts (+ People's Daily as --corpus), and each run's
stored metrics rows dumped to $OUT/probe.json. Run on the device from the repository root, after
`bash bench/lent.sh --prepare` here, as `python3 bench/pretrain_probe.py` with OUT set, the wheels
installed as lent.sh does (PROBE_MIN, PROBE_DEV: minutes and device; 2.5 and cuda).
"""
import collections
import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

out, work = Path(os.environ["OUT"]), Path("/tmp/probe")
work.mkdir(exist_ok=True)
data = Path(".kd-shared/data/reviews")
texts = [line.split("\t", 1)[1] for line in (data / "train.tsv").read_text(encoding="utf-8").splitlines()]
(work / "texts.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
corpus = data / "corpus-peoples-daily-1998.txt"
# the entropy of the characters over whole texts (kd pretrain's frequency_loss counts texts cut to --max-len: 6.58)
chars = collections.Counter(ch for t in texts + corpus.read_text(encoding="utf-8").splitlines() for ch in t)
total = sum(chars.values())
result = {"unigram_entropy": -sum(v / total * math.log(v / total) for v in chars.values())}
runs = {"lr5e-4_s1": ("5e-4", "1"), "lr5e-4_s2": ("5e-4", "2"), "lr2e-4_s1": ("2e-4", "1")}
kd = [sys.executable, "-c", "from commands.cli import main; main()"]
procs = {}
for name, (lr, seed) in runs.items():
    db = work / f"{name}.db"
    subprocess.run(kd + ["ingest", str(work / "texts.txt"), "--split", "unlabeled", "--db", str(db)], check=True, capture_output=True)
    procs[name] = subprocess.Popen(
        kd + ["pretrain", "--run", "p", "--layers", "6", "--hidden", "384", "--minutes", os.environ.get("PROBE_MIN", "2.5"),
              "--batch-size", "256", "--lr", lr, "--corpus", str(corpus), "--seed", seed,
              "--device", os.environ.get("PROBE_DEV", "cuda"), "--db", str(db), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
for name, proc in procs.items():
    _, err = proc.communicate()
    con = sqlite3.connect(work / f"{name}.db")
    result[name] = {"rc": proc.returncode, "stderr": err[-1500:],
                    "cols": [r[1] for r in con.execute("pragma table_info(metrics)")],
                    "rows": con.execute("select * from metrics").fetchall()}
    print(name, proc.returncode, [r for r in result[name]["rows"] if r[3] == "mlm_loss"][-1:], flush=True)
(out / "probe.json").write_text(json.dumps(result, indent=0))
