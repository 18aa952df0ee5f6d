"""Sampling parameters and the sampler that turns a batch of logits into tokens.

Seeded sampling is a pure function of (seed, index of the generated token): the
random numbers for token i come from a generator seeded with (seed, i) alone. A
sequence therefore samples the same tokens whether it runs alone or in a batch,
and whether its first token was drawn by a prefill worker in another process.
The noise is drawn on the CPU, so the same seed gives the same tokens on any
device.

Logits are processed in vLLM's order: the grammar mask and `allowed_token_ids`,
then `min_tokens` and `logit_bias`, then the repetition, frequency and presence
penalties; greedy rows take the argmax of the result, the others apply
temperature, `min_p`, `top_k` and `top_p` and draw. Reported logprobs are those
of the model's own distribution, before any of this (vLLM's default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from engine.guided import SPEC_KINDS, Guide, GuideCompiler

_SEED_STRIDE = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads (seed, index) over the range
_U64 = (1 << 64) - 1


@dataclass
class SamplingParams:
    """What a request asks of the sampler; names, defaults and conventions follow vLLM.

    `top_k` of -1 or 0 disables it. `logprobs`: None returns no top alternatives,
    N returns the N most likely tokens beside the chosen one (whose logprob is
    always reported). `structured` is one of `engine.guided.SPEC_KINDS` -> its
    value, e.g. {"json": schema} or {"choice": ["yes", "no"]}.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    allowed_token_ids: list[int] | None = None
    seed: int | None = None
    max_tokens: int = 16
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None
    structured: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.logit_bias = {int(token): bias for token, bias in self.logit_bias.items()}
        checks = [
            (
                self.temperature >= 0,
                f"temperature must be >= 0 (0 is greedy), not {self.temperature}",
            ),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.top_k >= -1, f"top_k must be >= 1, or -1 / 0 to disable it; got {self.top_k}"),
            (0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (self.max_tokens >= 1, f"max_tokens must be >= 1, got {self.max_tokens}"),
            (0 <= self.min_tokens <= self.max_tokens, "min_tokens must be in [0, max_tokens]"),
            (self.logprobs is None or self.logprobs >= 0, "logprobs must be None or >= 0"),
            (self.structured is None or len(self.structured) == 1, "one structured output"),
            (set(self.structured or {}) <= set(SPEC_KINDS), f"structured: one of {SPEC_KINDS}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalized(self) -> bool:
        return (
            self.presence_penalty != 0
            or self.frequency_penalty != 0
            or self.repetition_penalty != 1
        )


@dataclass
class SampledToken:
    token_id: int
    logprob: float
    top_logprobs: list[tuple[int, float]]


@dataclass
class SamplerState:
    """What the sampler keeps for one sequence between steps: its grammar matcher."""

    guide: Guide | None = None


@dataclass
class SamplingRequest:
    """One row of a batch to sample: its params, its seed and which generated token this is.

    The token history feeds the penalties, `min_tokens` and the grammar; `state`
    lives as long as the sequence does.
    """

    params: SamplingParams
    seed: int
    index: int
    prompt_token_ids: list[int] = field(default_factory=list)
    output_token_ids: list[int] = field(default_factory=list)
    state: SamplerState = field(default_factory=SamplerState)


class Sampler:
    def __init__(self, eos_token_ids: set[int] | None = None, tokenizer: Any = None) -> None:
        """`eos_token_ids` are held back until `min_tokens`; `tokenizer` compiles grammars."""
        self.eos_token_ids = set(eos_token_ids or ())
        self._tokenizer = tokenizer
        self._guides: GuideCompiler | None = None

    def __call__(self, logits: torch.Tensor, rows: list[SamplingRequest]) -> list[SampledToken]:
        """Samples one token per row of `logits` [batch, vocab]."""
        logits = logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        logits = self.process(logits, rows)
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

    def process(self, logits: torch.Tensor, rows: list[SamplingRequest]) -> torch.Tensor:
        """The logits each row samples from, after masks, biases and penalties (a new tensor
        only where a row asks for any of them)."""
        touched = [
            i
            for i, row in enumerate(rows)
            if row.params.structured
            or row.params.allowed_token_ids is not None
            or row.params.logit_bias
            or row.params.penalized
            or len(row.output_token_ids) < row.params.min_tokens
        ]
        if not touched:
            return logits
        processed = logits.clone()
        for i in touched:
            self._process_row(processed[i], rows[i])
            if not torch.isfinite(processed[i]).any():
                # Every token ruled out (a finished grammar while min_tokens or ignore_eos
                # forbids ending): sample unconstrained rather than from nothing.
                processed[i] = logits[i]
        return processed

    def _process_row(self, logits: torch.Tensor, row: SamplingRequest) -> None:
        params, vocab = row.params, logits.shape[-1]
        if params.structured:
            if row.state.guide is None:
                row.state.guide = self._compiler(vocab).guide(params.structured)
            row.state.guide.mask(logits, row.output_token_ids)
        if params.allowed_token_ids is not None:
            allowed = torch.zeros(vocab, dtype=torch.bool, device=logits.device)
            allowed[[t for t in params.allowed_token_ids if 0 <= t < vocab]] = True
            logits.masked_fill_(~allowed, float("-inf"))
        if len(row.output_token_ids) < params.min_tokens:
            stops = set(params.stop_token_ids) | (
                set() if params.ignore_eos else self.eos_token_ids
            )
            logits[[t for t in stops if 0 <= t < vocab]] = float("-inf")
        for token_id, bias in params.logit_bias.items():
            if 0 <= token_id < vocab:
                logits[token_id] += bias
        if params.penalized:
            apply_penalties(logits, row.prompt_token_ids, row.output_token_ids, params)

    def _compiler(self, vocab_size: int) -> GuideCompiler:
        if self._tokenizer is None:
            raise ValueError("guided decoding needs the sampler to be given the tokenizer")
        if self._guides is None:
            self._guides = GuideCompiler(self._tokenizer, vocab_size)
        return self._guides

    def _sample(self, logits: torch.Tensor, rows: list[SamplingRequest]) -> torch.Tensor:
        """Temperature, then min-p, top-k and top-p on the sorted logits, then one draw per row.

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
        min_p = torch.tensor([r.params.min_p for r in rows], device=device)

        sorted_logits, order = (logits / temperature[:, None]).sort(dim=-1, descending=True)
        rank = torch.arange(vocab, device=device)
        probs = sorted_logits.softmax(dim=-1)
        below_min_p = probs < min_p[:, None] * probs[:, :1]
        mass_before = probs.cumsum(dim=-1) - probs
        # top_p == 1 cuts nothing, even where float rounding lets the cumulative mass reach 1.
        beyond_p = (mass_before >= top_p[:, None]) & (top_p[:, None] < 1)
        cut = (rank[None, :] >= top_k[:, None]) | beyond_p | below_min_p
        probs = sorted_logits.masked_fill(cut, float("-inf")).softmax(dim=-1)

        noise = torch.stack([_exponential_noise(r.seed, r.index, vocab) for r in rows])
        noise = noise.to(device).gather(1, order)
        return order.gather(1, (probs / noise).argmax(dim=-1, keepdim=True)).squeeze(1)


def apply_penalties(
    logits: torch.Tensor, prompt_ids: list[int], output_ids: list[int], params: SamplingParams
) -> None:
    """vLLM's penalties on one row, in place.

    The repetition penalty (as in CTRL and HF's `RepetitionPenaltyLogitsProcessor`)
    divides positive logits and multiplies negative ones of every token seen in the
    prompt or the output; frequency and presence penalties subtract per occurrence,
    and once, for tokens of the output only (OpenAI's definition).
    """
    vocab = logits.shape[-1]
    counts = torch.bincount(torch.tensor(output_ids, dtype=torch.long), minlength=vocab)[:vocab]
    counts = counts.to(device=logits.device, dtype=logits.dtype)
    if params.repetition_penalty != 1:
        seen = counts > 0
        prompt = torch.tensor([t for t in prompt_ids if 0 <= t < vocab], dtype=torch.long)
        seen[prompt.to(logits.device)] = True
        penalty = params.repetition_penalty
        penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits.copy_(torch.where(seen, penalized, logits))
    logits -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0)


def _exponential_noise(seed: int, index: int, vocab: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed((seed + index * _SEED_STRIDE) & _U64)
    return torch.empty(vocab).exponential_(generator=generator)
