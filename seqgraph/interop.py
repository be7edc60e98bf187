"""Weights between seqgraph and PyTorch: `from_torch` copies a torch module's weights into
a Model's parameters, `to_torch` copies them back; `grads_to_torch` lays out seqgraph
gradients the way PyTorch's `.grad` fields are laid out. docs/interop.md has the mapping.

Modules: `torch.nn.RNN` (tanh: the prelude's `rnn`; relu: `relu_rnn`), `torch.nn.LSTM`
(`lstm`) and `torch.nn.GRU` (`gru`), any `num_layers`, `bidirectional` or not, with or
without biases; also `torch.nn.Linear` and `torch.nn.Embedding`.

`prefix` names the seqgraph side:
- a recurrent module: the variable its cell use defines. `"h"` for `h = lstm(x, H)`
  (parameters `h.Wi`, ...); for `num_layers = L > 1` the layers of `h = stack(L) lstm(...)`
  (`h.1.*` ... `h.L.*`); with `bidirectional=True` the directions of `h = bi lstm(...)`
  (`h.fwd.*`, `h.bwd.*`). A list gives one prefix per layer instead (`["h1", "h2"]` for
  `h1 = bi gru(x, H)` then `h2 = bi gru(h1, H)`, the usual way to stack bidirectional
  layers). `""` means no prefix (the equations written at the top level: `W`, `U`, `b`).
- `nn.Linear`: the pair of parameter names `("Wo", "bo")` (`(name, None)` without bias;
  a bias-free Linear given a bias name zeroes it, as a bias-free RNN zeroes its cell's).
- `nn.Embedding`: the name of the `[D, V]` parameter (`"E"`, or `"e.E"` for `e = embed(x, D)`).

`rename` (a dict) maps a generated seqgraph name to the name a spec really uses, for
models written out as equations (`{"fwd.W": "Wh", ...}`).

torch is imported lazily: this module imports without it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The seqgraph parameter each chunk of a PyTorch tensor maps to, in PyTorch's chunk order
# (LSTM: i, f, g, o; GRU: r, z, n). A seqgraph bias named by both `bias_ih` and `bias_hh`
# is their sum; the GRU's n chunk of `bias_hh` is `b_hn` on its own (r multiplies it).
CELLS = {
    "RNN_TANH": {"weight_ih": ["W"], "weight_hh": ["U"], "bias_ih": ["b"], "bias_hh": ["b"]},
    "RNN_RELU": {"weight_ih": ["W"], "weight_hh": ["U"], "bias_ih": ["b"], "bias_hh": ["b"]},
    "LSTM": {"weight_ih": ["Wi", "Wf", "Wg", "Wo"], "weight_hh": ["Ui", "Uf", "Ug", "Uo"],
             "bias_ih": ["b_i", "b_f", "b_g", "b_o"], "bias_hh": ["b_i", "b_f", "b_g", "b_o"]},
    "GRU": {"weight_ih": ["Wr", "Wz", "Wn"], "weight_hh": ["Ur", "Uz", "Un"],
            "bias_ih": ["b_r", "b_z", "b_n"], "bias_hh": ["b_r", "b_z", "b_hn"]},
}


@dataclass(frozen=True)
class Entry:
    """Chunk `chunk` of `chunks` (along dim 0) of the torch tensor `torch_name` is the
    seqgraph parameter `name` (a bias: one of the terms of its sum when `summed`)."""
    torch_name: str
    chunk: int
    chunks: int
    name: str
    summed: bool = False
    first: bool = True          # of a summed bias: the term that carries the value


def _torch():
    try:
        import torch
    except ImportError:            # pragma: no cover - depends on the environment
        raise ImportError("seqgraph.interop needs PyTorch (pip install torch)") from None
    return torch


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _kind(module) -> str:
    torch = _torch()
    if isinstance(module, torch.nn.Linear):
        return "Linear"
    if isinstance(module, torch.nn.Embedding):
        return "Embedding"
    if isinstance(module, torch.nn.RNNBase) and getattr(module, "mode", None) in CELLS:
        if getattr(module, "proj_size", 0):
            raise NotImplementedError("LSTM with proj_size has no seqgraph cell")
        return module.mode
    raise TypeError(f"cannot map a {type(module).__name__}: seqgraph.interop knows "
                    "nn.RNN, nn.LSTM, nn.GRU, nn.Linear and nn.Embedding")


def layer_prefixes(module, prefix) -> list:
    """[(torch suffix, seqgraph prefix)] for every layer and direction of an RNN module."""
    L = module.num_layers
    if isinstance(prefix, (list, tuple)):
        if len(prefix) != L:
            raise ValueError(f"{len(prefix)} layer prefixes given for {L} layers")
        layers = list(prefix)
    elif L == 1:
        layers = [prefix]
    else:
        layers = [_join(prefix, str(k + 1)) for k in range(L)]
    out = []
    for k, lp in enumerate(layers):
        if module.bidirectional:
            out += [(f"_l{k}", _join(lp, "fwd")), (f"_l{k}_reverse", _join(lp, "bwd"))]
        else:
            out.append((f"_l{k}", lp))
    return out


def mapping(module, prefix="", rename=None) -> list:
    """Every Entry between `module`'s tensors and seqgraph parameter names."""
    kind, rename = _kind(module), dict(rename or {})
    ren = lambda n: rename.get(n, n)
    if kind == "Linear":
        w, b = (prefix, None) if isinstance(prefix, str) else tuple(prefix)
        out = [Entry("weight", 0, 1, ren(w))]
        if module.bias is not None:
            if b is None:
                raise ValueError("the Linear module has a bias: give (weight, bias) names")
            out.append(Entry("bias", 0, 1, ren(b)))
        return out
    if kind == "Embedding":
        return [Entry("weight", 0, 1, ren(prefix))]       # transposed: see _layout
    cell, out = CELLS[kind], []
    for suffix, dp in layer_prefixes(module, prefix):
        for t in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if module.bias else ()):
            names = cell[t]
            for c, n in enumerate(names):
                summed = t.startswith("bias") and n in cell["bias_ih"] and n in cell["bias_hh"]
                out.append(Entry(t + suffix, c, len(names), ren(_join(dp, n)), summed,
                                 first=(t == "bias_ih")))
    return out


def _bias_names(module, prefix, rename) -> set:
    """The seqgraph biases of a bias-free module (they must stay zero): an RNN's, or the
    bias a bias-free Linear is given a name for (`("Wo", "bo")`)."""
    kind, rename = _kind(module), dict(rename or {})
    if kind == "Linear":
        b = None if isinstance(prefix, str) else tuple(prefix)[1]
        return {rename.get(b, b)} if module.bias is None and b is not None else set()
    if kind == "Embedding" or module.bias:
        return set()
    cell = CELLS[kind]
    return {rename.get(_join(dp, n), _join(dp, n))
            for _, dp in layer_prefixes(module, prefix)
            for n in set(cell["bias_ih"]) | set(cell["bias_hh"])}


def _check_cell(module, model, prefix, rename):
    """An nn.RNN's nonlinearity must be the model's: tanh for rnn, relu for relu_rnn."""
    kind = _kind(module)
    if kind not in ("RNN_TANH", "RNN_RELU") or rename:
        return
    from .graph.folded import Apply
    from .ops import Op
    want = Op.TANH if kind == "RNN_TANH" else Op.RELU
    for _, dp in layer_prefixes(module, prefix):
        v = model.graph.var_map.get(dp)
        if v is None or len(v.cases) != 1 or not isinstance(v.cases[0].expr, Apply):
            continue
        op = v.cases[0].expr.op
        if op in (Op.TANH, Op.RELU) and op is not want:
            raise ValueError(f"'{dp}' applies {op.value}, but the torch module is "
                             f"nn.RNN(nonlinearity='{'tanh' if want is Op.TANH else 'relu'}')")


def _tensors(module) -> dict:
    return dict(module.named_parameters())


def _layout(kind, arr):
    """A torch tensor as seqgraph lays it out: an Embedding's [V, D] weight is [D, V]."""
    return arr.T if kind == "Embedding" else arr


def from_torch(module, model, prefix="", rename=None) -> list:
    """Copy `module`'s weights into `model.params` (in the model's dtype). Returns the
    seqgraph names written."""
    kind = _kind(module)
    _check_cell(module, model, prefix, rename)
    tensors = {k: t.detach().cpu().double().numpy() for k, t in _tensors(module).items()}
    new = {}
    for e in mapping(module, prefix, rename):
        arr = _layout(kind, tensors[e.torch_name])
        part = np.split(arr, e.chunks, axis=0)[e.chunk] if e.chunks > 1 else arr
        new[e.name] = new[e.name] + part if (e.summed and e.name in new) else part
    for b in _bias_names(module, prefix, rename):
        if b in model.params:
            new[b] = np.zeros(model.params[b].shape)
    for n, arr in new.items():
        if n not in model.params:
            raise KeyError(f"the model has no parameter '{n}' (prefix {prefix!r}); its "
                           f"parameters: {', '.join(sorted(model.params))}")
        if model.params[n].shape != arr.shape:
            raise ValueError(f"'{n}' is {model.params[n].shape} in the model, "
                             f"{arr.shape} from {type(module).__name__}")
    for n, arr in new.items():
        model.params[n] = np.ascontiguousarray(arr, dtype=model.dtype)
    return sorted(new)


def _torch_arrays(module, values: dict, prefix, rename, split: bool) -> dict:
    """{torch name: ndarray} assembled from seqgraph-named `values`. A summed bias goes
    whole to bias_ih and as zeros to bias_hh when `split` (weights), whole to both when
    not (gradients: d loss / d bias_ih = d loss / d bias_hh = d loss / d b)."""
    kind = _kind(module)
    parts: dict = {}
    for e in mapping(module, prefix, rename):
        if e.name not in values:
            raise KeyError(f"no seqgraph parameter '{e.name}' for {e.torch_name} (prefix "
                           f"{prefix!r}); have: {', '.join(sorted(values))}")
        v = np.asarray(values[e.name], dtype=np.float64)
        if e.summed and split and not e.first:
            v = np.zeros_like(v)
        parts.setdefault(e.torch_name, [None] * e.chunks)[e.chunk] = v
    out = {}
    for name, ps in parts.items():
        arr = np.concatenate(ps, axis=0) if len(ps) > 1 else ps[0]
        out[name] = _layout(kind, arr)
    return out


def to_torch(model, module, prefix="", rename=None) -> list:
    """Copy `model.params` into `module`'s tensors (in the module's dtype). A seqgraph bias
    that PyTorch splits in two goes to `bias_ih`, with zeros in `bias_hh`. Returns the
    torch names written."""
    torch = _torch()
    _check_cell(module, model, prefix, rename)
    for b in _bias_names(module, prefix, rename):
        if b in model.params and np.any(model.params[b]):
            raise ValueError(f"the module has no biases but '{b}' is not zero")
    arrays = _torch_arrays(module, model.params, prefix, rename, split=True)
    tensors = _tensors(module)
    for name, arr in arrays.items():
        t = tensors[name]
        if tuple(t.shape) != arr.shape:
            raise ValueError(f"{name} is {tuple(t.shape)} in the module, {arr.shape} "
                             "from the model")
    with torch.no_grad():
        for name, arr in arrays.items():
            t = tensors[name]
            t.copy_(torch.as_tensor(np.ascontiguousarray(arr), dtype=t.dtype, device=t.device))
    return sorted(arrays)


def grads_to_torch(grads: dict, module, prefix="", rename=None) -> dict:
    """seqgraph gradients (keyed like model.params) as {torch name: ndarray}, comparable
    with `module`'s `.grad` fields."""
    return _torch_arrays(module, grads, prefix, rename, split=False)
