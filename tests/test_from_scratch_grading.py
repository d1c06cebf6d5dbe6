"""The from-scratch gate of the exercises: an answer taken from torch or course_lib earns no implementation points.

Each case runs, in a fresh Jupyter kernel (nbclient), a master's setup and answer cells with the answers of one
exercise replaced -- by a correct alternative, or by a hostile one such as ``BatchNorm2d = cn.BatchNorm2d`` --
then the master's test cells of that exercise, hidden tests included, and adds up the points of the test cells
that ran without an error: what nbgrader's autograde (``make grade``) gives them.

    python tests/test_from_scratch_grading.py [solutions-dir]   # the alias table: score per case

Hostile answers must score 0, honest ones full marks; the masters' own answers too.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Exercise:
    assignment: str
    answers: tuple[str, ...]  # grade_ids of the answer cells this exercise's cases replace
    tests: tuple[str, ...]  # grade_ids of its test cells


EXERCISES = {
    "1.2": Exercise("Q1", ("q1-2-solution",), ("test_ema_update",)),
    "1.3": Exercise("Q1", ("q1-3-solution",), ("test_running_stats", "test_running_stats_cumulative")),
    "3.1": Exercise("Q3", ("q3-bn-solution",), ("test_bn_structure", "test_bn_training", "test_bn_eval",
                                                "test_bn_running_var", "test_bn_gradients",
                                                "test_bn_numerics_scratch")),
    "3.2": Exercise("Q3", ("q3-hook-solution",), ("test_hook_values", "test_hook_removed")),
    "4.1": Exercise("Q4", ("q4-1-solution",), ("test_fixed_modes", "test_fixed_no_graph", "test_fixed_large_mean",
                                               "test_fixed_running_variance", "test_fixed_silent")),
    "5.1": Exercise("Q5", ("q5-1-solution",), ("test_sched_lin", "test_sched_cos")),
    "5.2": Exercise("Q5", ("q5-2-solution",), ("test_combine_scheds", "test_combine_scheds_more")),
    "5.3": Exercise("Q5", ("q5-3-solution",), ("test_recalibrate", "test_recalibrate_more")),
    "6.1": Exercise("Q6", ("q6-1-solution",), ("test_ln_forward", "test_ln_gradients", "test_ln_properties")),
    "7.1": Exercise("Q7", ("q7-1-solution",), ("test_in_forward", "test_in_gradients", "test_in_scratch")),
    "7.2": Exercise("Q7", ("q7-2-solution",), ("test_fixed_in_matches", "test_fixed_in_small_variance",
                                               "test_fixed_in_1x1")),
    "8.1": Exercise("Q8", ("q8-1-solution",), ("test_gn_forward", "test_gn_gradients", "test_gn_equivalences",
                                               "test_gn_errors")),
    "9.1": Exercise("Q9", ("q9-1-solution",), ("test_merge_moments", "test_merge_moments_more")),
    "9.2": Exercise("Q9", ("q9-2-solution",), ("test_rbn_training", "test_rbn_eval", "test_rbn_batch_of_one",
                                               "test_rbn_more")),
}

BN_WRAPPER = '''\
import torch.nn.functional as F

class BatchNorm2d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        if self.training:
            self.num_batches_tracked += 1
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum, self.eps)
'''
BN_RSQRT = '''\
class BatchNorm2d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"expected 4D input, got {x.dim()}D")
        if self.training:
            mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), correction=0)
            n = x.numel() / x.shape[1]
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * n / (n - 1))
                self.num_batches_tracked.add_(1)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight * torch.rsqrt(var + self.eps)
        return x * scale[:, None, None] + (self.bias - mean * scale)[:, None, None]
'''
FIXED_BN_WRAPPER = '''\
import torch.nn.functional as F

class FixedBatchNorm(nn.Module):
    def __init__(self, num_channels, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.gamma = nn.Parameter(torch.ones(1, num_channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, num_channels, 1))
        self.register_buffer("running_mean", torch.zeros(1, num_channels, 1))
        self.register_buffer("running_variance", torch.ones(1, num_channels, 1))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean.view(-1), self.running_variance.view(-1), self.gamma.view(-1),
                            self.beta.view(-1), self.training, self.momentum, self.eps)
'''
RECALIBRATE_UPDATE_BN = '''\
from torch.optim.swa_utils import update_bn

def recalibrate_bn(model, batches):
    modes = [(m, m.training) for m in model.modules()]
    update_bn(batches, model)
    for module, training in modes:
        module.training = training
    return model
'''
RECALIBRATE_COURSE_LIB = '''\
from course_lib.training import recalibrate_batchnorm

def recalibrate_bn(model, batches):
    recalibrate_batchnorm(model, batches)
    return model
'''
RECALIBRATE_NO_RESET = '''\
def recalibrate_bn(model, batches):
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    modes = [(m, m.training) for m in model.modules()]
    for norm in norms:
        norm.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    for module, training in modes:
        module.training = training
    return model
'''
RECALIBRATE_TOP_MODE = RECALIBRATE_NO_RESET.replace(
    "        norm.momentum = None\n", "        norm.reset_running_stats()\n        norm.momentum = None\n").replace(
    "    modes = [(m, m.training) for m in model.modules()]\n", "    was_training = model.training\n").replace(
    "    for module, training in modes:\n        module.training = training\n", "    model.train(was_training)\n")
LN_WRAPPER = '''\
import torch.nn.functional as F

class LayerNorm(nn.Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(self.normalized_shape)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape)) if elementwise_affine else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
'''
FIXED_IN_WRAPPER = '''\
import torch.nn.functional as F

class FixedInstanceNorm(nn.Module):
    def __init__(self, nf, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.mults = nn.Parameter(torch.ones(nf, 1, 1))
        self.adds = nn.Parameter(torch.zeros(nf, 1, 1))

    def forward(self, x):
        return F.instance_norm(x, weight=self.mults.view(-1), bias=self.adds.view(-1), eps=self.eps)
'''
GN_WRAPPER = '''\
import torch.nn.functional as F

class GroupNorm(nn.Module):
    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"expected num_channels divisible by num_groups, got {num_channels} and {num_groups}")
        self.num_groups, self.eps = num_groups, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
'''
GN_5D = '''\
class GroupNorm(nn.Module):
    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"expected num_channels divisible by num_groups, got {num_channels} and {num_groups}")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x):
        n, c, h, w = x.shape
        g = x.view(n, self.num_groups, c // self.num_groups, h, w)
        mean = g.mean((2, 3, 4), keepdim=True)
        var = g.var((2, 3, 4), keepdim=True, correction=0)
        y = ((g - mean) * torch.rsqrt(var + self.eps)).view(n, c, h, w)
        return y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1) if self.affine else y
'''
RUNNING_STATS_BN = '''\
def running_stats_after(batches, momentum=0.1):
    bn = nn.BatchNorm2d(batches[0].shape[1], momentum=momentum)
    with torch.no_grad():
        for x in batches:
            bn(x)
    return bn.running_mean, bn.running_var
'''
RECORD_STATS_HOOKS = '''\
from course_lib.hooks import Hooks

def record_stats(model, x, layer_type=nn.Conv2d):
    stats = []
    with Hooks([m for m in model.modules() if isinstance(m, layer_type)],
               lambda hook, module, inputs, output: stats.append((output.mean().item(), output.std().item()))):
        with torch.no_grad():
            model(x)
    return stats
'''

HONEST, HOSTILE, PARTIAL = "full marks", "no points", "loses points (a bug, not the gate)"
# (exercise, label, {answer grade_id: source} or None for the master's answer, expected)
CASES = [
    ("1.2", "master", None, HONEST),
    ("1.2", "alias cs.ema_update", {"q1-2-solution": "ema_update = cs.ema_update"}, HOSTILE),
    ("1.2", "wrapper of cs.ema_update", {"q1-2-solution": "def ema_update(running, new, momentum):\n"
                                                          "    return cs.ema_update(running, new, momentum)"}, HOSTILE),
    ("1.3", "master", None, HONEST),
    ("1.3", "nn.BatchNorm2d inside", {"q1-3-solution": RUNNING_STATS_BN}, HOSTILE),
    ("1.3", "cn.BatchNorm2d inside", {"q1-3-solution": RUNNING_STATS_BN.replace("nn.BatchNorm2d", "cn.BatchNorm2d")},
     HOSTILE),
    ("3.1", "master", None, HONEST),
    ("3.1", "rsqrt and var(correction=0)", {"q3-bn-solution": BN_RSQRT}, HONEST),
    ("3.1", "alias cn.BatchNorm2d", {"q3-bn-solution": "BatchNorm2d = cn.BatchNorm2d"}, HOSTILE),
    ("3.1", "alias nn.BatchNorm2d", {"q3-bn-solution": "BatchNorm2d = nn.BatchNorm2d"}, HOSTILE),
    ("3.1", "subclass of nn.BatchNorm2d", {"q3-bn-solution": "class BatchNorm2d(nn.BatchNorm2d):\n    pass"}, HOSTILE),
    ("3.1", "forward calls F.batch_norm", {"q3-bn-solution": BN_WRAPPER}, HOSTILE),
    ("3.2", "master", None, HONEST),
    ("3.2", "course_lib.hooks.Hooks", {"q3-hook-solution": RECORD_STATS_HOOKS}, HOSTILE),
    ("4.1", "master", None, HONEST),
    ("4.1", "forward calls F.batch_norm", {"q4-1-solution": FIXED_BN_WRAPPER}, HOSTILE),
    ("5.1", "master", None, HONEST),
    ("5.1", "import from course_lib.schedules",
     {"q5-1-solution": "from course_lib.schedules import sched_cos, sched_lin"}, HOSTILE),
    ("5.2", "master", None, HONEST),
    ("5.2", "import from course_lib.schedules", {"q5-2-solution": "from course_lib.schedules import combine_scheds"},
     HOSTILE),
    ("5.3", "master", None, HONEST),
    ("5.3", "swa_utils.update_bn", {"q5-3-solution": RECALIBRATE_UPDATE_BN}, HOSTILE),
    ("5.3", "course_lib.training.recalibrate_batchnorm", {"q5-3-solution": RECALIBRATE_COURSE_LIB}, HOSTILE),
    ("5.3", "forgets reset_running_stats()", {"q5-3-solution": RECALIBRATE_NO_RESET}, PARTIAL),
    ("5.3", "restores only the top-level mode", {"q5-3-solution": RECALIBRATE_TOP_MODE}, PARTIAL),
    ("6.1", "master", None, HONEST),
    ("6.1", "alias nn.LayerNorm", {"q6-1-solution": "LayerNorm = nn.LayerNorm"}, HOSTILE),
    ("6.1", "alias cn.LayerNorm", {"q6-1-solution": "LayerNorm = cn.LayerNorm"}, HOSTILE),
    ("6.1", "forward calls F.layer_norm", {"q6-1-solution": LN_WRAPPER}, HOSTILE),
    ("7.1", "master", None, HONEST),
    ("7.1", "alias cn.InstanceNorm2d", {"q7-1-solution": "InstanceNorm2d = cn.InstanceNorm2d"}, HOSTILE),
    ("7.1", "subclass of nn.InstanceNorm2d",
     {"q7-1-solution": "class InstanceNorm2d(nn.InstanceNorm2d):\n    pass"}, HOSTILE),
    ("7.2", "master", None, HONEST),
    ("7.2", "forward calls F.instance_norm", {"q7-2-solution": FIXED_IN_WRAPPER}, HOSTILE),
    ("8.1", "master", None, HONEST),
    ("8.1", "5-D view and rsqrt", {"q8-1-solution": GN_5D}, HONEST),
    ("8.1", "subclass of nn.GroupNorm", {"q8-1-solution": "class GroupNorm(nn.GroupNorm):\n    pass"}, HOSTILE),
    ("8.1", "alias cn.GroupNorm", {"q8-1-solution": "GroupNorm = cn.GroupNorm"}, HOSTILE),
    ("8.1", "forward calls F.group_norm", {"q8-1-solution": GN_WRAPPER}, HOSTILE),
    ("9.1", "master", None, HONEST),
    ("9.1", "alias cs.merge_moments", {"q9-1-solution": "merge_moments = cs.merge_moments"}, HOSTILE),
    ("9.2", "master", None, HONEST),
    ("9.2", "alias cn.RunningBatchNorm", {"q9-2-solution": "RunningBatchNorm = cn.RunningBatchNorm"}, HOSTILE),
    ("9.2", "aliases of both (the review's 10/10)", {"q9-1-solution": "merge_moments = cs.merge_moments",
                                                     "q9-2-solution": "RunningBatchNorm = cn.RunningBatchNorm"},
     HOSTILE),
]


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def master(solutions: Path, assignment: str) -> nbformat.NotebookNode:
    (path,) = sorted((solutions / assignment).glob("*.ipynb"))
    return nbformat.read(path, as_version=4)


def scores(solutions: Path, cases: list[tuple[str, dict[str, str] | None]], timeout: int = 120) -> list[dict]:
    """Per ``(exercise, answers)`` case, ``{test grade_id: (points earned, points, error message)}``.

    All cases belong to one assignment and run in one kernel: for each, ``%reset -f``, the setup cell, every answer
    and read-only code cell of the master (the case's answers swapped in), then the exercise's test cells with
    their hidden tests.
    """
    (assignment,) = {EXERCISES[exercise].assignment for exercise, _ in cases}
    nb = master(solutions, assignment)
    cells = []
    for index, (exercise, answers) in enumerate(cases):
        cells.append(nbformat.v4.new_code_cell("%reset -f"))
        for cell in nb.cells:
            meta = _meta(cell)
            if cell.cell_type != "code" or not meta or \
                    (meta.get("grade") and meta.get("grade_id") not in EXERCISES[exercise].tests):
                continue
            source = answers[meta["grade_id"]] if answers and meta.get("grade_id") in answers else cell.source
            cells.append(nbformat.v4.new_code_cell(source, metadata={"nbgrader": meta, "case": index}))
    nb.cells = cells
    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(solutions.parent)}}).execute()  # its course_lib
    results = [{} for _ in cases]
    for cell in nb.cells:
        meta = _meta(cell)
        if meta.get("grade"):
            errors = [o for o in cell.outputs if o.output_type == "error"]
            message = f"{errors[0].ename}: {errors[0].evalue}" if errors else ""
            points = 0 if errors else meta["points"]
            results[cell.metadata["case"]][meta["grade_id"]] = (points, meta["points"], message)
    for (exercise, _), result in zip(cases, results):
        tests = EXERCISES[exercise].tests
        assert set(result) == set(tests), f"test cells {tests} expected in {assignment}, got {sorted(result)}"
    return results


@pytest.fixture(scope="module")
def table() -> dict[tuple[str, str], dict]:
    """Every case's scores, one kernel per assignment."""
    return measure(REPO / "solutions")


def measure(solutions: Path) -> dict[tuple[str, str], dict]:
    found = {}
    for assignment in sorted({e.assignment for e in EXERCISES.values()}):
        mine = [c for c in CASES if EXERCISES[c[0]].assignment == assignment]
        for case, result in zip(mine, scores(solutions, [(c[0], c[2]) for c in mine])):
            found[case[0], case[1]] = result
    return found


@pytest.mark.slow
@pytest.mark.parametrize("exercise, label, answers, expected", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_library_answers_earn_nothing_and_honest_ones_everything(table, exercise, label, answers, expected):
    result = table[exercise, label]
    earned, full = sum(r[0] for r in result.values()), sum(r[1] for r in result.values())
    failures = {k: r[2] for k, r in result.items() if r[2]}
    if expected == HONEST:
        assert earned == full, f"{label}: expected full marks ({full}), got {earned}: {failures}"
    elif expected == HOSTILE:
        assert earned == 0, f"{label}: expected no points, got {earned} of {full}: {result}"
        assert all("is not your own code" in message for message in failures.values()), (
            f"{label}: every cell must fail on the from-scratch gate, got {failures}")
    else:
        assert earned < full, f"{label}: expected to lose points, got all {full}"
        assert not any("is not your own code" in message for message in failures.values()), failures


# ------------------------------------------------------------------------- the gate on its own, fast

import functools  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import course_lib.norms as cn  # noqa: E402
import course_lib.stats as cs  # noqa: E402
from course_lib import grading  # noqa: E402
from torch.nn.functional import batch_norm as captured_batch_norm  # noqa: E402  (bound before any check runs)


class Honest(nn.Module):
    """BatchNorm2d from tensor operations (rsqrt, var(correction=0)), the kind of answer that must pass."""

    def __init__(self, c):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    def stats(self, x):
        if self.training:
            return x.mean((0, 2, 3)), x.var((0, 2, 3), correction=0)
        return self.running_mean, self.running_var

    def forward(self, x):
        mean, var = self.stats(x)
        scale = self.weight * torch.rsqrt(var + 1e-5)
        return x * scale[:, None, None] + (self.bias - mean * scale)[:, None, None]


class CapturedFunction(Honest):
    def forward(self, x):
        return captured_batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training)


class TorchBuiltin(Honest):
    def forward(self, x):
        return torch.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var, self.training, 0.1,
                                1e-5, False)


class HiddenInAList(Honest):
    def __init__(self, c):
        super().__init__(c)
        self.hidden = [cn.BatchNorm2d(c)]  # not a registered submodule

    def forward(self, x):
        return self.hidden[0](x)


class OnlyInEval(Honest):
    def forward(self, x):
        return super().forward(x) if self.training else F.batch_norm(x, self.running_mean, self.running_var)


class SilencesTheProfiler(Honest):
    def forward(self, x):
        import sys
        sys.setprofile(None)
        return F.group_norm(x, 1, None, None)


def _refused(layer_class, pattern):
    with pytest.raises(AssertionError, match=pattern):
        grading.check_own_layer(layer_class, "BatchNorm2d", lambda: layer_class(3), torch.randn(4, 3, 2, 2))


def test_gate_accepts_tensor_operations():
    grading.check_own_layer(Honest, "BatchNorm2d", lambda: Honest(3), torch.randn(4, 3, 2, 2))
    grading.check_own_function(lambda a, b: (a - b).square().mean().sqrt(), "f",
                               lambda: torch.var_mean(torch.randn(5)) and torch.linalg.vector_norm(torch.randn(3)))


@pytest.mark.parametrize("layer_class, found", [
    (cn.BatchNorm2d, r"is course_lib.norms.BatchNorm2d"),
    (nn.LazyBatchNorm2d, r"is torch.nn.modules.batchnorm.LazyBatchNorm2d"),
    (type("Sub", (nn.GroupNorm,), {}), r"is torch.nn.modules.normalization.GroupNorm \(or a subclass"),
    (CapturedFunction, r"NativeBatchNormBackward0 in its autograd graph.*aten.native_batch_norm.*"
                       r"called torch.nn.functional.batch_norm"),
    (TorchBuiltin, r"called torch.batch_norm"),
    # course_lib's normalize is plain autograd (no Function of its own): the recorded calls give it away
    (HiddenInAList, r"your BatchNorm2d called course_lib.norms\."),
    (OnlyInEval, r"aten.native_batch_norm.* ran inside"),
    (SilencesTheProfiler,
     r"NativeGroupNormBackward0 in its autograd graph.*aten.native_group_norm.*sys.setprofile was changed"),
])
def test_gate_names_what_it_found(layer_class, found):
    _refused(layer_class, r"BatchNorm2d is not your own code, so this exercise earns no points: .*" + found)


def test_gate_refuses_a_factory_and_a_wrapping_submodule():
    with pytest.raises(AssertionError, match=r"builds a torch.nn.modules.instancenorm.InstanceNorm2d"):
        grading.check_own_layer(lambda c: nn.InstanceNorm2d(c), "InstanceNorm2d", lambda: nn.InstanceNorm2d(3),
                                torch.randn(2, 3, 2, 2))
    wrapper = type("Wrapper", (nn.Module,), {"__init__": lambda self: (nn.Module.__init__(self), setattr(
        self, "ln", nn.LayerNorm(2)))[0], "forward": lambda self, x: self.ln(x)})
    with pytest.raises(AssertionError,
                       match=r"holds a library layer: self.ln \(torch.nn.modules.normalization.LayerNorm"):
        grading.check_own_layer(wrapper, "LayerNorm", wrapper, torch.randn(2, 2))


@pytest.mark.parametrize("fn, found", [
    (cs.merge_moments, "is course_lib.stats.merge_moments"),
    (functools.partial(cs.merge_moments), "is course_lib.stats.merge_moments"),
    (lambda *args: cs.merge_moments(*args), "called course_lib.stats.merge_moments"),
])
def test_function_gate_finds_course_lib(fn, found):
    with pytest.raises(AssertionError, match=found):
        grading.check_own_function(fn, "merge_moments", lambda: fn(2, torch.zeros(2), torch.ones(2), 3,
                                                                   torch.ones(2), torch.ones(2)))


def test_training_gate_allows_the_models_own_layers_but_not_update_bn():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    batches = [torch.randn(4, 1, 5, 5)]

    def by_hand(model, batches):
        model[1].reset_running_stats()
        with torch.no_grad():
            model(batches[0])

    grading.check_own_function(by_hand, "recalibrate_bn", lambda: by_hand(model, batches), forbidden=grading.TRAINING)
    update = lambda model, batches: torch.optim.swa_utils.update_bn(batches, model)  # noqa: E731
    with pytest.raises(AssertionError, match=r"called torch.optim.swa_utils.update_bn"):
        grading.check_own_function(update, "recalibrate_bn", lambda: update(model, batches),
                                   forbidden=grading.TRAINING)


def test_gate_reports_an_answer_that_raises():
    broken = type("Broken", (Honest,), {"forward": lambda self, x: x.view(-1, 7)})
    with pytest.raises(AssertionError, match=r"raised RuntimeError .* while it was checked for library calls"):
        grading.check_own_layer(broken, "BatchNorm2d", lambda: broken(3), torch.randn(4, 3, 2, 2))


class LibraryWhenUnwatched(Honest):
    """Honest on the gate's input shape and whenever a profiler is set; F.batch_norm otherwise."""

    def forward(self, x):
        import sys
        if tuple(x.shape) == (4, 3, 2, 2) or sys.getprofile() is not None:
            return super().forward(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training)


def test_check_layer_watches_every_graded_call():
    """The gate alone can be evaded by a layer that behaves while watched; check_layer(from_scratch=True) cannot:
    the outputs it grades are the watched ones."""
    grading.check_own_layer(LibraryWhenUnwatched, "BatchNorm2d", lambda: LibraryWhenUnwatched(3),
                            torch.randn(4, 3, 2, 2))
    batches = [torch.randn(8, 3, 4, 4)]
    buffers = {"running_mean": "running_mean", "running_var": "running_var"}
    grading.check_layer(LibraryWhenUnwatched(3), nn.BatchNorm2d(3), batches, "BatchNorm2d", buffers=buffers,
                        eval_input=batches[0])
    grading.check_layer(Honest(3), nn.BatchNorm2d(3, momentum=0.0), batches, "BatchNorm2d", eval_input=batches[0],
                        stat_dims=(0, 2, 3), from_scratch=True)
    # watched, it takes its honest branch, which does not update the running buffers: the library branch that
    # passed above is never what gets graded
    with pytest.raises(AssertionError, match="running_mean: max abs difference"):
        grading.check_layer(LibraryWhenUnwatched(3), nn.BatchNorm2d(3), batches, "BatchNorm2d", buffers=buffers,
                            eval_input=batches[0], from_scratch=True)
    wrapper = type("Wrapper", (Honest,), {"forward": lambda self, x: F.batch_norm(
        x, self.running_mean, self.running_var, self.weight, self.bias, self.training)})
    with pytest.raises(AssertionError, match="is not your own code.*NativeBatchNormBackward0"):
        grading.check_layer(wrapper(3), nn.BatchNorm2d(3), batches, "BatchNorm2d", from_scratch=True)


def test_gate_is_quick_in_a_fresh_process():
    """The first dispatch mode of a process must not import torch._dynamo (15 s on a busy CPU: past the grader's
    cell timeout, which killed every correct submission's kernel)."""
    import subprocess
    code = ("import sys, torch\nfrom course_lib import grading\n"
            "grading.check_from_scratch(lambda: torch.nn.Linear(2, 2)(torch.randn(3, 2)).sum().backward(), 'x')\n"
            "print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.stdout.strip() == "False", f"torch._dynamo imported by the gate: {result.stdout} {result.stderr}"


if __name__ == "__main__":  # the alias table of the review, for the masters in sys.argv[1] (default: solutions/)
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "solutions"
    for (exercise, label), result in measure(root).items():
        earned, full = sum(r[0] for r in result.values()), sum(r[1] for r in result.values())
        print(f"{exercise:4} {label:45} {earned:>2}/{full:<2}", flush=True)
