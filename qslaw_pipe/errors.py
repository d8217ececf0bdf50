"""The one error type users see: a single line naming the problem and the fix."""


class QslawError(Exception):
    """A user-facing failure. The message is one line: what is wrong, then what to do about it."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)
