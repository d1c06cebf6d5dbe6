"""course_lib: the library behind the normalization course (notebooks Q1-Q9).

Modules: ``norms`` (the layers), ``functional`` (their shared core), ``stats`` (streaming statistics).
"""
__version__ = "0.1.0"
