"""Self-check questions of notebook Q8 (GroupNorm)."""
from course_lib.quiz import Choice, Number

QUESTIONS = {
    "Q8.1": Number(300, "Each group holds C/G channels, and each channel contributes H x W values of one image.",
                   rel_tol=0),
    "Q8.2": Number(512, "LayerNorm's weight and bias each have the shape normalized_shape = (16, 4, 4).", rel_tol=0),
    "Q8.3": Choice(
        "b",
        ("yes, always", "only if the trained gamma is all ones and beta all zeros", "never, the statistics differ",
         "only in eval mode"),
        "Same statistics (G = C), but what does InstanceNorm2d's default affine=False leave out?",
        {"c": "GroupNorm(C, C) and InstanceNorm compute exactly the same statistics (section 4).",
         "d": "Neither layer has running statistics by default: train and eval compute the same thing."},
    ),
    "Q8.4": Choice(
        "bd",
        ("the other images in the batch", "the number of groups G", "model.eval() vs model.train()",
         "image 0's own other channels in the same group"),
        "Which values enter mu_ng and sigma_ng for n = 0? Does GroupNorm keep running statistics?",
        {"a": "No statistic crosses images (section 5 measured it).",
         "c": "GroupNorm has no running statistics: training and eval compute the same thing."},
    ),
}
