r"""Normalization layers written from tensor operations, drop-in replacements for their ``torch.nn`` namesakes.

Every class is a thin statement of three things over the shared core :func:`course_lib.functional.normalize`:
which axes one statistic reduces (its method ``reduce_dims``), which state it carries, and the shape of its affine.

======================  =============================  ==========================  ======================
class                   ``reduce_dims``, input (N,C,*)  state (buffers)             taught in
======================  =============================  ==========================  ======================
``BatchNorm1d/2d/3d``   N and all spatial axes          running_mean/var, count     Q1-Q5
``InstanceNorm1d/2d/3d`` all spatial axes               optional running stats      Q7
``GroupNorm``           C/G and spatial, of the view    none                        Q8
                        ``(N, G, C/G, *)``
``LayerNorm``           the last len(shape) axes        none                        Q6
``RMSNorm``             the last len(shape) axes        none (no centring)          Q6
``RunningBatchNorm``    N and all spatial axes          smoothed count/mean/var     Q9
======================  =============================  ==========================  ======================

``layer.statistic_ids(shape)`` turns that description into a picture: an integer tensor of the input's shape in
which elements with the same id share one mean and variance (what Q6-Q9's plots draw).

Same constructor arguments, defaults, parameter and buffer names, dtypes, ``state_dict`` keys and error types
as PyTorch 2.13; the tests use PyTorch as the oracle. None of PyTorch's normalization functions is called.
"""
from course_lib.norms.base import reduce_dims_of
from course_lib.norms.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from course_lib.norms.instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from course_lib.norms.normalization import GroupNorm, LayerNorm, RMSNorm
from course_lib.norms.running_batchnorm import RunningBatchNorm

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d",
           "InstanceNorm3d", "LayerNorm", "RMSNorm", "RunningBatchNorm", "reduce_dims_of"]

# The public name of each layer is course_lib.norms.<Name> (reprs, error messages, pickles, the API reference);
# the files below only split the definitions the way torch/nn/modules does (batchnorm, instancenorm, normalization).
for _public in __all__:
    globals()[_public].__module__ = __name__
del _public
