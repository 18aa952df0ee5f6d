"""Incremental detokenization: token ids in, text pieces out, as a stream.

Byte-level BPE tokens can end in the middle of a UTF-8 character, so decoding
token by token would emit U+FFFD and then the wrong text. Like vLLM, we decode
a short window of recent tokens and release text only once it no longer ends in
a partial character. Stop strings are matched on the released text; the tail
that could still be the start of a stop string is held back so a client never
sees part of a stop string. As in vLLM, the stop string itself is cut unless
`include_stop`, and special tokens are left out of the text unless
`skip_special_tokens` is false.
"""

from __future__ import annotations

from typing import Protocol

_PARTIAL = "\ufffd"


class Tokenizer(Protocol):
    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class Detokenizer:
    """One per request; feed it the generated token ids in order."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        stop: list[str] | None = None,
        *,
        skip_special_tokens: bool = True,
        include_stop: bool = False,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._include_stop = include_stop
        self._stop = [s for s in stop or [] if s]
        self._hold = max((len(s) - 1 for s in self._stop), default=0)
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._pending = ""
        self.stopped = False

    def add(self, token_ids: list[int], match_stop: bool = True) -> str:
        """Returns the text that is now safe to show; empty while a character is incomplete.

        `match_stop` false (before `min_tokens`) lets text through without looking for stops.
        """
        if self.stopped:
            return ""
        self._ids.extend(token_ids)
        self._pending += self._decode_new()
        return self._release(final=not match_stop, match_stop=match_stop)

    def flush(self) -> str:
        """Returns everything held back, at the end of the stream: a stop-string candidate,
        or bytes that never became a whole character (a model may emit invalid UTF-8)."""
        if self.stopped:
            return ""
        self._pending += self._decode_new(final=True)
        return self._release(final=True)

    def _decode_new(self, final: bool = False) -> str:
        """Text of the tokens not yet decoded; at the end, invalid bytes too (as U+FFFD)."""
        skip = self._skip_special
        prefix = self._tokenizer.decode(
            self._ids[self._prefix_offset : self._read_offset], skip_special_tokens=skip
        )
        full = self._tokenizer.decode(self._ids[self._prefix_offset :], skip_special_tokens=skip)
        if len(full) <= len(prefix) or (full.endswith(_PARTIAL) and not final):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return full[len(prefix) :]

    def _release(self, final: bool, match_stop: bool = True) -> str:
        hits = [
            (at, at + len(stop) if self._include_stop else at)
            for stop in self._stop
            if match_stop and (at := self._pending.find(stop)) != -1
        ]
        if hits:
            self.stopped = True
            text, self._pending = self._pending[: min(hits)[1]], ""
            return text
        keep = 0 if final else self._hold
        cut = max(len(self._pending) - keep, 0)
        text, self._pending = self._pending[:cut], self._pending[cut:]
        return text
