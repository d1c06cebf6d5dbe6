r"""A small training loop with callbacks, schedules as plain functions, and BatchNorm recalibration.

:class:`Learner` runs ``fit(n_epochs)``: for every epoch a training pass (``model.train()``, gradients on) and
a validation pass (``model.eval()`` *and* ``torch.no_grad()`` -- two different switches, Q4), with progress
bars from ``tqdm.auto`` (``progress=False`` turns them off) and loss/accuracy for both passes. Callbacks
are objects with methods named after events; the Learner calls them in ``order``:

=====================  ====================================================================================
event                  when
=====================  ====================================================================================
``before_fit``         optimizer created, before the first epoch; ``after_fit`` always runs, even on errors
``before_epoch``       start of an epoch (``after_epoch``: ``learner.metrics`` holds the epoch's numbers)
``before_train``       model in train mode (``after_train``); ``before_validate``/``after_validate`` alike
``before_batch``       ``learner.xb``, ``learner.yb`` set (both passes; ``learner.training`` tells which)
``before_backward``    ``learner.preds``, ``learner.loss`` computed (training only)
``after_backward``     gradients in ``.grad``, before the optimizer step (training only)
``after_step``         parameters updated (training only); ``after_batch`` ends every batch
=====================  ====================================================================================

A callback cancels the rest of a batch, an epoch or the whole fit by raising :class:`CancelBatchException`,
:class:`CancelEpochException` or :class:`CancelFitException`; the matching ``after_*`` event still runs.

Schedules (``course_lib.schedules``, re-exported here) are functions of the training position ``p`` in [0, 1]
(fraction of all training batches done): ``sched_lin``, ``sched_cos``, ``sched_exp``, ``sched_no``, glued by
``combine_scheds``; :func:`one_cycle` builds fastai's one-cycle policy from them. :class:`ParamScheduler` writes a
schedule into an optimizer
hyper-parameter before every training batch (Q5). :func:`recalibrate_batchnorm` recomputes BatchNorm's running
statistics as exact averages after training (teaching point 6, Q5).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .seed import set_seed  # noqa: F401 (re-exported: notebooks import it from here)
from .schedules import Schedule, combine_scheds, sched_cos, sched_exp, sched_lin, sched_no  # noqa: F401 (re-exported)

__all__ = ["CancelFitException", "CancelEpochException", "CancelBatchException", "Callback", "Learner",
           "Recorder", "ParamScheduler", "evaluate", "sched_lin", "sched_cos", "sched_exp", "sched_no",
           "combine_scheds", "one_cycle", "recalibrate_batchnorm", "set_seed"]



class CancelFitException(Exception):
    """Raise in a callback to stop training now (``after_fit`` still runs)."""


class CancelEpochException(Exception):
    """Raise in a callback to skip the rest of the current epoch (``after_epoch`` still runs)."""


class CancelBatchException(Exception):
    """Raise in a callback to skip the rest of the current batch, e.g. its optimizer step."""


class Callback:
    """Base class: override any event method (see the module docstring); ``self.learner`` is set by the Learner."""

    order = 0
    learner: "Learner"


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


class Learner:
    """Trains ``model`` on ``data.train`` and validates on ``data.valid`` (any object with those two loaders).

    ``opt_func(params, lr=lr)`` builds a fresh optimizer at every :meth:`fit`, e.g.
    ``functools.partial(torch.optim.SGD, momentum=0.9)``. A :class:`Recorder` is added unless ``cbs`` has one
    (``learner.recorder``). During a fit: ``epoch``, ``training``, ``iter`` (batch index in the pass),
    ``train_iter`` and ``n_train_iters`` (training batches done / in total), ``xb``, ``yb``, ``preds``, ``loss``.
    """

    def __init__(self, model: nn.Module, data, loss_func: Callable = nn.functional.cross_entropy,
                 opt_func: Callable = torch.optim.SGD, lr: float = 0.1, cbs: Sequence[Callback] = (),
                 progress: bool = True) -> None:
        self.model, self.data, self.loss_func, self.opt_func, self.lr = model, data, loss_func, opt_func, lr
        self.progress, self.cbs, self.opt, self.metrics = progress, [], None, {}
        self.add_cbs(cbs)
        if not any(isinstance(cb, Recorder) for cb in self.cbs):
            self.add_cbs([Recorder()])
        self.recorder = next(cb for cb in self.cbs if isinstance(cb, Recorder))

    def add_cbs(self, cbs: Iterable[Callback]) -> None:
        for cb in cbs:
            cb.learner = self
            self.cbs.append(cb)

    def __call__(self, event: str) -> None:
        for cb in sorted(self.cbs, key=lambda c: c.order):
            method = getattr(cb, event, None)
            if method is not None:
                method()

    def fit(self, n_epochs: int, lr: float | None = None, cbs: Sequence[Callback] = ()) -> dict[str, float]:
        """Train for ``n_epochs``; ``cbs`` are used for this fit only. Returns the last epoch's metrics."""
        if n_epochs < 1:
            raise ValueError(f"expected n_epochs >= 1, got {n_epochs}")
        if len(self.data.train) == 0:
            raise ValueError("expected at least one training batch, got an empty data.train (drop_last with "
                             "batch_size larger than the training set?)")
        self.add_cbs(cbs)
        self.n_epochs, self.lr = n_epochs, self.lr if lr is None else lr
        self.opt = self.opt_func(self.model.parameters(), lr=self.lr)
        self.n_train_iters, self.train_iter, self.metrics = n_epochs * len(self.data.train), 0, {}
        epochs = tqdm(range(n_epochs), desc="epoch", disable=not self.progress)
        try:
            self("before_fit")
            for self.epoch in epochs:
                self.metrics = {"epoch": self.epoch}
                try:
                    self("before_epoch")
                    self._one_pass(training=True)
                    self._one_pass(training=False)
                except CancelEpochException:
                    pass
                self("after_epoch")
                if self.progress:
                    epochs.write("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in self.metrics.items()))
        except CancelFitException:
            pass
        finally:
            epochs.close()
            try:
                self("after_fit")
            finally:
                self.cbs = [cb for cb in self.cbs if cb not in cbs]
        return self.metrics

    def _one_pass(self, training: bool) -> None:
        """One pass over the training (train mode, gradients) or validation data (eval mode, no_grad)."""
        self.training = training
        self.model.train(training)
        name = "train" if training else "validate"
        dl = self.data.train if training else self.data.valid
        sums = _MetricSums()
        self(f"before_{name}")
        with contextlib.nullcontext() if training else torch.no_grad(), \
                tqdm(dl, desc=name, leave=False, disable=not self.progress) as bar:
            for self.iter, (self.xb, self.yb) in enumerate(bar):
                self.preds = self.loss = None
                try:
                    self("before_batch")
                    self.preds = self.model(self.xb)
                    self.loss = self.loss_func(self.preds, self.yb)
                    sums.add(self.preds, self.yb, self.loss)
                    if training:
                        self._step()
                except CancelBatchException:
                    pass
                self("after_batch")
                self.train_iter += training
        self.metrics.update(sums.result("train_" if training else "valid_"))
        self(f"after_{name}")

    def _step(self) -> None:
        self("before_backward")
        self.loss.backward()
        self("after_backward")
        self.opt.step()
        self("after_step")
        self.opt.zero_grad()


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
    ``learner.metrics`` dicts. Reset at every fit. Plots: :meth:`plot_loss`, :meth:`plot_accuracy`,
    :meth:`plot_lr` (matplotlib Figures, drawn by :mod:`course_lib.plots`).
    """

    order = 50  # after schedulers and other callbacks have done their work

    def __init__(self, params: Sequence[str] = ("lr", "momentum")) -> None:
        self.params = tuple(params)
        self.before_fit()

    def before_fit(self) -> None:
        self.losses: list[float] = []
        self.hypers: dict[str, list[float]] = {p: [] for p in self.params}
        self.epochs: list[dict] = []
        self.batches_per_epoch = len(self.learner.data.train) if hasattr(self, "learner") else 0

    def after_batch(self) -> None:
        if not self.learner.training or self.learner.loss is None:
            return
        self.losses.append(float(self.learner.loss.detach()))
        group = self.learner.opt.param_groups[0]
        for p in self.params:
            if p in group or p == "momentum" and "betas" in group:
                self.hypers[p].append(float(_get_hyper(group, p)))

    def after_epoch(self) -> None:
        self.epochs.append(dict(self.learner.metrics))

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

    def before_fit(self) -> None:
        for group in self.learner.opt.param_groups:
            _get_hyper(group, self.param_name)  # fail early, with the list of valid names

    def before_batch(self) -> None:
        if self.learner.training:
            value = self.sched(self.learner.train_iter / self.learner.n_train_iters)
            for group in self.learner.opt.param_groups:
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
