#!/usr/bin/env bash
# The README quick start: install kd into .venv, then run a whole pipeline on the small review
# sample in examples/reviews (pre-train a tiny teacher, fine-tune it, distill a TextCNN, predict,
# report). A few minutes on a 2-core CPU. The store and models go to ./quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
# torch 2.13.0 is the CPU build on the project's machines; set KD_TORCH for your own build.
python -m pip install -q "${KD_TORCH:-torch==2.13.0}" 2>&1 | { grep -v '^WARNING: Location' || true; }  # (a failed install stops here)
python -m pip install -q -e . 2>&1 | { grep -v '^WARNING: Location' || true; }  # (a failed install stops here)

rm -rf quickstart && mkdir quickstart
export KD_DB=quickstart/kd.db
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step kd ingest examples/reviews/train.tsv
step kd ingest examples/reviews/dev.tsv --split dev
step kd ingest examples/reviews/test.tsv --split test
step kd ingest examples/reviews/unlabeled.txt --split unlabeled
step kd pretrain --run demo --layers 2 --hidden 128 --max-len 96 --batch-size 64 --minutes 1.5
step kd teach --run demo --model pretrain:demo --epochs 4 --lr 3e-4 --max-len 96
step kd distill --run demo --student textcnn --epochs 6 --max-len 96
printf '\n\033[1m$ echo "质量很好，物流也快" | kd predict --run demo\033[0m\n'
echo "质量很好，物流也快" | kd predict --run demo
step kd report --run demo
