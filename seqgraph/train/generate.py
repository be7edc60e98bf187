"""Generation from a trained language model, one step at a time.

Each step runs a window of length one with the carried state, so a long sample costs one
step per token. The sampled token is fed back as the next input; when the model reads
its own previous output (`R @ y[t-1]`, Fig. 10.4) the sample is also written into the
carried value of that target, which is what `y[t-1]` reads at the next step.
"""
from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .evaluate import xent_output
from .loaders import EOS


def start_token(vocab) -> int:
    """Where a sample starts without a prime: a line start (`\\n` or `</s>`)."""
    index = vocab.index
    for tok in ("\n", EOS):
        if tok in index:
            return index[tok]
    return 0


def prime_ids(vocab, text: str | None) -> list[int]:
    if not text:
        return [start_token(vocab)]
    tokens = list(text) if vocab.kind == "chars" else text.split()
    return [int(i) for i in vocab.encode(tokens, "--prime")]


def _choose(logits: np.ndarray, temperature: float, greedy: bool, rng) -> int:
    """argmax, or a draw from softmax(logits / temperature)."""
    if greedy:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


class Sampler:
    def __init__(self, model, graph, binding):
        self.model, self.b = model, binding
        self.out = xent_output(graph, binding.target)
        if self.out is None:
            raise UsageError(f"{graph.path}: sampling needs a language model: an xent loss "
                             f"on the target '{binding.target}'")
        self.delay = getattr(model, "carried", {}).get(binding.target, 1)

    def _run(self, x: np.ndarray, y: np.ndarray, carry):
        inputs = {self.b.input: x} if self.b.input else {}
        return self.model.run(inputs, {self.b.target: y}, carry=carry, train=False)

    def _feed_back(self, carry: dict, token: int) -> dict:
        """The carried target becomes the token just chosen (newest first)."""
        if not self.b.feedback:
            return carry
        old = list(carry.get(self.b.target, []))
        return {**carry, self.b.target: [np.array([token])] + old[:self.delay - 1]}

    def sample(self, prime: list[int], length: int, temperature: float = 1.0,
               greedy: bool = False, rng=None) -> list[int]:
        """`length` new token ids after reading `prime` (at least one token)."""
        if temperature <= 0:
            raise UsageError("--temperature must be positive (use --greedy for argmax)")
        rng = rng or np.random.default_rng()
        carry = {}
        if len(prime) > 1:     # read the prime: x = prime[:-1], y[t] = x[t+1]
            res = self._run(np.array([prime[:-1]]), np.array([prime[1:]]), None)
            carry = res.carry
        carry, token, out = self._feed_back(carry, prime[-1]), prime[-1], []
        for _ in range(length):
            res = self._run(np.array([[token]]), np.full((1, 1), -1), carry or None)
            token = _choose(np.asarray(res.values[self.out])[0, -1], temperature, greedy, rng)
            carry = self._feed_back(res.carry, token)
            out.append(token)
        return out
