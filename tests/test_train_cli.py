"""`seqgraph train`, `eval` and `sample` end to end, on a small text with a tiny model
and the interpreter (the whole file runs in seconds)."""
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from seqgraph.cli import main
from seqgraph.train.session import restore, trained_config

from conftest import cli_env, csv_rows

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the cat sat on a mat and the dog ran to the hat".split()

LM = """\
model lm
dim H = 12
input  x[t] : onehot(V)
target y[t] : class(V)
param W, U, b, Wo, bo
h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b)
o[t] = Wo @ dropout(h[t], 0.1) + bo
loss xent(o[t], y[t])
train {
  data = chars("tiny.txt")
  valid = 0.1
  optimizer = adam(lr = 0.02)
  batch = 4
  bptt = 12
  epochs = 2
}
"""

# The model reads its own previous output instead of an input (Fig. 10.4 without x).
FEEDBACK = """\
dim H = 12
target y[t] : class(V)
param R, U, b, Wo, bo
h[t] : H = tanh(R @ y[t-1] + U @ h[t-1] + b)
o[t] = Wo @ h[t] + bo
loss xent(o[t], y[t])
train {
  data = chars("tiny.txt")
  batch = 4
  bptt = 12
}
"""


def tiny_text(lines=50, seed=0) -> str:
    rng = np.random.default_rng(seed)
    return "".join(" ".join(rng.choice(WORDS, 6)) + "\n" for _ in range(lines))


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A directory with tiny.txt and lm.sg, made the current directory."""
    (tmp_path / "tiny.txt").write_text(tiny_text())
    (tmp_path / "lm.sg").write_text(LM)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sg(*argv, capsys=None):
    code = main([str(a) for a in argv])
    out = capsys.readouterr() if capsys else None
    return code, out


def train(out, *extra):
    return main(["train", "lm.sg", "--out", str(out), "--executor", "interp", "--quiet",
                 *map(str, extra)])


def unigram_entropy(text: str) -> float:
    n = Counter(text)
    total = sum(n.values())
    return -sum(c / total * math.log(c / total) for c in n.values())


# ------------------------------------------------------------------------ training
def test_train_learns_below_the_unigram_entropy(work, capsys):
    assert train("run", "--steps", 40) == 0
    run = work / "run"
    assert {"checkpoint.npz", "metrics.csv", "loss.png"} <= set(os.listdir(run))
    rows = csv_rows(run / "metrics.csv")
    assert list(rows[0])[:6] == ["step", "epoch", "train_loss", "valid_loss", "grad_norm",
                                 "tokens_per_s"]
    # then one gradient norm per parameter, named as in the spec
    assert list(rows[0])[6:] == [f"grad_norm.{p}" for p in ("W", "U", "b", "Wo", "bo")]
    steps = [r for r in rows if r["train_loss"]]
    assert [int(r["step"]) for r in steps] == list(range(1, 41))
    assert any(r["valid_loss"] for r in rows)             # one validation pass per epoch
    with np.load(run / "checkpoint.npz") as z:
        assert {"W", "U", "b", "Wo", "bo", "__meta__"} <= set(z.files)
        meta = json.loads(str(z["__meta__"]))
    assert meta["dims"]["V"] == len(set(tiny_text())) and meta["vocab"]["kind"] == "chars"
    code, out = sg("eval", "lm.sg", "--checkpoint", run, "--data", "tiny.txt", "--json",
                   capsys=capsys)
    assert code == 0
    assert json.loads(out.out)["loss"] < unigram_entropy(tiny_text()) - 0.3
    assert json.loads(out.out)["kind"] == "chars"      # as docs/training.md lists for all


def test_resume_gives_the_parameters_of_an_uninterrupted_run(work):
    # 7 windows an epoch: the stop at step 5 is mid-epoch, so the carried state,
    # the position, the optimiser moments and the dropout generator must all be restored
    assert train("straight", "--steps", 12) == 0
    assert train("split", "--steps", 5) == 0
    assert main(["train", "lm.sg", "--resume", "split", "--steps", "12", "--quiet",
                 "--executor", "interp"]) == 0
    a, b = np.load(work / "straight/checkpoint.npz"), np.load(work / "split/checkpoint.npz")
    params = [k for k in a.files if not k.startswith("__")]
    assert params and all(np.array_equal(a[k], b[k]) for k in params)
    # the same training curve (the split run also validated when it stopped at step 5)
    rows = lambda d: [(r["step"], r["train_loss"], r["grad_norm"])
                      for r in csv_rows(work / d / "metrics.csv") if r["train_loss"]]
    assert rows("straight") == rows("split")
    # resuming into another directory carries the curve so far along
    assert main(["train", "lm.sg", "--resume", "split", "--out", "more", "--steps", "13",
                 "--quiet", "--executor", "interp"]) == 0
    assert rows("more")[:12] == rows("split") and len(rows("more")) == 13
    assert train("other_seed", "--steps", 12, "--set", "seed=1") == 0
    c = np.load(work / "other_seed/checkpoint.npz")
    assert not np.array_equal(a["W"], c["W"])


KILLED_AT_THE_END_OF_EPOCH_1 = """
import os, sys
from seqgraph.train import loop
save = loop.Trainer.save
def killed(self):                  # the end of epoch 1, its validation row written
    if self.pos.window == 0 and self.pos.epoch == 1:
        os._exit(9)
    return save(self)
loop.Trainer.save = killed
from seqgraph.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_between_a_validation_and_its_checkpoint_leaves_one_validation_row(work):
    """Killed after an epoch's validation row and before its checkpoint, a run resumed
    from the step's checkpoint validated the epoch again and wrote its row twice (walk
    12): the checkpoint counts the rows it has written, and a resume keeps those."""
    assert train("straight", "--steps", 30) == 0
    env = cli_env(SEQGRAPH_CHECKPOINT_EVERY="1")
    p = subprocess.run([sys.executable, "-c", KILLED_AT_THE_END_OF_EPOCH_1, "train", "lm.sg",
                        "--out", "split", "--executor", "interp", "--quiet", "--steps", "30"],
                       cwd=work, env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 9, p.stderr
    assert main(["train", "lm.sg", "--resume", "split", "--steps", "30", "--quiet",
                 "--executor", "interp"]) == 0
    rows = lambda d: [(r["step"], r["epoch"], r["train_loss"], r["valid_loss"])
                      for r in csv_rows(work / d / "metrics.csv")]
    assert rows("split") == rows("straight")
    assert sum(1 for r in rows("split") if r[3]) == 2


def test_an_overwrite_killed_before_its_first_checkpoint_leaves_no_checkpoint(work, capsys):
    """--overwrite truncated metrics.csv but left the old run's checkpoint until its own
    first one: killed before it, a --resume went on with the old run beside the new
    run's metrics (walk 12). The old checkpoint goes when training starts."""
    assert train("r", "--steps", 3) == 0
    first_save = KILLED_AT_THE_END_OF_EPOCH_1.replace(
        "self.pos.window == 0 and self.pos.epoch == 1", "True")
    p = subprocess.run([sys.executable, "-c", first_save, "train", "lm.sg", "--out", "r",
                        "--overwrite", "--executor", "interp", "--quiet", "--steps", "30"],
                       cwd=work, env=cli_env(), capture_output=True, text=True, check=False)
    assert p.returncode == 9, p.stderr
    assert not (work / "r/checkpoint.npz").exists()
    capsys.readouterr()
    assert main(["train", "lm.sg", "--resume", "r", "--steps", "5", "--quiet"]) == 2
    assert "checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("how", [[], ["--overwrite"], ["--resume", "r"]],
                         ids=["new", "overwrite", "resume"])
def test_a_folder_another_run_is_writing_is_refused(work, capsys, how):
    """Two runs writing one folder deleted each other's temporary files and interleaved
    metrics.csv (walk 12): a run locks its folder while it trains."""
    import os

    from seqgraph.train import checkpoint as ck
    assert train("r", "--steps", 2) == 0
    before = (work / "r/metrics.csv").read_text()
    held = ck.lock_folder(work / "r")                     # another run, still training
    try:
        capsys.readouterr()
        args = ["train", "lm.sg", "--quiet", "--steps", "4", *how]
        code = main(args + ([] if "--resume" in how else ["--out", "r"]))
        err = capsys.readouterr().err
        assert code == 2 and f"r: another seqgraph train (process {os.getpid()}) is " \
            "writing this folder; wait for it to end, or give this run another --out" in err
        assert "warning" not in err and (work / "r/metrics.csv").read_text() == before
    finally:
        os.close(held)
    assert main(["train", "lm.sg", "--quiet", "--steps", "4", "--resume", "r"]) == 0


def test_a_lock_whose_pid_is_not_written_yet_names_no_process(work, capsys):
    """The other run holds the lock but has not written its pid: 'process ?' was said
    (review 39)."""
    import os

    from seqgraph.train import checkpoint as ck
    assert train("r", "--steps", 2) == 0
    held = ck.lock_folder(work / "r")
    try:
        (work / "r/.lock").write_text("")
        capsys.readouterr()
        assert main(["train", "lm.sg", "--quiet", "--steps", "4", "--resume", "r"]) == 2
        assert "r: another seqgraph train is writing this folder; wait" in \
            capsys.readouterr().err
    finally:
        os.close(held)


def test_the_folder_lock_is_released_by_a_refusal_and_skipped_without_locks(work, capsys,
                                                                            monkeypatch):
    """A resume of a finished run is refused and leaves the folder unlocked (review 27:
    the next run in the process was refused by its own lock); where the file system
    has no locks (NFS without lockd) the run goes on, said once."""
    import errno
    import fcntl
    assert train("r", "--set", "epochs=1") == 0
    capsys.readouterr()
    assert main(["train", "lm.sg", "--resume", "r", "--quiet", "--epochs", "1"]) == 2
    assert "nothing is left to train" in capsys.readouterr().err
    assert main(["train", "lm.sg", "--resume", "r", "--quiet", "--epochs", "2"]) == 0

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert main(["train", "lm.sg", "--resume", "r", "--quiet", "--epochs", "3"]) == 0
    assert capsys.readouterr().err.count("cannot lock the run folder (No locks "
                                         "available)") == 1


def test_a_lock_file_that_cannot_be_opened_is_said_not_a_traceback(work, capsys):
    """A folder named .lock in the run folder raised IsADirectoryError from the lock, a
    traceback (review 39): the run goes on without a lock, said as for NFS."""
    (work / "r" / ".lock").mkdir(parents=True)
    assert train("r", "--steps", 1) == 0
    assert "r: cannot lock the run folder (Is a directory)" in capsys.readouterr().err


def test_a_resume_to_a_step_already_done_is_refused(work, capsys):
    assert train("run", "--steps", 5) == 0
    code, out = sg("train", "lm.sg", "--resume", "run", "--steps", 3, "--quiet",
                   capsys=capsys)
    assert code == 2 and "the run is at step 5 already; --steps 3 counts updates in all, " \
        "from the start of the run: give more than 5 to train on" in out.err, out.err


def test_another_models_run_is_said_before_its_step_count(work, capsys):
    """--resume of another model's run: the mismatch, not 'the run is at step 5'."""
    assert train("run", "--steps", 5) == 0
    (work / "other.sg").write_text(LM.replace("model lm", "model other").replace(
        "dim H = 12", "dim H = 13"))
    code, out = sg("train", "other.sg", "--resume", "run", "--steps", 3, "--quiet",
                   capsys=capsys)
    assert code == 2 and "was saved from model 'lm'" in out.err and "step 5" not in out.err


def test_a_model_without_a_loss_is_not_trained(work, capsys):
    (work / "noloss.sg").write_text(LM.replace("loss xent(o[t], y[t])", "").replace(
        "o[t] = Wo", "o[t] : V = Wo"))
    code, out = sg("train", "noloss.sg", "--out", "r", "--steps", 2, capsys=capsys)
    assert code == 2 and "model 'lm' has no loss, so there is nothing to train" in out.err
    assert not (work / "r").exists()


def test_resume_with_other_settings_is_a_warning_naming_them(work, capsys):
    assert train("run", "--steps", 3, "--set", "optimizer=adam(lr = 0.01)") == 0
    capsys.readouterr()
    assert main(["train", "lm.sg", "--resume", "run", "--steps", "4", "--quiet",
                 "--executor", "interp", "--set", "clip=2"]) == 0
    err = capsys.readouterr().err
    assert "was trained with other settings" in err
    assert "optimizer = adam(lr=0.01) -> adam(lr=0.02); clip = 5.0 -> 2.0" in err
    # the checkpoint now records the settings of the run that wrote it
    assert main(["train", "lm.sg", "--resume", "run", "--steps", "5", "--quiet",
                 "--executor", "interp", "--set", "clip=2"]) == 0
    assert "other settings" not in capsys.readouterr().err     # the same: no warning


def test_a_refused_resume_does_not_first_warn_that_it_goes_on(work, capsys):
    """Another optimiser or averaging turned on was warned of as "this run uses the new
    ones", then refused (the optimiser's error without the checkpoint's name); a dtype
    changed on resume was not said at all (review 39)."""
    assert train("run", "--steps", 3) == 0
    capsys.readouterr()
    for flag, said in (("optimizer=sgd(lr=0.1)", "run/checkpoint.npz: its run trained with "
                        "adam, this one with sgd: resume with the same optimizer"),
                       ("average=0.9", "run/checkpoint.npz: its run did not average")):
        assert train("run2", "--resume", "run", "--steps", 4, "--set", flag) == 2
        err = capsys.readouterr().err
        assert err.startswith(said) and "other settings" not in err, err
    assert train("run2", "--resume", "run", "--steps", 4, "--set", "dtype=float64") == 0
    assert "this run uses the new ones: dtype = float32 -> float64" in \
        capsys.readouterr().err


def test_resume_with_another_schedule_starts_it_as_a_new_run_does(work, capsys):
    """A run resumed with `plateau` from one with another schedule loaded that one's
    state (none) into plateau's: KeyError 'best', a traceback (review 39). The new
    schedule starts afresh; one resumed with the same schedule keeps its state."""
    from seqgraph.train import checkpoint as ck
    plateau = "schedule=plateau(factor=0.5, patience=0)"
    assert train("run", "--steps", 3, "--set", "schedule=step(after=1, factor=0.5)") == 0
    capsys.readouterr()
    assert main(["train", "lm.sg", "--resume", "run", "--quiet", "--executor", "interp",
                 "--set", plateau]) == 0
    assert "schedule = step(after=1, factor=0.5) -> plateau(factor=0.5, patience=0)" \
        in capsys.readouterr().err
    st = ck.load(work / "run" / "checkpoint.npz").meta["state"]
    assert st["schedule"]["best"] is not None        # plateau has seen the epochs' losses
    assert main(["train", "lm.sg", "--resume", "run", "--quiet", "--executor", "interp",
                 "--set", plateau, "--epochs", "3",
                 "--steps", str(st["position"]["step"] + 1)]) == 0
    assert ck.load(work / "run" / "checkpoint.npz").meta["state"]["schedule"] == \
        st["schedule"]


def test_more_epochs_on_resume_say_the_cosine_is_stretched(work, capsys):
    """The cosine spans epochs x batches: a resume with more epochs moves its rate up
    again (review 28); said with the change, not otherwise."""
    cos = ["--set", "schedule=cosine(floor=0.1)", "--quiet", "--executor", "interp"]
    assert main(["train", "lm.sg", "--out", "run", "--steps", "3", *cos]) == 0
    capsys.readouterr()
    assert main(["train", "lm.sg", "--resume", "run", "--steps", "4", "--epochs", "3",
                 *cos]) == 0
    err = capsys.readouterr().err
    assert "epochs = 2 -> 3, over which schedule = cosine(floor=0.1) runs: it is " \
        "stretched to the new length from here" in err, err
    assert main(["train", "lm.sg", "--resume", "run", "--steps", "5", "--epochs", "4",
                 "--quiet", "--executor", "interp"]) == 0      # constant: nothing moves
    assert "epochs" not in capsys.readouterr().err


def test_a_resume_refusal_names_what_differs(work, capsys):
    """The checkpoint's position counts batches of its data: another batch size, bptt
    or data file is refused, naming each that differs with both values."""
    assert train("run", "--steps", 3) == 0
    (work / "more.txt").write_text(tiny_text() * 2)
    capsys.readouterr()
    assert main(["train", "lm.sg", "--resume", "run", "--steps", "4", "--quiet",
                 "--executor", "interp", "--set", "batch=3", "--set",
                 'data=chars("more.txt")']) == 2
    err = capsys.readouterr().err
    assert "resume with the same data, batch and bptt" in err
    assert "batch: 4 in the checkpoint, 3 now" in err and "bptt:" not in err
    m = re.search(r"data: (\d+) tokens in the checkpoint, (\d+) tokens now", err)
    assert m and 2 * int(m[1]) <= int(m[2]) + 1       # more.txt is tiny.txt twice


def test_set_overrides_and_progress_bar(work, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)     # a terminal: the bar
    code = main(["train", "lm.sg", "--out", "r", "--executor", "interp", "--steps", "3",
                 "--set", "batch=2", "--set", "optimizer=sgd(lr=0.5, momentum=0.9)",
                 "--set", "schedule=cosine", "--dim", "V=40"])
    assert code == 0
    err = capsys.readouterr().err
    assert "\r" in err and "tok/s" in err and "loss" in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)    # a log: epoch lines only
    assert main(["train", "lm.sg", "--out", "r2", "--executor", "interp", "--steps", "3"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "tok/s" not in err and "epoch 1/" in err
    assert all(line == line.rstrip() for line in err.splitlines())
    monkeypatch.setattr("seqgraph.train.metrics.LOG_EVERY", 0.0)  # a line each update
    assert main(["train", "lm.sg", "--out", "r3", "--executor", "interp", "--steps", "3"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("tok/s") == 3, err
    meta = json.loads(str(np.load(work / "r/checkpoint.npz")["__meta__"]))
    cfg = meta["state"]["config"]
    assert (cfg["batch"], cfg["optimizer"], cfg["schedule"]) == (2, "sgd(lr=0.5, momentum=0.9)",
                                                                 "cosine")
    assert meta["dims"]["V"] == 40 and meta["state"]["optimizer"]["name"] == "sgd"


def test_default_run_directory_is_named_after_the_model(work):
    assert main(["train", "lm.sg", "--executor", "interp", "--quiet", "--steps", "1"]) == 0
    assert (work / "runs" / "lm" / "checkpoint.npz").is_file()


def test_a_model_feeding_back_its_output_trains_and_samples(work, capsys):
    (work / "fb.sg").write_text(FEEDBACK)
    assert main(["train", "fb.sg", "--out", "fb", "--executor", "interp", "--quiet",
                 "--steps", "8"]) == 0
    code, out = sg("sample", "fb.sg", "--checkpoint", "fb", "--length", 30, "--seed", 2,
                   "--prime", "the ", capsys=capsys)
    assert code == 0 and out.out.startswith("the ") and len(out.out) == 4 + 30 + 1


def test_words_with_a_validation_loader(work, capsys):
    (work / "held.txt").write_text(tiny_text(10, seed=1) + "the zebra\n")
    code = main(["train", "lm.sg", "--out", "w", "--executor", "interp", "--quiet",
                 "--steps", "4", "--set", 'data=words("tiny.txt", vocab=8)',
                 "--set", 'valid=words("held.txt")'])
    assert code == 0
    meta = json.loads(str(np.load(work / "w/checkpoint.npz")["__meta__"]))
    assert meta["vocab"]["tokens"][:2] == ["<unk>", "</s>"] and meta["dims"]["V"] == 8
    assert meta["data"]["valid"].endswith("held.txt")
    code, out = sg("sample", "lm.sg", "--checkpoint", "w", "--length", 40, "--seed", 0,
                   capsys=capsys)
    tokens = out.out.split()
    assert code == 0 and 0 < len(tokens) <= 40
    assert set(tokens) <= set(WORDS) | {"<unk>"}


def test_divergence_stops_with_the_step_and_names_what_broke(work, capsys):
    err = run_error(capsys, "train", "lm.sg", "--out", "nan", "--executor", "interp",
                    "--set", "optimizer=sgd(lr=1e38)", "--set", "clip=0", "--steps", "20")
    assert "training diverged at step" in err and "Last good checkpoint" in err


def test_an_update_that_overflows_the_parameters_is_named_as_the_cause(work, capsys,
                                                                        monkeypatch):
    """A finite gradient x lr = 1e39 made the parameters infinite in float32; the next
    batch was blamed ("first non-finite: variable 'h'") and a checkpoint written after
    that update, holding them, was called the last good one (review 39)."""
    monkeypatch.setenv("SEQGRAPH_CHECKPOINT_EVERY", "1")
    big = ["--executor", "interp", "--set", "optimizer=sgd(lr=1e39)", "--set", "clip=0",
           "--steps", "20"]
    err = run_error(capsys, "train", "lm.sg", "--out", "inf", *big)
    assert "first non-finite: parameter 'W' itself, which an earlier update made " \
        "non-finite" in err and "Last checkpoint: inf/checkpoint.npz, which holds it too " \
        "if it was saved after that update" in err and "good" not in err, err
    err = run_error(capsys, "train", "lm.sg", "--out", "inf2", *big, "--on-nan", "skip")
    assert "the cause is parameter 'W' itself" in err, err


def test_a_checkpoint_that_holds_an_overflowed_parameter_is_refused_on_resume(work, capsys,
                                                                              monkeypatch):
    """The checkpoint written after the update that overflowed W holds it: resumed with
    the smaller lr the divergence advised, every batch diverged again, blamed on "an
    earlier update" with the same advice (review 44). Refused, naming the parameter."""
    monkeypatch.setenv("SEQGRAPH_CHECKPOINT_EVERY", "1")
    run_error(capsys, "train", "lm.sg", "--out", "inf", "--executor", "interp", "--set",
              "optimizer=sgd(lr=1e39)", "--set", "clip=0", "--steps", "20")
    err = run_error(capsys, "train", "lm.sg", "--resume", "inf", "--executor", "interp",
                    "--set", "optimizer=sgd(lr=0.1)", "--steps", "20")
    assert "inf/checkpoint.npz: parameter 'W' is not finite (inf or nan): the checkpoint " \
        "was saved after an update that overflowed it" in err and "diverged at" not in err, err


@pytest.mark.parametrize("executor", ["interp", "compiled"])
def test_a_huge_but_finite_float32_gradient_is_clipped_not_called_divergence(work, executor):
    """A loss of ~1e26 has gradients of ~1e25: finite in float32, their squares not. The
    norm (float64) is finite, clip = 1 acts on it, and the run trains; it was inf, and
    the run stopped as diverged, blaming a finite loss."""
    (work / "big.sg").write_text(LM.replace("loss xent", "loss 1e25 * xent"))
    assert "loss 1e25 * xent" in (work / "big.sg").read_text()
    assert main(["train", "big.sg", "--out", "big", "--executor", executor, "--quiet",
                 "--steps", "2", "--set", "clip=1"]) == 0
    rows = [r for r in csv_rows(work / "big/metrics.csv") if r["grad_norm"]]
    assert len(rows) == 2
    assert all(1e20 < float(r["grad_norm"]) < math.inf for r in rows)


# ------------------------------------------------------------------------ eval, sample
@pytest.fixture
def trained(work):
    assert train("run", "--steps", 14) == 0
    return work / "run"


def test_eval_json_fields(trained, capsys):
    code, out = sg("eval", "lm.sg", "--checkpoint", trained / "checkpoint.npz", "--json",
                   capsys=capsys)
    assert code == 0
    r = json.loads(out.out)
    assert set(r) == {"kind", "loss", "perplexity", "accuracy", "tokens", "file",
                      "bits_per_char"}
    assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
    assert r["bits_per_char"] == pytest.approx(r["loss"] / math.log(2))
    assert 0 <= r["accuracy"] <= 1
    n_valid = round(len(tiny_text()) * 0.1)          # the held-out tail
    assert r["tokens"] == ((n_valid - 1) // 4) * 4
    code, out = sg("eval", "lm.sg", "--checkpoint", trained, capsys=capsys)
    assert "perplexity" in out.out and "accuracy" in out.out


def test_the_api_restores_a_trained_run(trained):
    """seqgraph.restore(spec, checkpoint): the run's model with its parameters, sizes and
    vocabulary, ready to run on text the vocabulary encodes."""
    import seqgraph
    t = seqgraph.restore("lm.sg", str(trained / "checkpoint.npz"), "interp")
    assert t.model.sizes["x"] == len(t.vocab) and t.binding.target == "y"
    saved = np.load(trained / "checkpoint.npz")
    assert t.model.params.keys() and all(np.array_equal(w, saved[k])
                                         for k, w in t.model.params.items())
    ids = t.vocab.encode(list(tiny_text()[:20]))
    res = t.model.run({"x": ids[None, :-1]}, {"y": ids[None, 1:]})
    assert np.isfinite(res.loss) and res.values["o"].shape == (1, 19, len(t.vocab))


def test_sample_length_and_determinism(trained, capsys):
    def sample(*extra):
        code, out = sg("sample", "lm.sg", "--checkpoint", trained, "--length", 60, *extra,
                       capsys=capsys)
        assert code == 0
        assert out.out.endswith("\n")
        return out.out[:-1]
    a, b, c = sample("--seed", 3), sample("--seed", 3), sample("--seed", 4)
    assert len(a) == 60 and a == b and a != c
    assert set(a) <= set(tiny_text())
    primed = sample("--prime", "the c", "--greedy")
    assert primed.startswith("the c") and len(primed) == 65
    assert primed == sample("--prime", "the c", "--greedy", "--seed", 9)


# --------------------------------------------------------------------------- errors
def run_error(capsys, *argv):
    code, out = sg(*argv, capsys=capsys)
    assert code == 2, out
    assert "Traceback" not in out.err
    return out.err.strip()


@pytest.mark.parametrize("setting, message", [
    ('data=chars("nothere.txt")', r"nothere\.txt: no such file"),
    ('data=chars("empty.txt")', r"empty\.txt: is empty"),
    ('data=chars("binary.txt")', r"binary\.txt:2: not UTF-8 text: byte 0xfe at offset \d+"),
])
def test_data_errors_name_the_file(work, capsys, setting, message):
    (work / "empty.txt").write_text("")
    (work / "binary.txt").write_bytes(b"ok\nbad\xfe\n")
    err = run_error(capsys, "train", "lm.sg", "--set", setting, "--executor", "interp")
    assert len(err.splitlines()) == 1
    import re
    assert re.search(message, err), err


def test_vocabulary_too_big_for_a_declared_dim(work, capsys):
    (work / "small.sg").write_text(LM.replace("dim H = 12", "dim H = 12\ndim V = 5"))
    err = run_error(capsys, "train", "small.sg", "--executor", "interp")
    assert "tiny.txt" in err and f"{len(set(tiny_text()))} distinct symbols do not fit " \
        "dim V = 5 of small.sg" in err


def test_model_without_onehot_input_or_class_target(work, capsys):
    vec = LM.replace("input  x[t] : onehot(V)", "input  x[t] : vec(3)")
    (work / "vec.sg").write_text(vec)
    err = run_error(capsys, "train", "vec.sg", "--executor", "interp")
    assert "vec.sg" in err and "a chars loader needs a one-hot input" in err
    reg = LM.replace("target y[t] : class(V)", "target y[t] : vec(V)").replace(
        "xent(o[t]", "mse(o[t]")
    (work / "reg.sg").write_text(reg)
    err = run_error(capsys, "train", "reg.sg", "--executor", "interp")
    assert "reg.sg" in err and "needs a sequence target such as y[t] : class(V)" in err


def test_checkpoint_of_another_spec_is_refused(trained, capsys):
    (trained.parent / "wide.sg").write_text(LM.replace("dim H = 12", "dim H = 10"))
    err = run_error(capsys, "eval", "wide.sg", "--checkpoint", trained)
    assert "checkpoint.npz" in err and "parameter 'W' has shape [10," in err


def test_a_spec_with_an_unused_parameter_resumes_and_is_measured(work, capsys):
    """An unused parameter is a warning, and has no array, so none is saved; resume and
    jacobian asked the checkpoint for it and refused the spec's own run (review 35)."""
    (work / "lm.sg").write_text(LM.replace("param W, U, b, Wo, bo", "param W, U, b, Wo, bo, Zq"))
    assert train("run", "--steps", 2) == 0
    assert main(["train", "lm.sg", "--resume", "run", "--steps", "3", "--executor", "interp",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["jacobian", "lm.sg", "--checkpoint", "run", "--steps", "3"]) == 0
    assert "state h" in capsys.readouterr().out


def test_usage_errors(work, capsys):
    assert "did you mean 'batch'" in run_error(capsys, "train", "lm.sg", "--set", "bacth=3")
    assert "no such checkpoint" in run_error(capsys, "eval", "lm.sg", "--checkpoint", "nope")
    no_data = LM.replace('  data = chars("tiny.txt")\n', "")
    (work / "nodata.sg").write_text(no_data)
    assert "names no data" in run_error(capsys, "train", "nodata.sg")
    # no train block at all (walk 14: told its train block named no data)
    (work / "noblock.sg").write_text(LM[:LM.index("train {")])
    assert "the spec has no train block: add one, train { data = chars(\"file.txt\") }" \
        in run_error(capsys, "train", "noblock.sg")


def test_config_defaults_overrides_and_checks(tmp_path):
    from seqgraph.errors import UsageError
    from seqgraph.train.config import DEFAULTS, make_config, parse_sets
    sets = parse_sets(["batch=8", "optimizer=sgd(lr=0.5)", "dtype=float64", "valid=0"])
    cfg = make_config({"batch": 4, "clip": 1}, sets, tmp_path)
    assert (cfg.batch, cfg.clip, cfg.dtype, cfg.valid, cfg.epochs) == \
        (8, 1.0, "float64", 0.0, DEFAULTS["epochs"])
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.kwargs == {"lr": 0.5}
    assert cfg.base == str(tmp_path)                      # spec paths: the spec's directory
    assert make_config({}, parse_sets(['data=chars("a.txt")'])).base == os.getcwd()
    for bad, msg in [({"batch": 0}, "batch must be an integer >= 1"),
                     ({"teacher": 2}, r"teacher must be a number in \[0, 1\]"),
                     ({"valid": 1}, r"valid must be a fraction in \[0, 1\)"),
                     ({"dtype": "int8"}, "dtype must be float32 or float64")]:
        with pytest.raises(UsageError, match=msg):
            make_config(bad)
    with pytest.raises(UsageError, match="expected key=value"):
        parse_sets(["batch"])
    with pytest.raises(UsageError, match="cannot read the value"):
        parse_sets(["batch=(("])


def test_the_command_exits_2_without_a_traceback(work):
    """The real process, as a user runs it."""
    p = subprocess.run([sys.executable, "-m", "seqgraph.cli", "train", "lm.sg", "--set",
                        'data=chars("missing.txt")'], capture_output=True, text=True,
                       env=cli_env(), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "missing.txt: no such file" in p.stderr


def test_a_reader_that_goes_away_stops_the_cli_quietly():
    """`seqgraph check spec | head -1`: the pipe closes before the output is written;
    the CLI stops with 141 (128 + SIGPIPE), as Unix tools do, and no traceback."""
    r, w = os.pipe()
    os.close(r)                                  # the reader is gone before any write
    p = subprocess.run([sys.executable, "-m", "seqgraph.cli", "check",
                        str(ROOT / "specs/charlm.sg")], stdout=w, stderr=subprocess.PIPE,
                       text=True, env=cli_env(), check=False)
    os.close(w)
    assert p.returncode == 141 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr == ""


def test_dim_overriding_a_declared_vector_size_is_what_the_data_is_read_with(tmp_path,
                                                                            capsys):
    """`--dim D=3` over the spec's `dim D = 8`: the loader read the vectors with the
    spec's 8, and the model failed on them (walk 12: a traceback from the kernel)."""
    assert main(["train", str(ROOT / "specs/one_to_many.sg"), "--dim", "D=3", "--out",
                 str(tmp_path / "r"), "--steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "one_to_many.tsv:1: expected the source as 3 numbers for c : vec(3), found 8" \
        in err and "Traceback" not in err, err


@pytest.mark.parametrize("size", ["0", "\u00b2"])      # (str.isdigit holds for the 2nd)
@pytest.mark.parametrize("command", ["check", "train", "render", "gradcheck", "jacobian"])
def test_every_command_reads_dim_alike(command, size, capsys):
    """One `--dim` reader for every command: a size below 1 or not a number is refused
    with the form expected and an example."""
    argv = [command, str(ROOT / "specs/elman.sg"), "--dim", f"V={size}"]
    if command == "render":
        argv += ["-o", "x.dot"]
    assert main(argv) == 2
    assert f"--dim 'V={size}': expected NAME=SIZE with SIZE a whole number of at least 1, e.g. " \
           "--dim V=65" in capsys.readouterr().err


@pytest.mark.parametrize("given, words", [
    ("v=16", "--dim v=16: "), ("Q=5", "has no size 'Q' (its sizes: H, V)")])
@pytest.mark.parametrize("command", ["check", "train", "render"])
def test_a_dim_the_spec_has_no_size_for_is_refused(command, given, words, capsys):
    argv = [command, str(ROOT / "specs/elman.sg"), "--dim", given]
    if command == "render":
        argv += ["-o", "x.dot"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and ("did you mean 'V'?" in err or given == "Q=5"), err


# ------------------------------------------------- a run scored as it was trained
# (walk 6: a run is evaluated, sampled and resumed with the sizes `--dim` gave, on the
# data `--set data=...` gave, and never samples an id that names no token)
def _run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _train(capsys, out, *extra):
    code, _, err = _run(capsys, "train", "lm.sg", "--out", out, "--quiet", "--steps", 6,
                       *extra)
    assert code == 0, err


def test_a_size_given_by_dim_is_the_size_eval_sample_and_resume_use(work, capsys):
    _train(capsys, "h8", "--dim", "H=8")                       # the spec says H = 12
    t = restore("lm.sg", "h8/checkpoint.npz")
    assert t.model.params["U"].shape == (8, 8)
    code, out, err = _run(capsys, "eval", "lm.sg", "--checkpoint", "h8", "--json")
    assert code == 0, err
    code, out, err = _run(capsys, "sample", "lm.sg", "--checkpoint", "h8", "--length", 20,
                         "--seed", 1)
    assert code == 0 and len(out.strip()) > 0, err
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "h8", "--quiet", "--steps", 8)
    assert code == 0, err
    assert restore("lm.sg", "h8/checkpoint.npz").model.params["U"].shape == (8, 8)


def test_eval_scores_the_data_the_run_was_trained_on(work, capsys):
    (work / "other.txt").write_text(tiny_text(seed=3))
    words = 'data=words("other.txt", vocab=30)'
    _train(capsys, "w", "--set", words)
    code, out, err = _run(capsys, "eval", "lm.sg", "--checkpoint", "w", "--json")
    assert code == 0, err
    implicit = json.loads(out)
    code, out, err = _run(capsys, "eval", "lm.sg", "--checkpoint", "w", "--json", "--data",
                         'words("other.txt", vocab=30)')
    held_out_of_all = json.loads(out)
    assert implicit["file"].endswith("other.txt") and implicit["tokens"] > 0
    # the held-out tail of other.txt, read as words: its tokens are words, not characters
    assert implicit["tokens"] < held_out_of_all["tokens"] < 400
    # a run trained on the spec's own data keeps the spec's configuration (and locations)
    _train(capsys, "c")
    t = restore("lm.sg", "c/checkpoint.npz")
    assert trained_config(t, "lm.sg").from_set == frozenset()
    assert trained_config(restore("lm.sg", "w/checkpoint.npz"), "lm.sg").from_set == {"data"}


def test_sampling_never_chooses_an_id_that_names_no_token(work, capsys):
    _train(capsys, "v", "--dim", "V=100")                 # the text has 13 symbols
    alphabet = set(tiny_text())
    for flags in ((), ("--greedy",), ("--temperature", 5)):
        code, out, err = _run(capsys, "sample", "lm.sg", "--checkpoint", "v", "--length",
                             200, "--seed", 2, *flags)
        assert code == 0, err
        assert set(out) <= alphabet | {"\n"}, out


def test_train_warns_of_a_model_that_reads_its_answer_even_when_quiet(work, capsys):
    (work / "leak.sg").write_text(LM.replace("U @ h[t-1]", "U @ h[t+1]"))
    code, _, err = _run(capsys, "train", "leak.sg", "--out", "r", "--quiet", "--steps", 2)
    assert code == 0, err
    assert "leak.sg: warning: o[t] reads x at every later step (h[t] reads h[t+1], line " \
        "6): x[t+1] is the target y[t] of a language model (chars data: y[t] = x[t+1]), " \
        "so the model sees the answer; did you mean h[t-1]?" in err.splitlines(), err
    code, _, err = _run(capsys, "train", "lm.sg", "--out", "r2", "--quiet", "--steps", 2)
    assert code == 0 and "warning: o[t]" not in err, err


def test_small_things_a_new_user_met(work, capsys):
    """Another run in the folder is refused (it would be lost) unless --overwrite, which
    says what stays; --dim twice is refused; a bare path in --set gets the loader call to
    write; a checkpoint is as readable as the other files of a run."""
    import os
    import stat
    _train(capsys, "r", "--set", "select=loss")          # best.npz: the lowest valid loss
    before = (work / "r/checkpoint.npz").read_bytes()
    code, _, err = _run(capsys, "train", "lm.sg", "--out", "r", "--quiet", "--steps", 2)
    assert code == 2 and err.strip() == "r holds another run (its checkpoint.npz); --resume " \
        "r continues it, --out DIR starts this one beside it, --overwrite replaces it", err
    assert (work / "r/checkpoint.npz").read_bytes() == before          # nothing lost
    code, _, err = _run(capsys, "train", "lm.sg", "--out", "r", "--quiet", "--steps", 2,
                        "--overwrite")
    assert code == 0 and "warning: --overwrite: this run writes over r/checkpoint.npz and " \
        "metrics; its best.npz stays until this run writes its own" in err, err
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "r", "--quiet", "--steps", 3)
    assert code == 0 and "another run" not in err, err               # resumed in place
    _train(capsys, "r2")
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "r", "--out", "r2", "--quiet",
                        "--steps", 4)
    assert code == 2 and "r2 holds a checkpoint.npz other than the one resumed" in err, err
    mode = stat.S_IMODE(os.stat("r/checkpoint.npz").st_mode)
    assert mode == stat.S_IMODE(os.stat("r/metrics.csv").st_mode), oct(mode)
    code, _, err = _run(capsys, "check", "lm.sg", "--dim", "H=3", "--dim", "H=4")
    assert code == 2 and "--dim H is given twice (H=3 and H=4)" in err
    code, _, err = _run(capsys, "train", "lm.sg", "--set", "data=tiny.txt")
    assert code == 2 and "--set 'data=chars(\"tiny.txt\")'" in err, err
    (work / "ds.sg").write_text(LM.replace("o[t] = Wo @ dropout(h[t], 0.1) + bo",
                                           "o[t] = softmax(Wo @ h[t] + bo)"))
    code, _, err = _run(capsys, "check", "ds.sg")
    assert code == 0 and "ds.sg:7:1: warning: o is a softmax and xent applies a softmax " \
        "to it again: xent takes logits" in err, err


def test_resuming_a_copy_kept_beside_a_later_checkpoint_does_not_write_over_it(
        work, capsys):
    """`--resume run/step3.npz` (a copy kept in the run folder) wrote over the later
    run/checkpoint.npz and cut metrics.csv to the copy's rows, silently; the refusal of
    `--resume A --out B` into a B that holds a run suggested --overwrite, which argparse
    refuses beside --resume (review 39)."""
    import shutil
    _train(capsys, "r")                                   # step 6
    shutil.copy(work / "r/checkpoint.npz", work / "r/step6.npz")
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "r", "--quiet", "--steps", 9)
    assert code == 0, err
    before = {n: (work / "r" / n).read_bytes() for n in ("checkpoint.npz", "metrics.csv")}
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "r/step6.npz", "--quiet",
                        "--steps", 7)
    assert code == 2 and err.strip() == "r holds a checkpoint.npz other than the one " \
        "resumed (r/step6.npz): continuing there would write over it, with its metrics; " \
        "give this run another --out, or move r/checkpoint.npz away", err
    assert {n: (work / "r" / n).read_bytes() for n in before} == before     # nothing lost
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "r/step6.npz", "--out", "b",
                        "--quiet", "--steps", 7)
    assert code == 0, err
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "r/checkpoint.npz", "--quiet",
                        "--steps", 10)
    assert code == 0, err                                 # the folder's own checkpoint


def test_resuming_a_best_npz_says_it_holds_no_state_not_that_it_writes_over_a_run(
        work, capsys):
    """`--resume r/best.npz` was refused as writing over r/checkpoint.npz ("give this
    run another --out"), and with another --out then as holding no training state, the
    one reason that stands (review 44)."""
    _train(capsys, "r", "--set", "select=loss")
    assert (work / "r/best.npz").exists()
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "r/best.npz", "--quiet",
                        "--steps", 9)
    assert code == 2 and err.strip() == "r/best.npz: holds no training state to resume " \
        "from", err


def test_an_empty_out_or_resume_is_refused_not_taken_as_none(work, capsys):
    """`--out ""` (a script's `--out "$DIR"` with DIR unset) trained into runs/lm, and
    `--resume ""` started a new run (review 39)."""
    for flag in ("--out", "--resume"):
        code, _, err = _run(capsys, "train", "lm.sg", flag, "", "--quiet", "--steps", 1)
        assert code == 2 and err.startswith(f"{flag} is given an empty path"), err
    assert not (work / "runs").exists()


@pytest.mark.parametrize("quiet", [["--quiet"], []])
def test_mpi_timeout_without_distributed_is_said_to_do_nothing(work, capsys, quiet):
    """It was ignored without a word (review 41); the run goes on, on one process.
    Without --quiet it ended in a traceback (the ranks' quiet was set on no MPI)."""
    code, _, err = _run(capsys, "train", "lm.sg", "--mpi-timeout", 5, *quiet,
                        "--steps", 1, "--out", "r")
    assert code == 0 and "--mpi-timeout does nothing without --distributed" in err, err
    assert "Traceback" not in err


def test_an_output_in_a_folder_that_is_not_there_is_refused_first(work, capsys):
    _train(capsys, "r")
    for argv in (["render", "lm.sg", "-o", "no/g.dot"], ["render", "lm.sg", "-o", "no/g.png"],
                 ["jacobian", "lm.sg", "-o", "no/j.png"],
                 ["eval", "lm.sg", "--checkpoint", "r", "--per-example", "no/p.csv"]):
        code, _, err = _run(capsys, *argv)
        assert code == 2 and "the folder 'no' does not exist" in err, (argv, err)
        assert "Traceback" not in err


def test_a_run_of_the_specs_data_is_scored_after_its_folder_moves(work, capsys):
    """The spec's own data is not recorded as an absolute path (the folder may move);
    a --set file is, and a resume reads it again without being told."""
    import shutil
    _train(capsys, "r")
    moved = work.parent / (work.name + "_moved")
    shutil.copytree(work, moved)
    shutil.move(work / "tiny.txt", work / "gone.txt")
    os.chdir(moved)
    code, out, err = _run(capsys, "eval", "lm.sg", "--checkpoint", "r", "--json")
    assert code == 0 and json.loads(out)["file"] == str(moved / "tiny.txt"), err
    (moved / "other.txt").write_text(tiny_text(seed=4))
    _train(capsys, "w", "--set", 'data=chars("other.txt")')
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "w", "--quiet", "--steps", 9)
    assert code == 0, err                       # the data of the run, not tiny.txt's
    (moved / "other.txt").rename(moved / "again.txt")
    code, _, err = _run(capsys, "eval", "lm.sg", "--checkpoint", "w")
    assert code == 2 and "this run was trained with --set data=chars(" in err and \
        "other.txt" in err, err
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "w", "--quiet", "--steps", 11,
                        "--set", 'data=chars("again.txt")')      # the same text, given again
    assert code == 0, err


def test_resume_with_another_dim_keeps_the_ones_the_run_was_trained_with(work, capsys):
    _train(capsys, "h8", "--dim", "H=8")
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "h8", "--dim", "V=14",
                        "--quiet", "--steps", 8)
    assert code == 0, err
    assert restore("lm.sg", "h8/checkpoint.npz").model.params["U"].shape == (8, 8)
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "h8", "--dim", "H=6",
                        "--quiet", "--steps", 9)
    assert code == 2 and "was saved from model 'lm' with other sizes (H=6 here)" in err \
        and "its sizes: --dim H=8" in err, err


def test_resuming_a_finished_run_says_there_is_nothing_left(work, capsys):
    _train(capsys, "done", "--set", "epochs=1", "--steps", 10_000)
    before = (work / "done/checkpoint.npz").read_bytes()
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "done", "--set", "epochs=1",
                        "--quiet")
    assert code == 2 and "the run is at epoch 1 of epochs = 1: nothing is left to train; " \
        "raise --epochs" in err, err
    assert (work / "done/checkpoint.npz").read_bytes() == before        # not rewritten


def test_a_run_folder_that_cannot_be_made_or_written_is_said_first(work, capsys,
                                                                   monkeypatch):
    (work / "afile").write_text("x")
    code, _, err = _run(capsys, "train", "lm.sg", "--out", "afile/run", "--quiet")
    assert code == 2 and err.strip() == "--out afile/run: cannot make it (afile is a file)"
    # a folder the system refuses where access() said yes (root; /proc): said, no
    # traceback (walk 15: FileNotFoundError, exit 1)
    if Path("/proc/self").exists():
        code, _, err = _run(capsys, "train", "lm.sg", "--out", "/proc/nope", "--quiet")
        assert code == 2 and err.strip().startswith("/proc/nope: cannot make the run "
                                                    "folder ("), err
    # a disk that fills up during the run: said, with the last good checkpoint
    from seqgraph.train import checkpoint as ck
    real, calls = ck.save, [0]

    def full(*a, **k):
        calls[0] += 1
        if calls[0] > 1:
            raise OSError(28, "No space left on device", str(a[0]))
        return real(*a, **k)
    monkeypatch.setattr(ck, "save", full)
    monkeypatch.setenv("SEQGRAPH_CHECKPOINT_EVERY", "2")
    code, _, err = _run(capsys, "train", "lm.sg", "--out", "full", "--quiet", "--steps", 6)
    assert code == 2 and "cannot write full/checkpoint.npz (No space left on device); the " \
        "last good checkpoint is full/checkpoint.npz" in err and "Traceback" not in err, err


def test_a_write_that_fails_names_its_file_and_a_removed_checkpoint_is_not_good(
        work, capsys, monkeypatch):
    """A write that fails for a full disk raises OSError without a file name (ENOSPC,
    EFBIG past `ulimit -f`): the error named the run folder, not the file; a run folder
    removed during the run was said to hold "the last good checkpoint" (review 39)."""
    import csv
    import errno
    import shutil

    from seqgraph.train.loop import Trainer
    with monkeypatch.context() as m:
        m.setattr(np, "savez", lambda *a, **k: (_ for _ in ()).throw(
            OSError(errno.ENOSPC, "No space left on device")))
        code, _, err = _run(capsys, "train", "lm.sg", "--out", "a", "--quiet", "--steps", 2,
                            "--executor", "interp")
    assert code == 2 and err.strip() == "cannot write a/checkpoint.npz (No space left on " \
        "device); no checkpoint was written", err
    real = csv.DictWriter.writerow

    def big(self, row):
        if row.get("step") == 3:
            raise OSError(errno.EFBIG, "File too large")
        return real(self, row)
    with monkeypatch.context() as m:
        m.setattr(csv.DictWriter, "writerow", big)
        m.setenv("SEQGRAPH_CHECKPOINT_EVERY", "2")
        code, _, err = _run(capsys, "train", "lm.sg", "--out", "b", "--quiet", "--steps", 5,
                            "--executor", "interp")
    assert code == 2 and err.strip() == "cannot write b/metrics.csv (File too large); the " \
        "last good checkpoint is b/checkpoint.npz (checkpoints are written whole or not " \
        "at all)", err
    update = Trainer._update

    def removed(self, batch):
        if self.pos.step == 3:
            shutil.rmtree(self.out)
        return update(self, batch)
    with monkeypatch.context() as m:
        m.setattr(Trainer, "_update", removed)
        m.setenv("SEQGRAPH_CHECKPOINT_EVERY", "2")
        code, _, err = _run(capsys, "train", "lm.sg", "--out", "c", "--quiet", "--steps", 5,
                            "--executor", "interp")
    assert code == 2 and err.strip() == "cannot write c/metrics.csv (No such file or " \
        "directory); the last checkpoint it wrote, c/checkpoint.npz, is no longer there", err


def test_operating_a_run(work, capsys, monkeypatch):
    """--minutes must be positive; mpiexec without --distributed is warned of; resuming
    with another executor is warned of; eval with another model's checkpoint names both."""
    code, _, err = _run(capsys, "train", "lm.sg", "--minutes", "0")
    assert code == 2 and "--minutes must be a positive number of minutes" in err
    monkeypatch.setenv("PMI_SIZE", "3")
    code, _, err = _run(capsys, "train", "lm.sg", "--out", "m", "--quiet", "--steps", 2,
                        "--executor", "interp")
    assert code == 0 and "started by mpiexec with 3 processes but without --distributed" \
        in err, err
    monkeypatch.delenv("PMI_SIZE")
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "m", "--quiet", "--steps", 3,
                        "--executor", "compiled")
    assert code == 0 and "trained with the interp executor and continues with the " \
        "compiled one" in err, err
    (work / "other.sg").write_text(LM.replace("model lm", "model other").replace(
        "param W, U, b, Wo, bo", "param W, U, b, Wo, bo, Q").replace(
        "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b)",
        "h[t] : H = tanh(W @ x[t] + U @ h[t-1] + Q @ h[t-1] + b)"))
    code, _, err = _run(capsys, "eval", "other.sg", "--checkpoint", "m")
    assert code == 2 and "was saved from model 'lm' (parameters" in err and \
        "not from model 'other' of other.sg" in err and "a run of this spec" in err, err


def test_the_last_line_says_finished_or_which_limit_stopped_it(work, capsys):
    assert main(["train", "lm.sg", "--out", "run", "--executor", "interp", "--set",
                 "epochs=1"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("finished: 1 epoch, ") and "checkpoint " in err[-1], err
    assert "continue with" not in err[-1]
    assert any(x.startswith("epoch 1/1") and x.endswith("s of training in all)")
               for x in err), err
    assert main(["train", "lm.sg", "--out", "run2", "--executor", "interp", "--steps",
                 "2"]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("stopped at step 2 (epoch 1; the --steps limit)"), last


def test_a_minutes_limit_is_named_even_with_steps_given(work, capsys):
    assert main(["train", "lm.sg", "--out", "run", "--executor", "interp", "--steps",
                 "100000", "--minutes", "0.0001", "--epochs", "500"]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the --minutes limit)" in last, last


def test_a_checkpoint_file_without_a_suffix_is_read_as_a_file(trained, capsys):
    import shutil

    import seqgraph
    shutil.copy(trained / "checkpoint.npz", trained.parent / "ckptfile")
    t = seqgraph.restore("lm.sg", str(trained.parent / "ckptfile"))
    assert t.checkpoint.path.endswith("ckptfile")


def test_a_run_cut_short_prints_its_continue_command_and_a_bad_set_warns_of_nothing(
        work, capsys):
    assert main(["train", "lm.sg", "--out", "run", "--executor", "interp", "--steps",
                 "2"]) == 0
    last = capsys.readouterr().err.splitlines()[-1]
    assert "continue with: seqgraph train lm.sg " in last and last.endswith("--resume run")
    # --overwrite with a bad --set: the value is refused, the run folder is not announced
    assert main(["train", "lm.sg", "--out", "run", "--overwrite", "--set",
                 "batch=zero"]) == 2
    assert "warning: --overwrite" not in capsys.readouterr().err


@pytest.fixture
def sigint_default():
    """SIGINT with Python's own handler (a CI runner may start the tests ignoring it)."""
    import signal
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("where, argv, said", [
    ("_score", [], "SIGINT: came as the run finished (2 epochs, "),
    ("save", [], "SIGINT: came as the run finished (2 epochs, "),
    ("_score", ["--steps", 5], "SIGINT: stopped at step 5; checkpoint r/checkpoint.npz; "
                               "continue with: seqgraph train lm.sg --resume r")])
def test_a_signal_during_the_last_validation_or_save_is_not_dropped(
        work, capsys, monkeypatch, sigint_default, where, argv, said):
    """Ctrl-C while the last epoch (or a --steps run's stop) validates or saves: the run
    ends whole, as it would have, but exits 130 saying so; it exited 0, 'finished', the
    signal dropped."""
    import signal

    from seqgraph.train import checkpoint as ck
    from seqgraph.train.loop import Trainer
    own = getattr(Trainer, where)

    def late(self, *a, **k):
        # (the epoch is counted before an epoch's save, after its validation)
        last = self.pos.step == 5 if argv else \
            self.pos.epoch + (where == "_score") >= self.cfg.epochs
        if last and not getattr(self, "_sent", False):
            self._sent = True
            os.kill(os.getpid(), signal.SIGINT)     # noted only, as between two updates
        return own(self, *a, **k)
    monkeypatch.setattr(Trainer, where, late)
    code, _, err = _run(capsys, "train", "lm.sg", "--out", "r", "--quiet", *argv)
    assert code == 128 + signal.SIGINT and said in err and "Traceback" not in err, err
    st = ck.load("r/checkpoint.npz").meta["state"]["position"]      # whole, and the last
    assert (st["step"], st["window"]) == (5, 5) if argv else st["epoch"] == 2, st


def test_steps_0_says_it_stopped_before_the_first_update(work, capsys):
    """It said 'stopped at step 0 (epoch 0; ...)', an epoch the epoch lines (1-based)
    never name; the checkpoint holds the initial parameters, and the run continues."""
    code, _, err = _run(capsys, "train", "lm.sg", "--out", "r", "--steps", 0)
    assert code == 0 and "stopped at step 0 (before the first update; the --steps limit)" \
        in err and "epoch 0" not in err, err
    code, _, err = _run(capsys, "train", "lm.sg", "--resume", "r", "--steps", 3)
    assert code == 0 and "stopped at step 3 (epoch 1; the --steps limit)" in err, err
