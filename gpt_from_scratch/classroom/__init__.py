"""The tooling around the lessons, kept apart from the model code a learner reads.

    exercises  the checkers that the notebooks' check cells call (check_causal_softmax, ...)
    grading    nbgrader-compatible metadata, student versions and offline grading
    widgets    AttentionExplorer and GenerationPlayground (ipywidgets, with a static fallback)
    doctor     ``gpt-from-scratch doctor``: is this environment ready for the notebooks?

Nothing here is imported by ``import gpt_from_scratch``: matplotlib, ipywidgets, nbformat and nbclient
load only when a notebook or a command asks for these modules.
"""
