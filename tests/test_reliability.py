"""Reliability of `seqgraph train` (issue 9): kill safety, signals, determinism, memory.

Every run here is the real command in a subprocess (`python -m seqgraph.cli train`), on a
tiny text, with one thread (OMP/OpenBLAS/MKL/Numba threads = 1). docs/reliability.md
lists each guarantee with the test that checks it.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from seqgraph.train import checkpoint as ck

from conftest import cli_env, signal_after

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the cat sat on a mat and the dog ran to the hat".split()

LM = """\
model lm
dim H = 8
input  x[t] : onehot(V)
target y[t] : class(V)
param W, U, b, Wo, bo
h[t] : H = tanh(W @ x[t] + U @ h[t-1] + b)
o[t] = Wo @ dropout(h[t], 0.1) + bo
loss xent(o[t], y[t])
train {
  data = chars("tiny.txt")
  valid = 0.05
  optimizer = adam(lr = 0.02)
  batch = 2
  bptt = 8
  epochs = EPOCHS
}
"""


def tiny_text(lines: int) -> str:
    rng = np.random.default_rng(0)
    return "".join(" ".join(rng.choice(WORDS, 6)) + "\n" for _ in range(lines))


@pytest.fixture
def work(tmp_path):
    """tiny.txt (107 windows of batch 2 x bptt 8 an epoch) and lm.sg (3 epochs)."""
    (tmp_path / "tiny.txt").write_text(tiny_text(80))
    (tmp_path / "lm.sg").write_text(LM.replace("EPOCHS", "3"))
    return tmp_path


def command(*args) -> list[str]:
    return [sys.executable, "-m", "seqgraph.cli", "train", "lm.sg", "--quiet", *map(str, args)]


env = cli_env


def train(cwd, *args, timeout=300, **extra) -> subprocess.CompletedProcess:
    p = subprocess.run(command(*args), cwd=cwd, env=env(**extra), capture_output=True,
                       text=True, timeout=timeout, check=False)
    assert p.returncode == 0, p.stderr
    return p


def params(path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files if not k.startswith("__")}


def step_of(path) -> int:
    return ck.load(path).meta["state"]["position"]["step"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def train_rows(run: Path) -> list[tuple]:
    with open(run / "metrics.csv", newline="") as f:
        return [(r["step"], r["train_loss"], r["grad_norm"]) for r in csv.DictReader(f)
                if r["train_loss"]]


# ------------------------------------------------------------------- kill safety
def _kill_when(proc, run: Path, mode: str, rnd: random.Random) -> str:
    """SIGKILL `proc`: at a random moment from its start ("random": start-up included),
    a random moment after its first checkpoint ("training"), or as soon as a checkpoint
    is being written ("saving": a temporary file exists). Returns what was seen."""
    ckpt = run / "checkpoint.npz"
    before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
    deadline = time.monotonic() + 60
    seen = mode
    if mode == "random":
        time.sleep(rnd.uniform(0.0, 3.0))
    elif mode == "training":
        while time.monotonic() < deadline and proc.poll() is None and \
                (not ckpt.exists() or ckpt.stat().st_mtime_ns == before):
            time.sleep(0.005)
        time.sleep(rnd.uniform(0.0, 0.3))
    else:
        seen = "saving (missed)"
        while time.monotonic() < deadline and proc.poll() is None:
            if any(p.name.endswith(".tmp") for p in os.scandir(run)
                   if p.name.startswith(".checkpoint.npz.")):
                seen = "saving"
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if seen == "saving" and not any(n.endswith(".tmp") for n in os.listdir(run)):
        seen = "saving (finished first)"
    return seen


def test_sigkill_at_random_moments_never_loses_the_checkpoint(work):
    """22 SIGKILLs (random moments, mid-training, mid-checkpoint-write), a checkpoint at
    every update: after each kill the latest checkpoint loads and never goes back, and
    `--resume` continues; the final parameters and training curve are bit-identical to
    those of a run that was never killed."""
    rnd = random.Random(9)
    # a run far longer than the kills last, so that no process ever finishes on its own
    # (a fast machine would otherwise complete 3 epochs between kills)
    (work / "lm.sg").write_text(LM.replace("EPOCHS", "500"))
    run = work / "killed"
    run.mkdir()
    modes = ["random"] * 8 + ["training"] * 6 + ["saving"] * 8
    rnd.shuffle(modes)
    seen, last = [], 0
    for mode in modes:
        args = ("--resume", run) if (run / "checkpoint.npz").exists() else ("--out", run)
        proc = subprocess.Popen(command("--executor", "interp", *args), cwd=work,
                                env=env(SEQGRAPH_CHECKPOINT_EVERY="1"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        seen.append(_kill_when(proc, run, mode, rnd))
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
        if (run / "checkpoint.npz").exists():
            c = ck.load(run / "checkpoint.npz")          # the latest always loads
            step = c.meta["state"]["position"]["step"]
            assert step >= last                          # and never goes back
            last = step
    print("kills:", {m: seen.count(m) for m in sorted(set(seen))}, "last step:", last)
    assert len(seen) >= 20
    assert sum(s == "saving" for s in seen) >= 1, seen   # killed inside a write, at least once
    assert last > 0, seen
    n = last + 10
    train(work, "--executor", "interp", "--resume", run, "--steps", n)
    train(work, "--executor", "interp", "--out", "straight", "--steps", n)
    assert step_of(run / "checkpoint.npz") == n
    assert same(params(run / "checkpoint.npz"), params(work / "straight/checkpoint.npz"))
    assert train_rows(run) == train_rows(work / "straight")
    assert not [p for p in os.listdir(run) if p.endswith(".tmp")]   # leftovers removed


def test_sigint_saves_a_checkpoint_and_exits_130(work):
    """Ctrl-C: the update in progress finishes, a checkpoint is written, a message names
    it and how to resume, exit code 130; resuming ends where an uninterrupted run ends."""
    run = work / "int"
    code, err = signal_after(command("--executor", "interp", "--out", run), work, env(), run,
                             signal.SIGINT)
    assert code == 130, err
    assert "SIGINT: stopped at step" in err and "--resume" in err and "Traceback" not in err
    # the command it prints repeats the run's own flags
    assert err.split("continue with: ")[1].split("\n")[0].endswith(
        f"--executor interp --resume {run}"), err
    step = step_of(run / "checkpoint.npz")
    assert f"stopped at step {step};" in err and step >= 5
    assert [int(r[0]) for r in train_rows(run)] == list(range(1, step + 1))
    if importlib.util.find_spec("matplotlib"):
        assert (run / "loss.png").exists()            # the curves so far are drawn
    train(work, "--executor", "interp", "--resume", run, "--steps", step + 5)
    train(work, "--executor", "interp", "--out", "straight", "--steps", step + 5)
    assert same(params(run / "checkpoint.npz"), params(work / "straight/checkpoint.npz"))


def test_sigterm_is_handled_like_sigint(work):
    run = work / "term"
    proc = subprocess.Popen(command("--executor", "interp", "--out", run), cwd=work, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and \
            not (run / "metrics.csv").exists():
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: stopped at step" in err
    assert ck.load(run / "checkpoint.npz").meta["state"]["position"]["step"] >= 0


@pytest.fixture
def sigint():
    """SIGINT with Python's own handler for the test (a shell's background job, nohup or
    a CI runner may start the tests with it ignored), restored afterwards."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_interrupts_context_defers_the_first_signal_only(sigint):
    with ck.Interrupts() as s:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert s.signal == signal.SIGINT                 # the first is only noted
        with pytest.raises(KeyboardInterrupt):           # a second stops at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_sigterm_exits_143(monkeypatch, capsys):
    """The second signal stops at once, and the exit code names it: 128 + 15."""
    from seqgraph import cli
    with ck.Interrupts() as s:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert s.signal == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt) as e:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
    assert e.value.signum == signal.SIGTERM

    def stopped(argv):
        raise e.value
    monkeypatch.setattr(cli, "_main", stopped)
    assert cli.main(["train", "x.sg"]) == 143
    assert capsys.readouterr().err == "interrupted\n"


def test_an_echo_of_the_same_signal_is_not_a_second_one(sigint):
    """Under MPI a rank may get a SIGTERM twice at once (sent to every process of the
    job, and forwarded by mpiexec): within `echo` seconds the same signal is ignored;
    another signal, or the same later, still stops at once."""
    with ck.Interrupts(echo=0.5) as s:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert s.signal == signal.SIGINT
        time.sleep(0.6)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)


def test_an_echo_after_the_run_stopped_does_not_kill_the_rank(tmp_path):
    """The echo may come after the context is left (the run saved and is about to say
    where it stopped): it is ignored within the window, not met by the default action
    (a kill: an MPI job once exited 15 without a word, sigterm_to_all in test_mpi.py);
    later, the signal acts as before. Run in a child: the default action kills."""
    code = textwrap.dedent("""
        import os, signal, sys, time
        from seqgraph.train import checkpoint as ck
        with ck.Interrupts(echo=0.5) as s:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        assert s.signal == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)         # the echo, late
        time.sleep(0.01)
        print("alive", flush=True)
        time.sleep(0.6)
        os.kill(os.getpid(), signal.SIGTERM)         # a new one: the default action
        time.sleep(1)
        print("not killed", flush=True)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60, check=False)
    assert p.stdout == "alive\n" and p.returncode == -signal.SIGTERM, (p.stdout, p.stderr)


def test_interrupts_context_keeps_an_ignored_signal_ignored(sigint):
    """Under nohup (SIGINT ignored) a run stays uninterruptible by SIGINT, as it was."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with ck.Interrupts() as s:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert s.signal is None
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_checkpoint_every_env_is_checked(monkeypatch):
    """N updates, or 0 (and unset) for none between epochs; anything else is refused."""
    from seqgraph.errors import UsageError
    for bad in ("-1", "2.5", "often", "\u00b2"):
        monkeypatch.setenv(ck.EVERY_ENV, bad)
        with pytest.raises(UsageError, match="SEQGRAPH_CHECKPOINT_EVERY"):
            ck.every_from_env()
    monkeypatch.setenv(ck.EVERY_ENV, "0")
    assert ck.every_from_env() is None
    monkeypatch.setenv(ck.EVERY_ENV, "7")
    assert ck.every_from_env() == 7
    monkeypatch.delenv(ck.EVERY_ENV)
    assert ck.every_from_env() is None


def test_a_stale_temporary_is_removed_by_the_next_save(tmp_path):
    (tmp_path / ".checkpoint.npz.abc123.tmp").write_bytes(b"half a checkpoint")
    ck.save(tmp_path / "checkpoint.npz", {"W": np.zeros(2)}, {})
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


# ------------------------------------------------------------------- determinism
@pytest.mark.parametrize("executor", ["interp", "compiled"])
def test_same_seed_same_parameters_across_processes_and_resume(work, executor):
    """Two processes, the same spec, data and seed, one thread: bit-identical parameters
    after 30 updates; a run stopped at update 11 (mid-epoch: carried state, dropout
    generator and Adam moments in the checkpoint) and resumed ends with them too."""
    a, b, split = work / "a", work / "b", work / "split"
    train(work, "--executor", executor, "--out", a, "--steps", 30)
    train(work, "--executor", executor, "--out", b, "--steps", 30)
    assert same(params(a / "checkpoint.npz"), params(b / "checkpoint.npz"))
    train(work, "--executor", executor, "--out", split, "--steps", 11)
    train(work, "--executor", executor, "--resume", split, "--steps", 30)
    assert same(params(a / "checkpoint.npz"), params(split / "checkpoint.npz"))
    assert train_rows(a) == train_rows(split)


# ------------------------------------------------------------------- resources
RSS_DRIVER = textwrap.dedent("""
    import json, sys
    from seqgraph.cli import main
    from seqgraph.train.loop import Trainer
    from seqgraph.train.metrics import MetricsLog

    # the loss and gradient plots are drawn by a child process each epoch
    # (docs/reliability.md); what is measured here is the training process alone
    MetricsLog.plot = lambda self, wait=True: None
    if "--leak" in sys.argv:         # the test's own check that it would see a leak
        import numpy as np
        sys.argv.remove("--leak")
        kept, update = [], Trainer._update
        def leaky(self, batch):
            update(self, batch)
            kept.append(np.ones(512))    # 4 KB per update
        Trainer._update = leaky

    def rss_kb():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])

    seen = []
    end_epoch = Trainer._end_epoch
    def measured(self):
        end_epoch(self)
        seen.append(rss_kb())
    Trainer._end_epoch = measured
    code = main(sys.argv[1:])
    print(json.dumps(seen))
    sys.exit(code)
""")


@pytest.mark.parametrize("leak", [False, True], ids=["training", "with-a-4KB-leak"])
def test_memory_stays_flat_across_epochs(work, leak):
    """RSS at the end of each of 8 epochs (107 updates each, plots off): from the
    second epoch to the last it grows by less than 1 MB. The same run with a leak of
    4 KB per update injected must fail that bound (so the bound has teeth)."""
    (work / "lm.sg").write_text(LM.replace("EPOCHS", "8"))
    (work / "rss.py").write_text(RSS_DRIVER)
    p = subprocess.run([sys.executable, "rss.py", "train", "lm.sg", "--quiet", "--executor",
                        "interp", "--out", "mem"] + ["--leak"] * leak, cwd=work, env=env(),
                       capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stderr
    rss = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(rss) == 8
    grew = rss[-1] - rss[1]
    assert (grew >= 1024) if leak else (grew < 1024), rss


def test_a_spec_too_big_for_memory_is_refused_up_front(work):
    """Parameters that cannot fit, and an unfolding that cannot, are refused before any
    step, naming the estimate, the machine's memory and what to lower."""
    (work / "huge.sg").write_text(LM.replace("EPOCHS", "1").replace("dim H = 8",
                                                                    "dim H = 9999999"))
    p = subprocess.run(command("--executor", "interp")[:4] + ["huge.sg"], cwd=work, env=env(),
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "huge.sg: the parameters alone need" in p.stderr and "available" in p.stderr
    # the unfolding: batch x bptt x sizes, against a machine with 64 KB to give
    p = subprocess.run(command("--executor", "interp", "--set", "bptt=1000", "--steps", 1),
                       cwd=work, env=env(SEQGRAPH_MEMORY_AVAILABLE="65536"),
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "lm.sg: training needs about" in p.stderr
    assert "unfolded over batch 2 x bptt 1000" in p.stderr
    assert "64 KB available; lower batch or bptt" in p.stderr
    assert not (work / "runs").exists()                  # nothing was trained


def test_the_estimate_counts_sizes_batch_and_window():
    import seqgraph
    from seqgraph import resources
    spec = seqgraph.read_spec("lm.sg", LM.replace("EPOCHS", "1"))
    m = seqgraph.Model(spec, dims={"V": 10}, dtype="float32")
    e1 = resources.estimate(m.graph, m.sizes, m.param_shapes, 4, batch=2, bptt=8)
    e2 = resources.estimate(m.graph, m.sizes, m.param_shapes, 4, batch=4, bptt=16)
    n_params = sum(w.size for w in m.params.values())
    assert e1.params == 4 * n_params and e1.training_state == 3 * e1.params   # adam: 2 slots
    # B x (T + 1): the steps of h its delay h[t-1] keeps beside the window
    kept = sum(m.sizes.values())
    assert e1.unfolded == 4 * 2 * resources.STORED * (8 * kept + m.sizes["h"])
    assert e2.unfolded == 4 * 4 * resources.STORED * (16 * kept + m.sizes["h"])
    assert resources.check_training(m, 2, 8).total == e1.total               # fits here


def test_a_delay_too_long_for_memory_is_refused_naming_it(monkeypatch):
    """`h[t-1000000000000]` checked, then failed allocating 233 TiB (walk 12): the
    steps a delay keeps are in the estimate, and the refusal names the delay (a delay
    that long is now refused by check; one of a million steps, on less memory)."""
    import seqgraph
    from seqgraph import resources
    spec = seqgraph.read_spec("lm.sg", LM.replace("EPOCHS", "1").replace(
        "h[t-1]", "h[t-1000000]"))
    m = seqgraph.Model(spec, dims={"V": 10}, dtype="float32")
    monkeypatch.setenv(resources.ENV, str(10 ** 6))
    with pytest.raises(seqgraph.UsageError, match="h is read 1000000 steps away, and "
                       "as many of its steps are kept: shorten that delay"):
        resources.check_training(m, 2, 8)


# LM's model alone (no train block), its dropout 0.5
DROPPED = LM.split("train {")[0].replace("dropout(h[t], 0.1)", "dropout(h[t], 0.5)")


@pytest.mark.parametrize("executor", ["interp", "compiled"])
def test_what_is_kept_per_length_is_bounded(monkeypatch, executor):
    """A schedule (and, compiled with dropout, a mask layout) is made once per set of
    lengths and kept. Padded batches of examples have as many lengths as the data: all
    were kept for the whole run (0.8 MB each for lstm.sg at T = 1,100; 1 s each to make
    compiled, where dropout needs the interpreter's schedule). At most CACHE_ENTRIES
    entries are kept, the oldest dropped; a length seen again gives the same numbers."""
    import seqgraph
    from seqgraph import resources
    monkeypatch.setattr(resources, "CACHE_ENTRIES", 100, raising=False)
    m = seqgraph.Model(seqgraph.read_spec("d.sg", DROPPED), dims={"V": 5},
                       dtype="float64", executor=executor)
    x = np.random.default_rng(0).integers(0, 5, (2, 40))

    def loss(T):
        return m.run({"x": x[:, :T]}, {"y": x[:, :T]}, train=True, grads=True,
                     rng=np.random.default_rng(T)).loss
    first = loss(5)
    for T in range(6, 40):
        loss(T)
    kept = [m._schedules] + ([m.executor._layouts] if executor == "compiled" else [])
    # 2 entries a step (h, o): 78 at T = 39, so one schedule; a layout, one a step: two
    assert [len(cache) for cache in kept] == [1, 2][:len(kept)]
    assert loss(5) == first                      # dropped, made again: the same numbers


def test_a_length_cache_drops_the_least_recently_used():
    from seqgraph.resources import LengthCache
    c = LengthCache(size=lambda v: v, budget=10)
    made = []

    def get(key, size):
        return c.get(key, lambda: made.append(key) or size)
    get("a", 4), get("b", 4), get("a", 4)      # a used again: b is now the oldest
    get("c", 4)                                # 12 > 10: b goes
    assert list(c.values) == ["a", "c"] and c.total == 8 and made == ["a", "b", "c"]
    get("d", 30)                               # larger than the budget: kept alone
    assert list(c.values) == ["d"] and c.total == 30


def test_a_plot_is_written_whole_or_not_at_all(tmp_path):
    """A kill while loss.png was drawn left an empty file (walk 12, 20 of 20): a plot
    goes to a temporary file renamed over the old one."""
    from seqgraph.train import metrics
    rows = [{"step": str(i), "train_loss": str(1.0 / i), "valid_loss": ""}
            for i in range(1, 30)]
    png = tmp_path / "loss.png"
    assert metrics.draw_loss(rows, png) == png
    before = png.read_bytes()
    fig, _ = metrics.figure()

    def killed(path, **kw):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise KeyboardInterrupt
    fig.savefig = killed
    with pytest.raises(KeyboardInterrupt):
        metrics.save_figure(fig, png)
    assert png.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["loss.png"]
