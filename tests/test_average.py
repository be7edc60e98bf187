"""The train key `average = d`: an exponential moving average of every parameter with
TensorFlow's warm-up, d_t = min(d, (1 + t) / (10 + t)), started from the initial
parameters. Checked against a hand computation from an independent record of every
update of a tiny run; validation and best.npz see the averages, checkpoint.npz keeps the
raw parameters and the averages, and resume stays bit-identical. The runs skip the plots,
so the file takes seconds."""
import json

import numpy as np
import pytest

import seqgraph.train.trees as trees_mod
from seqgraph.cli import main
from seqgraph.errors import UsageError
from seqgraph.train import optim
from seqgraph.train.config import make_config, parse_sets

from conftest import TINY_LM, TREE_SPEC, npz_meta, train_quiet, tree_run_spec

# 12 training trees in batches of 2: 6 updates an epoch, 18 in all; float64 so that the
# hand computation below agrees to rounding
SPEC = TREE_SPEC.replace('valid = trees("train.txt")', 'valid = trees("valid.txt")').replace(
    "epochs = 3", "epochs = 3\n  seed = 1\n  dtype = float64\n  select = all")
STEPS_PER_EPOCH = 6
# d = 0.6: the warm-up (1 + t) / (10 + t) is below 0.6 for t <= 12 and above from t = 13,
# so both branches of the min are taken within the 18 updates
AVG = ["--set", "average=0.6"]


pytestmark = pytest.mark.usefixtures("no_plots")
train, meta = train_quiet, npz_meta


@pytest.fixture
def spec(tmp_path):
    return tree_run_spec(tmp_path, SPEC)


def arrays(path, prefix="") -> dict:
    """The parameters of a checkpoint (prefix "") or its averages ("__average__/")."""
    with np.load(path) as z:
        if prefix:
            return {k[len(prefix):]: z[k] for k in z.files if k.startswith(prefix)}
        return {k: z[k] for k in z.files if not k.startswith("__")}


def hand_average(seen: list, d: float) -> list:
    """avg_0 = p_0; avg_{t+1} = d_t avg_t + (1 - d_t) p_{t+1}, d_t = min(d, (1+t)/(10+t)),
    written as the definition (not as the trainer's in-place form)."""
    avg = {k: v.copy() for k, v in seen[0].items()}
    out = [avg]
    for t, p in enumerate(seen[1:]):
        dt = min(d, (1 + t) / (10 + t))
        avg = {k: dt * avg[k] + (1 - dt) * p[k] for k in avg}
        out.append(avg)
    return out


@pytest.fixture
def record(monkeypatch):
    """An independent record of a run: the parameters before the first update and after
    every update (from the optimiser), and the parameters each validation pass scored."""
    rec = {"params": [], "scored": []}
    step, score = optim.Adagrad.step, trees_mod.TreeKind.score

    def wrapped_step(self, params, *a, **k):
        if not rec["params"]:
            rec["params"].append({n: p.copy() for n, p in params.items()})
        step(self, params, *a, **k)
        rec["params"].append({n: p.copy() for n, p in params.items()})

    def wrapped_score(self, model, valid):
        s = score(self, model, valid)
        rec["scored"].append((s.as_dict(), {n: p.copy() for n, p in model.params.items()}))
        return s
    monkeypatch.setattr(optim.Adagrad, "step", wrapped_step)
    monkeypatch.setattr(trees_mod.TreeKind, "score", wrapped_score)
    return rec


def close(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(np.allclose(a[k], b[k], rtol=1e-12, atol=1e-14)
                                    for k in a)


# ---------------------------------------------------------------------- the mathematics
def test_the_average_is_the_hand_computed_one_with_warm_up(spec, tmp_path, record):
    out = tmp_path / "a"
    assert train(spec, out, *AVG) == 0
    seen = record["params"]
    assert len(seen) == 3 * STEPS_PER_EPOCH + 1
    hand = hand_average(seen, 0.6)
    ck = out / "checkpoint.npz"
    assert close(arrays(ck, "__average__/"), hand[-1])
    # the top-level arrays are the raw parameters, which differ from their average
    raw = arrays(ck)
    assert all(np.array_equal(raw[k], seen[-1][k]) for k in raw)
    assert not close(hand[-1], seen[-1])
    # without the warm-up (d_t = d throughout) the average would differ
    plain = {k: v.copy() for k, v in seen[0].items()}
    for p in seen[1:]:
        plain = {k: 0.6 * plain[k] + 0.4 * p[k] for k in plain}
    assert not close(arrays(ck, "__average__/"), plain)


def test_averaging_does_not_change_training(spec, tmp_path):
    assert train(spec, tmp_path / "a", *AVG) == 0
    assert train(spec, tmp_path / "b") == 0
    pa, pb = arrays(tmp_path / "a" / "checkpoint.npz"), arrays(tmp_path / "b" / "checkpoint.npz")
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert arrays(tmp_path / "b" / "checkpoint.npz", "__average__/") == {}


def test_validation_and_best_npz_see_the_averages(spec, tmp_path, record):
    out = tmp_path / "a"
    assert train(spec, out, *AVG) == 0
    hand = hand_average(record["params"], 0.6)
    scored = record["scored"]
    assert len(scored) == 3
    for e, (_, p) in enumerate(scored):            # each epoch's pass: its averages
        assert close(p, hand[(e + 1) * STEPS_PER_EPOCH])
    fine_all = [s["fine_all"] for s, _ in scored]
    b = meta(out / "best.npz")["best"]
    assert b["epoch"] == int(np.argmax(fine_all)) + 1 and b["average"] == 0.6
    assert close(arrays(out / "best.npz"), hand[b["epoch"] * STEPS_PER_EPOCH])


def test_keep_all_keeps_each_epochs_averages(spec, tmp_path, record):
    """keep = all with average: each epoch's file holds what that epoch validated."""
    out = tmp_path / "a"
    assert train(spec, out, *AVG, "--set", "keep=all") == 0
    hand = hand_average(record["params"], 0.6)
    for e in range(1, 4):
        f = out / "epochs" / f"epoch_{e:03d}.npz"
        assert close(arrays(f), hand[e * STEPS_PER_EPOCH])
        assert meta(f)["epoch"]["average"] == 0.6


def test_eval_reports_the_validated_scores(spec, tmp_path, record, capsys):
    out = tmp_path / "a"
    assert train(spec, out, *AVG) == 0
    capsys.readouterr()
    ev = lambda *a: main(["eval", str(spec), "--executor", "interp", "--json", *a])
    # best.npz: the validated (averaged) parameters of the best epoch
    assert ev("--checkpoint", str(out / "best.npz")) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["fine_all"] == max(s["fine_all"] for s, _ in record["scored"])
    # checkpoint.npz --average: the last epoch's averages; without it the raw parameters
    assert ev("--checkpoint", str(out), "--average") == 0
    last = json.loads(capsys.readouterr().out)
    assert last["fine_all"] == record["scored"][-1][0]["fine_all"]
    assert last["loss"] == pytest.approx(record["scored"][-1][0]["loss"], rel=1e-9)
    assert ev("--checkpoint", str(out)) == 0
    raw = json.loads(capsys.readouterr().out)
    assert raw["loss"] != pytest.approx(last["loss"], rel=1e-9)


# ------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("steps", ["8", "12"])       # mid epoch 2; epoch 2's end
def test_resume_with_average_is_bit_identical(spec, tmp_path, steps):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(spec, a, *AVG) == 0
    assert train(spec, b, *AVG, "--steps", steps) == 0
    assert main(["train", str(spec), "--resume", str(b), "--quiet", "--executor", "interp",
                 *AVG]) == 0
    for name in ("checkpoint.npz", "best.npz"):
        with np.load(a / name) as za, np.load(b / name) as zb:
            assert set(za.files) == set(zb.files)
            assert any(k.startswith("__average__/") for k in za.files) == \
                (name == "checkpoint.npz")
            for k in za.files:
                if not k.startswith("__meta"):
                    assert np.array_equal(za[k], zb[k]), (steps, name, k)
    assert meta(a / "best.npz")["best"] == meta(b / "best.npz")["best"]


def test_a_sequence_model_averages_and_resumes_exactly(tmp_path):
    (tmp_path / "tiny.txt").write_text("the cat sat on the mat and the dog ran\n" * 20)
    lm = tmp_path / "lm.sg"
    lm.write_text(TINY_LM)
    sets = ["--set", "average=0.9", "--set", "epochs=3", "--set", "select=loss"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(lm, a, *sets) == 0
    assert train(lm, b, *sets, "--steps", "4") == 0          # mid epoch 1, state carried
    assert main(["train", str(lm), "--resume", str(b), "--quiet", "--executor", "interp",
                 *sets]) == 0
    for name in ("checkpoint.npz", "best.npz"):
        with np.load(a / name) as za, np.load(b / name) as zb:
            assert set(za.files) == set(zb.files)
            for k in za.files:
                if not k.startswith("__meta"):
                    assert np.array_equal(za[k], zb[k]), (name, k)
    avg, raw = arrays(a / "checkpoint.npz", "__average__/"), arrays(a / "checkpoint.npz")
    assert set(avg) == set(raw) and not all(np.array_equal(avg[k], raw[k]) for k in raw)


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("value", [-0.1, 1, 1.5, "x", True, float("nan")])
def test_invalid_decays_are_errors(value):
    with pytest.raises(UsageError, match=r"average must be a decay in \[0, 1\)"):
        make_config({"average": value})


def test_average_from_the_command_line_and_its_errors(spec, tmp_path, capsys):
    assert make_config({}).average == 0
    assert make_config({}, parse_sets(["average=0.999"])).average == 0.999
    assert train(spec, tmp_path / "x", "--set", "average=1") == 2
    assert "average must be a decay in [0, 1)" in capsys.readouterr().err
    assert train(spec, tmp_path / "x", "--set", "averge=0.9") == 2
    assert "did you mean 'average'" in capsys.readouterr().err
    # a run resumed must keep averaging (or not)
    b, c = tmp_path / "b", tmp_path / "c"
    assert train(spec, b, "--steps", "8") == 0
    assert main(["train", str(spec), "--resume", str(b), "--quiet", "--executor", "interp",
                 *AVG]) == 2
    assert "did not average the parameters; resume with the same average" in \
        capsys.readouterr().err
    assert train(spec, c, *AVG, "--steps", "8") == 0
    assert main(["train", str(spec), "--resume", str(c), "--quiet", "--executor",
                 "interp"]) == 2
    assert "averaged the parameters; resume with the same average" in capsys.readouterr().err
    # eval --average of a checkpoint without averages
    assert main(["eval", str(spec), "--checkpoint", str(b), "--average", "--executor",
                 "interp"]) == 2
    assert "holds no averaged parameters" in capsys.readouterr().err
    # --average of a best.npz of an averaged run: the averages are its parameters
    d = tmp_path / "d"
    assert train(spec, d, *AVG, "--steps", "8", "--set", "select=loss") == 0
    assert main(["eval", str(spec), "--checkpoint", str(d / "best.npz"), "--average",
                 "--executor", "interp"]) == 2
    assert "are the moving averages already (the run was trained with average = 0.6): " \
        "leave --average out" in capsys.readouterr().err
