"""Self-check questions of lecture Q2 (what BatchNorm buys and what it costs, measured)."""
from course_lib.quiz import Choice, Number

QUESTIONS = {
    "Q2.1": Number(
        0.271,
        "The batch k steps back has weight m * (1 - m)^k; add k = 0..2 (a geometric sum: 1 - (1 - m)^3).",
        rel_tol=0.01,
    ),
    "Q2.2": Number(
        0.3536,
        "The typical (RMS) error is the standard deviation of (mu_B - mu) / sigma. A mean of n independent values "
        "of standard deviation sigma has standard deviation sigma / sqrt(n); on a 1x1 map, n is the batch size.",
        rel_tol=0.03,
    ),
    "Q2.3": Choice(
        "ab",
        ("nn.BatchNorm1d(16) on (1, 16)", "nn.BatchNorm2d(16) on (1, 16, 1, 1)", "nn.BatchNorm2d(16) on (1, 16, 8, 8)",
         "nn.BatchNorm2d(16) on (2, 16, 1, 1)", "nn.BatchNorm1d(16) on (1, 16, 10)"),
        "Count the values per channel: N times the spatial (or sequence) size. Training needs more than one.",
        {"a": "Right, but another one has a single value per channel too.",
         "b": "Right, but another one has a single value per channel too.",
         "abd": "Two values per channel are enough to compute a variance (the result is +-1, but no error).",
         "abe": "BatchNorm1d on (N, C, L) reduces over N and L: here 10 values per channel.",
         "abc": "On an 8x8 map one image gives 64 values per channel; it runs (and acts like InstanceNorm)."},
    ),
    "Q2.4": Number(
        81.0,
        "Each block multiplies the scale by a again; there are four blocks before the pooling.",
        rel_tol=0.02,
    ),
    "Q2.5": Choice(
        "b",
        ("the established reason why BatchNorm works", "the paper's motivation, not supported by later experiments",
         "removed completely by BatchNorm", "an RNN-only phenomenon"),
        "Separate the paper's motivation from what later experiments measured (Santurkar et al., 2018).",
        {"a": "That is the seed's reading; Santurkar et al. injected noise after BatchNorm and it still trained well.",
         "c": "BatchNorm fixes the mean and variance of each channel over a batch, not the whole distribution, and "
              "gamma and beta change during training."},
    ),
}
