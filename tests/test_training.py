"""course_lib.training: schedules, callbacks and their events, train/eval discipline, recalibration, determinism."""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import course_lib.norms as cn
from course_lib.data import DataLoaders, digits_dataloaders
from course_lib.models import get_cnn_model
from course_lib.training import (CancelBatchException, CancelEpochException, CancelFitException, Callback,
                                 Learner, ParamScheduler, Recorder, combine_scheds, evaluate, one_cycle,
                                 recalibrate_batchnorm, sched_cos, sched_exp, sched_lin, sched_no, set_seed)


def tiny_data(n_train=24, n_valid=10, batch_size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n_train + n_valid, 4, generator=g), torch.randint(0, 3, (n_train + n_valid,), generator=g)
    return DataLoaders(DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=batch_size, shuffle=True),
                       DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=batch_size))


def tiny_model():
    return nn.Sequential(nn.Linear(4, 8), cn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


# ----------------------------------------------------------------------------------------------------------
# Schedules

def test_basic_schedules_at_start_middle_end():
    assert [sched_lin(1, 3)(p) for p in (0, 0.5, 1)] == [1, 2, 3]
    assert [sched_cos(1, 3)(p) for p in (0, 0.5, 1)] == pytest.approx([1, 2, 3])
    assert sched_cos(1, 3)(0.25) < 1.5  # slow start: below the straight line
    assert [sched_exp(1, 100)(p) for p in (0, 0.5, 1)] == pytest.approx([1, 10, 100])
    assert {sched_no(0.3, 7)(p) for p in (0, 0.5, 1)} == {0.3}
    with pytest.raises(ValueError, match="expected positive start and end"):
        sched_exp(0, 1)


def test_combine_scheds_runs_each_schedule_on_its_share():
    sched = combine_scheds([0.25, 0.75], [sched_lin(0, 1), sched_lin(1, 0)])
    assert [sched(p) for p in (0, 0.125, 0.25, 0.625, 1)] == pytest.approx([0, 0.5, 1, 0.5, 0])
    skip_empty = combine_scheds([0, 1], [sched_no(5), sched_lin(0, 1)])
    assert skip_empty(0) == 0 and skip_empty(1) == 1
    with pytest.raises(ValueError, match="expected a training position p in \\[0, 1\\], got 1.5"):
        sched(1.5)


@pytest.mark.parametrize("pcts, scheds, message", [
    ([0.3, 0.6], [sched_no(1), sched_no(1)], r"summing to 1, got \[0.3, 0.6\] \(sum 0.9\)"),
    ([1.2, -0.2], [sched_no(1), sched_no(1)], "expected non-negative fractions"),
    ([1.0], [sched_no(1), sched_no(1)], r"expected one fraction per schedule \(2\), got 1"),
])
def test_combine_scheds_rejects_bad_fractions(pcts, scheds, message):
    with pytest.raises(ValueError, match=message):
        combine_scheds(pcts, scheds)


def test_one_cycle_warms_up_then_anneals_with_inverse_momentum():
    lr_cb, mom_cb = one_cycle(1.0, pct_start=0.3, div_start=25, div_final=1e4)
    lr, mom = lr_cb.sched, mom_cb.sched
    assert lr(0) == pytest.approx(1 / 25) and lr(0.3) == pytest.approx(1.0) and lr(1) == pytest.approx(1e-4)
    assert mom(0) == pytest.approx(0.95) and mom(0.3) == pytest.approx(0.85) and mom(1) == pytest.approx(0.95)
    ps = [i / 100 for i in range(101)]
    assert max(ps, key=lr) == pytest.approx(0.3) and min(ps, key=mom) == pytest.approx(0.3)
    assert len(one_cycle(1.0, moms=None)) == 1


def two_group_sgd(params, lr):
    params = list(params)
    return torch.optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=lr, momentum=0.5)


def test_param_scheduler_sets_every_group_before_every_training_batch():
    seen = []

    class Spy(Callback):
        order = 20  # after the scheduler (10)

        def before_batch(self, learn):
            if learn.training:
                seen.append([g["lr"] for g in learn.opt.param_groups])

    sched = sched_lin(0.0, 1.0)
    learn = Learner(tiny_model(), tiny_data(), opt_func=two_group_sgd, cbs=[ParamScheduler("lr", sched), Spy()],
                    progress=False)
    learn.fit(2)
    n = learn.n_train_iters
    assert n == 2 * 3 and len(seen) == n
    assert seen == [[sched(k / n)] * 2 for k in range(n)]
    assert learn.recorder.hypers["lr"] == pytest.approx([sched(k / n) for k in range(n)])


def test_param_scheduler_knows_adam_momentum_and_rejects_unknown_names():
    learn = Learner(tiny_model(), tiny_data(), opt_func=torch.optim.Adam, lr=1e-3,
                    cbs=[ParamScheduler("momentum", sched_lin(0.9, 0.8))], progress=False)
    learn.fit(1)
    assert learn.opt.param_groups[0]["betas"][0] == pytest.approx(sched_lin(0.9, 0.8)(2 / 3))
    with pytest.raises(ValueError, match="expected an optimizer hyper-parameter .*lr.*, got 'learning_rate'"):
        Learner(tiny_model(), tiny_data(), progress=False).fit(1, cbs=[ParamScheduler("learning_rate", sched_no(1))])


# ----------------------------------------------------------------------------------------------------------
# Learner: events, cancellation, modes, metrics, progress

class EventLog(Callback):
    def __init__(self):
        self.events = []

    def __getattr__(self, name):  # every event method exists and logs itself
        if name.startswith(("before_", "after_", "cleanup_")):
            return lambda learn: self.events.append(name)
        raise AttributeError(name)



def test_events_come_in_order():
    log = EventLog()
    Learner(tiny_model(), tiny_data(n_train=16, n_valid=8), cbs=[log], progress=False).fit(1)
    batch = ["before_batch", "before_backward", "after_backward", "after_step", "after_batch", "cleanup_batch"]
    assert log.events == (["before_fit", "before_epoch", "before_train"] + batch * 2
                          + ["after_train", "cleanup_train", "before_validate", "before_batch", "after_batch",
                             "cleanup_batch", "after_validate", "cleanup_validate", "after_epoch", "cleanup_epoch",
                             "after_fit", "cleanup_fit"])


def test_callbacks_get_the_learner_as_an_argument_and_keep_no_reference_to_it():
    seen = []

    class Spy(Callback):
        def before_fit(self, learn):
            seen.append(learn)

    spy = Spy()
    learn = Learner(tiny_model(), tiny_data(), cbs=[spy], progress=False)
    learn.fit(1)
    assert seen == [learn] and vars(spy) == {}


def test_cancel_batch_skips_the_update_but_not_after_batch():
    class SkipStep(Callback):
        def before_backward(self, learn):
            raise CancelBatchException

    model, log = tiny_model(), EventLog()
    weights = [p.detach().clone() for p in model.parameters()]
    Learner(model, tiny_data(), cbs=[SkipStep(), log], progress=False).fit(1)
    assert all(torch.equal(w, p) for w, p in zip(weights, model.parameters()))
    assert log.events.count("after_batch") == 3 + 2 and "after_step" not in log.events


def test_cancel_epoch_and_cancel_fit():
    class StopAfterFirstTrainBatch(Callback):
        def after_step(self, learn):
            raise self.exception

    # the matching after_* event runs: after_epoch for a cancelled epoch, only after_fit for a cancelled fit
    for exception, epochs_run, after_epochs in ((CancelEpochException, 3, 3), (CancelFitException, 1, 0)):
        log = EventLog()
        cb = StopAfterFirstTrainBatch()
        cb.exception = exception
        Learner(tiny_model(), tiny_data(), cbs=[cb, log], progress=False).fit(3)
        assert log.events.count("before_epoch") == epochs_run and log.events.count("before_backward") == epochs_run
        assert log.events.count("after_epoch") == after_epochs and "before_validate" not in log.events
        assert log.events[-2:] == ["after_fit", "cleanup_fit"]
        assert log.events.count("cleanup_epoch") == epochs_run  # a cancelled stage is cleaned up too


def test_a_cancel_raised_in_before_batch_skips_the_batch():
    class SkipOddBatches(Callback):
        def before_batch(self, learn):
            if learn.training and learn.iter % 2 == 1:
                raise CancelBatchException

    log = EventLog()
    Learner(tiny_model(), tiny_data(), cbs=[SkipOddBatches(), log], progress=False).fit(1)
    assert log.events.count("before_backward") == 2 and log.events.count("after_batch") == 3 + 2


def test_cleanup_runs_even_when_training_fails_and_after_does_not():
    class Boom(Callback):
        def after_backward(self, learn):
            raise RuntimeError("boom")

    log = EventLog()
    learn = Learner(tiny_model(), tiny_data(), progress=False)
    with pytest.raises(RuntimeError, match="boom"):
        learn.fit(1, cbs=[Boom(), log])
    assert log.events[-4:] == ["cleanup_batch", "cleanup_train", "cleanup_epoch", "cleanup_fit"]
    assert not any(e.startswith("after_") and e != "after_backward" for e in log.events)
    assert all(not isinstance(cb, (Boom, EventLog)) for cb in learn.cbs)  # fit-only callbacks are gone


def test_train_mode_with_grad_then_eval_mode_without_grad():
    modes = []

    class Check(Callback):
        def before_batch(self, learn):
            modes.append((learn.training, learn.model.training, torch.is_grad_enabled()))

    learn = Learner(tiny_model(), tiny_data(), cbs=[Check()], progress=False)
    learn.fit(1)
    assert set(modes) == {(True, True, True), (False, False, False)}


def test_metrics_are_sample_weighted_and_match_evaluate():
    data = tiny_data(n_valid=10, batch_size=8)  # valid batches of 8 and 2
    learn = Learner(tiny_model(), data, progress=False)
    metrics = learn.fit(2)
    again = evaluate(learn.model, data.valid)
    assert metrics["valid_loss"] == pytest.approx(again["loss"], rel=1e-6)
    assert metrics["valid_accuracy"] == pytest.approx(again["accuracy"])
    assert set(metrics) == {"epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy"}
    assert [e["epoch"] for e in learn.recorder.epochs] == [0, 1]
    assert len(learn.recorder.losses) == 2 * 3


def test_progress_bars_can_be_switched_off(capsys):
    Learner(tiny_model(), tiny_data(), progress=True).fit(1)
    shown = capsys.readouterr()
    assert "epoch" in shown.err and "valid_accuracy" in shown.out + shown.err
    Learner(tiny_model(), tiny_data(), progress=False).fit(1)
    assert capsys.readouterr() == ("", "")


def test_the_progress_bar_does_not_change_the_batch_order():
    """tqdm.auto calls iter() on what it wraps; a DataLoader iterator draws from the global generator."""
    losses = []
    for progress in (False, True):
        set_seed(3)
        learn = Learner(tiny_model(), tiny_data(), progress=progress)
        learn.fit(2)
        losses.append(learn.recorder.losses)
    assert losses[0] == losses[1]


def test_fit_argument_errors():
    learn = Learner(tiny_model(), tiny_data(), progress=False)
    with pytest.raises(ValueError, match="expected n_epochs >= 1, got 0"):
        learn.fit(0)
    empty = DataLoaders(DataLoader(TensorDataset(torch.zeros(3, 4), torch.zeros(3).long()), batch_size=8,
                                   drop_last=True), tiny_data().valid)
    with pytest.raises(ValueError, match="expected at least one training batch"):
        Learner(tiny_model(), empty, progress=False).fit(1)


# ----------------------------------------------------------------------------------------------------------
# BatchNorm recalibration (teaching point 6)

@pytest.mark.parametrize("bn_class", [nn.BatchNorm1d, cn.BatchNorm1d])
def test_recalibration_gives_the_average_of_the_batch_statistics(bn_class):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), bn_class(3, momentum=0.3)).eval()
    batches = [torch.randn(16, 4) * 2 + 1 for _ in range(5)]
    assert recalibrate_batchnorm(model, [(b, None) for b in batches]) == 1
    bn = model[1]
    with torch.no_grad():
        feats = [model[0](b) for b in batches]
    torch.testing.assert_close(bn.running_mean, torch.stack([f.mean(0) for f in feats]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([f.var(0) for f in feats]).mean(0))
    assert bn.momentum == 0.3 and not model.training and not bn.training  # restored
    assert int(bn.num_batches_tracked) == 5


def test_recalibration_keeps_dropout_off_and_restores_train_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Dropout(0.5), cn.BatchNorm1d(3)).train()
    x = torch.randn(64, 3) + 5
    recalibrate_batchnorm(model, [x])
    torch.testing.assert_close(model[1].running_mean, x.mean(0))  # dropout would have halved/zeroed values
    assert model.training and model[0].training and model[1].training


def test_recalibration_needs_batchnorm():
    with pytest.raises(ValueError, match="expected BatchNorm layers with running statistics .* got none"):
        recalibrate_batchnorm(nn.Sequential(nn.Linear(2, 2), cn.InstanceNorm1d(2, track_running_stats=True),
                                            cn.RunningBatchNorm(2)), [torch.randn(4, 2, 3)])


# ----------------------------------------------------------------------------------------------------------
# Done criterion: the default digits CNN with BatchNorm, 2 epochs, >= 90 % and the same number twice

def train_digits_twice_the_same(seed):
    set_seed(seed)
    learn = Learner(get_cnn_model(norm=cn.BatchNorm2d), digits_dataloaders(batch_size=64), lr=0.1, progress=False)
    return learn.fit(2)["valid_accuracy"]


def test_digits_cnn_with_batchnorm_reaches_90_percent_in_two_epochs_deterministically():
    first, second = train_digits_twice_the_same(0), train_digits_twice_the_same(0)
    assert first >= 0.90
    assert first == second


def test_set_seed_controls_model_and_batch_order():
    set_seed(5)
    a, order_a = get_cnn_model(), next(iter(digits_dataloaders(32).train))[1]
    set_seed(5)
    b, order_b = get_cnn_model(), next(iter(digits_dataloaders(32).train))[1]
    assert torch.equal(order_a, order_b)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert math.isfinite(sum(p.sum().item() for p in a.parameters()))


def test_recorder_is_added_once():
    rec = Recorder()
    learn = Learner(tiny_model(), tiny_data(), cbs=[rec], progress=False)
    assert learn.recorder is rec and sum(isinstance(c, Recorder) for c in learn.cbs) == 1
    learn.fit(1, lr=0.05)
    assert rec.hypers["lr"] == [0.05] * 3 and rec.hypers["momentum"] == [0.0] * 3
    adam = Learner(tiny_model(), tiny_data(), opt_func=partial(torch.optim.Adam, betas=(0.8, 0.99)), progress=False)
    adam.fit(1, lr=1e-3)
    assert adam.recorder.hypers["momentum"] == [0.8] * 3  # beta1 is Adam's momentum
