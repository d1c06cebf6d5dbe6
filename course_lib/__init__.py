"""course_lib: the library behind the normalization course (notebooks Q1-Q9).

One concept per module:

* ``norms`` -- the layers (BatchNorm1d/2d/3d, InstanceNorm1d/2d/3d, LayerNorm, GroupNorm, RMSNorm,
  RunningBatchNorm), drop-in replacements for ``torch.nn``'s; ``functional`` -- their shared core;
* ``stats`` -- streaming statistics (EMA, cumulative average, Welford/Chan, EMA noise);
* ``seed`` -- the one seed knob (``COURSE_SEED``) and distributions over seeds;
* ``data`` -- offline digits data set and loaders; ``models`` -- the CNN that takes any norm;
* ``training`` -- a small Learner, schedules, recalibration; ``callbacks`` -- metrics, recorder, progress,
  schedulers; ``hooks`` -- activation statistics;
* ``experiments`` -- the experiments behind Q1's and Q8's explorers, as pure functions;
* ``plots`` -- figures; ``widgets`` -- ipywidgets explorers; ``quiz`` -- self-check questions of the notebooks;
* ``grading`` -- a subpackage: the checks inside the exercises (``checks``, ``layers``) and the from-scratch gate
  (``from_scratch``), the in-kernel ``guard``; for instructors ``autograde`` (``make grade``), ``steps`` (one notebook
  through nbgrader), ``sandbox`` (bubblewrap around each graded kernel), ``release``, ``student_dist``.
"""
__version__ = "0.1.0"
