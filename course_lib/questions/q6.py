"""Self-check questions of lecture Q6 (LayerNorm: axes, affine shapes, scale invariance, transformers, RMSNorm)."""
from course_lib.quiz import Choice, Number

QUESTIONS = {
    "Q6.1": Number(
        128.0,
        "LayerNorm([C, H, W]) computes one mean per sample, over all of that sample's channels and positions.",
        rel_tol=0.0, abs_tol=1e-9,
    ),
    "Q6.2": Choice(
        "b",
        ("normalizes each sample over (C, H, W)", "normalizes each row over W", "raises an error",
         "normalizes each pixel over C"),
        ("normalized_shape describes the LAST axes of the input; which axis of (N, C, H, W) is last, and what size "
         "is it?"),
        {"a": "That would be nn.LayerNorm([8, 8, 8]) (or GroupNorm(1, 8) with a per-channel affine).",
         "c": "It would raise if W were not 8; here W == 8, so the shapes match silently.",
         "d": "That is ConvNeXt's channels-last LayerNorm: LayerNorm(C) on x.permute(0, 2, 3, 1)."},
    ),
    "Q6.3": Number(
        0.2,
        "LN(a x) = LN(x); differentiate both sides with respect to x.",
        rel_tol=0.01,
    ),
    "Q6.4": Choice(
        "bc",
        ("it subtracts the mean", "it has no bias beta",
         "without affine, it equals LayerNorm (without affine) on inputs whose rows have zero mean",
         "RMSNorm(x + 1) = RMSNorm(x)"),
        "RMSNorm divides by sqrt(mean(x^2) + eps) and multiplies by gamma; nothing else.",
        {"b": "Partly: (b) is true; is there a second true statement?",
         "c": "Partly: (c) is true; is there a second true statement?",
         "bcd": "Without centring, adding a constant changes mean(x^2): RMSNorm is not shift invariant.",
         "abc": "RMSNorm does not subtract the mean; that is the point of it."},
    ),
    "Q6.5": Choice(
        "a",
        ("x + F(LN(x))", "LN(x + F(x))", "LN(x) + F(x)"),
        "In pre-LN the normalization sits at the input of the sublayer, and the residual stream is left untouched.",
        {"b": "That is post-LN (original Transformer, BERT).",
         "c": "That adds a normalized copy of x to F(x); no common block does this."},
    ),
}
