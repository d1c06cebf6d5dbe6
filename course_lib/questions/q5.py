"""Self-check questions of lecture Q5 (learning-rate schedules and BatchNorm's lagging running statistics)."""
from course_lib.quiz import Choice, Number

QUESTIONS = {
    "Q5.1": Number(
        2.0 - (0.5 - 0.3) / 0.7 * 1.9,
        "p = 0.5 lies in the second phase, which starts at 0.3 and lasts 0.7: its own progress is (0.5 - 0.3) / 0.7; "
        "then apply sched_lin(2.0, 0.1) to it.",
        rel_tol=5e-3,
    ),
    "Q5.2": Number(
        0.1 * 0.9 ** 10,
        "Unroll running = (1 - m) * running + m * batch: the batch k steps ago is multiplied by m once and by "
        "(1 - m) once for every later step.",
        rel_tol=0.01,
    ),
    "Q5.3": Choice(
        "ac",
        ("the training images in eval mode dip as much as the validation images",
         "the training loss is noisy at the peak",
         "recomputing only the running statistics brings the validation accuracy back up",
         "the learning rate is rising fast there"),
        "Which observations would be different if the model had overfitted, i.e. if the weights were the problem?",
        {"a": "Partly: (a) is one of them; another measurement isolates the statistics even more directly.",
         "c": "Partly: (c) is one of them; another observation rules out overfitting.",
         "b": "A noisy loss happens at any high learning rate; it does not tell the two explanations apart.",
         "d": "The rising rate is the circumstance, not evidence for one explanation or the other."},
    ),
    "Q5.4": Choice(
        "b",
        ("at its maximum", "at its minimum", "unchanged from the start"),
        "One-cycle moves the momentum opposite to the learning rate (0.95 -> 0.85 -> 0.95).",
        {"a": "The other way round: large steps get less momentum.",
         "c": "one_cycle schedules the momentum too (moms=(0.95, 0.85, 0.95) by default)."},
    ),
}
