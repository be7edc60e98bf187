"""`seqgraph eval` on example data (accuracy, exact match, error rates, mse and the
baselines), the greedy decoder, and gradient monitoring in training (metrics.csv,
warnings, grad_norm.png)."""
import json
import math
import sys

import numpy as np
import pytest

import seqgraph
from seqgraph.cli import main
from seqgraph.train import evaluate
from seqgraph.train.config import make_config
from seqgraph.train.data import load_dataset
from seqgraph.train.evaluate import decode_metrics, edit_distance, greedy_decode
from seqgraph.train.metrics import GradMonitor, MetricsLog
from seqgraph.train.metrics import draw as metrics_draw

from conftest import TINY_LM, csv_rows
from test_seq_data import CLASSIFY, S2S, SERIES, TAGGER, make_data, spec_at, write


@pytest.fixture
def data(tmp_path):
    make_data(tmp_path, n=60)
    return tmp_path


# ---------------------------------------------------------------------- edit distance
@pytest.mark.parametrize("a, b, d", [
    ("", "", 0), ("abc", "abc", 0), ("abc", "", 3), ("", "ab", 2), ("kitten", "sitting", 3),
    ("flaw", "lawn", 2), ([1, 2, 3], [1, 3], 1), ("ab", "ba", 2)])
def test_edit_distance(a, b, d):
    assert edit_distance(a, b) == d == edit_distance(b, a)


# -------------------------------------------------------------------- greedy decoding
def _s2s(d, seed=0):
    spec = spec_at(d, "m.sg", S2S)
    cfg = make_config(spec.train, {}, d)
    ds = load_dataset(spec.graph, cfg)
    m = seqgraph.Model(spec, dims=ds.binding.dims, dtype="float64", executor="interp",
                       start_ids=ds.binding.start_ids)
    rng = np.random.default_rng(seed)
    for k, w in m.params.items():
        m.params[k] = rng.normal(scale=0.8, size=w.shape)
    return spec, m, ds


def test_greedy_decoding_is_the_argmax_of_a_teacher_forced_run_on_its_own_output(data):
    """Feeding the decoded tokens back as targets must reproduce them as the argmax at
    every step: the one-step-at-a-time decoder and the whole-sequence run agree."""
    spec, m, ds = _s2s(data)
    x = np.stack([ds.train.fields["x"][i] for i in range(3)
                  if len(ds.train.fields["x"][i]) == len(ds.train.fields["x"][0])])
    hyps = greedy_decode(m, spec.graph, ds.binding, {"x": x}, max_len=6, eos=None)
    assert all(len(h) == 6 for h in hyps)
    res = m.run({"x": x}, {"y": np.array(hyps)})
    np.testing.assert_array_equal(np.asarray(res.values["o"]).argmax(-1), np.array(hyps))


def test_greedy_decoding_stops_at_eos(data):
    spec, m, ds = _s2s(data)
    eos = ds.vocab.target.index["</s>"]
    m.params["bo"][:] = 0
    m.params["bo"][eos] = 100.0                 # </s> always wins
    x = ds.train.fields["x"][0][None]
    assert greedy_decode(m, spec.graph, ds.binding, {"x": x}, 10, eos) == [[]]


def test_decode_metrics_count_exact_matches_and_edit_distances(data, monkeypatch):
    spec, m, ds = _s2s(data)
    ex = ds.valid.subset(range(3))
    eos = ds.vocab.target.index["</s>"]
    refs = [[int(t) for t in r if t != eos] for r in ex.fields["y"]]
    wrong = refs[1][:-1] + [refs[1][-1] + 1]                     # one substitution
    hyps = {0: refs[0], 1: wrong, 2: refs[2] + [refs[2][0]]}     # one insertion

    def fake(model, graph, binding, inputs, max_len, eos, lengths=None, classes=None):
        rows = [next(i for i in range(3) if np.array_equal(ex.fields["x"][i], r))
                for r in inputs["x"]]
        return [hyps[i] for i in rows]
    monkeypatch.setattr(evaluate, "greedy_decode", fake)
    d = decode_metrics(m, spec.graph, ds.binding, ex, ds.vocab)
    assert d["exact_match"] == pytest.approx(1 / 3)
    assert d["sequence_error_rate"] == pytest.approx(2 / 3)
    assert d["error_rate"] == pytest.approx(2 / sum(map(len, refs)))


# ------------------------------------------------------------------- seqgraph eval
def _train_and_eval(d, text, capsys, *extra):
    spec = write(d, "m.sg", text)
    out = d / "run"
    assert main(["train", str(spec), "--out", str(out), "--executor", "interp",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(spec), "--checkpoint", str(out), "--executor", "interp",
                 "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_pairs_reports_token_accuracy_exact_match_and_error_rates(data, capsys):
    r = _train_and_eval(data, S2S.replace("epochs = 1", "epochs = 3"), capsys)
    assert r["kind"] == "pairs" and r["decoded"] == 12
    for k in ("loss", "perplexity", "accuracy", "exact_match", "error_rate",
              "sequence_error_rate"):
        assert isinstance(r[k], float), k
    assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
    assert r["sequence_error_rate"] == pytest.approx(1 - r["exact_match"])
    assert 0 <= r["accuracy"] <= 1 and r["error_rate"] >= 0


def test_eval_labeled_reports_accuracy_and_the_majority_baseline(data, capsys):
    r = _train_and_eval(data, CLASSIFY, capsys)
    assert r["kind"] == "labeled" and r["tokens"] == 12
    assert 0 <= r["accuracy"] <= 1 and 0 <= r["majority_accuracy"] <= 1
    assert r["majority_class"] in (0, 1)


def test_eval_tagged_reports_the_most_frequent_tag_baseline(data, capsys):
    write(data, "test.txt", "a/V b/C c/C\ne/V d/C\n")
    r = _train_and_eval(data, TAGGER, capsys, "--data", str(data / "test.txt"))
    assert r["tokens"] == 5
    assert r["most_frequent_tag_accuracy"] == 1.0     # every letter has one tag


def test_eval_of_a_tagger_reading_its_tags_back_reports_its_greedy_decoding(data, capsys):
    """Fed its true tags back (teacher forcing), a Jordan tagger's accuracy overstated
    what `sample` does, which feeds it its own (walk 14: 0.91 against 0.82): eval also
    decodes each sentence greedily and scores those tags, checked here against the
    sentences decoded one at a time."""
    spec = TAGGER.replace("h[t] : H = tanh(Wh @ x[t] + Uh @ h[t-1] + bh)",
                          "param R\nh[t] : H = tanh(Wh @ x[t] + Uh @ h[t-1] + R @ y[t-1] + bh)"
                          ).replace("Ug @ g[t+1]", "Ug @ g[t-1]")
    r = _train_and_eval(data, spec, capsys)
    assert r["kind"] == "tagged" and r["decoded"] > 0
    from seqgraph.cmd.eval import _config
    from seqgraph.train.session import restore
    s = restore(str(data / "m.sg"), str(data / "run"), "interp")
    ds = load_dataset(s.spec.graph, _config(s, str(data / "m.sg")), s.meta.get("dims"),
                      s.vocab)
    right = n = exact = 0
    for x, y in zip(ds.valid.fields["x"], ds.valid.fields["y"], strict=True):
        h = greedy_decode(s.model, s.spec.graph, s.binding, {"x": np.asarray([x])}, 50,
                          None, classes=len(s.vocab.target))[0]
        right += sum(int(a == b) for a, b in zip(h, y, strict=True))
        n, exact = n + len(y), exact + (list(h) == list(y))
    assert r["greedy_accuracy"] == pytest.approx(right / n)
    assert r["greedy_exact_match"] == pytest.approx(exact / len(ds.valid.fields["y"]))
    main(["eval", str(data / "m.sg"), "--checkpoint", str(data / "run"), "--executor",
          "interp"])
    out = capsys.readouterr().out
    assert "(the true tags fed back)" in out and "its own tags fed back, as sample does" in out


def test_eval_series_reports_mse_and_persistence(data, capsys):
    r = _train_and_eval(data, SERIES, capsys)
    assert r["kind"] == "series" and r["scaled"] is True
    assert r["mse"] > 0 and r["persistence_mse"] > 0
    # the loss is half the squared error summed over the target's components (one here)
    assert r["loss"] == pytest.approx(r["mse"] / 2, rel=1e-5)
    assert r["perplexity"] is None


def test_eval_text_output(data, capsys):
    spec = write(data, "m.sg", SERIES)
    main(["train", str(spec), "--out", str(data / "run"), "--executor", "interp", "--quiet"])
    capsys.readouterr()
    main(["eval", str(spec), "--checkpoint", str(data / "run"), "--executor", "interp"])
    out = capsys.readouterr().out
    # an mse loss is half a squared error, not a log-likelihood: no nats, no perplexity
    assert "per token" in out and "persistence mse" in out
    assert "nats" not in out and "perplexity" not in out


# -------------------------------------------------------------- gradient monitoring
def test_metrics_has_a_gradient_norm_column_per_parameter_and_a_plot(data):
    spec = write(data, "m.sg", CLASSIFY)
    out = data / "run"
    main(["train", str(spec), "--out", str(out), "--executor", "interp", "--quiet"])
    rows = csv_rows(out / "metrics.csv")
    cols = list(rows[0])
    assert [c for c in cols if c.startswith("grad_norm.")] == \
        ["grad_norm.W", "grad_norm.U", "grad_norm.b", "grad_norm.Wo", "grad_norm.bo"]
    for r in rows:
        if r["train_loss"]:
            per = [float(r[c]) for c in cols if c.startswith("grad_norm.")]
            assert float(r["grad_norm"]) == pytest.approx(math.sqrt(sum(v * v for v in per)),
                                                          rel=1e-4)
    assert (out / "grad_norm.png").stat().st_size > 1000
    assert (out / "loss.png").exists()


def test_plots_count_steps_in_whole_numbers_and_label_norms_plainly(tmp_path, monkeypatch):
    """A 20-step run's loss.png had ticks at 2.5, 7.5, 12.5 steps, and its grad_norm.png
    labelled the log axis 2x10^0, 3x10^0 (the norms within one decade): steps are whole
    numbers, norms plain ones (2, 3, 0.01)."""
    from seqgraph.train import metrics
    drawn = []
    monkeypatch.setattr(metrics, "save_figure", lambda fig, path: drawn.append(fig))
    rows = [{"step": str(s), "train_loss": str(4.2 - 0.01 * s), "valid_loss": "",
             "grad_norm": str(6 + s % 3), "grad_norm.W": str(2 + 0.05 * s)}
            for s in range(1, 21)]
    metrics.draw_loss(rows, tmp_path / "loss.png")
    metrics.draw_grads(rows, tmp_path / "grad_norm.png")
    for fig in drawn:
        fig.canvas.draw()
        ax = fig.axes[0]
        lo, hi = ax.get_xlim()
        steps = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert steps and all(float(t).is_integer() for t in steps)
    ax = drawn[1].axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True)]
    labels = [t for t in labels if t]
    assert labels and all(float(t) > 0 for t in labels)        # "2", not "2x10^0"


@pytest.mark.parametrize("params", [1, 5, 15])
def test_the_gradient_norms_legend_hides_no_curve(tmp_path, monkeypatch, params):
    """grad_norm.png's legend sat in a corner of the axes, over the curves of the first
    steps (review: it hid the smallest norms): it is beside them, whole in the figure."""
    from seqgraph.train import metrics
    drawn = []
    monkeypatch.setattr(metrics, "save_figure", lambda fig, path: drawn.append(fig))
    names = [f"layer{i}.W_hh" for i in range(params)]
    rows = [{"step": str(s), "train_loss": "1", "valid_loss": "", "grad_norm": "9",
             **{f"grad_norm.{n}": str(0.5 + i + s % 3) for i, n in enumerate(names)}}
            for s in range(1, 41)]
    metrics.draw_grads(rows, tmp_path / "grad_norm.png")
    fig = drawn[0]
    fig.canvas.draw()
    ax, renderer = fig.axes[0], fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    axes = ax.get_window_extent(renderer)
    assert legend.x0 > axes.x1, (legend, axes)                  # not over the curves
    assert 0 <= legend.y0 and legend.x1 <= fig.bbox.x1, (legend, fig.bbox)   # not cut off
    assert len(ax.get_legend().get_texts()) == params + 1


def test_a_jump_of_the_gradient_norm_is_a_warning():
    said = []
    mon = GradMonitor(said.append)
    for s in range(1, 30):
        mon.step(s, 1, 1.0 + 0.01 * (s % 3), {"W": 1.0}, False)
    assert not said
    mon.step(30, 1, 50.0, {"W": 50.0, "U": 1.0}, False)           # 50x: not yet
    assert not said
    mon.step(31, 1, 150.0, {"W": 150.0, "U": 1.0}, False)
    assert len(said) == 1 and "step 31" in said[0] and "largest: W" in said[0]


def test_clipping_on_most_steps_of_an_epoch_is_a_warning():
    said = []
    mon = GradMonitor(said.append)
    for s in range(1, 21):
        mon.step(s, 1, 10.0, None, clipped=s % 4 != 0)             # 15 of 20
    for s in range(21, 41):
        mon.step(s, 2, 1.0, None, clipped=s % 4 == 0)              # 5 of 20
    mon.end_epoch()
    assert len(said) == 1 and "epoch 1: clipping fired on 15 of 20 updates" in said[0]
    for s in range(41, 61):                                        # 20 of 20: said once
        mon.step(s, 3, 10.0, None, clipped=True)
    mon.end_epoch()
    assert len(said) == 1


def test_clipping_is_a_warning_only_when_the_loss_stalls():
    """A clip that fires on every update only caps the steps of a run that learns (a
    loss summed over 64 steps has a large gradient). The first epoch in which clipping
    fires on most updates is judged, once: a falling loss is silence for the run; a
    stalled one (within the first epoch, or against the epoch before) a warning."""
    said = []
    mon = GradMonitor(said.append)
    for s in range(1, 31):                                         # 3.0 down to 1.55
        mon.step(s, 1, 40.0, None, clipped=True, loss=3.0 - 0.05 * s)
    for s in range(31, 61):                                        # then flat: judged
        mon.step(s, 2, 40.0, None, clipped=True, loss=1.5)         # already, not said
    mon.end_epoch()
    assert not said
    mon = GradMonitor(said.append)
    for s in range(1, 31):                                         # no clipping
        mon.step(s, 1, 4.0, None, clipped=False, loss=1.5 - 0.01 * s)
    for s in range(31, 61):                                        # 1.4: above 1.345
        mon.step(s, 2, 40.0, None, clipped=True, loss=1.4)
    mon.end_epoch()
    assert len(said) == 1 and "epoch 2: clipping fired on 30 of 30 updates and the " \
        "training loss stalled (1.345 the epoch before, 1.4 in this one)" in said[0], said
    mon = GradMonitor(said.append)
    for s in range(1, 31):                                         # flat from the start
        mon.step(s, 1, 40.0, None, clipped=True, loss=3.0 + 0.01 * (s % 2))
    mon.end_epoch()
    assert len(said) == 2 and "stalled (3.005 in the epoch's first third, 3.005 in its " \
        "last)" in said[1], said
    mon = GradMonitor(said.append)
    for s in range(1, 13):                                         # 12 updates: no telling
        mon.step(s, 1, 40.0, None, clipped=True, loss=3.0)
    for s in range(13, 25):                                        # then judged: stalled
        mon.step(s, 2, 40.0, None, clipped=True, loss=3.0)
    mon.end_epoch()
    assert len(said) == 3 and "epoch 2:" in said[2] and "3 the epoch before" in said[2]


def test_the_warning_reaches_stderr_in_training(data, capsys):
    """A clip so small that sgd does not move: the second epoch's loss is the first's."""
    spec = write(data, "m.sg", CLASSIFY.replace("epochs = 2", "epochs = 3\n  clip = 1e-9")
                 .replace("adam(lr = 0.05)", "sgd(lr = 0.001)"))
    main(["train", str(spec), "--out", str(data / "run"), "--executor", "interp",
          "--quiet"])
    assert "clipping fired on" in capsys.readouterr().err


def test_metrics_log_keeps_parameter_columns_on_resume(tmp_path):
    log = MetricsLog(tmp_path)
    log.step(1, 1, 2.0, 3.0, 100.0, {"W": 3.0}, False)
    log.step(2, 1, 1.5, 2.0, 100.0, {"W": 2.0}, False)
    log2 = MetricsLog(tmp_path, resume_step=1)
    log2.step(2, 1, 1.4, 2.5, 100.0, {"W": 2.5}, False)
    rows = log2.read()
    assert [(r["step"], r["grad_norm.W"]) for r in rows] == [("1", "3"), ("2", "2.5")]


def test_a_resume_killed_while_it_rewrites_metrics_keeps_every_row(tmp_path, monkeypatch):
    """A resumed run rewrites the rows of the run it continues; that rewrite opened
    metrics.csv for writing in place, so a kill or a full disk in the middle of it left
    the file cut short and the curve so far was lost for good (review 39: a resume under
    `ulimit -f` kept 228 of 480 rows). It is written to a temporary file renamed over it."""
    import csv
    log = MetricsLog(tmp_path)
    for step in range(1, 40):
        log.step(step, 1, 2.0, 3.0, 100.0, {"W": 3.0}, False)
    before = (tmp_path / "metrics.csv").read_bytes()

    def killed(self, rows):
        self.writerow(next(iter(rows)))
        raise OSError(27, "File too large")
    monkeypatch.setattr(csv.DictWriter, "writerows", killed)
    with pytest.raises(OSError):
        MetricsLog(tmp_path, resume_step=30, resume_rows=30)
    assert (tmp_path / "metrics.csv").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
    (tmp_path / ".metrics.csv.123.tmp").write_text("step\n")     # left by a kill
    monkeypatch.undo()
    assert MetricsLog(tmp_path, resume_step=30, resume_rows=30).rows == 30
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


@pytest.mark.parametrize("damage, said", [
    (b"garbage,x,y\n", ":42: the step 'garbage' is not a whole number"),
    (b"7,1,\xff\xfe\n", ":42: bytes that are not UTF-8"),
    (b"\x00\x00,1,2\n", ":42: the step '\\x00\\x00' is not a whole number"),
    # a field past the header's: filed under the key None, a traceback (review 44)
    (b"7,1,2,,3,100,9\n", ":42: 1 field more than the header names"),
    # a digit int() does not read (str.isdigit holds for it): a ValueError (review 45)
    ("\u00b2,1,2\n".encode(), ":42: the step '\u00b2' is not a whole number")])
def test_a_damaged_metrics_csv_on_resume_is_said_with_its_file(tmp_path, capsys, damage,
                                                                said):
    """A line of metrics.csv that is not a row seqgraph wrote (edited, damaged) raised
    ValueError or UnicodeDecodeError from inside the resume: a traceback."""
    log = MetricsLog(tmp_path)
    for step in range(1, 41):
        log.step(step, 1, 2.0, 3.0, 100.0)
    with open(tmp_path / "metrics.csv", "ab") as f:
        f.write(damage)
    for step in range(41, 45):
        log.step(step, 1, 2.0, 3.0, 100.0)
    with pytest.raises(seqgraph.DataError) as e:
        MetricsLog(tmp_path, resume_step=44, resume_rows=45)
    assert str(e.value).startswith(str(tmp_path / "metrics.csv")) and said in str(e.value)
    # rows past the checkpoint's are dropped unread; fewer rows than it wrote: a warning
    assert MetricsLog(tmp_path, resume_step=30, resume_rows=30).rows == 30
    (tmp_path / "metrics.csv").write_text("step,epoch\n1,1\n")
    assert MetricsLog(tmp_path, resume_step=30, resume_rows=30).rows == 1
    assert "holds 1 of the 30 rows" in capsys.readouterr().err
    (tmp_path / "metrics.csv").unlink()
    assert MetricsLog(tmp_path, resume_step=30, resume_rows=30).rows == 0
    assert "metrics.csv is not there: the 30 rows" in capsys.readouterr().err


def test_a_first_row_longer_than_the_header_is_said_not_a_traceback(tmp_path):
    """csv.DictReader files the fields past the header's under the key None, and the
    resume read the first row's keys for its columns: None.startswith, a traceback."""
    (tmp_path / "metrics.csv").write_text("step,epoch,train_loss\n1,1,2.5,9\n2,1,2.4\n")
    with pytest.raises(seqgraph.DataError, match=r"metrics\.csv:2: 1 field more than the "
                       r"header names: not a row of a seqgraph run's metrics"):
        MetricsLog(tmp_path, resume_step=2, resume_rows=2)


def test_the_log_counts_its_rows_and_never_rereads_them(tmp_path, monkeypatch):
    """A 400-epoch run has ~100k rows: the end of each epoch must not parse them all."""
    from seqgraph.train import metrics
    log = MetricsLog(tmp_path)
    log.step(1, 1, 2.0, 3.0, 100.0)
    log.step(2, 1, 1.5, 2.0, 100.0, {"W": 2.0}, False)     # widens the header
    log.valid(2, 1, 1.7)
    assert log.rows == 3 == len(log.read())
    assert MetricsLog(tmp_path, resume_step=1).rows == 1
    monkeypatch.setattr(metrics, "_read", lambda path: pytest.fail("re-read"))
    log.step(3, 2, 1.4, 2.5, 100.0, {"W": 2.5}, False)
    log.plot(wait=False)
    assert log._child_rows == 4
    log._reap()


def test_the_moving_average_is_exponential_and_debiased():
    """loss.png's moving average: TensorBoard's debiased exponential one. A mean over the
    last 25 steps bent at step 25 of every run, where the first high losses left it."""
    from seqgraph.train.metrics import _smooth
    flat = _smooth([(s, 3.0) for s in range(1, 50)])
    assert [s for s, _ in flat] == list(range(1, 50))
    assert [v for _, v in flat] == pytest.approx([3.0] * 49)     # no start from 0
    pts = [(s, 4.0 * 0.97 ** s + 2.0) for s in range(1, 200)]   # a falling loss
    sm = [v for _, v in _smooth(pts)]
    b, m = 1 - 2 / 26, 0.0
    for k, (_, v) in enumerate(pts, 1):
        m = b * m + (1 - b) * v
        assert sm[k - 1] == pytest.approx(m / (1 - b ** k))
    steps = np.diff(sm)                   # it falls at a rate that changes smoothly
    assert (steps < 0).all()
    assert np.abs(np.diff(steps)).max() < 0.01
    assert _smooth([]) == []


def test_long_curves_are_thinned_keeping_their_spikes():
    from seqgraph.train.metrics import _thin
    few = [(s, 1.0) for s in range(100)]
    assert _thin(few) is few
    pts = [(s, 1.0 + (s % 7) * 0.01) for s in range(1, 100_001)]
    pts[51_234] = (51_235, 500.0)                          # one exploding step
    thin = _thin(pts)
    assert len(thin) <= 4002 and thin[0] == pts[0] and thin[-1] == pts[-1]
    assert (51_235, 500.0) in thin
    assert [s for s, _ in thin] == sorted(s for s, _ in thin)
    assert min(v for _, v in thin) == 1.0 and max(v for _, v in pts) == 500.0


def test_a_plot_that_cannot_be_drawn_is_a_warning_not_the_end_of_a_run(tmp_path, monkeypatch):
    from seqgraph.train import metrics
    log = MetricsLog(tmp_path)
    log.step(1, 0, 2.0, 1.0, 100.0)

    def broken(*a, **k):
        raise OSError("no python here")
    monkeypatch.setattr(metrics.subprocess, "run", broken)
    said = []
    log.monitor.warn = said.append
    assert log.plot() is None
    assert said and "were not drawn" in said[0] and "no python here" in said[0]


def test_epoch_plots_are_drawn_beside_training_and_the_last_one_waits(tmp_path):
    log = MetricsLog(tmp_path)
    log.step(1, 0, 2.0, 1.0, 100.0, {"W": 1.0}, False)
    assert log.plot(wait=False) is None and log._child is not None     # drawing
    assert log.plot(wait=False) is None                                # not twice
    log.step(2, 0, 1.0, 1.0, 100.0, {"W": 1.0}, False)
    assert log.plot() == tmp_path / "loss.png" and log._child is None  # waited
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_the_last_plot_is_not_drawn_twice(tmp_path, monkeypatch):
    """A run's end waits for the epoch's plot, and draws again only if rows came since."""
    from seqgraph.train import metrics
    log = MetricsLog(tmp_path)
    log.step(1, 0, 2.0, 1.0, 100.0)
    log.plot(wait=False)

    def drawn_again(*a, **k):
        raise AssertionError("drawn twice")
    monkeypatch.setattr(metrics.subprocess, "run", drawn_again)
    assert log.plot() == tmp_path / "loss.png" and log._child is None
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_a_plotting_child_that_fails_is_a_warning_at_the_next_plot(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path)
    log.step(1, 0, 2.0, 1.0, 100.0)
    said = []
    log.monitor.warn = said.append
    monkeypatch.setattr(sys, "executable", "/bin/false")
    log.plot(wait=False)
    log._child.wait()
    assert not said
    log.plot(wait=False)                 # reaps the failed child, starts another
    assert said and "were not drawn" in said[0]
    log._reap()


def test_the_plots_read_only_complete_rows(tmp_path):
    """A child drawing while training appends a row sees the rows written in full."""
    log = MetricsLog(tmp_path)
    log.step(1, 0, 2.0, 1.0, 100.0)
    log.step(2, 0, 1.5, 1.0, 100.0)
    with open(log.path, "a") as f:
        f.write("3,0,1.5e")              # a row being written (1.5e-05)
    metrics_draw(tmp_path)
    assert (tmp_path / "loss.png").stat().st_size > 1000


@pytest.mark.parametrize("text", [CLASSIFY, TAGGER, SERIES, S2S], ids=["labeled", "tagged",
                                                                       "series", "pairs"])
def test_eval_per_example_rows_add_up_to_the_totals(data, capsys, text):
    csv = data / "each.csv"
    r = _train_and_eval(data, text, capsys, "--per-example", str(csv))
    rows = csv_rows(csv)
    if text is S2S:                            # greedy decoding, example by example
        assert len(rows) == r["decoded"]
        assert sum(int(x["exact"]) for x in rows) == round(r["exact_match"] * len(rows))
        assert all((x["exact"] == "1") == (x["edits"] == "0") for x in rows)
        assert all((x["hypothesis"] == x["reference"]) == (x["exact"] == "1") for x in rows)
    assert [int(x["example"]) for x in rows] == list(range(1, len(rows) + 1))
    assert all(int(x["line"]) >= 1 for x in rows) and len({x["line"] for x in rows}) == len(rows)
    if text is SERIES:
        se = sum(float(x["se"]) for x in rows)
        assert se / sum(int(x["values"]) for x in rows) == pytest.approx(r["mse"], rel=1e-9)
        return
    tokens = sum(int(x["tokens"]) for x in rows)
    assert tokens == r["tokens"]
    assert sum(int(x["correct"]) for x in rows) == round(r["accuracy"] * tokens)
    assert sum(float(x["nll"]) for x in rows) / tokens == pytest.approx(r["loss"], rel=1e-4)
    if text is CLASSIFY:                       # one class per example: its prediction
        assert all(int(x["correct"]) == (x["label"] == x["pred"]) for x in rows)


def test_eval_per_example_of_a_text_stream_is_refused(data, capsys):
    (data / "tiny.txt").write_text("abcabcabd " * 40)
    (data / "lm.sg").write_text(TINY_LM)
    assert main(["train", str(data / "lm.sg"), "--out", str(data / "lm"), "--quiet",
                 "--executor", "interp"]) == 0
    code = main(["eval", str(data / "lm.sg"), "--checkpoint", str(data / "lm"),
                 "--per-example", str(data / "x.csv")])
    assert code == 2 and "a text stream (chars, words) has no examples" in \
        capsys.readouterr().err


@pytest.mark.parametrize("text, label", [(SERIES, "loss per token"),
                                         (CLASSIFY, "loss per token (nats)")],
                         ids=["mse", "xent"])
def test_the_loss_plot_says_nats_only_for_a_likelihood(data, monkeypatch, text, label):
    from seqgraph.train import metrics
    seen = []
    monkeypatch.setattr(metrics.MetricsLog, "plot",
                        lambda self, wait=True: seen.append(self.ylabel))
    spec = write(data, "m.sg", text)
    assert main(["train", str(spec), "--out", str(data / "run"), "--executor", "interp",
                 "--quiet"]) == 0
    assert seen and set(seen) == {label}


def test_the_plotting_child_is_given_the_label(tmp_path, monkeypatch):
    import subprocess

    from seqgraph.train import metrics
    log = MetricsLog(tmp_path, ylabel="loss per node (nats)")
    log.step(1, 0, 2.0, 1.0, 100.0)
    cmds = []
    monkeypatch.setattr(metrics.subprocess, "run", lambda cmd, **k: cmds.append(cmd) or
                        subprocess.CompletedProcess(cmd, 0, "", ""))
    log.plot()
    assert cmds[0][-2:] == [str(tmp_path), "loss per node (nats)"]
    metrics_draw(tmp_path, "loss per node (nats)")
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_per_example_labels_and_the_majority_are_named_as_sample_names_them(data, capsys):
    """`label,pred` as `pos,neg` (the names sample prints), not ids; the baseline too."""
    lab = (data / "lab.tsv").read_text().splitlines()
    (data / "lab.tsv").write_text("".join(("pos" if l[0] == "1" else "neg") + l[1:] + "\n"
                                          for l in lab))
    r = _train_and_eval(data, CLASSIFY, capsys)
    assert r["majority_label"] in ("pos", "neg") and r["majority_class"] in (0, 1)
    assert main(["eval", str(data / "m.sg"), "--checkpoint", str(data / "run"),
                 "--per-example", str(data / "each.csv")]) == 0
    rows = csv_rows(data / "each.csv")
    assert {x["label"] for x in rows} <= {"pos", "neg"} and \
        {x["pred"] for x in rows} <= {"pos", "neg"}


def test_eval_data_a_loader_call_written_wrong_is_said_as_such(tmp_path, monkeypatch,
                                                               capsys):
    """`--data 'chars("x.txt"'` was read as a file named so ("no such file"); a call to a
    loader that does not parse is said with where it fails. A path that only looks like a
    call (`ch(1).txt`) is still a path."""
    from conftest import fails, train_quiet
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.txt").write_text("the cat sat on the mat. " * 20)
    (tmp_path / "lm.sg").write_text(TINY_LM)
    assert train_quiet("lm.sg", "run", "--steps", "2") == 0
    ckpt = ["--checkpoint", "run/checkpoint.npz"]
    err = fails(capsys, "eval", "lm.sg", "--data", 'chars("tiny.txt"', *ckpt)
    assert err.startswith('--data chars("tiny.txt": cannot read the loader call: '), err
    assert "is never closed" in err and "no such file" not in err
    err = fails(capsys, "eval", "lm.sg", "--data", 'words("tiny.txt", x=)', *ckpt)
    assert "cannot read the loader call" in err and "column 21 of the value" in err, err
    err = fails(capsys, "eval", "lm.sg", "--data", "ch(1).txt", *ckpt)
    assert "ch(1).txt: no such file" in err, err
    # a file that is there is read, though its name starts like a call (review 31)
    (tmp_path / "chars (1).txt").write_text("the mat sat on the cat. " * 10)
    assert main(["eval", "lm.sg", "--data", "chars (1).txt", *ckpt]) == 0
    assert main(["eval", "lm.sg", "--data", 'chars("tiny.txt")', *ckpt]) == 0


def test_eval_scores_text_as_the_run_validated_it(tmp_path, monkeypatch, capsys):
    """A text is validated as `batch` streams from a zero state: eval cuts it with the
    batch and bptt the run trained with, `--set` ones too (review 28: the spec's batch,
    another loss than the run's own last validation)."""
    from conftest import train_quiet
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.txt").write_text("the cat sat on the mat and the dog ran off. " * 30)
    (tmp_path / "lm.sg").write_text(TINY_LM)                    # batch = 4, bptt = 10
    assert train_quiet("lm.sg", "run", "--set", "batch=2", "--set", "bptt=7",
                       "--epochs", "1", "--set", "keep=all", "--set", "select=loss") == 0
    last = [r for r in csv_rows(tmp_path / "run/metrics.csv") if r["valid_loss"]][-1]
    # best.npz and the epoch files too (their meta holds no training state: review 31)
    for f in ("run/best.npz", "run/epochs/epoch_001.npz", "run/checkpoint.npz"):
        capsys.readouterr()
        assert main(["eval", "lm.sg", "--checkpoint", f, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["loss"] == pytest.approx(float(last["valid_loss"]), rel=1e-5), f
    # a character model's loss in bits, beside nats and perplexity (review 28)
    assert out["bits_per_char"] == pytest.approx(out["loss"] / math.log(2), rel=1e-12)
    assert main(["eval", "lm.sg", "--checkpoint", "run/checkpoint.npz"]) == 0
    assert f"bits/char {out['bits_per_char']:.4f}" in capsys.readouterr().out


def test_a_large_perplexity_is_shown_in_powers_of_ten():
    """A diverged run's perplexity (exp(700), about 1e304) printed 300 digits (walk 13)."""
    from seqgraph.train.evaluate import shown
    assert shown(5.16789) == "5.17" and shown(5.16789, 3) == "5.168"
    assert shown(math.exp(700)) == "1.014e+304" and shown(2.5e6) == "2.500e+06"


def test_a_perplexity_past_floats_range_is_inf_not_a_cap():
    """A loss of 2.6e7 nats a token showed perplexity 1.014e+304, exp(700) (walk 14)."""
    from seqgraph.train.evaluate import Score, shown
    assert Score(loss_sum=2.6e7, tokens=1, correct=None).perplexity == math.inf
    assert shown(Score(loss_sum=2.6e7, tokens=1, correct=None).perplexity) == "inf"
    assert Score(loss_sum=708.0, tokens=1, correct=None).perplexity == math.exp(708.0)
    assert Score(loss_sum=3.0, tokens=1, correct=None, nll=False).perplexity is None
