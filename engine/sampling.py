"""Sampling parameters and the sampler that turns a batch of logits into tokens.

Seeded sampling is a pure function of (seed, index of the generated token): the
random numbers for token i come from a generator seeded with (seed, i) alone. A
sequence therefore samples the same tokens whether it runs alone or in a batch,
and whether its first token was drawn by a prefill worker in another process.
The noise is drawn on the CPU, so the same seed gives the same tokens on any
device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

_SEED_STRIDE = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads (seed, index) over the range
_U64 = (1 << 64) - 1


@dataclass
class SamplingParams:
    """What a request asks of the sampler; names, defaults and conventions follow vLLM.

    `top_k` of -1 or 0 disables it. `logprobs`: None returns no top alternatives,
    N returns the N most likely tokens beside the chosen one (whose logprob is
    always reported).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    max_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < -1:
            raise ValueError(f"top_k must be >= 1, or -1 / 0 to disable it; got {self.top_k}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.logprobs is not None and self.logprobs < 0:
            raise ValueError(f"logprobs must be None or >= 0, got {self.logprobs}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class SampledToken:
    token_id: int
    logprob: float
    top_logprobs: list[tuple[int, float]]


@dataclass
class SamplingRequest:
    """One row of a batch to sample: its params, its seed and which generated token this is."""

    params: SamplingParams
    seed: int
    index: int


class Sampler:
    def __call__(self, logits: torch.Tensor, rows: list[SamplingRequest]) -> list[SampledToken]:
        """Samples one token per row of `logits` [batch, vocab].

        Logprobs are those of the model's distribution, before temperature or
        top-k/top-p (as vLLM reports them).
        """
        logits = logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        token_ids = logits.argmax(dim=-1)
        sampled = [i for i, row in enumerate(rows) if not row.params.greedy]
        if sampled:
            token_ids[sampled] = self._sample(logits[sampled], [rows[i] for i in sampled])
        chosen = logprobs.gather(1, token_ids[:, None]).squeeze(1)
        top_counts = [row.params.logprobs or 0 for row in rows]
        top_values, top_ids = logprobs.topk(max(top_counts), dim=-1)
        # One device-to-host copy per tensor, not one per row.
        return [
            SampledToken(token, logprob, list(zip(ids[:n], values[:n], strict=True)))
            for token, logprob, ids, values, n in zip(
                token_ids.tolist(),
                chosen.tolist(),
                top_ids.tolist(),
                top_values.tolist(),
                top_counts,
                strict=True,
            )
        ]

    def _sample(self, logits: torch.Tensor, rows: list[SamplingRequest]) -> torch.Tensor:
        """Temperature, then top-k and top-p on the sorted logits, then one draw per row.

        The draw is argmax(p / q) with q ~ Exp(1) per vocabulary entry, which picks
        token v with probability p[v]; q is indexed by token id, not by sort rank, so
        ties in the sort cannot change the outcome.
        """
        device = logits.device
        vocab = logits.shape[-1]
        temperature = torch.tensor([r.params.temperature for r in rows], device=device)
        top_k = torch.tensor([r.params.top_k if r.params.top_k > 0 else vocab for r in rows])
        top_k = top_k.to(device)
        top_p = torch.tensor([r.params.top_p for r in rows], device=device)

        sorted_logits, order = (logits / temperature[:, None]).sort(dim=-1, descending=True)
        rank = torch.arange(vocab, device=device)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        # top_p == 1 cuts nothing, even where float rounding lets the cumulative mass reach 1.
        beyond_p = (mass_before >= top_p[:, None]) & (top_p[:, None] < 1)
        cut = (rank[None, :] >= top_k[:, None]) | beyond_p
        probs = sorted_logits.masked_fill(cut, float("-inf")).softmax(dim=-1)

        noise = torch.stack([_exponential_noise(r.seed, r.index, vocab) for r in rows])
        noise = noise.to(device).gather(1, order)
        return order.gather(1, (probs / noise).argmax(dim=-1, keepdim=True)).squeeze(1)


def _exponential_noise(seed: int, index: int, vocab: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed((seed + index * _SEED_STRIDE) & _U64)
    return torch.empty(vocab).exponential_(generator=generator)
