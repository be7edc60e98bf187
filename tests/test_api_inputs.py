"""What the Python API takes from a user (review 32): parameters assigned in another
layout, dtype or shape, padded vector data, lengths, carries, dims and dtypes. Each is
either made right or refused with the reason, in both executors; never a wrong number,
a segfault or a traceback from inside."""
import numpy as np
import pytest

import seqgraph
from seqgraph import UsageError

from conftest import ROOT

SPECS = ROOT / "specs"
EXECUTORS = ["interp", "compiled"]


def lm(executor, dtype="float64"):
    return seqgraph.load(str(SPECS / "elman.sg"), dims={"V": 5}, dtype=dtype,
                         executor=executor)


def ids(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 5, (3, 6)), rng.integers(0, 5, (3, 6))


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("how", [np.asfortranarray,
                                 lambda a: np.repeat(a, 2, axis=-1)[..., ::2],
                                 lambda a: a.astype(np.float32),
                                 lambda a: np.round(a * 4).astype(np.int64)],
                         ids=["fortran", "strided", "float32", "int"])
def test_parameters_assigned_in_another_layout_or_dtype_give_the_same_numbers(executor,
                                                                              how):
    """The compiled executor read a parameter's memory as C-ordered float64: a
    transposed or strided array or one of another dtype gave wrong numbers (a float64
    one in a float32 model, a segfault); integer parameters gave integer gradients."""
    x, y = ids()
    ref, m = lm("interp"), lm(executor)
    for name in m.params:
        m.params[name] = how(ref.params[name])
        ref.params[name] = np.array(m.params[name], dtype=np.float64)
    want, got = ref.run({"x": x}, {"y": y}, grads=True), m.run({"x": x}, {"y": y}, grads=True)
    assert got.loss == pytest.approx(want.loss, rel=1e-6)
    for name, g in want.grads.items():
        assert got.grads[name].dtype == np.float64
        np.testing.assert_allclose(got.grads[name], g, rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_float64_weights_load_into_a_float32_model(executor):
    x, y = ids()
    m, ref = lm(executor, "float32"), lm("interp")
    m.params.update({k: v.astype(np.float64) for k, v in ref.params.items()})
    assert m.run({"x": x}, {"y": y}).loss == pytest.approx(ref.run({"x": x}, {"y": y}).loss,
                                                           rel=1e-5)
    assert all(p.dtype == np.float32 for p in m.params.values())


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_parameter_of_another_shape_is_refused(executor):
    x, y = ids()
    m = lm(executor)
    m.params["Wo"] = m.params["Wo"].T.copy()
    with pytest.raises(UsageError, match=r"params\['Wo'\] has shape \[16, 5\]; the model's "
                                         r"'Wo' is \[5, 16\]"):
        m.run({"x": x}, {"y": y})
    m.params["Wo"] = "weights"
    with pytest.raises(UsageError, match=r"params\['Wo'\] must be an array of numbers"):
        m.run({"x": x}, {"y": y})


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("value", [np.nan, 1e200])
def test_what_padding_holds_changes_nothing(executor, value):
    """Padded steps of vector data were masked by a product with 0: a NaN there (padded
    time series) made the loss and every gradient NaN."""
    m = seqgraph.load(str(SPECS / "dynamical.sg"), dtype="float64", executor=executor)
    rng = np.random.default_rng(0)
    x, y, lengths = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 2)), {"t": [4, 2]}
    ref = m.run({"x": x}, {"y": y}, grads=True, lengths=lengths)
    x[1, 2:], y[1, 2:] = value, value
    res = m.run({"x": x}, {"y": y}, grads=True, lengths=lengths)
    assert res.loss == ref.loss
    for name, g in ref.grads.items():
        np.testing.assert_array_equal(res.grads[name], g, err_msg=name)
    assert np.isnan(x[1, 2, 0]) == np.isnan(value)        # the caller's arrays untouched


@pytest.mark.parametrize("executor", EXECUTORS)
def test_bad_batches_are_refused_with_the_reason(executor):
    m = seqgraph.load(str(SPECS / "dynamical.sg"), dtype="float64", executor=executor)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 2))
    cases = [
        (({"x": x}, {"y": y[..., :1]}), {}, r"'y' holds vectors of 1 numbers; 'y' is a vec\(2\)"),
        (({"x": x[:0]}, {"y": y[:0]}), {}, r"the batch has no examples \(B = 0\)"),
        (({"x": x}, {"y": y}), {"lengths": {"T": [4, 2]}},
         r"lengths names 'T', which is no index of model 'dynamical' \(did you mean 't'\?\)"),
        (({"x": x}, {"y": y}), {"lengths": {"t": None}}, r"lengths\['t'\] must be a whole"),
        (({"x": x}, {"y": y}), {"lengths": {"t": [4, 2.5]}}, r"lengths\['t'\] must be a whole"),
        (({"x": x}, {"y": y}), {"lengths": np.array([4, 2])}, r"lengths must be a dict"),
        (([x], {"y": y}), {}, r"inputs must be a dict by name"),
        (({"x": x, "y": y}, {}), {}, r"'y' is a target of model 'dynamical': give it in "
                                     r"targets, not in inputs"),
        (({"x": [[[1, 2, 3]], [[1, 2]]]}, {"y": y}), {}, r"'x' must be one rectangular"),
        (({"x": [[[1, 2, 3]], [[1, 2]]]}, {"y": y}), {"lengths": {"t": [1, 1]}},
         r"'x' must be one rectangular"),                     # review 33: a traceback
        (({"x": [[[1, 2, 3]], [[1, 2]]]}, {"y": y}), {"carry": {"s": [np.zeros((2, 16))]}},
         r"'x' must be one rectangular"),
        (({"x": x}, {"y": y}), {"carry": {"s": [np.zeros((3, 16))]}},
         r"carry\['s'\] holds an array of shape \[3, 16\]; this batch carries \[2, 16\]"),
        (({"x": x}, {"y": y}), {"carry": {"h": [np.zeros((2, 16))]}},
         r"carry names 'h', which model 'dynamical' does not carry \(it carries: s\)"),
    ]
    for (ins, tgs), kw, message in cases:
        with pytest.raises(UsageError, match=message):
            m.run(ins, tgs, **kw)


def test_forward_takes_the_targets_a_model_reads_back():
    """forward() could not run a model that reads its target back (6 gallery specs)."""
    m = seqgraph.load(str(SPECS / "seq2seq.sg"), dims={"Vx": 5, "Vy": 6})
    x, y = np.zeros((2, 3), int), np.ones((2, 4), int)
    values = m.forward({"x": x}, targets={"y": y})
    np.testing.assert_array_equal(values["o"], m.run({"x": x}, {"y": y}).values["o"])
    with pytest.raises(UsageError, match=r"forward\(\.\.\., targets=\.\.\.\)"):
        m.forward({"x": x})


def test_dims_and_dtypes_as_numpy_writes_them():
    spec = str(SPECS / "elman.sg")
    x = np.array([[0, 3, 4]])
    assert seqgraph.load(spec, dims={"V": x.max() + 1}).sizes["x"] == 5    # numpy's int
    for dtype in (np.float64, np.dtype("f8"), "f8", "float64"):
        assert seqgraph.load(spec, dims={"V": 5}, dtype=dtype).dtype == np.float64
    with pytest.raises(UsageError, match=r"dims\['V'\] must be a whole number >= 1, not '5'"):
        seqgraph.load(spec, dims={"V": "5"})
    with pytest.raises(UsageError, match=r"has no size 'v' \(did you mean 'V'\?\)"):
        seqgraph.load(spec, dims={"v": 5})
    for dtype in ("int32", None):
        with pytest.raises(UsageError, match="dtype must be float32 or float64"):
            seqgraph.load(spec, dims={"V": 5}, dtype=dtype)
    # a big-endian float64 is float64, in the machine's order (review 33: a KeyError)
    m = seqgraph.load(spec, dims={"V": 5}, dtype=">f8", executor="compiled")
    assert m.dtype == np.float64 and m.dtype.isnative
    assert np.isfinite(m.run({"x": x}, {"y": x}).loss)


def test_param_init_is_an_initialiser_by_name_or_with_its_scale():
    """`param_init="uniform"` was read as the tuple of its characters: xavier, unsaid."""
    spec = seqgraph.read_spec(str(SPECS / "elman.sg"))
    m = seqgraph.Model(spec, dims={"V": 5}, param_init="orthogonal")
    u = m.params["U"].astype(np.float64)
    np.testing.assert_allclose(u @ u.T, np.eye(16), atol=1e-5)
    m = seqgraph.Model(spec, dims={"V": 5}, param_init=("uniform", 0.01))
    assert np.abs(m.params["W"]).max() <= 0.01
    for bad in ("uniform", ("normal",), ("glorot", 1.0), ("uniform", -1.0)):
        with pytest.raises(UsageError, match="param_init must be an initialiser"):
            seqgraph.Model(spec, dims={"V": 5}, param_init=bad)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_carry_is_read_as_the_models_arrays_or_refused(executor):
    """A bare array as a carry value was read row by row as steps (a silent wrong loss);
    ids carried as lists or floats crashed the interpreter; a float64 carry made a
    float32 model's results float64 in one executor only (review 34)."""
    x, y = ids()
    jordan = seqgraph.load(str(SPECS / "jordan.sg"), dims={"V": 5, "K": 5}, dtype="float64",
                           executor=executor)
    first = jordan.run({"x": x}, {"y": y})
    want = jordan.run({"x": x}, {"y": y}, carry=first.carry).loss
    as_lists = {k: [np.asarray(a).tolist() for a in v] for k, v in first.carry.items()}
    as_floats = {k: [np.asarray(a, float) for a in v] for k, v in first.carry.items()}
    for carry in (as_lists, as_floats):
        assert jordan.run({"x": x}, {"y": y}, carry=carry).loss == want
    bare = {k: v[0] for k, v in first.carry.items()}
    with pytest.raises(UsageError, match=r"must be a list of arrays, the newest step first"):
        jordan.run({"x": x}, {"y": y}, carry=bare)
    m = lm(executor, "float32")
    carry = {k: [a.astype(np.float64) for a in v]
             for k, v in m.run({"x": x}, {"y": y}).carry.items()}
    res = m.run({"x": x}, {"y": y}, carry=carry, grads=True)
    assert res.grads["W"].dtype == res.values["h"].dtype == np.float32


@pytest.mark.parametrize("executor", EXECUTORS)
def test_scheduled_sampling_of_a_model_that_cannot_generate_is_refused(executor):
    """teacher < 1 feeds the model's own samples back: with a backward recurrence reading
    y[t-1] that is a cycle (a RuntimeError from inside, review 34); said as generation
    says it."""
    spec = seqgraph.read_spec("s.sg", "input x[t] : onehot(V)\ntarget y[t] : class(V)\n"
                              "param W, U, R, Wo, bo\n"
                              "h[t] : 3 = tanh(W @ x[t] + U @ h[t+1] + R @ y[t-1])\n"
                              "o[t] = Wo @ h[t] + bo\nloss xent(o[t], y[t])\n")
    m = seqgraph.Model(spec, dims={"V": 3}, dtype="float64", executor=executor)
    x, y = np.array([[0, 1, 2]]), np.array([[1, 2, 0]])
    with pytest.raises(UsageError, match=r"teacher = 0.5: scheduled sampling feeds the "
                                         r"model its own outputs.*h\[t\] reads h\[t\+1\]"):
        m.run({"x": x}, {"y": y}, teacher=0.5, rng=np.random.default_rng(0))
    assert np.isfinite(m.run({"x": x}, {"y": y}).loss)          # teacher = 1: fine
