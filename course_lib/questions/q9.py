"""Self-check questions of notebook Q9 (RunningBatchNorm)."""
from course_lib.quiz import Choice, Number

QUESTIONS = {
    "Q9.1": Number(0.6598, "a = 1 - (1 - mom) / sqrt(N - 1), with N the number of images in the batch.",
                   rel_tol=0.005),
    "Q9.2": Number(0.271, "dbias <- dbias * (1 - a) + a, starting at 0; what is a for a batch of 2?", rel_tol=0.01),
    "Q9.3": Choice(
        "bc",
        ("delete the three lines that divide by self.dbias", "delete the warm-up clamp",
         "compute the variance with Chan's merge of centred variances", "rename self.mom to self.mon everywhere"),
        "Which quantities does the layer use only as ratios? Which computation is exact only in exact arithmetic?",
        {"a": "dbias cancels: (S/d) / (c/d) = S/c (section 5); only the last float32 bits can change.",
         "d": "A consistent rename changes nothing (it is only the seed's confusing spelling)."},
    ),
    "Q9.4": Choice(
        "b",
        ("the statistics of the batch it is given",
         "the stored smoothed statistics, with the same formula as in training",
         "nothing: it is the identity in eval", "the statistics of the last training batch alone"),
        "Look at fastai's forward: which lines depend on self.training?",
        {"a": "That would make eval depend on the batch composition, the problem running statistics solve (Q1).",
         "d": "The stored statistics are smoothed over many batches; the last batch is only a share a of them."},
    ),
    "Q9.5": Number(1.0, "Two values u, v: mean (u + v) / 2, biased variance ((u - v) / 2)^2.", rel_tol=0.01),
}
