r"""A small training loop with callbacks, schedules as plain functions, and BatchNorm recalibration.

:class:`Learner` runs ``fit(n_epochs)``: for every epoch a training pass (``model.train()``, gradients on) and
a validation pass (``model.eval()`` *and* ``torch.no_grad()`` -- two different switches, Q4). Everything else is
a callback (after fastai's miniai; :mod:`course_lib.callbacks`, re-exported here): :class:`Metrics` (loss and
accuracy of both passes), :class:`Recorder` (per-batch loss and hyper-parameters), :class:`ProgressBar`
(``tqdm.auto``; ``progress=False`` leaves it out), :class:`ParamScheduler` (schedules, Q5),
``course_lib.hooks.ActivationStats`` (Q3). A callback is an object with methods named after events, each called
as ``method(learn)`` with the Learner, in increasing ``order``:

=====================  ====================================================================================
event                  when
=====================  ====================================================================================
``before_fit``         optimizer created, before the first epoch
``before_epoch``       start of an epoch (``after_epoch``: ``learn.metrics`` holds the epoch's numbers)
``before_train``       model in train mode (``after_train``); ``before_validate``/``after_validate`` alike
``before_batch``       ``learn.xb``, ``learn.yb`` set (both passes; ``learn.training`` tells which)
``before_backward``    ``learn.preds``, ``learn.loss`` computed (training only)
``after_backward``     gradients in ``.grad``, before the optimizer step (training only)
``after_step``         parameters updated (training only); ``after_batch`` ends every batch
``cleanup_<stage>``    after ``after_<stage>`` -- and also when an error leaves the stage (fit, epoch, train,
                       validate, batch): where callbacks release what they hold (hooks, progress bars)
=====================  ====================================================================================

A callback cancels the rest of a batch, an epoch or the whole fit by raising :class:`CancelBatchException`,
:class:`CancelEpochException` or :class:`CancelFitException`; the matching ``after_*`` event still runs. One helper,
:meth:`Learner._stage`, implements these rules for every stage.

Schedules (``course_lib.schedules``, re-exported here) are functions of the training position ``p`` in [0, 1]
(fraction of all training batches done): ``sched_lin``, ``sched_cos``, ``sched_exp``, ``sched_no``, glued by
``combine_scheds``; :func:`one_cycle` builds fastai's one-cycle policy from them. :class:`ParamScheduler` writes a
schedule into an optimizer hyper-parameter before every training batch (Q5). :func:`recalibrate_batchnorm`
recomputes BatchNorm's running statistics as exact averages after training (teaching point 6, Q5).
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from .callbacks import (CancelBatchException, CancelEpochException, CancelFitException, Callback,  # noqa: F401
                        Metrics, ParamScheduler, ProgressBar, Recorder, _MetricSums, one_cycle)
from .seed import set_seed  # noqa: F401 (re-exported: notebooks import it from here)
from .schedules import Schedule, combine_scheds, sched_cos, sched_exp, sched_lin, sched_no  # noqa: F401 (re-exported)

_CANCEL = {"fit": CancelFitException, "epoch": CancelEpochException, "batch": CancelBatchException}

__all__ = ["CancelFitException", "CancelEpochException", "CancelBatchException", "Callback", "Learner", "Metrics",
           "Recorder", "ProgressBar", "ParamScheduler", "evaluate", "sched_lin", "sched_cos", "sched_exp", "sched_no",
           "combine_scheds", "one_cycle", "recalibrate_batchnorm", "set_seed"]


class Learner:
    """Trains ``model`` on ``data.train`` and validates on ``data.valid`` (any object with those two loaders).

    ``opt_func(params, lr=lr)`` builds a fresh optimizer at every :meth:`fit`, e.g.
    ``functools.partial(torch.optim.SGD, momentum=0.9)``. :class:`Metrics`, :class:`Recorder` (``learn.recorder``)
    and, with ``progress=True``, :class:`ProgressBar` are added unless ``cbs`` holds one of their kind. During a
    fit: ``epoch``, ``training``, ``dl`` (the pass's loader), ``iter`` (batch index in the pass), ``train_iter`` and
    ``n_train_iters`` (training batches done / in total), ``xb``, ``yb``, ``preds``, ``loss``, ``metrics``.
    """

    def __init__(self, model: nn.Module, data, loss_func: Callable = nn.functional.cross_entropy,
                 opt_func: Callable = torch.optim.SGD, lr: float = 0.1, cbs: Sequence[Callback] = (),
                 progress: bool = True) -> None:
        self.model, self.data, self.loss_func, self.opt_func, self.lr = model, data, loss_func, opt_func, lr
        self.cbs, self.opt, self.metrics = [], None, {}
        defaults = [Metrics(), Recorder()] + ([ProgressBar()] if progress else [])
        self.add_cbs([*cbs, *(d for d in defaults if not any(isinstance(cb, type(d)) for cb in cbs))])
        self.recorder = next(cb for cb in self.cbs if isinstance(cb, Recorder))

    def add_cbs(self, cbs: Iterable[Callback]) -> None:
        self.cbs = sorted([*self.cbs, *cbs], key=lambda cb: cb.order)  # stable: equal orders keep their order

    def callback(self, event: str) -> None:
        """Call ``cb.<event>(self)`` on every callback that defines it, in ``order``."""
        for cb in self.cbs:
            method = getattr(cb, event, None)
            if method is not None:
                method(self)

    def _stage(self, name: str, body: Callable[[], None]) -> None:
        """``before_<name>``, ``body()``, ``after_<name>``, then ``cleanup_<name>``: the rules of every stage.

        ``Cancel<Name>Exception`` (fit, epoch, batch), raised by a callback or by the body, ends the stage and
        ``after_<name>`` still runs; ``cleanup_<name>`` runs in any case, also when an error leaves the stage.
        A function, not a ``with`` block, so that a ``before_*`` that cancels skips the body.
        """
        try:
            try:
                self.callback(f"before_{name}")
                body()
            except _CANCEL.get(name, ()):
                pass
            self.callback(f"after_{name}")
        finally:
            self.callback(f"cleanup_{name}")

    def fit(self, n_epochs: int, lr: float | None = None, cbs: Sequence[Callback] = ()) -> dict[str, float]:
        """Train for ``n_epochs``; ``cbs`` are used for this fit only. Returns the last epoch's metrics."""
        if n_epochs < 1:
            raise ValueError(f"expected n_epochs >= 1, got {n_epochs}")
        if len(self.data.train) == 0:
            raise ValueError("expected at least one training batch, got an empty data.train (drop_last with "
                             "batch_size larger than the training set?)")
        kept = self.cbs
        self.add_cbs(cbs)
        self.n_epochs, self.lr = n_epochs, self.lr if lr is None else lr
        self.opt = self.opt_func(self.model.parameters(), lr=self.lr)
        self.metrics = {}
        self.n_train_iters, self.train_iter = n_epochs * len(self.data.train), 0
        try:
            self._stage("fit", self._all_epochs)
        finally:
            self.cbs = kept
        return self.metrics

    def _all_epochs(self) -> None:
        for self.epoch in range(self.n_epochs):
            self._stage("epoch", self._one_epoch)

    def _one_epoch(self) -> None:
        """A training pass (train mode, gradients), then a validation pass (eval mode, no gradients)."""
        for self.training, name in ((True, "train"), (False, "validate")):
            self.model.train(self.training)
            self.dl = self.data.train if self.training else self.data.valid
            with torch.set_grad_enabled(self.training):
                self._stage(name, self._one_pass)

    def _one_pass(self) -> None:
        for self.iter, (self.xb, self.yb) in enumerate(self.dl):
            self.preds = self.loss = None
            self._stage("batch", self._one_batch)
            self.train_iter += self.training

    def _one_batch(self) -> None:
        self.preds = self.model(self.xb)
        self.loss = self.loss_func(self.preds, self.yb)
        if self.training:
            self.callback("before_backward")
            self.loss.backward()
            self.callback("after_backward")
            self.opt.step()
            self.callback("after_step")
            self.opt.zero_grad()


@torch.no_grad()
def evaluate(model: nn.Module, dl: Iterable, loss_func: Callable = nn.functional.cross_entropy) -> dict[str, float]:
    """Loss and accuracy of ``model`` over ``dl`` in eval mode under ``no_grad``; restores the model's mode."""
    was_training = model.training
    model.eval()
    sums = _MetricSums()
    try:
        for xb, yb in dl:
            preds = model(xb)
            sums.add(preds, yb, loss_func(preds, yb))
    finally:
        model.train(was_training)
    return sums.result()




def _has_recalibratable_stats(module: nn.Module) -> bool:
    """BatchNorm-like (torch.nn or course_lib.norms): tracked running_mean, momentum, reset_running_stats.

    InstanceNorm is excluded (its ``momentum=None`` freezes the buffers instead of averaging, as in PyTorch),
    and so is RunningBatchNorm (no ``track_running_stats``; it normalizes with its running stats anyway).
    """
    return (isinstance(getattr(module, "running_mean", None), Tensor) and hasattr(module, "momentum")
            and callable(getattr(module, "reset_running_stats", None))
            and getattr(module, "track_running_stats", False) and "InstanceNorm" not in type(module).__name__)


def recalibrate_batchnorm(model: nn.Module, batches: Iterable) -> int:
    """Replace every BatchNorm's running statistics by exact averages over ``batches``; returns the layer count.

    For each BatchNorm layer: ``reset_running_stats()``, ``momentum=None`` (cumulative average over the
    batches instead of an EMA that lags behind the weights); forward passes with the BatchNorm layers in
    train mode under ``no_grad`` (other layers such as dropout in eval mode, as at inference); then momentum
    and every module's mode are restored. ``batches`` yields inputs or ``(input, target)`` pairs. The running
    variance is the mean of the per-batch unbiased variances (what PyTorch's ``update_bn`` computes too).
    """
    layers = [m for m in model.modules() if _has_recalibratable_stats(m)]
    if not layers:
        raise ValueError(f"expected BatchNorm layers with running statistics in the model, got none in "
                         f"{type(model).__name__}")
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in layers]
    try:
        model.eval()
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
            layer.train()
        with torch.no_grad():
            for batch in batches:
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    return len(layers)
