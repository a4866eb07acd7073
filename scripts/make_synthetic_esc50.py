#!/usr/bin/env python
"""Write an ESC-50-layout dataset of synthetic clips under the real ``meta/esc50.csv`` file names.

Each class gets its own signature (a harmonic tone whose pitch and amplitude modulation depend on the class, plus
noise), so a model can learn the classes; folds, targets and categories are the real metadata's. Used to test the
loader and the cross-validation machinery where the real audio is not available.

    python scripts/make_synthetic_esc50.py ../shared/reference/esc50_meta.csv /tmp/ESC-50 --seconds 1 --per-class 8
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf


def synth_clip(target: int, take: int, seconds: float, rate: int) -> np.ndarray:
    rng = np.random.default_rng(1000 * target + take)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 110.0 * 2 ** (target / 12.0)  # one semitone apart per class
    wobble = 1 + 0.3 * np.sin(2 * np.pi * (1 + target % 7) * t)
    tone = sum(np.sin(2 * np.pi * pitch * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3))
    x = 0.2 * wobble * tone + 0.05 * rng.standard_normal(len(t))
    return np.clip(x, -1, 1).astype(np.float32)


def make_dataset(meta: Path, out: Path, seconds: float = 5.0, rate: int = 44100, per_class: int | None = None) -> int:
    """Create ``out/audio/*.wav`` and ``out/meta/esc50.csv``; returns the number of clips written."""
    with meta.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        rows = list(reader)
    if not fields or "filename" not in fields or "target" not in fields:
        raise SystemExit(f"{meta}: not an ESC-50 metadata file (needs filename and target columns)")
    folds = sorted({row["fold"] for row in rows})
    if len(rows) != 2000 or folds != ["1", "2", "3", "4", "5"]:
        print(f"warning: {meta} lists {len(rows)} clips in folds {folds}; the real ESC-50 has 2000 in folds 1-5",
              file=sys.stderr)  # fmt: skip
    if per_class:
        # Keep the same number of clips per (class, fold) so every fold stays balanced.
        by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for row in rows:
            by_key[(row["target"], row["fold"])].append(row)
        per_fold = max(1, per_class // 5)
        rows = [row for key in sorted(by_key) for row in by_key[key][:per_fold]]
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        sf.write(out / "audio" / row["filename"], synth_clip(int(row["target"]), i, seconds, rate), rate,
                 subtype="PCM_16")  # fmt: skip
    with (out / "meta" / "esc50.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("meta", type=Path, help="the real meta/esc50.csv")
    parser.add_argument("out", type=Path, help="dataset root to create")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--per-class", type=int, help="clips per class (default: all 40)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        if not args.overwrite:
            print(f"{args.out} exists and is not empty (use --overwrite)", file=sys.stderr)
            return 2
        shutil.rmtree(args.out)
    count = make_dataset(args.meta, args.out, args.seconds, args.rate, args.per_class)
    print(f"wrote {count} clips to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
