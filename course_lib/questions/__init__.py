"""Self-check questions of the lecture notebooks, one module per notebook (q1.py ... q9.py).

Each module defines ``QUESTIONS = {"Q<n>.<k>": Number(...) or Choice(...)}``; see course_lib.quiz.
"""
