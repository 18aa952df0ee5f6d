"""When a sequence ends: stop tokens, stop strings, max_tokens, the model's length.

Before `min_tokens` only the lengths can end it (the sampler holds the stop tokens back).
"""

from __future__ import annotations

from typing import Protocol

from engine.sequence import Sequence


class Tokenizer(Protocol):
    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class StopChecker:
    def __init__(self, tokenizer: Tokenizer, eos_token_ids: set[int], max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.max_model_len = max_model_len

    def __call__(self, seq: Sequence, token_id: int) -> str | None:
        """The finish reason if `token_id`, about to be appended to `seq`, ends it."""
        params = seq.sampling
        if len(seq.output_token_ids) + 1 < params.min_tokens:
            return self._length_reached(seq)
        if token_id in params.stop_token_ids:
            return "stop"
        if token_id in self.eos_token_ids and not params.ignore_eos:
            return "stop"
        if params.stop and self._hits_stop_string(seq.output_token_ids + [token_id], params.stop):
            return "stop"
        return self._length_reached(seq)

    def _length_reached(self, seq: Sequence) -> str | None:
        if len(seq.output_token_ids) + 1 >= seq.sampling.max_tokens:
            return "length"
        if seq.num_tokens + 1 >= self.max_model_len:
            return "length"
        return None

    def _hits_stop_string(self, output_ids: list[int], stops: list[str]) -> bool:
        """Checks the text of the last few tokens, enough to hold the longest stop string.

        Every token decodes to at least one byte, so a stop string of n UTF-8 bytes
        lies within the last n tokens; earlier hits were caught at earlier steps.
        """
        window = max(len(stop.encode()) for stop in stops)
        tail = self.tokenizer.decode(output_ids[-window:], skip_special_tokens=True)
        return any(stop in tail for stop in stops)
