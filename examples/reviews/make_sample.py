"""Rebuild the quick-start sample in this folder from the shared benchmark data.

    python examples/reviews/make_sample.py [--shared PATH]

Reads ``../shared/data/reviews/`` (relative to the repository root; ``--shared`` or ``$KD_SHARED``
overrides it) and writes, byte for byte from the source lines:

- ``train.tsv``      rows 1-2,000 of ``train.tsv``      (``label<TAB>text``)
- ``dev.tsv``        rows 1-300 of ``dev.tsv``
- ``test.tsv``       rows 1-500 of ``test.tsv``
- ``unlabeled.txt``  rows 2,001-4,000 of ``train.tsv``, text only (the label column removed)

Rows are counted from 1 in file order. The output is deterministic: running it again on the same
source gives identical files. Nothing at run time needs this script or ``../shared``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# (output name, source name, first row, last row, text only); rows are 1-based and inclusive
PLAN = (
    ("train.tsv", "train.tsv", 1, 2000, False),
    ("dev.tsv", "dev.tsv", 1, 300, False),
    ("test.tsv", "test.tsv", 1, 500, False),
    ("unlabeled.txt", "train.tsv", 2001, 4000, True),
)


def default_shared() -> Path:
    env = os.environ.get("KD_SHARED")
    return Path(env) if env else ROOT.parent / "shared"


def read_rows(path: Path) -> list[str]:
    data = path.read_bytes().decode("utf-8")  # strict: the source is UTF-8 without a BOM
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def build(shared: Path, out: Path) -> dict[str, int]:
    src_dir = shared / "data" / "reviews"
    if not src_dir.is_dir():
        raise SystemExit(f"{src_dir} not found: pass --shared PATH (the folder holding data/reviews)")
    cache: dict[str, list[str]] = {}
    written = {}
    for out_name, src_name, first, last, text_only in PLAN:
        rows = cache.setdefault(src_name, read_rows(src_dir / src_name))
        if len(rows) < last:
            raise SystemExit(f"{src_name} has {len(rows)} rows, fewer than the {last} needed")
        part = rows[first - 1 : last]
        if text_only:
            texts = []
            for n, row in enumerate(part, start=first):
                label, sep, text = row.partition("\t")
                if not sep or "\t" in text or not text.strip():
                    raise SystemExit(f"{src_name}: row {n}: expected label<TAB>text")
                texts.append(text)
            part = texts
        (out / out_name).write_bytes(("\n".join(part) + "\n").encode("utf-8"))
        written[out_name] = len(part)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=default_shared(), help="the shared folder")
    ap.add_argument("--out", type=Path, default=HERE, help="where to write (default: this folder)")
    args = ap.parse_args(argv)
    for name, n in build(args.shared, args.out).items():
        print(f"{args.out / name}: {n} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
