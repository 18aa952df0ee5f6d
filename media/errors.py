"""The one error type every media rejection raises."""


class MediaError(Exception):
    """A media input was refused or could not be read.

    Every check in `media` raises this one type so a component translates it
    into an OpenAI error body in one place. `rule` names the check that fired
    (usually the option that sets it, e.g. ``max-alloc``), `status` is the HTTP
    status to answer with, and the message says what the caller can do about it.
    """

    def __init__(self, message: str, *, rule: str, status: int = 400) -> None:
        super().__init__(f"{rule}: {message}")
        self.message = message
        self.rule = rule
        self.status = status
