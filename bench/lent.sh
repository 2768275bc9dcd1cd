#!/usr/bin/env bash
# One sitting on a lent GPU machine (the `device` tool: one command of at most 10 minutes, about 15
# minutes of device time a session, start-up included), prepared so that it cannot be wasted:
#
#   bash bench/lent.sh --prepare        # here, once: fills .whl/ (../shared/tools/gpu-wheels.sh) and
#                                       # copies ../shared's data into .kd-shared/ (both git-ignored)
#   bash bench/lent.sh --stamp          # here, before every device call: the commit (and whether the
#                                       # tree differs from it) the figures will name
#   device run: command "bash bench/lent.sh B1B2", carry [".whl", ".kd-shared"], timeout_s 600
#
#   or several tables side by side on the one GPU (one sitting may be all a task is lent; each table
#   keeps its own files and time limit; the GPU is shared, so their timings are not clean):
#   device run: command "bash bench/lent.sh B1B2 B3" (KD_LENT_ARGS goes to every table: only options
#   they all take, such as --minutes; --levels 0.1 stops B1B2 at once)
#   or a table's seeds side by side, TABLE-sN being TABLE at seed N: "bash bench/lent.sh B1B2-s1 B1B2-s2
#   B1B2-s3" (one pre-training left the H200 far from busy: 23 steps/s alone, 20 each with three sharing
#   it, so three seeds cost about one sitting; each logs the steps its minutes gave). More than 8 files
#   (what the device returns) go back as tables.tgz; merge the seeds with `python -m bench merge`.
# Tables (each stops itself before the command limit):
#   B1B2    bench/distill.py, one seed, the default student (TextCNN): teacher >= 88 % (issue 4), gap
#           closed and distilled-with-pool vs teacher (issue 5). The default. Measured in the order
#           pre-training, B1 teacher, B2 teacher, alone, distilled, +pool, augmented rows, peers.
#   B3      bench/labels.py, one seed, the 20 % level (its targets: F1 >= 0.74, clean gain >= 1 pt), then
#           the other detectors, out-of-fold TextCNN students voting last (--student-votes-folds 5);
#           KD_LENT_ARGS="--levels 0.1" for the other level in another sitting.
#   teacher bench/teacher.py, one seed: the teacher alone, for a pre-training recipe (set KD_LENT_ARGS,
#           e.g. "--minutes 6 --layers 8 --hidden 512").
#   B4      bench/speed.py: the teacher and every student in PyTorch eager and ONNX Runtime (the image
#           has onnxruntime 1.30, CPU provider; KD_LENT_ARGS=--no-onnx leaves it out), timed on this
#           machine's CPU and on the GPU (the protocol's "where available, on a GPU" rows); briefly
#           trained models, as speed does not depend on training. Its table comes only at the end (a
#           time limit leaves a partial JSON: the phases and the timing rounds so far): keep
#           KD_LENT_ARGS small enough for the time limit.
# KD_LENT_SEED (default 1) picks the seed, KD_LENT_ARGS adds arguments to the table's defaults, after
# them, so a repeated option overrides its default (the defaults include "--pretrain-batch-size 256":
# a GPU's MLM steps cost about the same at 64 or 256 texts,
# so 4 minutes see about 4 times the text of kd pretrain's default batch; the protocol's reference,
# 85.45 %, is what 4 minutes at a small batch gave; and "--pretrain-lr 3e-4": at that batch 5e-4 once
# collapsed to the frequency loss, 3e-4 reached 4.03 in 4 minutes, docs/BENCHMARKS.md), KD_LENT_SECONDS (default 540) is the time the
# sitting gets from this script's start (the wheels' install and the import check count: the device's
# limit is on the whole command; less device time left than 600 s: set it about 60 s under that),
# KD_LENT_DEVICE (default cuda) the device.
# Everything lands in $OUT: TABLE.json (raw figures, rewritten after every figure with "partial":
# true until the table is complete; merge two seeds' B1B2 or B3 files with `python -m bench merge
# A.json B.json`), TABLE.md (the table, or what exists when the limit stops it), TABLE.log (every figure
# the moment it exists) and gpu.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS="sqlalchemy alembic mako cleanlab termcolor jieba"  # what the GPU image lacks (gpu-wheels.sh fetches them)
missing_wheels() {  # a half-filled .whl/ (a download cut off) was taken as done: the sitting died at an import
  local name n
  for name in $WHEELS; do  # (two versions of one stop the device's whole pip install)
    n=$(ls .whl 2>/dev/null | grep -ci "^$name-[0-9].*\.whl$")
    [ "$n" = 1 ] || echo -n "$([ "$n" = 0 ] && echo "no $name wheel" || echo "$n $name wheels (keep one)"), "
  done
}

if [ "${1:-}" = --prepare ]; then
  set -e
  for ignored in /.whl/ /.kd-shared/; do
    grep -qx "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
  done
  [[ "$(missing_wheels)" != *"no "* ]] || bash ../shared/tools/gpu-wheels.sh
  mkdir -p .kd-shared/data && chmod -R u+w .kd-shared
  # ../shared is read-only: copies that kept its modes (a read-only folder) made a second --prepare fail
  cp -r --no-preserve=mode ../shared/data/reviews .kd-shared/data/
  cp --no-preserve=mode ../shared/BENCHMARK.md .kd-shared/
  set -- --stamp
fi
if [ "${1:-}" = --stamp ]; then  # the device's copy of the tree may hold no .git or a stale one: the commit travels in .kd-shared
  for ignored in /.whl/ /.kd-shared/; do
    grep -qx "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
  done
  mkdir -p .kd-shared
  commit=$(git rev-parse --short HEAD)
  # untracked files that git does not ignore travel to the device too: they count as changes
  [ -n "$(git status --porcelain)" ] && commit="$commit+changes"
  echo "$commit" > .kd-shared/COMMIT
  echo "figures will name commit $commit"
  du -sh .whl .kd-shared 2>/dev/null
  lacking=$(missing_wheels)
  [ -f .kd-shared/data/reviews/train.tsv ] || lacking="${lacking}no .kd-shared/data, "
  [ -z "$lacking" ] || { echo "not ready for the device: ${lacking%, } (bash bench/lent.sh --prepare fills both)" >&2; exit 1; }
  exit 0
fi

install_wheels() {  # once a machine: tables side by side share it (two pip runs into one --target race)
  ls .whl/*.whl >/dev/null 2>&1 || return 0
  ( flock 9
    [ -f /tmp/site/.kd-installed ] && exit 0
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && touch /tmp/site/.kd-installed ) 9> /tmp/kd-site.lock || return 1
  export PYTHONPATH="/tmp/site:$PWD"
}
if [ $# -gt 1 ]; then  # several tables side by side on the one GPU, each with its own files and time limit
  : "${OUT:?set OUT to the folder the figures go to}"
  seen=()
  for table in "$@"; do  # (before the install: a typo costs no pip run)
    [[ "$table" != *-s* || "$table" =~ ^[A-Za-z0-9]+-s[0-9]+$ ]] || { echo "side by side: $table: a seed is a number (B1B2-s2)" >&2; exit 2; }
    case "${table%-s[0-9]*}" in B1B2|B3|teacher) ;; *) echo "side by side: choose among B1B2, B3 and teacher (each may name its seed: B1B2-s2), not $table (B4 times, alone)" >&2; exit 2 ;; esac
    [ "$(printf '%s\n' "$@" | grep -cx "$table")" = 1 ] || { echo "side by side: $table twice (both would write $OUT/$table.*)" >&2; exit 2; }
    # B1B2 is B1B2-s1 (KD_LENT_SEED, default 1), B1B2-s01 too: the same figures twice, which merge refuses
    seed=${KD_LENT_SEED:-1}; [[ "$table" =~ -s([0-9]+)$ ]] && seed=$((10#${BASH_REMATCH[1]}))
    for other in "${seen[@]}"; do [ "$other" = "${table%-s[0-9]*} at seed $seed" ] && { echo "side by side: $table: ${table%-s[0-9]*} at seed $seed twice (the same run twice; merge refuses a seed given twice)" >&2; exit 2; }; done
    seen+=("${table%-s[0-9]*} at seed $seed")
  done
  mkdir -p "$OUT" && install_wheels || exit 1
  echo "tables side by side on one GPU: $*" > "$OUT/gpu.txt"
  pids=()
  # each table's clock starts at the seconds spent here (the wheels' install counts, as for one table)
  for table in "$@"; do KD_LENT_SPENT=$SECONDS bash "$0" "$table" > /dev/null 2>&1 & pids+=($!); done
  rc=0
  for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
  for table in "$@"; do echo "== $table"; grep -E '^\[|^exit status' "$OUT/$table.log" | tail -25; done
  # the device returns at most 8 files: more (3 tables or more, 3 files each) go back as one archive
  if [ "$(find "$OUT" -type f | wc -l)" -gt 8 ]; then
    files=(); for table in "$@"; do files+=("$table.json" "$table.md" "$table.log"); done
    if (cd "$OUT" && tar czf tables.tgz --ignore-failed-read "${files[@]}" 2>/dev/null); then
      (cd "$OUT" && rm -f "${files[@]}")
      echo "the tables' files are in tables.tgz (tar xzf tables.tgz; seeds merge with python -m bench merge)"
    else  # (a file left is better than none: the figures are in the .json files)
      rm -f "$OUT/tables.tgz"; echo "tar failed: the tables' files stay as they are (over 8: some may not come back)" >&2
    fi
  fi
  exit $rc
fi
table=${1:-B1B2}  # (its files are named so; TABLE-sN: the table at seed N, for seeds side by side)
name=$table
if [[ "$table" =~ ^(B1B2|B3|teacher)-s([0-9]+)$ ]]; then name=${BASH_REMATCH[1]} KD_LENT_SEED=${BASH_REMATCH[2]}; fi
SECONDS=$(( SECONDS + ${KD_LENT_SPENT:-0} ))  # side by side: the seconds the caller spent installing the wheels
case "$name" in
  B1B2) script=(bench/distill.py --students textcnn); default_args="--pretrain-batch-size 256 --pretrain-lr 3e-4" ;;
  B3) script=(bench/labels.py); default_args="--levels 0.2 --pretrain-batch-size 256 --pretrain-lr 3e-4 --student-votes-folds 5" ;;
  teacher) script=(bench/teacher.py); default_args="--pretrain-batch-size 256 --pretrain-lr 3e-4" ;;
  B4) script=(bench/speed.py); default_args="" ;;
  *) echo "unknown table $table: choose B1B2, B3, teacher or B4" >&2; exit 2 ;;
esac
: "${OUT:?set OUT to the folder the figures go to}"
mkdir -p "$OUT" || exit 1  # (a folder not there yet: every redirect below failed and the table never ran)
install_wheels || exit 1
export KD_SHARED="${KD_SHARED:-$PWD/.kd-shared}" KD_NO_PROGRESS=1 PYTHONUNBUFFERED=1
# no hub to reach (fail at once, never hang); jieba's old regexes warn on Python 3.12, keep stdout clean
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONWARNINGS="ignore::SyntaxWarning"
[ -f "$KD_SHARED/COMMIT" ] && export KD_COMMIT="${KD_COMMIT:-$(cat "$KD_SHARED/COMMIT")}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" >> "$OUT/gpu.txt"
echo "commit ${KD_COMMIT:-unknown (run bash bench/lent.sh --stamp before the device call)}" >> "$OUT/gpu.txt"
# at once, not at the first import minutes in (cleanlab: B3's detectors, after the teachers)
python3 -c "import importlib.util as u, sys; gone = [m for m in sys.argv[1:] if u.find_spec(m) is None]; gone and sys.exit('missing here: ' + ', '.join(gone) + ' (carry .whl, filled by bash bench/lent.sh --prepare)')" \
  $WHEELS torch transformers 2> "$OUT/$table.log" || { cat "$OUT/$table.log" >&2; echo "exit status 1" >> "$OUT/$table.log"; exit 1; }
if [ "$name" = B4 ]; then  # speed.py trains on one device and times on the CPU and, here, the GPU
  common=(--train-device "${KD_LENT_DEVICE:-cuda}" --time-device "${KD_LENT_DEVICE:-cuda}" --seed "${KD_LENT_SEED:-1}" --plot "$OUT/B4-early-exit.png")
else
  common=(--device "${KD_LENT_DEVICE:-cuda}" --seeds "${KD_LENT_SEED:-1}")
fi
# the table's time: what is left of KD_LENT_SECONDS after the set-up above (pip, the import check: it
# was added to it, and a slow start ran the table past the device's limit, killed with no table)
left=$(( ${KD_LENT_SECONDS:-540} - SECONDS ))
echo "$table gets ${left} s (KD_LENT_SECONDS ${KD_LENT_SECONDS:-540}, ${SECONDS} s of set-up)" >> "$OUT/gpu.txt"
if [ "$left" -lt 1 ]; then  # (timeout 0 would mean no limit at all)
  echo "no time left for $table: ${SECONDS} s of set-up used KD_LENT_SECONDS ${KD_LENT_SECONDS:-540}" | tee -a "$OUT/$table.log" >&2
  echo "exit status 1" >> "$OUT/$table.log"
  exit 1
fi
# shellcheck disable=SC2086  # KD_LENT_ARGS is a list of arguments
timeout --signal=INT --kill-after=20 "$left" \
  python3 "${script[@]}" "${common[@]}" $default_args ${KD_LENT_ARGS:-} \
  --json "$OUT/$table.json" > "$OUT/$table.md" 2> "$OUT/$table.log"
rc=$?
case $rc in
  124|137) why=" (stopped at the time limit: the figures so far are in the log and in the partial JSON)" ;;
  *) why="" ;;
esac
echo "exit status $rc$why" >> "$OUT/$table.log"
grep -E '^\[' "$OUT/$table.log" | tail -30
cat "$OUT/$table.md"
exit $rc
