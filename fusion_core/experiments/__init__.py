"""The paper's experiment protocols: the module ablation (Table 4, ablation.py) and the method comparison
(Tables 1-3, comparison.py); their plots live in ``fusion_core.plots``, shared with ``evaluate``."""

from ..plots import plot_convergence, plot_curves, validation_curve
from .ablation import (
    ABLATION_VARIANTS,
    PLAN_NAME,
    RESULT_FIELDS,
    STAGE1_FRACTION,
    WARMUP_STEPS,
    AblationResult,
    StepPlan,
    VariantRun,
    run_ablation,
    split_steps,
)
from .comparison import ComparisonResult, percent_above, run_comparison

__all__ = [
    "ABLATION_VARIANTS",
    "PLAN_NAME",
    "RESULT_FIELDS",
    "STAGE1_FRACTION",
    "WARMUP_STEPS",
    "AblationResult",
    "ComparisonResult",
    "StepPlan",
    "VariantRun",
    "percent_above",
    "plot_convergence",
    "plot_curves",
    "run_ablation",
    "run_comparison",
    "split_steps",
    "validation_curve",
]
