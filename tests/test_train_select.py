"""The train block's `select` (which validation score best.npz keeps), `l2 = decay(...)`
(weight decay per parameter) and `adagrad(reset = k)` (accumulators zeroed every k
epochs): each checked against a hand computation or an independent record of a tiny run,
with resume still bit-identical. The runs skip the plots, so the file takes seconds."""

import numpy as np
import pytest

import seqgraph.train.trees as trees_mod
from seqgraph.cli import main
from seqgraph.errors import UsageError
from seqgraph.lang.ast import Call
from seqgraph.train.config import make_config, parse_sets
from seqgraph.train.optim import SGD, Adagrad, Adam, Decay, make_optimizer

from conftest import TINY_LM, TREE_SPEC, npz_meta, train_quiet, tree_run_spec

# the shared recursive net, validated on VALID_TREES, 6 epochs, seed 1
SPEC = TREE_SPEC.replace('valid = trees("train.txt")', 'valid = trees("valid.txt")').replace(
    "epochs = 3", "epochs = 6\n  seed = 1")
pytestmark = pytest.mark.usefixtures("no_plots")
train, meta = train_quiet, npz_meta


@pytest.fixture
def spec(tmp_path):
    return tree_run_spec(tmp_path, SPEC)


def params(path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files if not k.startswith("__")}


# ------------------------------------------------------------------------ select
@pytest.fixture
def recorded(monkeypatch):
    """Every validation pass of a run: its scores and a copy of the parameters scored."""
    seen = []
    score = trees_mod.TreeKind.score

    def record(self, model, valid):
        s = score(self, model, valid)
        seen.append((s.as_dict(), {k: v.copy() for k, v in model.params.items()}))
        return s
    monkeypatch.setattr(trees_mod.TreeKind, "score", record)
    return seen


@pytest.mark.parametrize("select, key, pick", [
    (None, "fine_root", np.argmax),         # the default: as before
    ("root", "fine_root", np.argmax),
    ("all", "fine_all", np.argmax),
    ("loss", "loss", np.argmin)])
def test_select_keeps_the_epoch_of_the_best_score(spec, tmp_path, recorded, select, key,
                                                   pick):
    out = tmp_path / "run"
    assert train(spec, out, *(["--set", f"select={select}"] if select else [])) == 0
    scores = [s[key] for s, _ in recorded]
    assert len(scores) == 6
    epoch = int(pick(scores))                   # the first of equal scores
    best = meta(out / "best.npz")["best"]
    assert best["epoch"] == epoch + 1
    assert best["select"] == (select or "root")
    assert best["metric"] == {"fine_root": "valid_fine_root", "fine_all": "valid_fine_all",
                              "loss": "valid_loss"}[key]
    assert best["value"] == pytest.approx(scores[epoch])
    assert best["valid"][key] == pytest.approx(scores[epoch])
    kept = params(out / "best.npz")
    for k, v in recorded[epoch][1].items():
        assert np.array_equal(kept[k], v), k


def test_the_three_selects_pick_different_epochs(spec, tmp_path, recorded):
    """The data above separates the rules (else the test before could not fail)."""
    assert train(spec, tmp_path / "run") == 0
    d = [s for s, _ in recorded]
    picks = (np.argmax([s["fine_root"] for s in d]), np.argmax([s["fine_all"] for s in d]),
             np.argmin([s["loss"] for s in d]))
    assert len(set(picks)) == 3, picks


def test_select_on_a_sequence_model(tmp_path, capsys):
    (tmp_path / "tiny.txt").write_text("the cat sat on the mat and the dog ran\n" * 20)
    lm = tmp_path / "lm.sg"
    lm.write_text(TINY_LM)
    assert train(lm, tmp_path / "a") == 0
    assert not (tmp_path / "a" / "best.npz").exists()      # as before: no best.npz
    assert train(lm, tmp_path / "b", "--set", "select=loss") == 0
    best = meta(tmp_path / "b" / "best.npz")["best"]
    assert (best["select"], best["metric"]) == ("loss", "valid_loss")
    assert best["valid"]["loss"] == best["value"]
    capsys.readouterr()
    assert main(["train", str(lm), "--out", str(tmp_path / "c"), "--quiet",
                 "--set", "select=all"]) == 2
    err = capsys.readouterr().err
    assert "select = all does not apply to a sequence model" in err and "loss" in err


def test_select_errors(spec, tmp_path, capsys):
    with pytest.raises(UsageError, match="did you mean 'root'"):
        make_config({"select": "rot"})
    with pytest.raises(UsageError, match="select must be one of root, all, loss"):
        make_config({"select": 3})
    assert make_config({}, parse_sets(["select=all"])).select == "all"
    assert make_config({}).select is None


def test_resume_with_select_is_exact_and_keeps_its_select(spec, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    sel = ["--set", "select=all"]
    assert train(spec, a, *sel) == 0
    assert train(spec, b, *sel, "--steps", "15") == 0      # mid epoch 3
    assert main(["train", str(spec), "--resume", str(b), "--quiet", "--executor", "interp",
                 *sel]) == 0
    pa, pb = params(a / "best.npz"), params(b / "best.npz")
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert meta(a / "best.npz")["best"] == meta(b / "best.npz")["best"]
    assert meta(a / "checkpoint.npz")["state"]["select"] == "all"
    c = tmp_path / "c"
    assert train(spec, c, *sel, "--steps", "15") == 0
    capsys.readouterr()
    assert main(["train", str(spec), "--resume", str(c), "--quiet", "--executor", "interp",
                 "--set", "select=loss"]) == 2
    assert "chosen by select = all; resume with the same select" in capsys.readouterr().err


# ------------------------------------------------------------------- l2 = decay(...)
def _problem():
    rng = np.random.default_rng(0)
    p = {"W": rng.normal(size=(3, 4)), "E": rng.normal(size=(2, 5)), "b": rng.normal(size=3),
         "c": rng.normal(size=2)}
    g = {k: rng.normal(size=v.shape) for k, v in p.items()}
    return p, g


def test_decay_per_parameter_is_one_hand_computed_sgd_step():
    p, g = _problem()
    lr = 0.5
    opt = SGD(lr, l2=Decay(0.1, {"E": 0.01, "b": 0.3}))
    q = {k: v.copy() for k, v in p.items()}
    opt.step(q, {k: v.copy() for k, v in g.items()})
    want = {"W": p["W"] - lr * (g["W"] + 0.1 * p["W"]),      # the default, a matrix
            "E": p["E"] - lr * (g["E"] + 0.01 * p["E"]),     # its own
            "b": p["b"] - lr * (g["b"] + 0.3 * p["b"]),      # a vector named: decays
            "c": p["c"] - lr * g["c"]}                       # a vector not named: not
    for k in p:
        np.testing.assert_allclose(q[k], want[k], rtol=1e-14, atol=1e-15, err_msg=k)
    # a plain number keeps its meaning: every matrix, no vector
    r = {k: v.copy() for k, v in p.items()}
    SGD(lr, l2=0.1).step(r, {k: v.copy() for k, v in g.items()})
    np.testing.assert_allclose(r["E"], p["E"] - lr * (g["E"] + 0.1 * p["E"]), rtol=1e-14)
    np.testing.assert_allclose(r["b"], p["b"] - lr * g["b"], rtol=1e-14)


@pytest.mark.parametrize("opt", [lambda d: Adagrad(0.1, l2=d), lambda d: Adam(0.01, l2=d),
                                 lambda d: SGD(0.1, l2=d)], ids=["adagrad", "adam", "sgd"])
def test_decay_in_sparse_updates_uses_the_parameters_own_value(opt):
    """The rows of an embedding (`update_rows`) decay with E's value, not the default."""
    rng = np.random.default_rng(1)
    E = rng.normal(size=(3, 8))
    cols = np.array([1, 4, 6])
    g = np.zeros_like(E)
    g[:, cols] = rng.normal(size=(3, 3))
    sparse, ref = {"E": E.copy()}, {"E": E[:, cols].copy()}
    opt(Decay(0.5, {"E": 0.02})).step(sparse, {"E": g.copy()}, rows={"E": (1, cols)})
    # the same rule, dense on the touched columns alone, with l2 = 0.02 for every matrix
    opt(0.02).step(ref, {"E": g[:, cols].copy()})
    np.testing.assert_allclose(sparse["E"][:, cols], ref["E"], rtol=1e-13)
    untouched = np.setdiff1d(np.arange(8), cols)
    assert np.array_equal(sparse["E"][:, untouched], E[:, untouched])
    other = {"E": E.copy()}
    opt(Decay(0.5, {})).step(other, {"E": g.copy()}, rows={"E": (1, cols)})
    assert not np.allclose(other["E"][:, cols], ref["E"])   # the default would differ


def test_decay_values_and_names_are_checked(spec, tmp_path, capsys):
    sets = parse_sets(["l2=decay(0.02, E=1e-4, T = 1e-3)"])
    cfg = make_config({}, sets)
    assert cfg.l2 == Decay(0.02, {"E": 1e-4, "T": 1e-3})
    assert cfg.as_dict()["l2"] == "decay(0.02, E=0.0001, T=0.001)"
    assert make_config({"l2": Call("decay", (), {"E": 0.5})}).l2 == Decay(0.0, {"E": 0.5})
    assert make_config({"l2": 0.02}).l2 == 0.02
    # a cell's parameter is named with its dot, as the model names it
    assert make_config({}, parse_sets(["l2=decay(0.02, enc.U = 1e-4)"])).l2 == \
        Decay(0.02, {"enc.U": 1e-4})
    make_optimizer(Call("sgd", (1.0,), {}), Decay(0.1, {"enc.U": 1}), {"enc.U": 0})
    for bad, msg in [("decya(0.1)", "did you mean 'decay'"),
                     ("decay(0.1, 0.2)", "one positional value"),
                     ("decay(-1)", "l2 must be a number >= 0"),
                     ("decay(0.1, E = -2)", "l2 of E must be a number >= 0"),
                     ('decay(0.1, E = "x")', "l2 of E must be a number")]:
        with pytest.raises(UsageError, match=msg):
            make_config({}, parse_sets([f"l2={bad}"]))
    with pytest.raises(UsageError, match="no parameter 'Ee'; did you mean 'E'"):
        make_optimizer(Call("sgd", (1.0,), {}), Decay(0.1, {"Ee": 1}), {"E": 0, "W": 0})
    capsys.readouterr()
    assert train(spec, tmp_path / "r", "--set", "l2=decay(0.02, W=1e-3, Wss=1)") == 2
    assert "no parameter 'Wss'; did you mean 'Ws'?" in capsys.readouterr().err


def test_decay_from_the_command_line_trains_and_is_kept(spec, tmp_path):
    out = tmp_path / "r"
    assert train(spec, out, "--set", "l2=decay(0.02, E=1e-4, b=0.5)", "--epochs", "1") == 0
    st = meta(out / "checkpoint.npz")["state"]
    assert st["config"]["l2"] == "decay(0.02, E=0.0001, b=0.5)"
    assert st["optimizer"]["hyper"]["l2"] == 0.02
    assert st["optimizer"]["hyper"]["l2_per"] == {"E": 1e-4, "b": 0.5}


# --------------------------------------------------------------- adagrad(reset = k)
def test_adagrad_reset_zeroes_the_accumulators_every_k_epochs():
    p = {"W": np.ones((2, 2))}
    opt = Adagrad(0.1, reset=2)
    opt.step(p, {"W": np.full((2, 2), 3.0)})
    r = opt.state["r"]["W"]
    opt.end_epoch(1)
    assert (r == 9).all()
    opt.end_epoch(2)
    assert opt.state["r"]["W"] is r and (r == 0).all()      # in place
    # after a reset the next step is a first step again: lr * g / (|g| + eps)
    before = p["W"].copy()
    opt.step(p, {"W": np.full((2, 2), 5.0)})
    np.testing.assert_allclose(p["W"], before - 0.1 * 5 / (5 + 1e-8), rtol=1e-14)
    assert Adagrad(0.1).reset == 0 and Adagrad(0.1).hyper()["reset"] == 0
    for bad in (-1, 1.5, True, "x"):
        with pytest.raises(UsageError, match="reset must be a whole number"):
            Adagrad(0.1, reset=bad)
    with pytest.raises(UsageError, match="reset"):
        make_optimizer(Call("adam", (), {"reset": 1}))       # AdaGrad's alone


@pytest.mark.parametrize("reset, zero_after", [(0, ()), (1, (1, 2)), (2, (2,))])
def test_adagrad_reset_in_training(spec, tmp_path, reset, zero_after):
    """The checkpoint written at the end of epoch e holds zeroed accumulators exactly
    when e is a multiple of `reset`."""
    for epochs in (1, 2):
        out = tmp_path / f"r{reset}_{epochs}"
        assert train(spec, out, "--set", f"optimizer=adagrad(lr=0.1, reset={reset})",
                     "--epochs", str(epochs)) == 0
        with np.load(out / "checkpoint.npz") as z:
            acc = {k: z[k] for k in z.files if k.startswith("__optim__/r/")}
        assert set(acc) >= {"__optim__/r/W", "__optim__/r/E"}
        zero = all(not a.any() for a in acc.values())
        assert zero == (epochs in zero_after), (reset, epochs)
        assert meta(out / "checkpoint.npz")["state"]["optimizer"]["hyper"]["reset"] == reset


def test_resume_with_reset_and_decay_is_bit_identical(spec, tmp_path):
    """Stopped mid-epoch 2 (after a reset) and at an epoch's end, then resumed: the
    arrays of a run that never stopped (parameters, accumulators, best.npz)."""
    sets = ["--set", "optimizer=adagrad(lr=0.1, reset=1)",
            "--set", "l2=decay(0.02, E=1e-3, b=0.1)", "--set", "select=loss"]
    a = tmp_path / "a"
    assert train(spec, a, *sets) == 0
    for steps in ("8", "12"):
        b = tmp_path / f"b{steps}"
        assert train(spec, b, *sets, "--steps", steps) == 0
        assert main(["train", str(spec), "--resume", str(b), "--quiet", "--executor",
                     "interp", *sets]) == 0
        with np.load(a / "checkpoint.npz") as za, np.load(b / "checkpoint.npz") as zb:
            assert set(za.files) == set(zb.files)
            for k in za.files:
                if not k.startswith("__meta"):
                    assert np.array_equal(za[k], zb[k]), (steps, k)
        pa, pb = params(a / "best.npz"), params(b / "best.npz")
        assert all(np.array_equal(pa[k], pb[k]) for k in pa)
        assert meta(a / "best.npz")["best"] == meta(b / "best.npz")["best"]


# ------------------------------------------------------------- keep = all, per tree
def test_keep_all_keeps_every_epochs_parameters(spec, tmp_path, recorded):
    out = tmp_path / "run"
    assert train(spec, out, "--set", "keep=all") == 0
    files = sorted((out / "epochs").iterdir())
    assert [f.name for f in files] == [f"epoch_{e:03d}.npz" for e in range(1, 7)]
    for f, (scores, scored) in zip(files, recorded, strict=True):
        m = meta(f)["epoch"]
        assert m["epoch"] == int(f.stem[-3:]) and m["valid"]["fine_all"] == scores["fine_all"]
        kept = params(f)
        assert all(np.array_equal(kept[k], scored[k]) for k in scored)
    last, final = params(files[-1]), params(out / "checkpoint.npz")
    assert all(np.array_equal(last[k], final[k]) for k in last)
    assert not (tmp_path / "plain" / "epochs").exists() and \
        train(spec, tmp_path / "plain") == 0 and not (tmp_path / "plain" / "epochs").exists()


def test_keep_must_be_best_or_all():
    with pytest.raises(UsageError, match="keep must be best or all, not 'every'"):
        make_config({"keep": "every"})


def test_eval_per_example_writes_each_trees_counts(spec, tmp_path, capsys):
    """A row per tree, in the file's order; its sums are the totals eval prints."""
    import json
    out = tmp_path / "run"
    assert train(spec, out) == 0
    capsys.readouterr()
    csv = tmp_path / "trees.csv"
    assert main(["eval", str(spec), "--checkpoint", str(out / "best.npz"), "--json",
                 "--per-example", str(csv)]) == 0
    d = json.loads(capsys.readouterr().out)
    lines = csv.read_text().splitlines()
    assert lines[0] == "tree,nodes,correct,root_label,root_pred,root_correct,nll"
    rows = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
    assert rows.shape == (7, 7) and list(rows[:, 0]) == list(range(1, 8))
    assert list(rows[:, 3]) == [3, 1, 4, 2, 1, 3, 0]           # VALID_TREES' root labels
    assert rows[:, 1].sum() == d["nodes"] and rows[:, 2].sum() == round(d["fine_all"] * d["nodes"])
    assert rows[:, 5].sum() == round(d["fine_root"] * 7)
    assert (rows[:, 5] == (rows[:, 3] == rows[:, 4])).all()
    assert rows[:, 6].sum() / d["nodes"] == pytest.approx(d["loss"], rel=1e-5)


def test_a_tree_runs_loss_plot_is_per_node(spec, tmp_path, monkeypatch):
    from seqgraph.train import metrics
    seen = []
    monkeypatch.setattr(metrics.MetricsLog, "plot",
                        lambda self, wait=True: seen.append(self.ylabel))
    assert train(spec, tmp_path / "run", "--epochs", "1") == 0
    assert seen and set(seen) == {"loss per node (nats)"}


TIE = """\
model tnet
tree n
dim H = 12
input  w[n] : onehot(V)
target y[n] : class(5)
param E, W, b, Ws, bs
param T init normal(0.05)
h[n] : H = dropout(tanh(E @ w[n]), 0.2)    if leaf
h[n] : H = tanh(bilinear(T, h[n.left], h[n.right])
                + W @ dropout([h[n.left]; h[n.right]], 0.3) + b)   otherwise
o[n] = Ws @ h[n] + bs
loss 0.5 * xent(o[n], y[n])
loss 2 * xent(o[root], y[root])
train {
  data = trees("tie_trees_train.txt")
  valid = trees("tie_trees_valid.txt")
  optimizer = adagrad(lr = 0.1)
  batch = 5
  epochs = 3
  dtype = float64
}
"""


def test_a_stop_mid_epoch_does_not_compete_for_best_npz(tmp_path, capsys):
    """Review 22: the validation where --steps stops a run (mid-epoch) wrote best.npz
    when it tied the later epochs, so a resumed run kept another best.npz than one never
    stopped. Now it writes one only while no epoch has been validated."""
    from pathlib import Path
    data = Path(__file__).parent / "data"
    for name in ("tie_trees_train.txt", "tie_trees_valid.txt"):
        (tmp_path / name).write_text((data / name).read_text())
    spec = tmp_path / "tie.sg"
    spec.write_text(TIE)
    run = lambda *a: main(["train", str(spec), "--quiet", "--executor", "interp", *a])
    assert run("--out", str(tmp_path / "a")) == 0
    assert run("--out", str(tmp_path / "b"), "--steps", "4") == 0
    assert meta(tmp_path / "b" / "best.npz")["best"]["step"] == 4     # a short run has one
    # ... which its stop line names, and which a resume with another select may not keep
    assert main(["train", str(spec), "--out", str(tmp_path / "c"), "--steps", "4",
                 "--executor", "interp"]) == 0
    assert f"; best {tmp_path / 'c' / 'best.npz'} (valid_fine_root " in \
        capsys.readouterr().err
    assert run("--resume", str(tmp_path / "c"), "--set", "select=all") == 2
    assert "best.npz was chosen by select = root; resume with the same select" in \
        capsys.readouterr().err
    assert run("--resume", str(tmp_path / "b")) == 0
    a, b = tmp_path / "a" / "best.npz", tmp_path / "b" / "best.npz"
    assert meta(a)["best"] == meta(b)["best"] and meta(a)["best"]["step"] == 10
    pa, pb = params(a), params(b)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
