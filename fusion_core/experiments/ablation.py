"""The paper's module ablation (Table 4): every variant trained under one budget and seed, then evaluated.

Paper: Di et al., "Dynamic gating diffusion denoising and cross-layer attention-based multimodal image fusion
network", J. Harbin Inst. Technol. 2026, DOI 10.11918/202507016, Table 4 (ablation of DFE, GCFS, GLSA and
the number of experts M) and Tables 1-3 (comparison on MSRS, RoadScene and Harvard).

Ablation protocol (`run_ablation`), choices the paper leaves open recorded here:

- Every variant trains the same number of steps with the same seed, so it sees the same pairs, crops, flips,
  timesteps and noise at every step (training/loop.py draws them from (seed, step)), and its weights are
  drawn from the same seeded generator (models.build_model).
- Steps are split STAGE1_FRACTION : 1 - STAGE1_FRACTION between stage 1 (the UNet, diffusion loss) and
  stage 2 (the head, UNet frozen): the UNet learns a denoiser from scratch, while the head only learns to
  mix the features it is given.
- A time budget is the training time of the whole ablation, shared evenly between the variants. It becomes
  one step count, once: every variant runs 1 + WARMUP_STEPS steps of each stage in a scratch folder, the
  first step untimed (allocation, kernel selection); the slowest variant's seconds per step, the stages
  weighted by the split, sets the steps that all variants get. The warm-up and the evaluation come on top
  of the budget. The count is kept in ablation_plan.json, so a rerun with the same budget trains the same
  steps (and can reuse finished variants) instead of measuring again.
- Resumable: a variant whose folder holds a finished stage 2 with these settings is reused, a half-trained
  one resumes from its checkpoint, one trained with another model config or other RESULT_FIELDS is refused.
  The training folders are not recorded in a checkpoint, so train on other data into a new out_dir.

Output, under out_dir:

    <variant>/                   checkpoint folder of each variant (training/ layout; wall times in provenance.json)
    ablation_plan.json           the step count and how it was chosen
    evaluation/                  evaluate_folder's outputs on the test pairs (fused images, CSVs, means.png),
                                 fused again on every run
    ablation.csv, ablation.md    the seven paper metrics (means over the test pairs) and the mean rank
    curves.png                   training loss of every variant, stage 1 and stage 2 panels
    report.md                    the table, the curves, the exact settings and each variant's wall time

A rerun with another test_root evaluates the same trained variants on it and rewrites these files.

No argparse: `cli.py` calls `run_ablation`.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..checkpoint import CONFIG_NAME, load_pipeline
from ..config import PRESETS, FusionConfig, TrainConfig
from ..data import PairDataset, find_pairs
from ..distributed import DistributedContext
from ..evaluate import EvaluationResult, evaluate_folder, format_markdown_table, pipeline_method
from ..imaging import write_atomically, write_csv
from ..metrics import PAPER_METRICS, get_convention
from ..models.dgd_fusion import build_model
from ..plots import plot_curves, read_log
from ..training import (
    LOG_NAME,
    Origin,
    Provenance,
    TrainProgress,
    hardware_description,
    read_provenance,
    read_train_state,
    run_stages,
    steps_for_minutes,
    train,
)
from ..validation import ValidationSet

ABLATION_VARIANTS: tuple[str, ...] = ("DFE+GCFS", "DFE+GLSA", "GCFS+GLSA", "DFE_3", "DFE_5", "ALL")
STAGE1_FRACTION = 0.75
WARMUP_STEPS = 3
PLAN_NAME = "ablation_plan.json"
# The TrainConfig fields that change the trained weights (logging and checkpoint cadence do not).
RESULT_FIELDS = ("stage", "steps", "batch_size", "crop", "lr", "seed", "timestep_jitter")

VariantProgress = Callable[[str, TrainProgress], None]  # (variant name, train.py's progress report)


@dataclass(frozen=True)
class StepPlan:
    """The steps every variant trains, and how that number was chosen.

    seconds_per_step: the slowest variant's measured seconds per step, stages weighted by the split (None
    when the steps were given).
    """

    stage1_steps: int
    stage2_steps: int
    budget_minutes: float | None = None
    seconds_per_step: float | None = None
    slowest_variant: str | None = None

    @property
    def steps(self) -> int:
        return self.stage1_steps + self.stage2_steps


@dataclass(frozen=True)
class VariantRun:
    """One trained variant: its checkpoint folder, size, wall seconds of (stage 1, stage 2), reuse."""

    name: str
    checkpoint: Path
    parameters: int
    stage_seconds: tuple[float, float]
    reused: bool


@dataclass(frozen=True)
class AblationResult:
    """What `run_ablation` trained, measured and wrote.

    means: variant -> paper metric -> mean over the test pairs; mean_rank: variant -> mean rank over the
    seven paper metrics (1 = best); files: "ablation_csv", "ablation_md", "curves_png", "report_md",
    "plan_json" -> path.
    """

    out_dir: Path
    plan: StepPlan
    train_config: TrainConfig
    runs: dict[str, VariantRun]
    evaluation: EvaluationResult
    means: dict[str, dict[str, float]]
    mean_rank: dict[str, float]
    files: dict[str, Path]


# ------------------------------------------------------------------------------------------------ step plan


def split_steps(steps: int) -> tuple[int, int]:
    """(stage 1 steps, stage 2 steps) of a total, STAGE1_FRACTION to stage 1, at least one step each."""
    if steps < 2:
        raise ValueError(f"an ablation needs at least 2 steps per variant (one per stage), got {steps}")
    first = min(max(round(steps * STAGE1_FRACTION), 1), steps - 1)
    return first, steps - first


def _seconds_per_step(config: FusionConfig, dataset: PairDataset, train_config: TrainConfig,
                      context: DistributedContext) -> float:
    """Mean seconds of WARMUP_STEPS steps of train_config's stage, after one untimed step."""
    stamps: list[float] = []
    quick = replace(train_config, steps=1 + WARMUP_STEPS, log_every=1, checkpoint_every=0, preview_every=0)
    with tempfile.TemporaryDirectory() as scratch:
        train(build_model(config, torch.Generator().manual_seed(quick.seed)), dataset, quick, scratch, context=context,
              progress=lambda report: stamps.append(time.perf_counter()))
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def _measure_plan(budget_minutes: float, configs: Mapping[str, FusionConfig], dataset: PairDataset,
                  base: TrainConfig, context: DistributedContext) -> StepPlan:
    """Convert a budget for the whole ablation into one step count that the slowest variant can meet."""
    cost = {name: STAGE1_FRACTION * _seconds_per_step(config, dataset, replace(base, stage=1), context)
            + (1 - STAGE1_FRACTION) * _seconds_per_step(config, dataset, replace(base, stage=2), context)
            for name, config in configs.items()}
    slowest = max(cost, key=cost.get)
    steps = steps_for_minutes(budget_minutes / len(configs), base.batch_size / cost[slowest], base.batch_size)
    return StepPlan(*split_steps(max(steps, 2)), budget_minutes, cost[slowest], slowest)


def _plan_key(budget_minutes: float | None, configs: Mapping[str, FusionConfig], base: TrainConfig) -> dict:
    """What a measured plan depends on; a saved plan is reused only when its key is the same."""
    key = {"budget_minutes": budget_minutes, "variants": {n: c.to_dict() for n, c in configs.items()},
           "train_config": asdict(base), "hardware": hardware_description()}
    return json.loads(json.dumps(key))


def _make_plan(out_dir: Path, budget_minutes: float | None, steps: int | None,
               configs: Mapping[str, FusionConfig], dataset: PairDataset, base: TrainConfig,
               context: DistributedContext) -> StepPlan:
    if (budget_minutes is None) == (steps is None):
        raise ValueError("give exactly one of budget_minutes (measured once) or steps (per variant)")
    if steps is not None:
        return StepPlan(*split_steps(steps))
    if budget_minutes <= 0:
        raise ValueError(f"budget_minutes must be positive, got {budget_minutes}")
    path = out_dir / PLAN_NAME
    saved = json.loads(path.read_text()) if path.exists() else {}
    if saved.get("key") == _plan_key(budget_minutes, configs, base):
        return StepPlan(**saved["plan"])
    return _measure_plan(budget_minutes, configs, dataset, base, context)


# ------------------------------------------------------------------------------------------------- training


def _variant_configs(variants: Sequence[str], transform: Callable[[FusionConfig], FusionConfig] | None
                     ) -> dict[str, FusionConfig]:
    unknown = [name for name in variants if name not in PRESETS]
    if unknown or not variants or len(set(variants)) != len(variants):
        raise ValueError(f"variants must be distinct PRESETS names (e.g. {', '.join(ABLATION_VARIANTS)}); "
                         f"got {list(variants)}")
    return {name: transform(PRESETS[name]) if transform else PRESETS[name] for name in variants}


def _saved_state(folder: Path, config: FusionConfig, stages: tuple[TrainConfig, TrainConfig]) -> dict:
    """The train_state of a variant folder ({} when empty), after checking it holds this ablation's run."""
    state = read_train_state(folder)
    if not state:
        return state
    saved = json.loads((folder / CONFIG_NAME).read_text())
    saved.pop("format", None)
    expected = asdict(stages[state["stage"] - 1])
    same_training = all(state["train_config"].get(k) == expected[k] for k in RESULT_FIELDS)
    if saved != json.loads(json.dumps(config.to_dict())) or not same_training:
        raise ValueError(f"{folder} holds a run with other settings than this ablation's (model or "
                         f"{', '.join(RESULT_FIELDS)}); delete it or choose another output folder")
    return state


def _is_finished(state: dict, stage2: TrainConfig) -> bool:
    return state.get("stage") == 2 and state["step"] >= stage2.steps


def _read_wall(folder: Path) -> dict[str, float]:
    """Training seconds by stage ("1", "2") from the variant's provenance ({} before its first checkpoint)."""
    provenance = read_provenance(folder) if (folder / CONFIG_NAME).exists() else None
    return {str(s.stage): s.wall_seconds for s in provenance.stages} if provenance else {}


def _train_variant(name: str, config: FusionConfig, dataset: PairDataset, stages: tuple[TrainConfig, TrainConfig],
                   folder: Path, state: dict, context: DistributedContext, progress: VariantProgress | None,
                   validation: ValidationSet | None) -> dict[str, float]:
    """Train (or finish) stage 1 then stage 2 into folder. Returns the wall seconds by stage ("1", "2")."""
    seed = stages[0].seed
    model = build_model(config, torch.Generator().manual_seed(seed))
    drawn = Origin(seed=seed, preset=config.name)
    provenance = Provenance(f"DGD-Fusion ablation variant {name} (paper Table 4)", drawn, drawn, pairs=len(dataset),
                            notes=("trained by fusion_core.experiments.run_ablation",))
    first = 1 if state.get("stage") == 2 or state.get("step", 0) >= stages[0].steps else 0
    report = (lambda index, r: progress(name, r)) if progress is not None else None
    run_stages(model, dataset, stages[first:], folder, provenance=provenance, resume=True, progress=report,
               device=str(context.device), validation=validation)
    return _read_wall(folder)


def _train_variants(configs: Mapping[str, FusionConfig], dataset: PairDataset, stages: tuple[TrainConfig, TrainConfig],
                    out_dir: Path, states: Mapping[str, dict], context: DistributedContext,
                    progress: VariantProgress | None, validation: ValidationSet | None
                    ) -> dict[str, tuple[dict[str, float], bool]]:
    """variant -> (wall seconds by stage, reused) after training every unfinished variant in turn."""
    done = {}
    for name, config in configs.items():
        folder = out_dir / name
        if _is_finished(states[name], stages[1]):
            done[name] = (_read_wall(folder), True)
        else:
            done[name] = (_train_variant(name, config, dataset, stages, folder, states[name], context, progress,
                                         validation), False)
    return done


# ------------------------------------------------------------------------------------------ ablation output


def _settings_lines(train_roots: Sequence[Path], test_root: Path, train_pairs: int, test_pairs: int,
                    plan: StepPlan, stages: tuple[TrainConfig, TrainConfig], variants: int, convention: str
                    ) -> list[str]:
    s1, s2 = stages
    if plan.budget_minutes is None:
        chosen = "given as steps"
    else:
        chosen = (f"from a budget of {plan.budget_minutes:g} min for the {variants} variants "
                  f"({plan.budget_minutes / variants:.3g} min each) at {plan.seconds_per_step:.4f} s/step, the "
                  f"slowest variant's ({plan.slowest_variant}) over {WARMUP_STEPS} warm-up steps per stage")
    return [
        f"- training pairs: {train_pairs} from {', '.join(f'`{root}`' for root in train_roots)}",
        f"- test pairs: {test_pairs} from `{test_root}`",
        f"- steps per variant: {plan.steps} = {s1.steps} (stage 1, UNet) + {s2.steps} (stage 2, head, UNet "
        f"frozen), split {STAGE1_FRACTION:g} : {1 - STAGE1_FRACTION:g}; {chosen}",
        f"- batch {s1.batch_size}, crop {s1.crop}, Adam lr {s1.lr}, seed {s1.seed} for every variant (same pairs, "
        f"crops, timesteps and noise at every step), feature-timestep jitter {s1.timestep_jitter}",
        f"- evaluation: fused with diffusion-noise seed {s1.seed}; metrics on the written 8-bit images; "
        f"{get_convention(convention).summary}",
        f"- hardware: {hardware_description()}",
    ]


def _time_table(runs: Mapping[str, VariantRun]) -> list[str]:
    lines = ["| variant | parameters | stage 1 (min) | stage 2 (min) | total (min) | this run |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for run in runs.values():
        first, second = (seconds / 60 for seconds in run.stage_seconds)
        lines.append(f"| {run.name} | {run.parameters:,} | {first:.2f} | {second:.2f} | {first + second:.2f} | "
                     f"{'reused' if run.reused else 'trained'} |")
    return lines


def _report_text(table: str, settings: list[str], runs: Mapping[str, VariantRun]) -> str:
    return "\n".join([
        "# Ablation of DGD-Fusion's modules (paper Table 4)",
        "",
        "## Settings",
        "",
        *settings,
        "",
        "## Metrics on the test pairs",
        "",
        table,
        "## Training loss",
        "",
        "![training loss of every variant, stage 1 and stage 2](curves.png)",
        "",
        "## Training wall time",
        "",
        *_time_table(runs),
        "",
    ])


# ------------------------------------------------------------------------------------------------ protocol


def run_ablation(train_roots: Sequence[str | Path], test_root: str | Path, out_dir: str | Path, *,
                 budget_minutes: float | None = None, steps: int | None = None,
                 variants: Sequence[str] = ABLATION_VARIANTS, base_train_config: TrainConfig,
                 progress: VariantProgress | None = None,
                 config_transform: Callable[[FusionConfig], FusionConfig] | None = None,
                 device: str | None = None, convention: str = "standard",
                 validation_root: str | Path | None = None) -> AblationResult:
    """Train every ablation variant under one budget and seed, evaluate them on the test pairs, report.

    Args:
        train_roots: folders of training pairs (`data.find_pairs` layouts), trained on together.
        test_root: folder of test pairs.
        out_dir: one checkpoint folder per variant, the evaluation, the tables, curves.png and report.md.
        budget_minutes: training time of the whole ablation, shared evenly and converted to steps once.
        steps: steps per variant (stage 1 + stage 2) instead of a budget; give exactly one of the two.
        variants: PRESETS names (default: the six of Table 4).
        base_train_config: batch, crop, lr, seed and checkpoint cadence; its stage and steps are replaced.
        progress: called as progress(variant, TrainProgress) while training.
        config_transform: applied to each variant's preset (tests shrink them with it).
        device: "cpu" or "cuda" (default: cuda when present).
        convention: metric convention of the tables ("standard" or "published").
        validation_root: pairs held out of the training data; stage 2 logs each variant's mean rank against
            the baselines on them every ``base_train_config.validate_every`` steps (the convergence curves).
    """
    out_dir, test_root, train_roots = Path(out_dir), Path(test_root), [Path(root) for root in train_roots]
    get_convention(convention)
    configs = _variant_configs(variants, config_transform)
    dataset = PairDataset([pair for root in train_roots for pair in find_pairs(root)])
    context = DistributedContext(device=torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    # 1. one step count for every variant, then check every folder before training any
    plan = _make_plan(out_dir, budget_minutes, steps, configs, dataset, base_train_config, context)
    stages = (replace(base_train_config, stage=1, steps=plan.stage1_steps),
              replace(base_train_config, stage=2, steps=plan.stage2_steps))
    states = {name: _saved_state(out_dir / name, config, stages) for name, config in configs.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    plan_record = {"key": _plan_key(budget_minutes, configs, base_train_config), "plan": asdict(plan)}
    write_atomically(out_dir / PLAN_NAME, (json.dumps(plan_record, indent=2) + "\n").encode("utf-8"))
    # 2. train what is not finished, 3. evaluate all on the test pairs
    validation = ValidationSet.from_folder(validation_root, base_train_config.seed) if validation_root else None
    trained = _train_variants(configs, dataset, stages, out_dir, states, context, progress, validation)
    evaluation, runs = _evaluate_variants(trained, test_root, out_dir, context.device, base_train_config.seed,
                                          convention)
    # 4. tables, curves and report
    settings = _settings_lines(train_roots, test_root, len(dataset), evaluation.num_pairs, plan, stages,
                               len(configs), convention)
    means, files = _write_ablation(out_dir, evaluation, runs, plan, settings, convention)
    return AblationResult(out_dir, plan, base_train_config, runs, evaluation, means, evaluation.mean_rank, files)


def _evaluate_variants(trained: Mapping[str, tuple[dict[str, float], bool]], test_root: Path, out_dir: Path,
                       device: torch.device, seed: int, convention: str
                       ) -> tuple[EvaluationResult, dict[str, VariantRun]]:
    """evaluate_folder on every variant (fused with noise seed ``seed``) and each variant's VariantRun.

    Every image is fused again (reuse=False): an image left by an earlier run may come from older weights or,
    pair names being shared between test sets (Harvard's MRI_CT and MRI_PET), from another test folder.
    """
    pipelines = {name: load_pipeline(out_dir / name, device) for name in trained}
    methods = {name: pipeline_method(pipeline, seed) for name, pipeline in pipelines.items()}
    evaluation = evaluate_folder(test_root, methods, out_dir / "evaluation", convention=convention, reuse=False)
    runs = {name: VariantRun(name, out_dir / name, sum(p.numel() for p in pipelines[name].model.parameters()),
                             (wall.get("1", math.nan), wall.get("2", math.nan)), reused)
            for name, (wall, reused) in trained.items()}
    return evaluation, runs


def _write_ablation(out_dir: Path, evaluation: EvaluationResult, runs: Mapping[str, VariantRun], plan: StepPlan,
                    settings: list[str], convention: str) -> tuple[dict[str, dict[str, float]], dict[str, Path]]:
    """Write ablation.csv/.md, curves.png and report.md. Returns (paper-metric means, files)."""
    files = {"plan_json": out_dir / PLAN_NAME, "ablation_csv": out_dir / "ablation.csv",
             "ablation_md": out_dir / "ablation.md", "curves_png": out_dir / "curves.png",
             "report_md": out_dir / "report.md"}
    means = {name: {label: evaluation.means[name][label] for label in PAPER_METRICS} for name in runs}
    ranks = evaluation.mean_rank
    caption = (f"{evaluation.num_pairs} test pairs from {evaluation.root}; every variant trained {plan.steps} steps "
               f"({plan.stage1_steps} + {plan.stage2_steps}); means over pairs, best in bold; mean rank over "
               f"the seven paper metrics (1 = best).")
    table = format_markdown_table(means, convention=convention, mean_rank=ranks, labels=PAPER_METRICS,
                                  caption=caption)
    write_atomically(files["ablation_md"], table.encode("utf-8"))
    write_csv(files["ablation_csv"], ["variant", *PAPER_METRICS, "mean_rank", "convention"],
               [[name, *values.values(), ranks[name], convention] for name, values in means.items()])
    plot_curves(files["curves_png"], {name: read_log(run.checkpoint / LOG_NAME) for name, run in runs.items()})
    write_atomically(files["report_md"], _report_text(table, settings, runs).encode("utf-8"))
    return means, files
