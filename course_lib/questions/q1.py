"""Self-check questions of lecture Q1 (BatchNorm's parameters, buffers and running statistics)."""
from course_lib.quiz import Choice, Number

QUESTIONS = {
    "Q1.1": Choice(
        "abcde",
        ("weight", "bias", "running_mean", "running_var", "num_batches_tracked", "momentum", "eps"),
        "state_dict holds every parameter and every registered buffer; hyper-parameters that are plain Python "
        "numbers are not tensors. Print list(nn.BatchNorm2d(8).state_dict()) to check.",
        {"ab": "Those are the parameters; the registered buffers are saved in state_dict too.",
         "abcd": "Almost: the counter num_batches_tracked is a buffer too (an int64 tensor).",
         "abcdefg": "momentum and eps are plain Python floats (constructor arguments), not tensors."},
    ),
    "Q1.2": Number(
        0.95,
        "Keras' momentum is the weight of the OLD value, PyTorch's the weight of the NEW batch; they add up to 1.",
        rel_tol=1e-3,
    ),
    "Q1.3": Number(
        0.975,
        "running_var = (1 - m) * running_var + m * (unbiased variance), and the unbiased variance is "
        "sigma_B^2 * n / (n - 1) with n the number of values per feature in the batch (for BatchNorm1d on "
        "(N, C): n = N). (0.96 used the biased variance; 0.75 forgot the momentum; 1.0 is the initial value.)",
        rel_tol=0.0, abs_tol=2e-3,
    ),
    "Q1.4": Number(
        199.0,
        "An EMA with momentum m has variance m / (2 - m) * sigma^2; a plain average of k values has sigma^2 / k. "
        "(1/m is the EMA's time constant, not its noise-equivalent window.)",
        rel_tol=0.02,
    ),
    "Q1.5": Number(
        0.02565,
        "sqrt(m / (2 - m)) times the standard deviation of ONE batch mean; a batch mean of n values of std 1 has "
        "std 1 / sqrt(n), and here n = N * H * W per channel.",
        rel_tol=0.05,
    ),
    "Q1.6": Choice(
        "b",
        ("running_mean with momentum=0.1", "running_mean with momentum=None", "the last batch's mean",
         "the mean of the last 2 batches"),
        "Which update gives every batch the same weight, 1/k for the k-th?",
        {"a": "The EMA with momentum 0.1 is as noisy as a plain average of ~19 batch means (std sqrt(m/(2-m)) s_mu).",
         "c": "One batch is the noisiest estimate of all.",
         "d": "Seed 003's 'previous 2 batches' is not how any BatchNorm estimate works."},
    ),
}
