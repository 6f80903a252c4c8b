"""The paper in miniature: every stage of TiTok on Imagenette at 64x64, on a CPU, with a report."""

from titok.reproduce.budget import BUDGETS, Budget, get_budget
from titok.reproduce.pipeline import reproduce_imagenette64
from titok.reproduce.run_folder import Run

__all__ = ["BUDGETS", "Budget", "Run", "get_budget", "reproduce_imagenette64"]
