"""``evaluate``, ``compare``, ``ablation``, ``curves`` and ``gates``: scoring and the paper's protocols."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..checkpoint import resolve_pipeline
from ..config import PRESETS, TrainConfig, check_seed
from ..data import PairDataset, find_pairs
from ..distributed import check_device, default_device, setup_distributed
from ..evaluate import evaluate_folder, parse_external
from ..training import LOG_NAME, TrainProgress
from ..validation import measure_gates
from .common import add_method_flags, check_output_folder, methods_of, progress_bar
from .train import bar_callback


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="fuse a folder of pairs with several methods and tabulate the metrics")
    p.add_argument("pairs", help="folder of pairs ({ir,vi}, {MRI,CT|PET|SPECT} or {A,B})")
    add_method_flags(p)
    p.add_argument("--out", required=True, help="folder for fused images, CSV and Markdown tables, bar chart")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    external = parse_external(args.external)
    check_output_folder(args.out, create=True)
    check_seed(args.seed)
    context = setup_distributed(check_device(args.device))
    methods = methods_of(args, str(context.device), args.seed, external)
    bar, progress = progress_bar("evaluate", disable=not context.is_main)

    result = evaluate_folder(args.pairs, methods, args.out, convention=args.convention, progress=progress,
                             reuse=not args.no_reuse, external=external, rank=context.rank,
                             world_size=context.world_size)
    bar.close()
    if context.is_main:
        print(result.files["means_md"].read_text())
        print(f"{result.num_pairs} pairs x {len(result.methods)} methods -> {args.out}")
    return 0


def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="the paper's comparison table: metric means and the reference's lead in %%")
    p.add_argument("--data", required=True, help="folder of test pairs")
    p.add_argument("--reference", default="dgd", help="the method whose lead over each other one is reported")
    add_method_flags(p)
    p.add_argument("--out", required=True, help="folder for fused images, tables and the bar chart")
    p.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from ..experiments import run_comparison

    external = parse_external(args.external)
    check_output_folder(args.out, create=True)
    device = check_device(args.device) or default_device()
    methods = methods_of(args, device, check_seed(args.seed), external)
    bar, progress = progress_bar("compare")

    result = run_comparison(args.data, methods, args.out, reference=args.reference, convention=args.convention,
                            progress=progress, reuse=not args.no_reuse, external=external)
    bar.close()
    print(result.files["comparison_md"].read_text())
    return 0


def add_ablation(sub: argparse._SubParsersAction) -> None:
    from ..experiments import ABLATION_VARIANTS

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
    from ..experiments import run_ablation

    bar, current = tqdm(unit="step"), []

    def progress(variant: str, report: TrainProgress) -> None:
        if current != [variant, report.stage]:
            current[:] = [variant, report.stage]
            bar.reset(total=report.total_steps)
            bar.set_description(f"{variant} stage {report.stage}")
        bar_callback(bar)(report)

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


def add_curves(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curves", help="plot the validation rank of training runs against training minutes")
    p.add_argument("runs", nargs="+", help="LABEL=FOLDER of each training run (trained with --val)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.set_defaults(run=_run_curves)


def _run_curves(args: argparse.Namespace) -> int:
    from ..plots import convergence_summary, plot_convergence

    runs = dict(run.split("=", 1) if "=" in run else (Path(run).name, run) for run in args.runs)
    logs = plot_convergence(Path(args.out), {label: Path(folder) / LOG_NAME for label, folder in runs.items()})
    for label, lines in logs.items():
        if not lines:
            print(f"{label}: no validation lines (train with --val)", file=sys.stderr)
        else:
            print(convergence_summary(label, lines))
    print(f"-> {args.out}")
    return 0


def add_gates(sub: argparse._SubParsersAction) -> None:
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
