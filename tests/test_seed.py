"""The seed knob: COURSE_SEED shifts every experiment's seed, and the same setting repeats the same draws."""
import pytest
import torch

from course_lib import data, seed


def test_course_seed_follows_the_environment(monkeypatch):
    monkeypatch.delenv("COURSE_SEED", raising=False)
    assert seed.course_seed(7) == 7
    monkeypatch.setenv("COURSE_SEED", "3")
    assert (seed.base_seed(), seed.course_seed(), seed.course_seed(7)) == (3, 3, 10)
    monkeypatch.setenv("COURSE_SEED", "")
    assert seed.course_seed(1) == 1


def test_a_bad_course_seed_says_what_it_expected(monkeypatch):
    monkeypatch.setenv("COURSE_SEED", "three")
    with pytest.raises(ValueError, match="COURSE_SEED must be an integer, got 'three'"):
        seed.set_seed()


def test_set_seed_repeats_draws_and_another_base_seed_changes_them(monkeypatch):
    monkeypatch.setenv("COURSE_SEED", "0")
    assert seed.set_seed(1) == 1
    a = torch.randn(5)
    seed.set_seed(1)
    assert torch.equal(a, torch.randn(5))
    monkeypatch.setenv("COURSE_SEED", "1")
    assert seed.set_seed(1) == 2
    assert not torch.equal(a, torch.randn(5))
    assert torch.equal(torch.randn(3, generator=seed.seed_generator(1)),
                       torch.randn(3, generator=torch.Generator().manual_seed(2)))


def test_the_digits_split_follows_course_seed(monkeypatch):
    monkeypatch.setenv("COURSE_SEED", "0")
    a = data.get_digits()
    assert torch.equal(a.x_valid, data.get_digits(seed=42).x_valid)
    monkeypatch.setenv("COURSE_SEED", "1")
    b = data.get_digits()
    assert torch.equal(b.x_valid, data.get_digits(seed=43).x_valid)
    assert not torch.equal(a.y_valid, b.y_valid)


def test_over_seeds_runs_one_experiment_per_offset_and_describe_spread_quotes_it():
    assert seed.over_seeds(lambda k: k * 10, n=3, first=2) == [20, 30, 40]
    with pytest.raises(ValueError, match="at least one seed"):
        seed.over_seeds(lambda k: k, n=0)
    assert seed.describe_spread([0.5, 0.25, 1.0], fmt=".2f") == "median 0.50 (range 0.25-1.00, 3 seeds)"


def test_plot_over_seeds_draws_a_dot_per_seed_a_median_bar_and_crosses_for_nan():
    from course_lib.plots import plot_over_seeds
    fig = plot_over_seeds({"a": [0.1, 0.3, 0.2], "b": [0.9, float("nan")]}, "t", "accuracy")
    ax = fig.axes[0]
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert [list(d.get_ydata()) for d in dots] == [[0.1, 0.3, 0.2], [0.9]]
    crosses = [line for line in ax.lines if line.get_marker() == "x"]
    assert len(crosses) == 1 and len(crosses[0].get_xdata()) == 1
    segments = [c.get_segments()[0] for c in ax.collections]
    medians = [s for s in segments if s[0][1] == s[1][1] and s[0][0] != s[1][0]]  # horizontal bars
    assert sorted(round(float(m[0][1]), 6) for m in medians) == [0.2, 0.9]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
