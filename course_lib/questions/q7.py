"""Self-check questions of notebook Q7 (InstanceNorm)."""
from course_lib.quiz import Choice, Number

QUESTIONS = {
    "Q7.1": Number(120, "One mean per image AND channel (n, c), each over the H x W pixels of one map.", rel_tol=0),
    "Q7.2": Choice(
        "b",
        ("the same x_hat", "-x_hat", "zeros", "NaN"),
        "Redo the derivation of section 1 with a = -1: what are mu' and sigma' of -x, and what is (x' - mu') / sigma'?",
        {"a": "The invariance in section 1 needs a > 0: sigma' = |a| sigma, but x' - mu' = a (x - mu) keeps the sign.",
         "b": "sigma' = |a| sigma = sigma while x' - mu' = -(x - mu): the output flips sign. IN removes contrast "
              "and brightness, not polarity."},
    ),
    "Q7.3": Number(0.447, "Output std = sigma / sqrt(sigma^2 + eps) with sigma = 0.5 and eps = 1 (eps sits inside "
                          "the square root, next to sigma^2).", rel_tol=0.03),
    "Q7.4": Choice(
        "b",
        ("the mean activation of image n in channel c", "beta_c, for every image", "gamma_c + beta_c",
         "NaN when the maps are larger than 1x1"),
        "Average gamma_c * x_hat + beta_c over the H x W pixels: what is the mean of x_hat over one map?",
        {"b": "x_hat has mean 0 over each map, so the average is beta_c: the classifier sees the same input for "
              "every image (section 4)."},
    ),
    "Q7.5": Choice(
        "c",
        ("style transfer", "recognizing digits photographed under changing lighting",
         "estimating from a photo whether it is day or night", "making a classifier robust to scanner brightness"),
        "Which task's label is carried by the image's overall brightness and contrast (experiment B of section 5)?",
        {"c": "Day vs night is mostly brightness and contrast, exactly what IN removes (like foggy vs clear).",
         "b": "Here lighting is a nuisance: removing it helps (experiment A of section 5)."},
    ),
}
