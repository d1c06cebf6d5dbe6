"""course_lib.norms is written from tensor operations: no PyTorch normalization function, module or kernel.

Checked at run time (every aten operator dispatched in forward and backward, in both modes) and in the source.
"""
from __future__ import annotations

import inspect
import re

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import course_lib.functional
import course_lib.norms as cn

FORBIDDEN_OPS = re.compile(r"(batch_norm|layer_norm|group_norm|instance_norm|rms_norm|_norm_backward|"
                           r"native_norm|var_mean|std_mean)")


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


LAYERS = [
    (cn.BatchNorm2d(3), (4, 3, 5, 5)), (cn.BatchNorm1d(3, momentum=None), (4, 3)),
    (cn.InstanceNorm2d(3, affine=True, track_running_stats=True), (4, 3, 5, 5)),
    (cn.GroupNorm(3, 6), (4, 6, 5)), (cn.LayerNorm([5, 5]), (4, 3, 5, 5)), (cn.RMSNorm(5), (4, 3, 5)),
    (cn.RunningBatchNorm(3), (4, 3, 5, 5)),
]


@pytest.mark.parametrize("layer,shape", LAYERS, ids=[type(layer).__name__ for layer, _ in LAYERS])
def test_no_normalization_kernel_is_dispatched(layer, shape):
    x = torch.randn(shape, requires_grad=True)
    with RecordOps() as recorder:
        for training in (True, False):
            layer.train(training)
            layer(x).sum().backward()
    assert recorder.ops, "the recorder saw no operator at all"
    used = sorted(op for op in recorder.ops if FORBIDDEN_OPS.search(op))
    assert not used, f"{type(layer).__name__} dispatched PyTorch normalization kernels: {used}"


def test_recorder_does_catch_pytorch_norms():
    """The check above can fail: torch.nn.BatchNorm2d is caught."""
    with RecordOps() as recorder:
        torch.nn.BatchNorm2d(3)(torch.randn(4, 3, 2, 2))
    assert any(FORBIDDEN_OPS.search(op) for op in recorder.ops)


@pytest.mark.parametrize("module", [cn, course_lib.functional])
def test_source_calls_no_normalization_function(module):
    source = inspect.getsource(module)
    code = "\n".join(line.split("#")[0] for line in source.splitlines() if not line.lstrip().startswith(("``", "*")))
    calls = re.findall(r"\b(?:F|torch|nn\.functional|torch\.nn\.functional)\.(\w*norm\w*)\s*\(", code)
    assert not [c for c in calls if c != "vector_norm"], calls
    modules = re.findall(r"\bnn\.(BatchNorm\w*|LayerNorm|GroupNorm|InstanceNorm\w*|RMSNorm)\s*\(", code)
    assert not modules, modules
