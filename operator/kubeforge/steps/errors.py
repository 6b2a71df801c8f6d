"""The error a step raises for a failure meant for the user (it reaches status and the termination log).

It lives with the steps so that a step never imports the command line that runs it.
"""


class StepFailedError(RuntimeError):
    """A step failed with a message meant for the user."""
