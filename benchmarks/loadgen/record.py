"""What one streamed request did, timed on the client's clock."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestRecord:
    """Send time, the arrival time of each content chunk, the end, and what the server counted.

    Times are `time.perf_counter()` seconds. Only chunks that carry text count as
    tokens arriving: a role-only first chunk or the final usage chunk is not a token.
    """

    kind: str
    start: float
    chunk_times: list[float] = field(default_factory=list)
    end: float | None = None
    usage_output_tokens: int | None = None
    input_tokens: int | None = None
    error: str | None = None

    def on_content(self, now: float) -> None:
        self.chunk_times.append(now)

    def on_usage(self, usage: dict) -> None:
        self.usage_output_tokens = usage.get("completion_tokens")
        self.input_tokens = usage.get("prompt_tokens")

    def finish(self, now: float) -> None:
        self.end = now
        if self.error is None and not self.chunk_times:
            self.error = "the stream ended without any content"

    def fail(self, message: str, now: float) -> None:
        self.error = message
        self.end = now

    @property
    def ok(self) -> bool:
        return self.error is None and self.end is not None and bool(self.chunk_times)

    @property
    def ttft_s(self) -> float:
        return self.chunk_times[0] - self.start

    @property
    def itl_s(self) -> list[float]:
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:], strict=False)]

    @property
    def e2e_s(self) -> float:
        assert self.end is not None, "e2e_s of a request that has not finished"
        return self.end - self.start

    @property
    def output_tokens(self) -> int:
        """The server's count when it sent usage; one token per content chunk otherwise."""
        if self.usage_output_tokens is not None:
            return self.usage_output_tokens
        return len(self.chunk_times)

    @property
    def tpot_s(self) -> float | None:
        """Decode time per output token after the first; None for one-token answers."""
        if self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "ok": self.ok,
            "error": self.error,
            "ttft_ms": 1e3 * self.ttft_s if self.ok else None,
            "e2e_ms": 1e3 * self.e2e_s if self.end is not None else None,
            "output_tokens": self.output_tokens,
            "input_tokens": self.input_tokens,
            "chunks": len(self.chunk_times),
        }
