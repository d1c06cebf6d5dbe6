r"""Grading. Checks for the exercise test cells (``solutions/``, ``exercises/``): the student's code against
PyTorch.

Every check returns ``None`` when the code is right and raises ``AssertionError`` with a message that says what
was expected, what came, and -- when the wrong value matches a classic mistake -- which mistake it is::

    BatchNorm2d(2) on a batch of two 1x1 maps (training step 1): running_var: max abs difference 0.4 at index
    (1,): expected 1.7, got 1.3 (tolerance atol=1e-05, rtol=0.0001). Yours matches the moving average of the
    *biased* batch variance: running_var tracks the unbiased variance var * n/(n-1) (n = 2 values per
    channel), while normalizing uses the biased one.

The checks print nothing and silence nothing: a test cell is ``grading.check_...(...)`` calls and ``assert``
statements, never a bare expression (nbgrader would take a displayed value as the cell's score).

* :func:`check_tensor`, :func:`check_number`, :func:`check_answer`, :func:`check_raises` -- one value against
  the expected one; :func:`check_is_number`, :func:`check_option` -- an answer is well-formed (visible tests);
* :func:`check_layer` -- a layer against its PyTorch / ``course_lib.norms`` twin over several training steps
  and in eval mode: outputs, input and parameter gradients, running buffers;
* :func:`check_own_layer`, :func:`check_own_function` -- the gate that opens each test cell of an
  implementation exercise: the answer is not, does not subclass, hold, wrap or call torch's or course_lib's
  implementation (class MRO and submodules; library functions seen by ``sys.setprofile``; PyTorch
  normalization kernels seen by a ``TorchDispatchMode``; library backward nodes in the output's autograd
  graph), else the cell fails with what was found; :func:`check_from_scratch` -- the runtime part alone;
* :func:`check_buffers_detached` -- no autograd graph was stored in a buffer;
* :func:`normalization_mistakes` -- the outputs of the classic wrong normalizations, for messages.

The package holds, besides these checks (what the exercise notebooks import as ``from course_lib import grading``):

* :mod:`~course_lib.grading.checks` (one value), :mod:`~course_lib.grading.layers` (a layer against its twin),
  :mod:`~course_lib.grading.from_scratch` (the gate) -- what runs in the student's kernel;
* :mod:`~course_lib.grading.guard` -- runs in the graded kernel before each test cell (defence in depth);
* for instructors only (not shipped to students): :mod:`~course_lib.grading.autograde` (``make grade``: a class
  into a CSV, the worker pool), :mod:`~course_lib.grading.submissions` (the submitted layout),
  :mod:`~course_lib.grading.job` (one submission in a worker), :mod:`~course_lib.grading.steps` (one notebook's
  way through nbgrader), :mod:`~course_lib.grading.sandbox` (bubblewrap around each graded kernel),
  :mod:`~course_lib.grading.gradebook` (the course gradebook, totals), :mod:`~course_lib.grading.dask_pool`,
  :mod:`~course_lib.grading.lms` (LMS downloads), :mod:`~course_lib.grading.release` (``make release``),
  :mod:`~course_lib.grading.student_dist` (``make student-dist``).
"""
from course_lib.grading.checks import *  # noqa: F401,F403
from course_lib.grading.checks import __all__ as _checks
from course_lib.grading.from_scratch import *  # noqa: F401,F403
from course_lib.grading.from_scratch import __all__ as _from_scratch
from course_lib.grading.layers import *  # noqa: F401,F403
from course_lib.grading.layers import __all__ as _layers

__all__ = [*_checks, *_layers, *_from_scratch]
