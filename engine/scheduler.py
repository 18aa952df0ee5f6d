"""Who runs this step: the model-free half of continuous batching.

Every step decodes one token for every running sequence and admits waiting
sequences (FIFO) into the free KV slots, prefilling them. A prefill-token budget
keeps one step from stalling the running batch behind many long prompts; the
first waiting sequence is always admitted when a slot is free, so no prompt can
starve however long it is.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from engine.sequence import Sequence, SequenceStatus


@dataclass
class SchedulerOutput:
    decode: list[Sequence]  # running since an earlier step: one new token each
    prefill: list[Sequence]  # admitted now: prefilled (or KV imported) this step


class Scheduler:
    def __init__(self, max_num_seqs: int, max_prefill_tokens: int) -> None:
        self.max_num_seqs = max_num_seqs
        self.max_prefill_tokens = max_prefill_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        decode = list(self.running)
        prefill: list[Sequence] = []
        budget = self.max_prefill_tokens
        while self.waiting and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            cost = _prefill_cost(seq)
            if prefill and cost > budget:
                break
            budget -= cost
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            prefill.append(seq)
        return SchedulerOutput(decode=decode, prefill=prefill)

    def finish(self, seq: Sequence) -> None:
        """Drops a sequence that has finished (or is aborted) from whichever queue holds it."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED


def _prefill_cost(seq: Sequence) -> int:
    """Tokens a sequence's admission puts through the model; an imported KV costs none."""
    return 0 if seq.imported_kv is not None else seq.num_prompt_tokens
