"""The one exception type that means "the user gave us something wrong"."""


class UserError(Exception):
    """A mistake in the user's data or params, reported as one line with a non-zero exit.

    Stage scripts catch it and print ``error: <message>`` without a traceback. Anything else
    that escapes is a bug and keeps its traceback.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def interrupt_in(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt that ``exc`` is, or was raised while handling, else None.

    Ctrl-C (or SIGTERM) in the middle of a write can surface as the writer's own error: torch's
    zip writer, unwinding, fails with "unexpected pos". What happened is still an interrupt.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
