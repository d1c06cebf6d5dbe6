"""Submissions for the grading tests, built from solutions/ and exercises/ (see submissions.py)."""
