"""Self-check questions of lecture Q4 (nn.BatchNorm2d in practice: modes, batches of one, freezing, bias)."""
from course_lib.quiz import Choice, Number

QUESTIONS = {
    "Q4.1": Choice(
        "c",
        ("train() + autograd on", "train() + no_grad()", "eval() + autograd on", "eval() + no_grad()"),
        "The mode (self.training) alone picks the statistics; autograd alone decides whether a graph is built.",
        {"a": "In training mode the layer normalizes with the batch's own statistics.",
         "b": "Training mode uses batch statistics, and no_grad builds no graph: neither half fits.",
         "d": "Running statistics, yes, but no_grad builds no graph."},
    ),
    "Q4.2": Number(
        38.0,
        "drop_last=True drops the last, incomplete batch: how many images are left after the full batches of 100?",
        rel_tol=0.0, abs_tol=1e-9,
    ),
    "Q4.3": Number(
        16.0,
        "n = N * H * W per channel; after the stride-2 convs the last feature map is 1x1 (feature_map_sizes()).",
        rel_tol=0.0, abs_tol=1e-9,
    ),
    "Q4.4": Choice(
        "ac",
        ("conv -> BN -> ReLU", "conv -> ReLU -> BN", "conv -> GroupNorm(C, C) -> ReLU",
         "conv -> ReLU -> conv -> BN (the first conv's bias)"),
        "A bias is redundant when the very next layer subtracts a mean over values that all carry the same bias: "
        "per channel, with nothing nonlinear in between.",
        {"a": "Partly: (a) is one of them; is another block also fine without its bias?",
         "ab": "In conv -> ReLU -> BN the bias moves the ReLU's threshold; BN's beta comes after the ReLU.",
         "c": ("Partly: (c) is one of them (GroupNorm(C, C) subtracts a per-sample, per-channel mean); "
               "is there another?")},
    ),
    "Q4.5": Choice(
        "b",
        ("not changed", "changed", "become NaN"),
        "What does model.train() do to every submodule, including the BatchNorm you switched to eval()?",
        {"a": "model.train() at the start of each epoch switches the BatchNorm layers back to training mode, "
              "and requires_grad_(False) does not touch the buffers.",
         "c": "Nothing here produces NaN; the statistics simply keep moving."},
    ),
}
