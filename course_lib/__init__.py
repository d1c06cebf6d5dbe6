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
* ``grading`` (checks inside the exercises, the from-scratch gate), ``grading_guard``, ``autograde``,
  ``autograde_steps``, ``sandbox`` (bubblewrap around each graded kernel), ``release``, ``student_dist`` -- exercises,
  nbgrader and what students receive.
"""
__version__ = "0.1.0"
