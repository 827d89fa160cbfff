"""The one exception type that means "the user gave us something wrong"."""


class UserError(Exception):
    """A mistake in the user's data or params, reported as one line with a non-zero exit.

    Stage scripts catch it and print ``error: <message>`` without a traceback. Anything else
    that escapes is a bug and keeps its traceback.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
