"""Helpers every command shares: the output-folder check, progress bars, the method flags, the flags' terms."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ..baselines import BASELINES
from ..config import PRESETS
from ..evaluate import parse_methods


def check_output_folder(path: str | os.PathLike, *, create: bool) -> None:
    """Refuse, before any work, a folder that an output cannot be written into; nothing is created here.

    ``create``: a missing folder is fine (the command creates it) when the nearest existing folder above it
    is writable; otherwise a missing folder is refused.

    Raises:
        ValueError: the folder, or the nearest existing path above it, is a file, missing or read-only.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not create:
        raise ValueError(f"output folder {path} does not exist; create it first")
    if not existing.is_dir():
        raise ValueError(f"cannot write into {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write into {path}: {existing} is read-only")


def add_method_flags(p: argparse.ArgumentParser) -> None:
    """The flags evaluate and compare share: methods, the network's checkpoint, convention, seed, reuse."""
    p.add_argument("--methods", default="dgd," + ",".join(BASELINES),
                   help="comma-separated: dgd (the --checkpoint network), NAME=CHECKPOINT_DIR for another "
                        f"checkpoint, or baselines {', '.join(BASELINES)}")
    p.add_argument("--checkpoint", help="checkpoint of the dgd method (default: the bundled dgd-general)")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="architecture without a checkpoint")
    p.add_argument("--convention", default="standard", choices=["standard", "published"])
    p.add_argument("--seed", type=int, default=0, help="seed of the diffusion noise for every pair")
    p.add_argument("--no-reuse", action="store_true", help="fuse again even where a fused image exists")
    p.add_argument("--external", action="append", default=[], metavar="NAME=DIR",
                   help="score another method's fused images too: DIR holds one image per pair, named like the "
                        "pair (NAME.png, .tif, ...; gray or colour, the pair's size); repeatable")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present; under torchrun cuda:LOCAL_RANK)")


def progress_bar(description: str, disable: bool = False) -> tuple[tqdm, Callable[[int, int, str], None]]:
    """A tqdm bar and the (done, total, description) callback evaluate_folder reports to."""
    bar = tqdm(desc=description, unit="image", disable=disable)

    def progress(done: int, total: int, text: str) -> None:
        bar.total = total
        bar.update(done - bar.n)
        bar.set_postfix_str(text)

    return bar, progress


def methods_of(args: argparse.Namespace, device: str, seed: int, external: dict[str, str]) -> dict:
    """The methods --methods names; refused when neither it nor --external names one."""
    methods = parse_methods(args.methods, args.checkpoint, args.preset, device, seed)
    if not methods and not external:
        raise ValueError(f"--methods {args.methods!r} names no method; give a comma-separated list, e.g. "
                         f"--methods dgd,{','.join(BASELINES)}, or --external NAME=DIR")
    return methods


# What the library says in Python terms -> the same advice in this command line's flags.
FLAG_TERMS = {
    "pass on_size_mismatch='resample'": "give --resample",
}


# A training or loss setting named as the library names it ("train.batch_size") -> its flag ("--batch-size").
SETTING = re.compile(r"\b(train|loss)\.(\w+)")


def in_flag_terms(message: str) -> str:
    """``message`` with the library's Python advice put in this command line's flags (``FLAG_TERMS``) and its
    training settings named by their flags, unless it is about a config.json, whose fields it names."""
    for python, flag in FLAG_TERMS.items():
        message = message.replace(python, flag)
    if "config.json" in message:
        return message
    return SETTING.sub(lambda m: ("--loss-" if m[1] == "loss" else "--") + m[2].replace("_", "-"), message)
