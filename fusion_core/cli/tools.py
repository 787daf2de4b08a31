"""``split`` and ``bench``: holding out test pairs, and the performance benchmark."""

from __future__ import annotations

import argparse
import json

from ..config import PRESETS
from ..data import write_split
from ..imaging import write_atomically


def add_split(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("split", help="hold out every N-th pair (by sorted name) as a test split")
    p.add_argument("pairs", help="folder of pairs")
    p.add_argument("--every", type=int, default=5, help="one test pair in every N (default 5: positions 4, 9, ...)")
    p.add_argument("--by-case", action="store_true",
                   help="hold out whole cases (the name without its last three digits), as medical slices need")
    p.add_argument("--out", required=True, help="writes OUT/train and OUT/test with the same sub-folders")
    p.set_defaults(run=_run_split)


def _run_split(args: argparse.Namespace) -> int:
    counts = write_split(args.pairs, args.out, args.every, by_case=args.by_case)
    print(f"{counts['train']} train and {counts['test']} test pairs -> {args.out}/train, {args.out}/test")
    return 0


def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency and peak memory of fusion and metrics")
    p.add_argument("--presets", default="cpu",
                   help="comma-separated presets or checkpoint folders (their saved architecture), or 'all'")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the benchmark pair")
    p.add_argument("--large", default="", help="also fuse a large pair through tiles, e.g. 4096x4096")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or 'all' for every device present")
    p.add_argument("--batches", default="1,4,8",
                   help="batch sizes whose throughput (pairs/s of fuse_batch) is measured; '' to skip")
    p.add_argument("--out", help="write the JSON report here too")
    p.add_argument("--in-process", action="store_true",
                   help="measure in this process, not one fresh process each: quicker (no torch import per "
                        "measurement), but the CPU peak memory is then this process's so far")
    p.set_defaults(run=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from ..bench import run_benchmark

    presets = sorted(PRESETS) if args.presets == "all" else args.presets.split(",")
    report = run_benchmark(presets=presets, repeats=args.repeats, size=_parse_size(args.size),
                           large=_parse_size(args.large) if args.large else None, device=args.device,
                           isolate=not args.in_process, batches=tuple(int(b) for b in args.batches.split(",") if b))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        write_atomically(args.out, (text + "\n").encode("utf-8"))
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height
