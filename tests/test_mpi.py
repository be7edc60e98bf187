"""`mpiexec -n 2 seqgraph train SPEC --distributed` on one machine (seqgraph/train/
distributed.py, docs/scaling.md): two ranks with batch B end with the parameters of one
process with batch 2B, every rank ends with the same parameters, a resumed distributed
run ends where an uninterrupted one does, and a rank that dies or hangs ends the run with
a message and a whole checkpoint.

The module launches mpiexec itself (subprocess) and skips only when mpi4py or mpiexec is
not installed (`pip install 'seqgraph[mpi]'` brings both). Tiny model, interpreter,
float64: each launch takes a few seconds.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")
ROOT = Path(__file__).resolve().parents[1]
_here = Path(sys.executable).parent / "mpiexec"
MPIEXEC = str(_here) if _here.exists() else shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("mpiexec is not installed (pip install 'seqgraph[mpi]')",
                allow_module_level=True)

from seqgraph.train import checkpoint as ck
from seqgraph.train.distributed import params_digest

from conftest import ELMAN, cli_env

WORDS = "the cat sat on a mat and the dog ran to the hat".split()

# no dropout: a dropout mask of 2B rows is not two masks of B rows, so only a model
# without it can match the single process bit for bit (docs/scaling.md)
LM = "model lm\ndim H = 8\n" + ELMAN + """\
train {
  data = chars("tiny.txt")
  valid = 0.1
  optimizer = sgd(lr = 0.5, momentum = 0.9)
  clip = 0.5
  batch = 2
  bptt = 10
  epochs = 3
  dtype = float64
}
"""
TOL = 1e-10


@pytest.fixture
def work(tmp_path):
    rng = np.random.default_rng(0)
    # 20 lines, about 440 characters: with 4 streams of bptt 10, 10 windows an epoch
    text = "".join(" ".join(rng.choice(WORDS, 6)) + "\n" for _ in range(20))
    (tmp_path / "tiny.txt").write_text(text)
    (tmp_path / "lm.sg").write_text(LM)
    return tmp_path


_env = cli_env


def train_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "seqgraph.cli", "train", "lm.sg", "--executor", "interp",
            "--quiet", *map(str, args)]


def mpirun(work, n, *args, launcher=(), timeout=120) -> subprocess.CompletedProcess:
    cmd = [MPIEXEC, *launcher, "-n", str(n), *train_cmd("--distributed", *args)]
    return subprocess.run(cmd, cwd=work, env=_env(), capture_output=True, text=True,
                          check=False, timeout=timeout)


def single(work, *args) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(*args), cwd=work, env=_env(), capture_output=True,
                          text=True, check=False, timeout=120)


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def params(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files if not k.startswith("__")}


def meta(path: Path) -> dict:
    with np.load(path) as z:
        return json.loads(str(z["__meta__"]))


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_close(a: dict, b: dict, tol=TOL):
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert v.dtype == np.float64
        assert np.max(np.abs(v - b[k])) <= tol, k


# ------------------------------------------------------------------ equivalence
@pytest.mark.parametrize("optimizer", ["sgd(lr = 0.5, momentum = 0.9)", "adam(lr = 0.02)"])
def test_two_ranks_equal_one_process_with_the_doubled_batch(work, optimizer):
    # 14 steps cross the end of epoch 1 (validation, fresh state) into epoch 2; clip =
    # 0.5 is below every gradient norm here, so clipping acts at every step and must act
    # on the averaged gradient to match
    opt = f"optimizer={optimizer}"
    ok(mpirun(work, 2, "--steps", 14, "--out", "two", "--set", opt))
    ok(single(work, "--steps", 14, "--out", "one", "--set", "batch=4", "--set", opt))
    assert_close(params(work / "two/checkpoint.npz"), params(work / "one/checkpoint.npz"))
    # the same curve: the window's loss and the gradient norm (before clipping) of the
    # global batch, and the validation loss over the 2B validation streams
    one, two = rows(work / "one/metrics.csv"), rows(work / "two/metrics.csv")
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for r1, r2 in zip(one, two, strict=True):
        for key in ("train_loss", "valid_loss", "grad_norm"):
            assert (r1[key] == "") == (r2[key] == "")
            if r1[key]:
                assert float(r1[key]) == pytest.approx(float(r2[key]), rel=1e-5)
    assert any(r["valid_loss"] for r in two)
    assert all(float(r["grad_norm"]) > 0.5 for r in two if r["grad_norm"])


def test_every_rank_ends_with_the_same_parameters(work):
    ok(mpirun(work, 2, "--steps", 7, "--out", "two", "--set", "select=loss"))
    path = work / "two/checkpoint.npz"
    d = meta(path)["distributed"]
    assert d["ranks"] == 2 and len(d["param_digests"]) == 2
    # each rank hashed its own parameters; rank 0 wrote the checkpoint
    assert d["param_digests"][0] == d["param_digests"][1] == params_digest(params(path))
    assert len(d["rng"]) == 2 and d["rng"][0] != d["rng"][1]
    # eval scores the held-out text as the ranks validated it: N x batch streams (walk
    # 11), best.npz too (its meta holds no training state: review 31)
    last = [r for r in rows(work / "two/metrics.csv") if r["valid_loss"]][-1]
    for c in ("two", "two/best.npz"):
        p = subprocess.run([sys.executable, "-m", "seqgraph.cli", "eval", "lm.sg",
                            "--checkpoint", c, "--json", "--executor", "interp"], cwd=work,
                           env=_env(), capture_output=True, text=True, check=False,
                           timeout=120)
        assert json.loads(ok(p).stdout)["loss"] == pytest.approx(
            float(last["valid_loss"]), abs=1e-5), c                # as metrics.csv rounds


def test_a_distributed_run_resumes_where_it_stopped(work):
    # stopped at step 4, mid-epoch: each rank's carried state and generator are restored
    ok(mpirun(work, 2, "--steps", 13, "--out", "straight"))
    ok(mpirun(work, 2, "--steps", 4, "--out", "split"))
    c = ck.load(work / "split/checkpoint.npz")
    assert isinstance(c.carry, list) and len(c.carry) == 2
    ok(mpirun(work, 2, "--steps", 13, "--resume", "split"))
    assert_close(params(work / "straight/checkpoint.npz"),
                 params(work / "split/checkpoint.npz"), tol=0)
    # one process, or another number of ranks, cannot continue it
    p = single(work, "--steps", 14, "--resume", "split")
    assert p.returncode == 2 and "mpiexec -n 2" in p.stderr and "Traceback" not in p.stderr
    p = mpirun(work, 1, "--steps", 14, "--resume", "split")
    assert p.returncode == 2 and "on 2 rank(s)" in p.stderr


def averages(path: Path) -> dict:
    with np.load(path) as z:
        return {k[len("__average__/"):]: z[k] for k in z.files if k.startswith("__average__/")}


def test_two_ranks_average_as_one_process_and_resume_exactly(work):
    """`average = d`: every rank averages the same parameters, so the averages of two
    ranks are those of one process with the doubled batch; a resumed distributed run
    (stopped mid-epoch) ends with the averages of one that never stopped."""
    avg = ("--set", "average=0.9")
    ok(mpirun(work, 2, "--steps", 14, "--out", "two", *avg))
    ok(single(work, "--steps", 14, "--out", "one", "--set", "batch=4", *avg))
    a2, a1 = averages(work / "two/checkpoint.npz"), averages(work / "one/checkpoint.npz")
    assert a2 and a2.keys() == params(work / "two/checkpoint.npz").keys()
    assert_close(a2, a1)
    ok(mpirun(work, 2, "--steps", 4, "--out", "split", *avg))
    ok(mpirun(work, 2, "--steps", 14, "--resume", "split", *avg))
    assert_close(averages(work / "two/checkpoint.npz"),
                 averages(work / "split/checkpoint.npz"), tol=0)
    assert_close(params(work / "two/checkpoint.npz"),
                 params(work / "split/checkpoint.npz"), tol=0)


def test_one_rank_distributed_is_the_plain_run(work):
    ok(mpirun(work, 1, "--steps", 6, "--out", "mpi1"))
    ok(single(work, "--steps", 6, "--out", "plain"))
    assert_close(params(work / "mpi1/checkpoint.npz"), params(work / "plain/checkpoint.npz"),
                 tol=0)


# ------------------------------------------------------------------------ failures
def _rank_pid(token: str, rank: int, deadline: float) -> int:
    """The pid of rank `rank` of the job whose environment carries `token`."""
    want = {f"SEQGRAPH_MPI_TEST={token}".encode(), f"PMI_RANK={rank}".encode()}
    while time.monotonic() < deadline:
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                env = set((d / "environ").read_bytes().split(b"\0"))
            except OSError:
                continue
            if want <= env:
                return int(d.name)
        time.sleep(0.1)
    raise AssertionError(f"rank {rank} never started")


def _run_and_hit_rank1(work, sig, launcher=()):
    """A long run; once it has written a checkpoint and some steps, send `sig` to rank 1.
    Returns (exit code, stdout and stderr, seconds from the signal to the end)."""
    token = uuid.uuid4().hex
    cmd = [MPIEXEC, *launcher, "-n", "2",
           *train_cmd("--distributed", "--epochs", 100000, "--out", "run",
                      "--mpi-timeout", 5)]
    proc = subprocess.Popen(cmd, cwd=work, env=_env(SEQGRAPH_MPI_TEST=token),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        pid = _rank_pid(token, 1, deadline)
        ckpt, metrics = work / "run/checkpoint.npz", work / "run/metrics.csv"
        while not (ckpt.exists() and metrics.exists() and len(rows(metrics)) >= 25):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run wrote no checkpoint"
            time.sleep(0.05)
        os.kill(pid, sig)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)        # a hang fails here
        return proc.returncode, out + err, time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        try:
            os.kill(pid, signal.SIGKILL)
        except (OSError, UnboundLocalError):
            pass


def _checkpoint_whole(work):
    c = ck.load(work / "run/checkpoint.npz")          # a torn file would raise here
    d = c.meta["distributed"]
    assert d["param_digests"][0] == d["param_digests"][1] == params_digest(c.params)
    assert c.meta["state"]["position"]["step"] >= 1
    # (rank 0 killed while writing leaves a .checkpoint.npz.*.tmp beside it, never a
    # torn checkpoint.npz: the write is a rename)


def test_a_killed_rank_ends_the_job_and_leaves_the_checkpoint_whole(work):
    # MPICH's mpiexec kills the other ranks at once (SIGKILL, so they cannot add a word
    # of their own) and says which rank died and how
    code, err, took = _run_and_hit_rank1(work, signal.SIGKILL)
    assert code != 0 and took < 30
    assert "BAD TERMINATION" in err or "killed" in err.lower(), err
    _checkpoint_whole(work)


def test_the_other_ranks_say_that_a_rank_hangs(work):
    # a rank that stops answering (SIGSTOP: a stuck file system, a swapped-out node) is
    # not seen by the launcher: rank 0 waits --mpi-timeout (5 s) in the next collective,
    # then names the problem and the last checkpoint and aborts the whole job
    code, err, took = _run_and_hit_rank1(work, signal.SIGSTOP)
    assert code != 0 and took < 45
    assert "seqgraph: rank 0 of 2: no word from the other ranks for 5 s" in err, err
    assert "a rank died or hangs" in err and "Last checkpoint: run/checkpoint.npz" in err
    assert "Traceback" not in err
    _checkpoint_whole(work)


@pytest.mark.parametrize("to, sig", [("mpiexec", signal.SIGTERM), ("rank 1", signal.SIGINT),
                                     ("all", signal.SIGTERM)],
                         ids=["sigterm_to_mpiexec", "sigint_to_one_rank", "sigterm_to_all"])
def test_a_signal_stops_every_rank_after_the_same_step_with_a_checkpoint(work, to, sig):
    """SIGTERM to the job (mpiexec forwards it to every rank), SIGINT to one rank alone,
    or SIGTERM to every process at once (a service manager stopping the job: each rank
    gets it twice, the echo ignored): the ranks agree in the next step's Allreduce, all
    stop after it, rank 0 saves and says so once with the command that continues the
    run; continued (checked once), it ends where a run that never stopped does."""
    token = uuid.uuid4().hex
    flags = ("--distributed", "--epochs", 100000, "--mpi-timeout", 20)
    proc = subprocess.Popen([MPIEXEC, "-n", "2", *train_cmd(*flags, "--out", "run")],
                            cwd=work, env=_env(SEQGRAPH_MPI_TEST=token),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        pids = [_rank_pid(token, r, deadline) for r in (0, 1)] + [proc.pid] if to == "all" \
            else [_rank_pid(token, 1, deadline) if to == "rank 1" else proc.pid]
        metrics = work / "run/metrics.csv"
        while not (metrics.exists() and len(rows(metrics)) >= 15):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run wrote no metrics"
            time.sleep(0.05)
        for pid in pids:
            os.kill(pid, sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + sig, err
    said = [line for line in err.splitlines() if "stopped at step" in line]
    assert len(said) == 1 and "Traceback" not in err, err
    step = ck.load(work / "run/checkpoint.npz").meta["state"]["position"]["step"]
    assert said[0] == (f"{signal.Signals(sig).name}: stopped at step {step}; checkpoint "
                       f"run/checkpoint.npz; continue with: mpiexec -n 2 seqgraph train "
                       f"lm.sg --distributed --mpi-timeout 20 --epochs 100000 --executor "
                       f"interp --resume run")
    _checkpoint_whole(work)
    if to != "mpiexec":
        return                     # continuing is the same for every way of stopping
    ok(mpirun(work, 2, *flags, "--steps", step + 3, "--resume", "run"))
    ok(mpirun(work, 2, *flags, "--steps", step + 3, "--out", "straight"))
    assert_close(params(work / "straight/checkpoint.npz"),
                 params(work / "run/checkpoint.npz"), tol=0)


# ------------------------------------------------------------------ errors said once
@pytest.mark.parametrize("args, said", [
    (["--set", "data=chars(\"missing.txt\")"], "missing.txt"),
    (["--set", "batch=0"], "batch"),
    (["--set", "data=labeled(\"tiny.txt\")"], "labeled"),
    (["--set", "batch=300"], "too few"),
], ids=["missing-file", "bad-setting", "examples-data", "text-too-short"])
def test_an_input_error_of_every_rank_is_said_once(work, args, said):
    """Every rank reads the same spec and data, so it meets the same error: rank 0 says
    it once (walk 11: once per rank), and every rank exits with 2."""
    p = mpirun(work, 2, *args)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if said in ln]
    assert len(lines) == 1, p.stderr
    assert not lines[0].startswith("rank "), p.stderr          # every rank's: no ranks named


def test_resuming_one_process_run_on_two_ranks_is_said_once(work):
    """The trainer is built and restored before the ranks agree (review 26: the
    refusal of a one-process checkpoint was said by each rank)."""
    ok(single(work, "--steps", 2, "--out", "one"))
    p = mpirun(work, 2, "--steps", 4, "--resume", "one")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert len([ln for ln in p.stderr.splitlines() if "one" in ln]) == 1, p.stderr


class _Rank:
    """One rank's view of a job of `size` ranks whose setups ended as `failures` (a
    message, or None for a rank that set up): the two collectives agree() uses."""

    def __init__(self, rank, failures):
        self.rank, self.size, self.failures = rank, len(failures), failures

    def allreduce(self, buf, what):
        buf[:] = [f is not None for f in self.failures]
        return buf

    def gather(self, obj, what):
        return list(self.failures) if self.rank == 0 else None


def test_agree_says_each_distinct_error_once_with_its_ranks():
    from seqgraph.errors import UsageError
    from seqgraph.train.distributed import Said, agree
    agree(_Rank(0, [None, None]), None)                      # everyone ready: no error
    for rank in (0, 1):
        failures = [None, "a disk error", "a disk error"]
        failure = UsageError(failures[rank]) if failures[rank] else None
        with pytest.raises(Said) as e:
            agree(_Rank(rank, failures), failure)
        assert e.value.render() == ("rank 1, 2 of 3: a disk error" if rank == 0 else "")
    with pytest.raises(Said) as e:
        agree(_Rank(0, ["bad spec", "bad spec"]), UsageError("bad spec"))
    assert e.value.render() == "bad spec"
    with pytest.raises(Said) as e:
        agree(_Rank(0, ["one", "two"]), UsageError("one"))
    assert e.value.render() == "rank 0 of 2: one\nrank 1 of 2: two"


def test_a_signal_after_the_last_step_on_one_rank_is_every_rank_s():
    """A signal during the last validation or save (no step's Allreduce left to carry
    it): every rank exits with it, agreed in one Allreduce (SIGTERM before SIGINT)."""
    from types import SimpleNamespace

    from seqgraph.train.distributed import DistributedTrainer

    def rank(mine, other):
        def allreduce(buf, what):
            buf += [other == signal.SIGINT, other == signal.SIGTERM]
            return buf
        return SimpleNamespace(ranks=2, interrupts=SimpleNamespace(signal=mine),
                               comm=SimpleNamespace(allreduce=allreduce))
    late = DistributedTrainer._late_signal
    assert late(rank(None, None)) is None
    assert late(rank(None, signal.SIGINT)) == late(rank(signal.SIGINT, None)) == signal.SIGINT
    assert late(rank(signal.SIGINT, signal.SIGTERM)) == signal.SIGTERM


def test_mpi4py_without_an_mpi_library_is_said_not_a_traceback(work):
    """`pip install mpi4py` alone: its wheel holds no MPI library, and importing mpi4py.MPI
    raised RuntimeError("cannot load MPI library ...") through the command (review 41)."""
    p = subprocess.run(train_cmd("--distributed", "--steps", 1), cwd=work,
                       env=_env(MPI4PY_LIBMPI=str(work / "no" / "libmpi.so")),
                       capture_output=True, text=True, check=False, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "mpi4py found no MPI library" in p.stderr and "libmpi.so" in p.stderr
    assert not (work / "runs").exists()


# ------------------------------------------------------- an error on one rank alone
FAULTS = {
    # rank 0's disk fills at its first checkpoint (the end of epoch 1)
    "disk-full": """
from seqgraph.train import loop
def save(self):
    raise OSError(28, "No space left on device", str(self.ckpt_path))
loop.Trainer.save = save
""",
    # a bug, or memory running out, on rank 1 in its third batch
    "bug": """
from seqgraph.train import loop
run, seen = loop.SequenceKind.run, []
def failing(self, *a, **k):
    seen.append(1)
    if len(seen) == 3:
        raise MemoryError("out of memory on rank 1")
    return run(self, *a, **k)
loop.SequenceKind.run = failing
""",
    # rank 1 alone meets a non-finite loss in its third batch
    "nan": """
from seqgraph.train import loop
run, seen = loop.SequenceKind.run, []
def nan(self, *a, **k):
    res = run(self, *a, **k)
    seen.append(1)
    if len(seen) == 3:
        res.loss = float("nan")
    return res
loop.SequenceKind.run = nan
""",
    # rank 1 fails while it takes the digests of what it read (before training)
    "digest": """
from seqgraph.train import distributed
def inputs(trainer):
    raise RuntimeError("digest failed on rank 1")
distributed.inputs = inputs
""",
}


def mpirun_faulty(work, fault: str, rank: int, *args) -> tuple[subprocess.CompletedProcess,
                                                               float]:
    """A 2-rank run whose rank `rank` runs FAULTS[fault] first; (the run, its seconds)."""
    (work / "faulty.py").write_text(
        f"import os, runpy\nif os.environ.get('PMI_RANK') == '{rank}':\n"
        + "".join(f"    {line}\n" for line in FAULTS[fault].strip().splitlines())
        + "runpy.run_module('seqgraph.cli', run_name='__main__')\n")
    cmd = [MPIEXEC, "-n", "2", sys.executable, "faulty.py",
           *train_cmd("--distributed", "--mpi-timeout", 100, *args)[3:]]
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=work, env=_env(), capture_output=True, text=True,
                       check=False, timeout=120)
    return p, time.monotonic() - t0


@pytest.mark.parametrize("fault, rank, code, said", [
    ("disk-full", 0, 2, "cannot write run/checkpoint.npz (No space left on device); no "
                        "checkpoint was written"),
    ("bug", 1, 1, "MemoryError: out of memory on rank 1"),
    ("digest", 1, 1, "RuntimeError: digest failed on rank 1")],
    ids=["disk-full", "bug", "digest"])
def test_an_error_of_one_rank_ends_every_rank_at_once(work, fault, rank, code, said):
    """The other ranks waited for it in the next collective until --mpi-timeout (300 s
    by default), then said that a rank died or hangs (review 41)."""
    p, took = mpirun_faulty(work, fault, rank, "--steps", 20, "--out", "run")
    assert p.returncode == code and took < 60, (took, p.stderr)
    assert f"seqgraph: rank {rank} of 2: " in p.stderr and said in p.stderr, p.stderr
    assert "no word from the other ranks" not in p.stderr


def test_a_divergence_seen_by_one_rank_stops_every_rank_and_is_said_once(work):
    # the averaged loss is every rank's: all stop at the same step, rank 0 says it
    p, _ = mpirun_faulty(work, "nan", 1, "--steps", 20, "--out", "run")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.count("training diverged at step 3") == 1, p.stderr
    # a finished run: every rank refuses to continue it, said once
    ok(mpirun(work, 2, "--epochs", 1, "--out", "done"))
    p = mpirun(work, 2, "--epochs", 1, "--resume", "done")
    assert p.returncode == 2 and p.stderr.count("nothing is left to train") == 1, p.stderr


def test_ranks_that_read_other_data_are_refused_before_training(work):
    """A rank that reads another copy of the data (no shared file system; here another
    file, given to rank 1 alone) cut other streams: its collectives did not match the
    others', and the run stopped after --mpi-timeout saying a rank died or hangs
    (review 41). Now refused at once, by rank 0, naming what differs."""
    (work / "other.txt").write_text((work / "tiny.txt").read_text()[:300])
    cmd = train_cmd("--distributed", "--steps", 4, "--mpi-timeout", 100)
    p = subprocess.run([MPIEXEC, "-n", "1", *cmd, ":", "-n", "1", *cmd, "--set",
                        'data=chars("other.txt")'], cwd=work, env=_env(),
                       capture_output=True, text=True, check=False, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    said = [ln for ln in p.stderr.splitlines() if "did not read the same input" in ln]
    assert len(said) == 1 and "rank 1 differs from rank 0 in the settings, the training " \
        "data and the validation data" in said[0], p.stderr
    assert not (work / "runs").exists()     # it left runs/lm/.lock (and its folders)


@pytest.mark.parametrize("out", ["runs/lm", "new/deep/run", "kept/run"])
def test_a_run_one_rank_refuses_leaves_no_folder(work, out):
    """Rank 0 made and locked the run folder before it learnt that rank 1 failed: the
    folders it made go with their .lock; one that was there stays."""
    (work / "kept").mkdir()
    flags = ("--distributed", "--steps", 4, "--out", out)
    cmd = train_cmd(*flags)
    p = subprocess.run([MPIEXEC, "-n", "1", *cmd, ":", "-n", "1", *cmd, "--set", "batch=0"],
                       cwd=work, env=_env(), capture_output=True, text=True, check=False,
                       timeout=120)
    assert p.returncode == 2 and "rank 1 of 2: --set batch=0" in p.stderr, p.stderr
    top = out.split("/")[0]
    assert (top == "kept") == (work / top).exists(), list(work.glob(f"{top}/**/*"))
    assert not (work / "kept/run").exists()
    ok(mpirun(work, 2, *flags[1:]))         # the folder is made again, and trained in
    assert (work / out / "checkpoint.npz").exists() and (work / out / ".lock").exists()
