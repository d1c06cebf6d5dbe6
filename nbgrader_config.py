"""nbgrader configuration of the course: masters in solutions/, student versions in exercises/.

Read by ``make release`` (course_lib.grading.release), ``make grade`` (course_lib.grading.autograde, which points
the paths and the gradebook at a temporary copy per submission and runs each kernel in a bubblewrap sandbox) and by any
``nbgrader ...`` command run from the repository root.
Why each setting: docs/DESIGN.md section 5 (behaviours of nbgrader 0.9.6 observed on our machines).
"""
c = get_config()  # noqa: F821 - traitlets provides get_config() when it loads this file

c.CourseDirectory.course_id = "normalization-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"

# What students see in place of a solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Deleted read-only cells come back (edited ones are restored by checksum anyway).
c.OverwriteCells.add_missing_cells = True

# Execution: a per-cell timeout, then an interrupt; a loop that swallows the interrupt is killed after
# iopub_timeout more seconds (shutdown "immediate" = no grace period for a kernel that does not answer).
c.Execute.timeout = 30
c.Execute.interrupt_on_timeout = True
c.Execute.iopub_timeout = 4
c.Execute.raise_on_iopub_timeout = True
c.Execute.shutdown_kernel = "immediate"
c.GuardedExecute.notebook_timeout = 300
# Every kernel in the bubblewrap sandbox (course_lib/grading/sandbox.py), also for a plain `nbgrader autograde`;
# `make grade NO_SANDBOX=1` (--no-sandbox) turns it off where bubblewrap is missing.
c.GuardedExecute.sandbox = True

# nbgrader's autograde steps with Execute replaced by the guarded one (course_lib.grading.steps): test cells
# run with torch/numpy/course_lib.grading restored to what they were before the first student cell.
c.Autograde.autograde_preprocessors = [
    "course_lib.grading.steps.GuardedExecute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]

# Late work (a submission's timestamp.txt after the assignment's due date in the course gradebook, plus any
# extension recorded there) scores 0: nbgrader's LateSubmissionPlugin. "none" only records the lateness (the
# grades CSV shows it); another policy is a plugin class in c.AssignLatePenalties.plugin_class.
c.LateSubmissionPlugin.penalty_method = "zero"

# Feedback never shows hidden tests (nbgrader's default feedback does: the graded copy holds them).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "course_lib.grading.steps.HideHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
