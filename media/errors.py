"""The one error type every media rejection raises."""


class MediaError(Exception):
    """A media input was refused or could not be read.

    Every check in `media` raises this one type so a component translates it
    into an OpenAI error body in one place. `rule` names the check that fired
    (usually the option that sets it, e.g. ``max-alloc``), `status` is the HTTP
    status to answer with, and the message says what the caller can do about it.
    A failure on the media host's side (DNS, refused connection, timeout, a 5xx)
    is a 502 or 504, which clients retry; anything about the input itself is 4xx.
    """

    def __init__(self, message: str, *, rule: str, status: int = 400) -> None:
        super().__init__(f"{rule}: {message}")
        self.message = message
        self.rule = rule
        self.status = status

    @property
    def upstream(self) -> bool:
        """The media host failed, not the request: OpenAI's `upstream_error`."""
        return self.status in (502, 504)
