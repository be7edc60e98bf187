"""The alignment matrix of a generated output: attention weights as a picture.

An attention model (specs/attention.sg, specs/luong.sg) defines weights over two indexes,
`a[u, t] = softmax over t (e[u, t])`: for each generated step u, a distribution over the
source steps t. Drawn as a matrix, one row per output token and one column per source
token, grey levels for the weights, they show which source tokens each output token was
read from: Fig. 3 of Bahdanau, Cho and Bengio 2015, the picture people expect.

`seqgraph sample ... --attention-plot a.png` draws it for the output it generated. The
weights are read from one teacher-forced run of the model on that output (the interpreter
returns a two-index variable as `Result.values[name]`, [B, U, T, 1]): the decoder is
causal over u (seqgraph/graph/generate_check.py refuses any model whose outputs read
later steps of u), so the weights at step u depend only on the source and the tokens
before u, the ones generation fed back, and the run gives exactly the weights of the
steps that generated the output, whatever the decoding (greedy, sampled or a beam).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UsageError
from .graph.generate_check import softmax_index


@dataclass(frozen=True)
class Weights:
    """The variable holding the weights; `rows` its index over the output (the generated
    index), `cols` the source's; `normalised` is the index its softmax runs over."""
    name: str
    rows: str
    cols: str
    normalised: str | None


def two_index_vars(graph) -> list:
    return [v for v in graph.hidden() if v.inner is not None]


def find_weights(graph, generated: str, name: str | None = None) -> Weights:
    """The attention weights of `graph`: the variable `name`, or the first variable over
    two indexes defined by `softmax over` (UsageError when there is none)."""
    over_two = two_index_vars(graph)
    if name is not None:
        found = [v for v in over_two if v.name == name]
        if not found:
            have = ", ".join(f"{v.name}[{v.index}, {v.inner}]" for v in over_two) or "none"
            what = "is not a variable of the model" if name not in graph.var_map else \
                "is not a variable over two indexes"
            raise UsageError(f"--attention-var {name}: '{name}' {what} (variables over two "
                             f"indexes in model '{graph.name}': {have})")
        v = found[0]
    else:
        soft = [v for v in over_two if any(softmax_index(c.expr) for c in v.cases)]
        if not soft:
            raise UsageError(f"model '{graph.name}' has no attention weights to plot: no "
                             f"variable over two indexes is defined by 'softmax over', "
                             f"such as a[u, t] = softmax over t (e[u, t])")
        v = soft[0]
    if generated not in v.indexes:
        raise UsageError(f"'{v.name}[{v.index}, {v.inner}]' does not run over the generated "
                         f"index {generated}: no alignment of the output to draw")
    other = v.inner if v.index == generated else v.index
    over = next((softmax_index(c.expr) for c in v.cases if softmax_index(c.expr)), None)
    return Weights(v.name, generated, other, over)


def alignment(model, weights: Weights, plan, source: dict, output: list[int],
              start: int | None = None) -> np.ndarray:
    """The weights [len(output), T] of the steps that generated `output` (ids, `</s>`
    included when generation ended with it) from `source` (one example: input name ->
    value, as `Generator.context` takes it), read from a teacher-forced run. `start` is
    what the fed-back target read before the first step, as in the Generator (`<s>`)."""
    from .interp import Interpreter
    if not output:
        raise UsageError("the generated output is empty: no alignment to draw")
    inputs = {}
    for n, val in source.items():
        a = np.asarray(val)
        if n in plan.step_inputs:               # an input on the generated index
            a = a[:len(output)]
        inputs[n] = a[None]
    targets = {plan.target: np.asarray([output], dtype=np.int64)}
    carry = {plan.target: [np.array([start], dtype=np.int64)]} \
        if plan.fed and start is not None else None
    ex = model.executor
    interp = ex if type(ex).__name__ == "Interpreter" else \
        getattr(ex, "interp", None) or Interpreter(model)
    res = interp.run(inputs, targets, carry=carry, train=False)
    w = np.asarray(res.values[weights.name])[0]          # [index, inner, n]
    if w.shape[-1] != 1:
        raise UsageError(f"'{weights.name}' has {w.shape[-1]} numbers per pair of steps; "
                         f"attention weights have one")
    w = w[..., 0]
    return w if model.graph.var(weights.name).index == weights.rows else w.T


def plot_alignment(weights: np.ndarray, source: list[str], output: list[str],
                   path: str | Path, title: str | None = None) -> Path:
    """A PNG of `weights` [len(output), len(source)]: a row per output token (top to
    bottom, in the order generated), a column per source token (left to right, labels
    on top), black 0 to white 1 as in Bahdanau et al. 2015."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("--attention-plot needs matplotlib: pip install matplotlib") \
            from None
    U, T = weights.shape
    if (U, T) != (len(output), len(source)):
        raise ValueError(f"weights {weights.shape} for {len(output)} output and "
                         f"{len(source)} source labels")
    cell = 0.38
    long_src = max((len(s) for s in source), default=1)
    long_out = max((len(s) for s in output), default=1)
    width = 1.6 + 0.08 * long_out + cell * T + 1.0
    height = 1.0 + 0.08 * long_src + cell * U + 0.6
    fig = Figure(figsize=(max(width, 3.5), max(height, 2.5)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(weights, cmap="gray", vmin=0.0, vmax=1.0, aspect="equal",
                   interpolation="nearest")
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xticks(range(T))
    ax.set_xticklabels(source, rotation=90 if long_src > 1 else 0, fontsize=9)
    ax.set_yticks(range(U))
    ax.set_yticklabels(output, fontsize=9)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    ax.tick_params(length=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, shrink=0.8)
    if title:
        ax.annotate(title, xy=(0.5, 0.0), xycoords="axes fraction", xytext=(0, -6),
                    textcoords="offset points", ha="center", va="top", fontsize=8,
                    color="#555555")
    out = Path(path)
    if not out.parent.is_dir():
        raise UsageError(f"--attention-plot {path}: no such directory {out.parent}")
    fig.savefig(out, bbox_inches="tight", pad_inches=0.15)
    return out

