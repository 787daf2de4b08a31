"""``fuse``: one pair, or every pair of a folder, with the checkpoint of the pair's task."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ..checkpoint import default_checkpoint, resolve_pipeline
from ..config import PRESETS, check_seed, parse_timesteps
from ..data import find_pairs
from ..distributed import check_device, default_device, setup_distributed
from ..folder_fusion import FOLDER_FORMATS, fuse_folder
from ..imaging import fused_format, read_pair, write_fused
from ..tasks import TASK_CHECKPOINTS, TASK_NAMES, TaskGuess, guess_task
from .common import check_output_folder, in_flag_terms


def add_fuse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuse", help="fuse one registered pair, or every pair of a folder")
    p.add_argument("a", help="source A (infrared, MRI): image or DICOM; or a folder of pairs ({ir,vi}, "
                   "{MRI,CT|PET|SPECT} or {A,B}) to fuse them all")
    p.add_argument("b", nargs="?", help="source B (visible, CT, PET, SPECT): image or DICOM; omitted for a folder")
    p.add_argument("-o", "--output", required=True,
                   help="fused image: .png, .tif/.tiff (16-bit) or .dcm; for a folder, the output folder")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the bundled one trained for the pair's task)")
    p.add_argument("--task", choices=["auto", *TASK_CHECKPOINTS], default="auto",
                   help="pick the bundled checkpoint of this task: ivf (dgd-general) or medical (dgd-medical); auto "
                   "(default) reads it from the file and folder names (MRI, CT, PET, SPECT) and DICOM modality")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="architecture without a checkpoint")
    p.add_argument("--timesteps", help="feature timesteps, e.g. 5,50,100 (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the diffusion noise (of every pair)")
    p.add_argument("--resample", action="store_true", help="resample B to A's size instead of refusing")
    p.add_argument("--align", action="store_true", help="correct a translation between A and B")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present; under torchrun cuda:LOCAL_RANK)")
    folder = p.add_argument_group("folder of pairs")
    folder.add_argument("--format", choices=sorted(FOLDER_FORMATS),
                        help="file type of OUT_DIR/NAME.EXT (default png; tif is 16-bit)")
    folder.add_argument("--batch", type=int, help="pairs per chunk (default 1); on CUDA, same-size pairs per pass "
                        "of the network; on a CPU each pair has its own pass, so the files are those of --batch 1")
    folder.add_argument("--overwrite", action="store_true", help="fuse again the pairs whose output exists")
    p.set_defaults(run=_run_fuse)


def _run_fuse(args: argparse.Namespace) -> int:
    if args.b is None:
        return _run_fuse_folder(args)
    if args.format or args.batch is not None or args.overwrite:
        raise ValueError("--format, --batch and --overwrite are for a folder of pairs; give the folder alone")
    fused_format(args.output)  # a bad name, folder, device, seed or timesteps fail now, not after the fusion
    check_output_folder(Path(args.output).parent, create=False)
    device, seed = check_device(args.device), check_seed(args.seed)
    timesteps = parse_timesteps(args.timesteps)
    pair = read_pair(args.a, args.b, on_size_mismatch="resample" if args.resample else "refuse", align=args.align)
    modalities = [image.dicom.modality for image in (pair.a, pair.b) if image.dicom is not None]
    checkpoint = _checkpoint(args, guess_task(args.a, args.b, modalities))
    pipeline = resolve_pipeline(checkpoint, args.preset, device or default_device())
    generator = torch.Generator().manual_seed(seed)
    result = pipeline.fuse(pair.a.pixels, pair.b.pixels, feature_timesteps=timesteps, generator=generator)
    for warning in (*pair.every_warning, *result.warnings):
        print(f"warning: {warning}", file=sys.stderr)
    write_fused(args.output, result.y_fused, pair.b.pixels)
    print(f"fused {args.a} + {args.b} -> {args.output} ({result.fused.shape[1]}x{result.fused.shape[0]})")
    return 0


def _run_fuse_folder(args: argparse.Namespace) -> int:
    """Every pair of the folder ``args.a``; exit status 1 when some failed (listed in failures.csv)."""
    if not Path(args.a).is_dir():
        raise ValueError(f"{args.a} is not a folder of pairs; to fuse one pair, give both images: fuse A B -o OUT")
    timesteps = parse_timesteps(args.timesteps)
    check_output_folder(args.output, create=True)
    check_seed(args.seed)
    context = setup_distributed(check_device(args.device))
    pairs = find_pairs(args.a)
    guess = guess_task(pairs[0].a, pairs[0].b) if pairs else TaskGuess("ivf", "no pairs")
    checkpoint = _checkpoint(args, guess, announce=context.is_main)
    pipeline = resolve_pipeline(checkpoint, args.preset, str(context.device))
    bar = tqdm(desc="fuse" if context.world_size == 1 else f"fuse (rank 0 of {context.world_size})", unit="pair",
               disable=not context.is_main)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    read_options = {"on_size_mismatch": "resample" if args.resample else "refuse", "align": args.align}
    try:  # the bar ends before any message
        result = fuse_folder(pipeline, args.a, args.output, suffix=FOLDER_FORMATS[args.format or "png"],
                             seed=args.seed, batch_size=1 if args.batch is None else args.batch,
                             overwrite=args.overwrite, feature_timesteps=timesteps, read_options=read_options,
                             rank=context.rank, world_size=context.world_size, progress=progress)
    finally:
        bar.close()
    if context.is_main:
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for failure in result.failures:
            print(f"failed: {failure.name}: {in_flag_terms(failure.error)}", file=sys.stderr)
        failed = f", {len(result.failures)} failed (listed in {result.failures_csv})" if result.failures else ""
        print(f"fused {len(result.fused)} pairs, skipped {len(result.skipped)} already fused{failed} -> {args.output}")
    return 1 if result.failures else 0


def _checkpoint(args: argparse.Namespace, guess: TaskGuess, announce: bool = True) -> str | Path | None:
    """The checkpoint a fuse uses: --checkpoint, else the bundled one of --task or of the guessed task; said
    in one line (None: no checkpoint is installed, random weights of --preset)."""
    if args.checkpoint:
        folder, why = args.checkpoint, "--checkpoint"
    else:
        task = guess.task if args.task == "auto" else args.task
        why = f"{TASK_NAMES[task]} pair: {guess.reason}" if args.task == "auto" else f"--task {task}"
        folder = default_checkpoint(task)
    if announce:
        used = f"random weights of the {args.preset} preset (no checkpoint installed)" if folder is None else folder
        print(f"checkpoint: {used} ({why})")
    return folder
