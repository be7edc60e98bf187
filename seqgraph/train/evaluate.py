"""Scoring a language model on a token stream: loss per token, perplexity, accuracy.

The stream is read window by window with the state carried across windows, exactly as in
training, but without gradients and with dropout off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .batches import Streams
from .data import feeds


@dataclass(frozen=True)
class Score:
    loss_sum: float        # summed over every scored token (all loss lines)
    tokens: int            # tokens of the bound target that carry a loss
    correct: int | None    # argmax hits (None when no xent loss reads the target)

    @property
    def loss(self) -> float:
        """Loss per token, in nats."""
        return self.loss_sum / max(self.tokens, 1)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else self.correct / max(self.tokens, 1)

    def as_dict(self) -> dict:
        return {"loss": self.loss, "perplexity": self.perplexity,
                "accuracy": self.accuracy, "tokens": self.tokens}


def xent_output(graph, target: str) -> str | None:
    """The logits variable of the first `xent` loss on `target` (what accuracy reads)."""
    for loss in graph.losses:
        if loss.fn == "xent" and loss.target.var == target:
            return loss.output.var
    return None


def token_terms(graph, res, target: str) -> tuple[float, int]:
    """(loss summed over tokens, tokens) of a result: the sums of all loss lines, over
    the tokens of the target the data binds (one count per token, however many lines)."""
    total, count = 0.0, 0
    for li, (s, n) in res.terms.items():
        loss = graph.losses[li]
        total += loss.weight * s
        if loss.target.var == target and not count:
            count = n
    return total, count


def score(model, graph, binding, streams: Streams, rng=None) -> Score:
    """One pass over `streams` in evaluation mode."""
    out = xent_output(graph, binding.target)
    carry, loss_sum, tokens, correct = None, 0.0, 0, 0
    for _, x, y in streams.windows():
        inputs, targets = feeds(binding, x, y)
        res = model.run(inputs, targets, carry=carry, train=False, grads=False, rng=rng)
        carry = res.carry
        s, n = token_terms(graph, res, binding.target)
        loss_sum, tokens = loss_sum + s, tokens + n
        if out is not None:
            pred = np.asarray(res.values[out]).argmax(axis=-1)
            correct += int(((pred == y) & (y >= 0)).sum())
    return Score(loss_sum, tokens, correct if out is not None else None)
