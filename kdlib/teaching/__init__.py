"""Checks and model answers for the exercise notebooks in ``notebooks/exercises/``.

Each ``check_*`` runs the learner's function (or reads the learner's answer) on seeded random inputs, compares
it with kdlib's own, and either prints a short "✓ ..." line and returns True, or raises
:class:`TeachingCheckError` that says in plain words what is wrong: shape, scaling, sign, a missing T², the wrong
direction of the KL divergence, and so on. The diagnosis comes from computing what each typical mistake would
give and matching the learner's numbers against it.

Each exercise has one module that holds its checks and its model answers (``ex1_kd_loss``, ``ex2_temperature``,
``ex3_partitions``, ``ex4_tuning``), on the helpers of ``common``. The answers are registered once, in ``solutions``:
``solution(name)`` returns one, ``show_solution(name)`` prints its source.
The notebooks take a papermill parameter ``solutions``; with ``solutions = True`` (or ``KDLIB_SOLUTIONS=1`` in the
kernel's environment, see ``solutions_wanted``) each exercise cell is followed by ``name = teaching.solution("name")``,
so the test suite runs every notebook with right answers under nbval. ``grade_report(folder)``
(or ``python -m kdlib.teaching report FOLDER``, in ``grading``) summarises a class's notebooks executed in batch
with papermill.
"""

from kdlib.teaching.common import ATOL as ATOL
from kdlib.teaching.common import RTOL as RTOL
from kdlib.teaching.common import TeachingCheckError
from kdlib.teaching.ex1_kd_loss import check_kd_loss, check_soft_targets
from kdlib.teaching.ex2_temperature import PREDICTION_CHOICES, check_entropy, check_temperature_prediction
from kdlib.teaching.ex3_partitions import check_dirichlet_split, check_heatmap_reading
from kdlib.teaching.ex4_tuning import TUNING_EXPLANATIONS, check_pick_best, check_tuning_explanation, compare_guess
from kdlib.teaching.grading import grade_report
from kdlib.teaching.grading import main as main
from kdlib.teaching.solutions import SOLUTIONS_ENV, show_solution, solution, solutions_wanted

__all__ = [
    "PREDICTION_CHOICES",
    "SOLUTIONS_ENV",
    "TUNING_EXPLANATIONS",
    "TeachingCheckError",
    "check_dirichlet_split",
    "check_entropy",
    "check_heatmap_reading",
    "check_kd_loss",
    "check_pick_best",
    "check_soft_targets",
    "check_temperature_prediction",
    "check_tuning_explanation",
    "compare_guess",
    "grade_report",
    "show_solution",
    "solution",
    "solutions_wanted",
]
