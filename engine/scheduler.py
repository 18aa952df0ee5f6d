"""Who runs this step, and with which KV blocks: the model-free half of continuous batching.

There are no prefill and decode phases, as in vLLM: every sequence has tokens whose
KV is not computed yet (a whole prompt, the rest of a chunked one, or the one token
a decode feeds), and each step computes up to `max_num_batched_tokens` of them
across sequences, in one forward pass. The order protects running streams:

1. running sequences that decode (one token each) go first, so a long prompt
   arriving never stalls them;
2. running sequences part-way through their prompt take the next chunk of it;
3. waiting sequences are admitted in arrival order (FIFO: a long prompt at the
   head blocks later ones rather than being passed forever, so none starves),
   reusing cached prefix blocks, while there is token budget, a free place
   (`max_num_seqs`) and free blocks; the last one admitted may get only a chunk.

When a running sequence needs a block and none is free, the newest running
sequence is preempted: its blocks are freed and it goes back to the head of the
queue, to be computed again from its tokens (sampling is seeded per token index,
so it samples the same tokens again). `postprocess` then records the step: the
computed tokens, the blocks that became full (hashed for prefix caching), the
sampled tokens and the sequences that finished.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from engine.block_manager import BlockManager
from engine.sampling import SampledToken
from engine.sequence import Sequence, SequenceStatus, StepOutput

# (sequence, token about to be appended) -> finish reason or None (see `engine/stopping.py`)
StopCheck = Callable[[Sequence, int], str | None]


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        stop: StopCheck,
    ) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.stop = stop
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order: the newest is preempted first
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[Sequence]:
        """The sequences to run this step, each with `num_scheduled_tokens` set."""
        budget = self.max_num_batched_tokens
        scheduled: list[Sequence] = []
        preempted = False
        decoding = [s for s in self.running if s.num_tokens - s.num_computed_tokens == 1]
        prefilling = [s for s in self.running if s.num_tokens - s.num_computed_tokens > 1]
        for seq in decoding + prefilling:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            count = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while not self.block_manager.grow(seq, seq.num_computed_tokens + count):
                victim = self.running[-1]
                if victim in scheduled:
                    scheduled.remove(victim)
                    budget += victim.num_scheduled_tokens
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            if seq.status is SequenceStatus.RUNNING:
                seq.num_scheduled_tokens = count
                budget -= count
                scheduled.append(seq)
        if not preempted:  # a step that had to preempt admits no one
            budget = self._admit(budget, scheduled)
        return scheduled

    def postprocess(
        self, scheduled: list[Sequence], sampled: dict[Sequence, SampledToken]
    ) -> list[StepOutput]:
        """Records a step's work; `sampled` has a token for each sequence that reached its end."""
        outputs: list[StepOutput] = []
        for seq in scheduled:
            start = seq.num_computed_tokens
            seq.num_computed_tokens += seq.num_scheduled_tokens
            seq.num_scheduled_tokens = 0
            self.block_manager.hash_blocks(seq, start)
            if seq.num_computed_tokens >= seq.num_prompt_tokens:
                seq.prompt_inputs = None  # computed into the KV: the embeddings can go
            token = sampled.get(seq)
            if token is None:
                continue  # a chunk of a prompt: nothing to sample yet
            outputs.append(seq.append(token, self.stop(seq, token.token_id)))
            if seq.is_finished:
                self.finish(seq)
        return outputs

    def finish(self, seq: Sequence) -> None:
        """Drops a finished (or aborted) sequence from whichever queue holds it; frees its KV."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED

    def _admit(self, budget: int, scheduled: list[Sequence]) -> int:
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq.imported_kv is not None:
                cached, computed = [], seq.imported_kv.num_tokens
            else:
                cached = self.block_manager.cached_blocks(seq)
                computed = len(cached) * self.block_manager.block_size
            count = min(seq.num_tokens - computed, budget)
            if not self.block_manager.can_allocate(cached, computed + count):
                break
            self.block_manager.allocate(seq, cached, computed + count)
            if seq.imported_kv is not None:
                seq.num_computed_tokens = computed
                seq.kv_to_import = True
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            seq.num_scheduled_tokens = count
            budget -= count
            scheduled.append(seq)
        return budget

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.num_scheduled_tokens = 0
        seq.kv_to_import = False
        seq.prompt_inputs = None
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
