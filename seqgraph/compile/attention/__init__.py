"""Attention stages: variables over two indexes (`e[u, t]`) and reductions over an index
(`sum over t (...)`), compiled.

Values here carry *axes*: the sequence indexes they vary over, in the stage's canonical
order (the stage's own index first, then the model's other indexes), followed by the
batch and the feature axis. `Ua @ h[t]` is [T, B, A], `Wa @ s[u-1]` is [U, B, A] (or
[B, A] inside a loop over u), and `Wa @ s[u-1] + Ua @ h[t]` broadcasts to [U, T, B, A]
(resp. [T, B, A]): every subexpression is computed once over the indexes it depends on.
A reduction over t removes the axis t, with the padding mask of t.

Two kinds of stage (plan.AttnStage):
- *static* (a variable on no cycle: luong.sg's e, a, ctx): the whole expression for all
  steps of every index at once: `s[u] @ (Wa @ h[t])` is one GEMM for `Wa @ h[t]` over
  [T*B, H] and one batched contraction (einsum) for the scores [U, T, B];
- *attention recurrence* (a cycle that contains them: attention.sg's {e, a, ctx, s}):
  a Python loop over the cycle's index u, every step of the other indexes at once. Each
  equation is split as in plan.lower: every maximal subexpression that does not read the
  cycle is *hoisted* (the terms of a sum that do not read the cycle join one hoisted
  term): `Ua @ h[t]` ([T, B, A], one GEMM over [T*B, 2H]) and `Ud @ (F @ y[u-1]) + bd`
  ([U, B, H], one lookup and one GEMM over [U*B, D]) are computed before the loop, their
  gradients accumulated by the backward loop and pushed through once after it (weight
  gradients one GEMM each). Per step u: the products of one operand by several
  parameters (`Wa @ s[u-1]`, `Wd @ s[u-1]`) are one GEMM of stacked weights, broadcast
  onto the hoisted arrays; the score for all t is one GEMV over [T*B, A] (`va @ ...`) or
  one batched contraction (`s[u] @ ...`); `sum over t (a[u, t] * h[t])` is one
  contraction (einsum) with the padding mask folded in; the chain of an additive score
  `va @ tanh(Wa @ s[u-1] + Ua @ h[t])`, the softmax over t and the contraction are one
  Numba kernel each, forward and backward (fused.py). The backward loop runs u in
  reverse over the saved per-step values (BPTT); the weight gradients of the per-step
  GEMMs are one GEMM over all steps after it.

Memory: the values a step saves for the backward loop, the hoisted values, the state
tapes and the per-step gradients of the products are written into buffers from the
stage's pool (`kernels.Pool`: flat buffers by power-of-two size, reused from run to run
and from one pair of lengths to the next), so a training step does not fault in fresh pages
(measured: 8000 page faults and a third of the stage's time without).

Anything else raises plan.Unsupported with the reason, and the whole model runs in the
interpreter: never a different answer.

Modules: program.py (expressions to programs of nodes over axes), fused.py (the kernels
of an attention step), numerics.py
(broadcasting over axes, products, the elementwise forwards and gradients), execute.py (a
program's forward and reverse in one batch), stages.py
(the compiled stage, its static run or its loop over u).
"""
from .stages import AttnBuilt, build

__all__ = ["AttnBuilt", "build"]
