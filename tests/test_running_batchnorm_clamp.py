"""course_lib's RunningBatchNorm equals fastai's (course-v3 07_batchnorm, cell 67) while the warm-up clamp is active.

fastai clamps a *temporary* variance (``vars.clamp_min_(0.01)`` while fewer than 20 samples were seen) and keeps its
raw sums of squares, so a channel whose variance is below 0.01 is normalized with its true variance as soon as the
warm-up ends. A layer that stores the clamped variance instead stays inflated for dozens of batches afterwards.
"""

import math

import torch

import course_lib.norms as cn

F64 = torch.float64


class FastaiRunningBatchNormTranscript:
    """fastai's algorithm, step by step (sums, sums of squares, count; dbias; clamp on a temporary), in float64."""

    def __init__(self, nf, mom=0.1, eps=1e-5):
        self.mom, self.eps = mom, eps
        self.sums = torch.zeros(1, nf, 1, 1, dtype=F64)
        self.sqrs = torch.zeros(1, nf, 1, 1, dtype=F64)
        self.count = torch.zeros((), dtype=F64)
        self.batch = 0
        self.step = 0
        self.dbias = 0.0

    def update_stats(self, x):
        bs, nc = x.shape[:2]
        mom1 = 1 - (1 - self.mom) / math.sqrt(bs - 1)
        self.sums = torch.lerp(self.sums, x.sum((0, 2, 3), keepdim=True), mom1)
        self.sqrs = torch.lerp(self.sqrs, (x * x).sum((0, 2, 3), keepdim=True), mom1)
        self.count = torch.lerp(self.count, torch.tensor(x.numel() / nc, dtype=F64), mom1)
        self.dbias = self.dbias * (1 - mom1) + mom1
        self.batch += bs
        self.step += 1

    def statistics(self):
        sums, sqrs, c = self.sums, self.sqrs, self.count
        if self.step < 100:
            sums, sqrs, c = sums / self.dbias, sqrs / self.dbias, c / self.dbias
        means = sums / c
        variances = sqrs / c - means * means
        if self.batch < 20:
            variances = variances.clamp_min(0.01)  # a temporary: sums and sqrs stay raw
        return means, variances

    def __call__(self, x, training=True):
        if training:
            self.update_stats(x)
        means, variances = self.statistics()
        return (x - means) / (variances + self.eps).sqrt()


def _small_variance_batches(steps, batch_size=2, generator_seed=0):
    """Channel 0 variance 1e-4, channel 1 4e-3 (both below the clamp 0.01), channel 2 variance 1 (never clamped)."""
    gen = torch.Generator().manual_seed(generator_seed)
    scale = torch.tensor([0.01, 0.063, 1.0], dtype=F64).view(1, 3, 1, 1)
    return [0.5 + scale * torch.randn(batch_size, 3, 2, 2, generator=gen, dtype=F64) for _ in range(steps)]


def test_clamp_is_active_in_this_setting():
    """Guard: the data below really exercises the clamp (variance < 0.01, fewer than 20 samples seen)."""
    fastai = FastaiRunningBatchNormTranscript(3)
    fastai.update_stats(_small_variance_batches(1)[0])
    fastai.batch = 100  # read the statistics as if past the warm-up: the unclamped variance
    _, raw = fastai.statistics()
    assert float(raw.flatten()[0]) < 0.01 and float(raw.flatten()[1]) < 0.01 and float(raw.flatten()[2]) > 0.01


def test_running_batchnorm_matches_fastai_through_and_after_the_warmup_clamp():
    batches = _small_variance_batches(40)  # batches of 2: the clamp is on for steps 1-9, off from step 10
    fastai = FastaiRunningBatchNormTranscript(3)
    course = cn.RunningBatchNorm(3, affine=False, dtype=F64)
    for step, x in enumerate(batches, start=1):
        expected, got = fastai(x), course(x)
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-8, msg=lambda m: f"training step {step}: {m}")
        # eval in between (on a copy of the state): the same statistics, the same clamp rule
        means, variances = fastai.statistics()
        course.eval()
        torch.testing.assert_close(course(x), (x - means) / (variances + fastai.eps).sqrt(), rtol=1e-8, atol=1e-8,
                                   msg=lambda m: f"eval after step {step}: {m}")
        course.train()
    assert int(course.num_samples_tracked) == 80


def test_stored_variance_is_never_clamped():
    """running_var is the merged variance itself; the clamp only touches what normalizes the current batch."""
    course = cn.RunningBatchNorm(3, affine=False, dtype=F64)
    fastai = FastaiRunningBatchNormTranscript(3)
    for x in _small_variance_batches(3):  # 6 samples: inside the warm-up
        course(x)
        fastai.update_stats(x)
    raw = (fastai.sqrs / fastai.count - (fastai.sums / fastai.count) ** 2).flatten()
    torch.testing.assert_close(course.running_var, raw, rtol=1e-8, atol=1e-12)
    assert float(course.running_var[0]) < 0.01


def test_first_step_after_warmup_uses_the_true_small_variance():
    """The step that takes the count to 20 samples normalizes channel 0 (variance 1e-4) with its own variance."""
    course = cn.RunningBatchNorm(3, affine=False, dtype=F64)
    outputs = [course(x) for x in _small_variance_batches(10)]  # 10 batches of 2: step 10 reaches 20 samples
    assert float(outputs[8][:, 0].abs().max()) < 1.0  # step 9 (18 samples): clamped to 0.01, outputs shrunk
    assert float(outputs[9][:, 0].std()) > 0.5  # step 10: normalized with ~1e-4, unit scale again
