"""Command line of DGD-Fusion: ``python -m fusion_core COMMAND``, nine commands.

    fuse       fuse one pair, or every pair of a folder (batched, torchrun), into PNG, 16-bit TIFF or DICOM
    train      train stage 1 (the UNet), stage 2 (the fusion head) or both
    evaluate   fuse a folder of pairs with several methods and tabulate the metrics
    split      hold out every N-th pair (or case) of a folder as a test split
    bench      latency and peak memory of fusion and metrics
    ablation   train and evaluate the paper's Table 4 variants under one budget
    compare    the paper's comparison table: metric means and the reference's lead in %
    curves     plot the validation rank of training runs against training minutes
    gates      how much the GFS gates of a checkpoint select over a folder of pairs

Thin: parse, build, call the library. Training flags are generated from ``TrainConfig``'s fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from .baselines import BASELINES
from .checkpoint import CheckpointError, resolve_pipeline
from .config import HEAD_OUTPUTS, LOSS_WEIGHTS, PRESETS, LossConfig, TrainConfig, check_seed, parse_timesteps
from .data import PairDataset, find_pairs, write_split
from .distributed import check_device, default_device, setup_distributed
from .evaluate import evaluate_folder, parse_external, parse_methods
from .folder_fusion import FOLDER_FORMATS, fuse_folder
from .imaging import ImageLoadError, fused_format, read_pair, write_fused
from .training import LOG_NAME, TrainProgress, TrainRequest, prepare_run, run_stages
from .validation import measure_gates


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


def _add_fuse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuse", help="fuse one registered pair, or every pair of a folder")
    p.add_argument("a", help="source A (infrared, MRI): image or DICOM; or a folder of pairs ({ir,vi}, "
                   "{MRI,CT|PET|SPECT} or {A,B}) to fuse them all")
    p.add_argument("b", nargs="?", help="source B (visible, CT, PET, SPECT): image or DICOM; omitted for a folder")
    p.add_argument("-o", "--output", required=True,
                   help="fused image: .png, .tif/.tiff (16-bit) or .dcm; for a folder, the output folder")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the bundled dgd-general)")
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
    pipeline = resolve_pipeline(args.checkpoint, args.preset, device or default_device())
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
    pipeline = resolve_pipeline(args.checkpoint, args.preset, str(context.device))
    bar = tqdm(desc="fuse" if context.world_size == 1 else f"fuse (rank 0 of {context.world_size})", unit="pair",
               disable=not context.is_main)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    read_options = {"on_size_mismatch": "resample" if args.resample else "refuse", "align": args.align}
    result = fuse_folder(pipeline, args.a, args.output, suffix=FOLDER_FORMATS[args.format or "png"], seed=args.seed,
                         batch_size=1 if args.batch is None else args.batch, overwrite=args.overwrite,
                         feature_timesteps=timesteps, read_options=read_options, rank=context.rank,
                         world_size=context.world_size, progress=progress)
    bar.close()
    if context.is_main:
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for failure in result.failures:
            print(f"failed: {failure.name}: {failure.error}", file=sys.stderr)
        failed = f", {len(result.failures)} failed (listed in {result.failures_csv})" if result.failures else ""
        print(f"fused {len(result.fused)} pairs, skipped {len(result.skipped)} already fused{failed} -> {args.output}")
    return 1 if result.failures else 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train stage 1 (UNet), stage 2 (fusion head) or both")
    p.add_argument("--data", required=True, nargs="+",
                   help="one or more folders of pairs ({ir,vi}, {MRI,CT|PET|SPECT} or {A,B}), trained on together")
    p.add_argument("--out", required=True, help="checkpoint folder to write (and resume from)")
    p.add_argument("--stage", default="both", choices=["1", "2", "both"])
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--init", help="start from this checkpoint (fine-tuning)")
    p.add_argument("--head-from", metavar="CHECKPOINT",
                   help="start from this checkpoint's fusion head (config and weights); the UNet comes from --init "
                        "or --preset")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out, with the config (loss weights, head) saved there")
    p.add_argument("--stage1-steps", type=int, help="steps of stage 1 when --stage both (default --steps)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--val", help="folder of validation pairs (carved from the training data, e.g. with `split`): "
                   "stage 2 logs the network's mean rank against the baselines on them")
    p.add_argument("--head-output", choices=HEAD_OUTPUTS,
                   help="rebuild the fusion head with this output form (keeps the UNet; a new head)")
    p.add_argument("--head-channels", type=int, metavar="WIDTH",
                   help="a new fusion head of this width, trained from scratch (keeps the UNet)")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name == "stage":
            continue
        flags = [f"--{f.name.replace('_', '-')}"] + (["--batch"] if f.name == "batch_size" else [])
        p.add_argument(*flags, dest=f.name, type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name))
    for name in LOSS_WEIGHTS:
        p.add_argument(f"--loss-{name}", dest=f"loss_{name}", type=float,
                       help=f"stage-2 loss weight of the {name} term (default: the model's config)")
    p.add_argument("--loss-intensity-mean", dest="loss_intensity_mean", type=float,
                   help="share of the sources' mean in the intensity term's target, 0 (the paper's max) to 1 "
                        "(default: the model's config)")
    p.add_argument("--loss-gradient-gain", dest="loss_gradient_gain", type=float,
                   help="factor on the gradient term's target, the sharper source's Sobel magnitude: 1 (the "
                        "paper's) to 4 (default: the model's config)")
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "stage"}
    train_config = TrainConfig(**fields)  # a bad seed, crop or step count fails now, before anything is built
    loss = {f.name: getattr(args, f"loss_{f.name}") for f in dataclasses.fields(LossConfig)}
    request = TrainRequest(
        data=tuple(args.data), out=args.out, train=train_config, stage=args.stage, preset=args.preset,
        init=args.init, head_from=args.head_from, resume=args.resume, stage1_steps=args.stage1_steps, val=args.val,
        head_output=args.head_output, head_channels=args.head_channels,
        loss={name: value for name, value in loss.items() if value is not None},
        command="python -m fusion_core " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    check_output_folder(args.out, create=True)
    device = check_device(args.device)
    context = setup_distributed(device)
    run = prepare_run(request, context.is_main)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    bars: dict[int, tuple[tqdm, Callable[[TrainProgress], None]]] = {}

    def progress(index: int, report: TrainProgress) -> None:
        if index not in bars:
            for bar, _ in bars.values():
                bar.close()
            bar = tqdm(total=report.total_steps, desc=f"stage {report.stage}", disable=not context.is_main)
            bars[index] = (bar, _bar_callback(bar))
        bars[index][1](report)

    results = run_stages(run.model, run.dataset, run.configs, args.out, provenance=run.provenance, resume=run.resume,
                         progress=progress, stop=stop, device=device, validation=run.validation)
    for bar, _ in bars.values():
        bar.close()
    for result, config in zip(results, run.configs, strict=False):
        if context.is_main:
            print(f"stage {result.stage}: step {result.step}/{config.steps}, {result.crops_per_second:.2f} crops/s, "
                  f"{result.wall_seconds / 60:.1f} min in all -> {result.out_dir}")
    if results and results[-1].stopped:
        print("stopped; continue with --resume", file=sys.stderr)
        return 130
    return 0


def _bar_callback(bar: tqdm):
    last_rank: list[float] = []

    def update(report: TrainProgress) -> None:
        bar.n = report.step
        if report.validation is not None:
            last_rank[:] = [report.validation]
        shown = {k: f"{v:.4f}" for k, v in report.losses.items()} | {"crops/s": f"{report.crops_per_second:.1f}"}
        bar.set_postfix(shown | ({"val rank": f"{last_rank[0]:.2f}"} if last_rank else {}))
    return update


def _add_method_flags(p: argparse.ArgumentParser) -> None:
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


def _progress_bar(description: str, disable: bool = False) -> tuple[tqdm, Callable[[int, int, str], None]]:
    """A tqdm bar and the (done, total, description) callback evaluate_folder reports to."""
    bar = tqdm(desc=description, unit="image", disable=disable)

    def progress(done: int, total: int, text: str) -> None:
        bar.total = total
        bar.update(done - bar.n)
        bar.set_postfix_str(text)

    return bar, progress


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="fuse a folder of pairs with several methods and tabulate the metrics")
    p.add_argument("pairs", help="folder of pairs ({ir,vi}, {MRI,CT|PET|SPECT} or {A,B})")
    _add_method_flags(p)
    p.add_argument("--out", required=True, help="folder for fused images, CSV and Markdown tables, bar chart")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    external = parse_external(args.external)
    check_output_folder(args.out, create=True)
    check_seed(args.seed)
    context = setup_distributed(check_device(args.device))
    methods = parse_methods(args.methods, args.checkpoint, args.preset, str(context.device), args.seed)
    bar, progress = _progress_bar("evaluate", disable=not context.is_main)

    result = evaluate_folder(args.pairs, methods, args.out, convention=args.convention, progress=progress,
                             reuse=not args.no_reuse, external=external, rank=context.rank,
                             world_size=context.world_size)
    bar.close()
    if context.is_main:
        print(result.files["means_md"].read_text())
        print(f"{result.num_pairs} pairs x {len(result.methods)} methods -> {args.out}")
    return 0


def _add_split(sub: argparse._SubParsersAction) -> None:
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


def _add_bench(sub: argparse._SubParsersAction) -> None:
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
    from .bench import run_benchmark

    presets = sorted(PRESETS) if args.presets == "all" else args.presets.split(",")
    report = run_benchmark(presets=presets, repeats=args.repeats, size=_parse_size(args.size),
                           large=_parse_size(args.large) if args.large else None, device=args.device,
                           isolate=not args.in_process, batches=tuple(int(b) for b in args.batches.split(",") if b))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def _add_gates(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gates", help="how much the GFS gates of a checkpoint select, over a folder of pairs")
    p.add_argument("pairs", help="folder of pairs")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the bundled dgd-general)")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="architecture without a checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the diffusion noise for every pair")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=_run_gates)


def _run_gates(args: argparse.Namespace) -> int:
    pipeline = resolve_pipeline(args.checkpoint, args.preset, check_device(args.device))
    check_seed(args.seed)
    dataset = PairDataset(find_pairs(args.pairs))
    bar = tqdm(total=len(dataset), desc="gates", unit="pair")
    report = measure_gates(pipeline, list(zip(dataset.a, dataset.b, strict=True)), args.seed,
                           lambda done, total: bar.update(done - bar.n))
    bar.close()
    print(report.markdown())
    return 0


def _add_curves(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curves", help="plot the validation rank of training runs against training minutes")
    p.add_argument("runs", nargs="+", help="LABEL=FOLDER of each training run (trained with --val)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.set_defaults(run=_run_curves)


def _run_curves(args: argparse.Namespace) -> int:
    from .plots import convergence_summary, plot_convergence

    runs = dict(run.split("=", 1) if "=" in run else (Path(run).name, run) for run in args.runs)
    logs = plot_convergence(Path(args.out), {label: Path(folder) / LOG_NAME for label, folder in runs.items()})
    for label, lines in logs.items():
        if not lines:
            print(f"{label}: no validation lines (train with --val)", file=sys.stderr)
        else:
            print(convergence_summary(label, lines))
    print(f"-> {args.out}")
    return 0


def _add_ablation(sub: argparse._SubParsersAction) -> None:
    from .experiments import ABLATION_VARIANTS

    p = sub.add_parser("ablation", help="train and evaluate the paper's Table 4 variants under one budget and seed")
    p.add_argument("--data", required=True, nargs="+", help="one or more folders of training pairs")
    p.add_argument("--test", required=True, help="folder of test pairs the variants are evaluated on")
    p.add_argument("--val", help="folder of validation pairs (held out of --data): stage 2 logs each variant's "
                   "mean rank against the baselines on them")
    p.add_argument("--validate-every", type=int, default=TrainConfig().validate_every,
                   help="stage-2 steps between validation ranks")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-minutes", type=float,
                        help="training time of all variants together, shared evenly and turned into one step "
                             "count by a short warm-up of every variant")
    budget.add_argument("--steps", type=int, help="steps per variant (stage 1 + stage 2) instead of a budget")
    p.add_argument("--variants", default=",".join(ABLATION_VARIANTS), help="comma-separated preset names")
    p.add_argument("--out", required=True, help="folder for the variants' checkpoints, tables, curves and report")
    defaults = TrainConfig()
    p.add_argument("--crop", type=int, default=defaults.crop)
    p.add_argument("--batch", type=int, default=defaults.batch_size)
    p.add_argument("--seed", type=int, default=defaults.seed, help="data order and initial weights of every variant")
    p.add_argument("--convention", default="standard", choices=["standard", "published"])
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.set_defaults(run=_run_ablation)


def _run_ablation(args: argparse.Namespace) -> int:
    from .experiments import run_ablation

    bar, current = tqdm(unit="step"), []

    def progress(variant: str, report: TrainProgress) -> None:
        if current != [variant, report.stage]:
            current[:] = [variant, report.stage]
            bar.reset(total=report.total_steps)
            bar.set_description(f"{variant} stage {report.stage}")
        _bar_callback(bar)(report)

    result = run_ablation(args.data, args.test, args.out, budget_minutes=args.budget_minutes, steps=args.steps,
                          variants=args.variants.split(","),
                          base_train_config=TrainConfig(batch_size=args.batch, crop=args.crop, seed=args.seed,
                                                        validate_every=args.validate_every),
                          progress=progress, device=args.device, convention=args.convention,
                          validation_root=args.val)
    bar.close()
    print(result.files["ablation_md"].read_text())
    print(f"{len(result.runs)} variants x {result.plan.steps} steps -> {result.files['report_md']}")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="the paper's comparison table: metric means and the reference's lead in %%")
    p.add_argument("--data", required=True, help="folder of test pairs")
    p.add_argument("--reference", default="dgd", help="the method whose lead over each other one is reported")
    _add_method_flags(p)
    p.add_argument("--out", required=True, help="folder for fused images, tables and the bar chart")
    p.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from .experiments import run_comparison

    external = parse_external(args.external)
    check_output_folder(args.out, create=True)
    device = check_device(args.device) or default_device()
    methods = parse_methods(args.methods, args.checkpoint, args.preset, device, check_seed(args.seed))
    bar, progress = _progress_bar("compare")

    result = run_comparison(args.data, methods, args.out, reference=args.reference, convention=args.convention,
                            progress=progress, reuse=not args.no_reuse, external=external)
    bar.close()
    print(result.files["comparison_md"].read_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fusion_core", description="DGD-Fusion: multimodal image fusion")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_fuse, _add_train, _add_evaluate, _add_split, _add_bench, _add_ablation, _add_compare, _add_curves,
                _add_gates):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; a known error (bad input, flag, checkpoint or output path) is one line, exit status 2.

    ValueError (CheckpointError and the config checks among them), ImageLoadError and an OSError naming a file
    (an output that cannot be written) are the person's to fix; anything else is a bug and keeps its traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ImageLoadError, CheckpointError, ValueError) as error:
        return _refuse(str(error))
    except OSError as error:
        if error.filename is None:
            raise
        return _refuse(f"{error.strerror}: {error.filename}")


def _refuse(message: str) -> int:
    """Print ``message`` as one ``error:`` line (a multi-line one, e.g. torch's shape list, joined) and return 2."""
    print("error: " + " ".join(line.strip() for line in message.splitlines() if line.strip()), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
