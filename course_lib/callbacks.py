r"""The callbacks of :class:`course_lib.training.Learner`: the events' base class and the standard callbacks.

A callback is an object whose methods are named after events (``before_fit``, ``after_batch``, ``cleanup_fit``...;
the table is in :mod:`course_lib.training`); the Learner calls each one as ``method(learn)``, passing itself, in
increasing ``order``. The Learner adds the first three below by itself:

* :class:`Metrics` -- sample-weighted loss and accuracy of every pass into ``learn.metrics``;
* :class:`Recorder` -- each training batch's loss and hyper-parameters, each epoch's metrics (Q2, Q5);
* :class:`ProgressBar` -- ``tqdm.auto`` bars and a line of metrics per epoch (``Learner(progress=False)``: none);
* :class:`ParamScheduler` -- a schedule written into an optimizer hyper-parameter before every training batch, and
  :func:`one_cycle`, fastai's one-cycle policy built from two of them (Q5).

``course_lib.hooks.ActivationStats`` is a callback too (Q3). Raising :class:`CancelBatchException`,
:class:`CancelEpochException` or :class:`CancelFitException` in an event ends that stage early.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from torch import Tensor
from tqdm.auto import tqdm

from .schedules import Schedule, combine_scheds, sched_cos

if TYPE_CHECKING:
    from .training import Learner

__all__ = ["CancelFitException", "CancelEpochException", "CancelBatchException", "Callback", "Metrics", "Recorder",
           "ProgressBar", "ParamScheduler", "one_cycle"]


class CancelFitException(Exception):
    """Raise in a callback to stop training now (``after_fit`` still runs)."""


class CancelEpochException(Exception):
    """Raise in a callback to skip the rest of the current epoch (``after_epoch`` still runs)."""


class CancelBatchException(Exception):
    """Raise in a callback to skip the rest of the current batch, e.g. its optimizer step."""


class Callback:
    """Base class: define any event method ``event(self, learn)`` (see the module docstring); lower ``order`` first."""

    order = 0


class _MetricSums:
    """Sample-weighted sums of the loss and of correct predictions over one pass (no per-batch .item())."""

    def __init__(self) -> None:
        self.loss, self.correct, self.count, self.has_accuracy = 0.0, 0, 0, False

    def add(self, preds: Tensor, target: Tensor, loss: Tensor) -> None:
        n = len(target)
        self.loss = self.loss + loss.detach() * n
        if preds.dim() == 2 and target.dim() == 1 and not target.is_floating_point():  # class scores vs labels
            self.correct = self.correct + (preds.detach().argmax(1) == target).sum()
            self.has_accuracy = True
        self.count += n

    def result(self, prefix: str = "") -> dict[str, float]:
        if self.count == 0:
            return {}
        out = {f"{prefix}loss": float(self.loss) / self.count}
        if self.has_accuracy:
            out[f"{prefix}accuracy"] = float(self.correct) / self.count
        return out


class Metrics(Callback):
    """``learn.metrics`` per epoch: ``epoch``, then ``train_loss``/``train_accuracy`` (averaged over the training
    batches while the weights move) and ``valid_loss``/``valid_accuracy``. Sample-weighted means over each pass
    (accuracy: argmax of class scores ``(N, classes)`` vs labels ``(N,)``), as :func:`course_lib.training.evaluate`."""

    order = -10  # before the callbacks that read learn.metrics

    def before_epoch(self, learn: Learner) -> None:
        learn.metrics = {"epoch": learn.epoch}

    def before_train(self, learn: Learner) -> None:
        self.sums = _MetricSums()

    before_validate = before_train

    def after_batch(self, learn: Learner) -> None:
        if learn.loss is not None:
            self.sums.add(learn.preds, learn.yb, learn.loss)

    def after_train(self, learn: Learner) -> None:
        learn.metrics.update(self.sums.result("train_"))

    def after_validate(self, learn: Learner) -> None:
        learn.metrics.update(self.sums.result("valid_"))


class ProgressBar(Callback):
    """``tqdm.auto`` bars over the epochs and over the batches of each pass; prints each epoch's metrics.

    The bars are advanced by hand and never wrap the data loaders: ``tqdm.auto`` calls ``iter()`` on what it wraps,
    and every DataLoader iterator draws from the global random generator -- the progress bar would change the
    batch order (and the results) of the training it reports on.
    """

    order = 90  # last: the epoch's metrics are complete

    def __init__(self) -> None:
        self.epochs = self.batches = None

    def before_fit(self, learn: Learner) -> None:
        self.epochs = tqdm(total=learn.n_epochs, desc="epoch")

    def before_train(self, learn: Learner) -> None:
        self.batches = tqdm(total=len(learn.dl), desc="train" if learn.training else "validate", leave=False)

    before_validate = before_train

    def after_batch(self, learn: Learner) -> None:
        self.batches.update()

    def cleanup_train(self, learn: Learner) -> None:
        if self.batches is not None:
            self.batches.close()

    cleanup_validate = cleanup_train

    def after_epoch(self, learn: Learner) -> None:
        self.epochs.update()
        self.epochs.write("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in learn.metrics.items()))

    def cleanup_fit(self, learn: Learner) -> None:
        if self.epochs is not None:
            self.epochs.close()


def _get_hyper(group: dict, name: str):
    if name == "momentum" and "momentum" not in group and "betas" in group:
        return group["betas"][0]  # Adam's momentum is beta1
    if name not in group:
        raise ValueError(f"expected an optimizer hyper-parameter ({', '.join(sorted(map(str, group)))}), "
                         f"got {name!r}")
    return group[name]


def _set_hyper(group: dict, name: str, value: float) -> None:
    if name == "momentum" and "momentum" not in group and "betas" in group:
        group["betas"] = (value, *group["betas"][1:])
    else:
        group[name] = value


class Recorder(Callback):
    """Records each training batch's loss and hyper-parameters (``params``) and each epoch's metrics.

    ``losses[k]``, ``hypers["lr"][k]`` per training batch (param group 0); ``epochs`` is a list of
    ``learn.metrics`` dicts. Reset at every fit. Plots: :meth:`plot_loss`, :meth:`plot_accuracy`,
    :meth:`plot_lr` (matplotlib Figures, drawn by :mod:`course_lib.plots`).
    """

    order = 50  # after schedulers and other callbacks have done their work

    def __init__(self, params: Sequence[str] = ("lr", "momentum")) -> None:
        self.params = tuple(params)
        self.losses, self.epochs, self.hypers = [], [], {p: [] for p in self.params}
        self.batches_per_epoch = 0

    def before_fit(self, learn: Learner) -> None:
        self.losses, self.epochs, self.hypers = [], [], {p: [] for p in self.params}
        self.batches_per_epoch = len(learn.data.train)

    def after_batch(self, learn: Learner) -> None:
        if not learn.training or learn.loss is None:
            return
        self.losses.append(float(learn.loss.detach()))
        group = learn.opt.param_groups[0]
        for p in self.params:
            if p in group or p == "momentum" and "betas" in group:
                self.hypers[p].append(float(_get_hyper(group, p)))

    def after_epoch(self, learn: Learner) -> None:
        self.epochs.append(dict(learn.metrics))

    def plot_loss(self):
        from .plots import plot_recorder_loss
        return plot_recorder_loss(self)

    def plot_accuracy(self):
        from .plots import plot_recorder_accuracy
        return plot_recorder_accuracy(self)

    def plot_lr(self, param: str = "lr"):
        from .plots import plot_recorder_param
        return plot_recorder_param(self, param)


class ParamScheduler(Callback):
    """Before every training batch, sets ``param_name`` (``"lr"``, ``"momentum"``, ``"weight_decay"``...) of every
    param group to ``sched(p)``, ``p = train_iter / n_train_iters``. ``"momentum"`` means ``betas[0]`` for Adam."""

    order = 10

    def __init__(self, param_name: str, sched: Schedule) -> None:
        self.param_name, self.sched = param_name, sched

    def before_fit(self, learn: Learner) -> None:
        for group in learn.opt.param_groups:
            _get_hyper(group, self.param_name)  # fail early, with the list of valid names

    def before_batch(self, learn: Learner) -> None:
        if learn.training:
            value = self.sched(learn.train_iter / learn.n_train_iters)
            for group in learn.opt.param_groups:
                _set_hyper(group, self.param_name, value)


def one_cycle(lr_max: float, pct_start: float = 0.3, div_start: float = 25.0, div_final: float = 1e4,
              moms: tuple[float, float, float] | None = (0.95, 0.85, 0.95)) -> list[ParamScheduler]:
    """One-cycle policy: lr rises (cosine) from ``lr_max / div_start`` to ``lr_max`` during ``pct_start`` of
    training, then falls to ``lr_max / div_final``; momentum goes the opposite way ``moms[0] -> moms[1] ->
    moms[2]`` (``None``: leave it). Returns the ParamSchedulers to pass as ``cbs``."""
    pcts = [pct_start, 1 - pct_start]
    lr = combine_scheds(pcts, [sched_cos(lr_max / div_start, lr_max), sched_cos(lr_max, lr_max / div_final)])
    cbs = [ParamScheduler("lr", lr)]
    if moms is not None:
        cbs.append(ParamScheduler("momentum", combine_scheds(pcts, [sched_cos(moms[0], moms[1]),
                                                                    sched_cos(moms[1], moms[2])])))
    return cbs
