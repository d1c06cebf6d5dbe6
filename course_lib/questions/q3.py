"""Self-check questions of lecture Q3 (BatchNorm from scratch, its gradient, seed 002's bugs, hooks)."""
from course_lib.quiz import Choice, Number

QUESTIONS = {
    "Q3.1": Number(
        64.0,
        "Count the elements of named_parameters(): gamma and beta, one per channel each. Buffers are not "
        "parameters.",
        rel_tol=0.0, abs_tol=0.5,
    ),
    "Q3.2": Number(
        0.0,
        "Put d_j = 1 into the three terms: what is d_i minus the mean of d? And what is the mean of x_hat over a "
        "channel?",
        rel_tol=0.0, abs_tol=1e-6,
    ),
    "Q3.3": Number(
        0.5,
        "With detached statistics only the first term remains: d_i / s, with s = sqrt(sigma_B^2 + eps).",
        rel_tol=0.01,
    ),
    "Q3.4": Choice(
        "b",
        ("x = x.flatten(2)", "self.train = train", "var = mean_sq - mean ** 2",
         "self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * mean"),
        "model.eval() calls the method train(False) on every submodule. Which line replaces that method?",
        {"c": "That line gives wrong variances for large offsets (bug 3), but it does not raise.",
         "d": "That line keeps an autograd graph in the buffer (bug 2), but it does not make eval() raise."},
    ),
    "Q3.5": Number(
        0.0009765625,
        "10^4 lies between 2^13 = 8192 and 2^14; the spacing there is 2^(13 - 23). Give the exact value, a "
        "power of 2 (0.001 is not one).",
        rel_tol=0.01,
    ),
    "Q3.6": Choice(
        "b",
        ("never", "at the end of fit, even on exceptions", "after every batch", "on garbage collection only"),
        "Look at the cleanup_fit event in course_lib.training: when does the Learner call it?",
        {"a": "As a context manager or a callback it cleans up by itself; remove() is for manual use.",
         "c": "Then it could not record the next batch.",
         "d": "Hook.__del__ is a safety net, not the mechanism to rely on."},
    ),
}
