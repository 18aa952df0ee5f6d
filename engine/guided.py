"""Guided decoding: a grammar says which tokens may come next, and the rest are masked out.

A request asks for one of JSON matching a schema, any JSON object, a regular
expression, one of a list of strings, or an EBNF grammar (vLLM's
`StructuredOutputsParams` names). xgrammar compiles the grammar against the
tokenizer's vocabulary once per distinct spec; each sequence gets a matcher that
follows its generated tokens. The matcher catches up with the sequence's output
before every step, so a sequence whose first token was sampled in another
process (remote prefill) or that is recomputed after preemption needs nothing
special.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import xgrammar

SPEC_KINDS = ("json", "json_object", "regex", "choice", "grammar")


def _grammar(spec: dict[str, Any]) -> xgrammar.Grammar:
    import xgrammar as xgr

    if set(spec) - set(SPEC_KINDS) or len(spec) != 1:
        raise ValueError(f"a structured-output spec has exactly one of {SPEC_KINDS}, got {spec}")
    ((kind, value),) = spec.items()
    if kind == "json":
        schema = value if isinstance(value, str) else json.dumps(value)
        return xgr.Grammar.from_json_schema(schema)
    if kind == "json_object":
        return xgr.Grammar.builtin_json_grammar()
    if kind == "regex":
        return xgr.Grammar.from_regex(value)
    if kind == "choice":
        alternatives = " | ".join(json.dumps(choice) for choice in value)
        return xgr.Grammar.from_ebnf(f"root ::= {alternatives}")
    return xgr.Grammar.from_ebnf(value)


def check_spec(spec: dict[str, Any]) -> None:
    """Raises ValueError naming what is wrong with the grammar, before any engine sees it."""
    try:
        _grammar(spec)
    except Exception as error:  # the grammar is the caller's text: any parser failure is theirs
        raise ValueError(f"the grammar does not compile: {error}") from None


class Guide:
    """One sequence's matcher: masks a row of logits to the tokens the grammar allows next."""

    def __init__(self, matcher: xgrammar.GrammarMatcher, vocab_size: int) -> None:
        import xgrammar as xgr

        self._matcher = matcher
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self._consumed = 0

    def mask(self, logits: torch.Tensor, output_token_ids: list[int]) -> None:
        """Follows the tokens generated since the last call, then masks `logits` [vocab]."""
        import xgrammar as xgr

        for token_id in output_token_ids[self._consumed :]:
            if not self._matcher.is_terminated():
                self._matcher.accept_token(token_id)
        self._consumed = len(output_token_ids)
        self._matcher.fill_next_token_bitmask(self._bitmask)
        row = logits[None]
        xgr.apply_token_bitmask_inplace(row, self._bitmask.to(logits.device))


class GuideCompiler:
    """Compiled grammars for one tokenizer, cached by spec."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        import xgrammar as xgr

        self.vocab_size = vocab_size
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(info)
        self._compiled: dict[str, xgrammar.CompiledGrammar] = {}

    def guide(self, spec: dict[str, Any]) -> Guide:
        import xgrammar as xgr

        key = json.dumps(spec, sort_keys=True)
        if key not in self._compiled:
            self._compiled[key] = self._compiler.compile_grammar(_grammar(spec))
        return Guide(xgr.GrammarMatcher(self._compiled[key]), self.vocab_size)
