"""Data-parallel training over MPI: `mpiexec -n N seqgraph train SPEC --distributed`.

Every rank runs the same loop on its own shard of the data. The token stream is cut into
N x batch streams, exactly as a single process with `batch = N x batch` would cut it, and
rank r reads streams r*batch .. (r+1)*batch - 1; the streams (and so the carried state of
truncated BPTT) stay with their rank for the whole epoch. Each step, every rank computes
the gradients of its windows, and one Allreduce sums all of them, packed into one
contiguous buffer together with the window's loss and token counts; each rank divides by
N, so every rank holds the gradient of the loss averaged over the global batch, clips it
(the norm is that of the averaged gradient) and takes the same optimiser step. All ranks
start from rank 0's parameters (one Bcast) and so stay identical; each checkpoint checks
that they are. Rank 0 alone writes the checkpoint, metrics.csv, loss.png and the progress
bar. docs/scaling.md describes the semantics and the costs.

Every collective is nonblocking and waited for with a timeout (`--mpi-timeout`): a rank
that died or hangs makes the others stop with a message naming the last checkpoint
(written atomically, so it is whole) instead of waiting forever.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import signal
import sys
import time
import traceback

import numpy as np

from ..errors import SeqgraphError, UsageError
from .batches import Streams, eval_streams
from .evaluate import Score, likelihood, xent_output
from .loop import Trainer, TrainingDiverged, _stop, data_hash

DEFAULT_TIMEOUT = 300.0
INSTALL = "pip install 'seqgraph[mpi]'"


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise UsageError(f"--distributed needs mpi4py and an MPI library: {INSTALL} "
                         f"(mpi4py and the mpich wheels, which bring mpiexec)") from None
    except RuntimeError as e:
        # mpi4py's own wheel holds no MPI library (`pip install mpi4py` alone): it says
        # "cannot load MPI library" and each file it tried
        said = " ".join(str(e).split("\n")[:2])
        raise UsageError(f"--distributed: mpi4py found no MPI library ({said}); install "
                         f"one: {INSTALL}, or mpi4py built against the site's MPI "
                         f"(docs/scaling.md)") from None
    return MPI


class Comm:
    """MPI_COMM_WORLD with the few collectives training needs. Each is started
    nonblocking and polled until done or until `timeout` seconds pass; then this rank
    prints what it was doing and the last checkpoint, and aborts the whole job."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, comm=None):
        if not timeout > 0:
            raise UsageError(f"--mpi-timeout must be positive, not {timeout}")
        self.MPI = _mpi()
        self.comm = comm or self.MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = float(timeout)
        self.checkpoint: str | None = None      # named in the message of a lost peer

    # ------------------------------------------------------------------- waiting
    def wait(self, req, what: str) -> None:
        if req.Test():
            return
        t0, pause = time.monotonic(), 2e-5
        while not req.Test():
            if time.monotonic() - t0 > self.timeout:
                self.lost(what)
            time.sleep(pause)
            pause = min(2 * pause, 2e-3)

    def lost(self, what: str) -> None:
        """Another rank died or hangs: say so and end every rank (MPI_Abort)."""
        last = self.checkpoint or "none yet"
        self.abort(f"no word from the other ranks for {self.timeout:g} s while {what}; a "
                   f"rank died or hangs. Stopping all ranks. Last checkpoint: {last} "
                   f"(written atomically, so it is whole; continue with --resume).", 3)

    def fail(self, e: BaseException) -> None:
        """An error of this rank alone (rank 0 cannot write its checkpoint, a second
        Ctrl-C, a bug): the other ranks wait for it in a collective, and would say after
        --mpi-timeout that it died or hangs. Said now, naming the rank, and every rank
        ended (exit 2 for an error of the input or the disk, 128 + the signal, 1 for a
        bug, whose traceback is shown)."""
        if isinstance(e, SeqgraphError):
            text, code = e.render(), 2
        elif isinstance(e, KeyboardInterrupt):
            text, code = "interrupted", 128 + getattr(e, "signum", signal.SIGINT)
        else:
            text, code = "".join(traceback.format_exception(e)).rstrip(), 1
        self.abort(f"{text}\nStopping all ranks.", code)

    def abort(self, text: str, code: int) -> None:
        """`text` on stderr, naming this rank, then MPI_Abort: every rank ends."""
        sys.stderr.write(f"\nseqgraph: rank {self.rank} of {self.size}: {text}\n")
        sys.stderr.flush()
        time.sleep(1.0)     # let the launcher forward the message before Abort tears down
        self.comm.Abort(code)
        raise SystemExit(code)                 # not reached: Abort ends this process

    # ---------------------------------------------------------------- collectives
    def allreduce(self, buf: np.ndarray, what: str) -> np.ndarray:
        """Sum `buf` over all ranks, in place."""
        if self.size > 1:
            self.wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM), what)
        return buf

    def bcast(self, buf: np.ndarray, what: str) -> np.ndarray:
        """Rank 0's `buf` on every rank, in place."""
        if self.size > 1:
            self.wait(self.comm.Ibcast(buf, root=0), what)
        return buf

    def gather(self, obj, what: str) -> list | None:
        """Every rank's `obj` (picklable) as a list on rank 0, None elsewhere."""
        if self.size == 1:
            return [obj]
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        sizes = np.zeros(self.size, dtype=np.int64)
        sizes[self.rank] = data.size
        self.allreduce(sizes, what)
        recv = None
        if self.rank == 0:
            out = np.empty(int(sizes.sum()), dtype=np.uint8)
            displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            recv = [out, (sizes, displs), self.MPI.BYTE]
        self.wait(self.comm.Igatherv([data, self.MPI.BYTE], recv, root=0), what)
        if self.rank != 0:
            return None
        return [pickle.loads(out[o:o + n].tobytes()) for o, n in zip(displs, sizes, strict=True)]


def connect(timeout: float = DEFAULT_TIMEOUT) -> Comm:
    """The world communicator (MPI is initialised here, on first import of mpi4py)."""
    return Comm(timeout)


def refuse_examples(data) -> None:
    """Batches of examples and trees train on one process (a UsageError)."""
    if getattr(data, "kind", None) == "trees" or \
            getattr(getattr(data, "binding", None), "examples", False):
        raise UsageError("--distributed trains on a token stream (chars or words "
                         "loaders) for now; batches of examples and trees train on "
                         "one process")


def agree(comm: Comm, failure: SeqgraphError | None) -> None:
    """Before the first collective of training: did every rank set up? The ranks read
    the same spec and data, so an input error is most often every rank's: rank 0 says
    each distinct message once (with the ranks that had it, where not all did), and every
    rank ends with it (`Said`: the others print nothing)."""
    failed = np.zeros(comm.size, dtype=np.int64)
    failed[comm.rank] = failure is not None
    comm.allreduce(failed, "agreeing that every rank is ready")
    if not failed.any():
        return
    said = comm.gather(None if failure is None else failure.render(), "gathering errors")
    if said is None:
        raise Said("")
    ranks: dict = {}
    for r, text in enumerate(said):
        if text is not None:
            ranks.setdefault(text, []).append(r)
    if len(ranks) == 1 and len(next(iter(ranks.values()))) == comm.size:
        raise Said(next(iter(ranks)))
    raise Said("\n".join(f"rank {', '.join(map(str, rs))} of {comm.size}: {text}"
                         for text, rs in ranks.items()))


def inputs(trainer) -> dict:
    """What every rank must read alike, each part as a digest: a rank that read another
    copy of the data (a node without the shared file system, a file changed meanwhile)
    or another command line would cut other streams, or number the tokens otherwise.
    Its collectives would then not match the others' (a hang until --mpi-timeout,
    blamed on a dead rank), or worse match them and add up gradients of other tokens."""
    def digest(x) -> str:
        text = x if isinstance(x, str) else json.dumps(x, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()
    meta = trainer.meta
    return {"the spec": digest(meta["spec"]), "the settings": digest(trainer.cfg.as_dict()),
            "the sizes": digest(meta["dims"]),
            "the vocabulary": digest(meta["vocab"]),
            "the training data": trainer.data_hash,
            "the validation data": data_hash(trainer.data.valid),
            "the checkpoint resumed": digest(dataclasses.asdict(trainer.pos))}


def agree_on_inputs(comm: Comm, mine: dict) -> None:
    """After `agree`: every rank read the same spec, settings and data (`inputs`), or
    rank 0 names the ranks that did not and what differs, and every rank ends with it."""
    if comm.size == 1:
        return
    got = comm.gather(mine, "comparing what the ranks read")
    bad = np.zeros(1, dtype=np.int64)
    said = ""
    if comm.rank == 0:
        differ = [f"rank {r} differs from rank 0 in "
                  f"{_listed([k for k in mine if theirs.get(k) != mine[k]])}"
                  for r, theirs in enumerate(got) if theirs != mine]
        bad[0] = bool(differ)
        said = (f"--distributed: the ranks did not read the same input: {'; '.join(differ)}. "
                f"Every rank reads the spec, the data and the checkpoint itself: give every "
                f"rank the same command line, and the same files at the same paths (a "
                f"shared file system)")
    comm.bcast(bad, "comparing what the ranks read")
    if bad[0]:
        raise Said(said)


def _listed(items: list) -> str:
    """"a", "a and b", "a, b and c"."""
    return " and ".join(filter(None, [", ".join(items[:-1]), items[-1]]))


class Said(SeqgraphError):
    """An error rank 0 has said for every rank (empty on the others)."""


def shard(streams: Streams, rank: int, per_rank: int) -> Streams | None:
    """Rank `rank`'s streams: rows rank*per_rank .. (rank+1)*per_rank - 1 (None if the
    text gave fewer rows than that)."""
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    x, y = streams.x[rows], streams.y[rows]
    return Streams(x, y, streams.bptt) if len(x) else None


def _like(container, streams: Streams | None):
    """`streams` in the container the base trainer uses (StreamBatches, or Streams)."""
    if streams is None or isinstance(container, Streams):
        return streams
    return dataclasses.replace(container, streams=streams)


def params_digest(params: dict) -> str:
    """sha256 of the parameters' bytes, in name order: equal digests, equal parameters."""
    h = hashlib.sha256()
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class _NoMetrics:
    """What ranks other than 0 log to: nothing."""

    def step(self, *a, **k):
        pass

    def valid(self, *a, **k):
        pass

    def plot(self, wait=True):
        return None

    def read(self):
        return []


class DistributedTrainer(Trainer):
    """`Trainer` over MPI ranks: `cfg.batch` streams per rank, gradients averaged over
    the N x batch streams of the global batch in one Allreduce per step."""

    def __new__(cls, model, graph, data, *args, **kw):
        refuse_examples(data)
        return object.__new__(cls)

    def __init__(self, model, graph, data, cfg, out_dir, meta, quiet: bool = False,
                 comm: Comm | None = None):
        self.comm = comm or connect()
        self.rank, self.ranks = self.comm.rank, self.comm.size
        super().__init__(model, graph, data, cfg, out_dir, meta,
                         quiet=quiet or self.rank > 0)
        n, b = self.ranks, cfg.batch
        if n > 1:
            full = Streams.of(data.train, n * b, cfg.bptt, data.train_file,
                              f"training (batch = {b} on each of {n} ranks)")
            self.streams = _like(self.streams, shard(full, self.rank, b))
            self.total = cfg.epochs * len(self.streams)
            self.progress.total = self.total
            if self.valid is not None:
                vfull = eval_streams(data.valid, n * b, cfg.bptt, data.valid_file)
                self.valid = _like(self.valid, shard(vfull, self.rank, b))
            # dropout and scheduled sampling draw different numbers on every rank;
            # rank 0 draws those of a single-process run with the same seed
            if self.rank > 0:
                self.rng = np.random.default_rng(
                    np.random.SeedSequence(cfg.seed, spawn_key=(self.rank,)))
        self.has_valid = self.valid is not None or n > 1 and len(data.valid) >= 2
        self._time_up, self._deadline = False, None
        self.digests: list[str] | None = None
        self._layout = [(k, p.shape, p.size) for k, p in model.params.items()]

    # ------------------------------------------------------------------ rank 0 only
    def _open_metrics(self):
        return super()._open_metrics() if self.rank == 0 else _NoMetrics()

    def save(self):
        """Every rank sends rank 0 its carried state, generator state and a digest of its
        parameters; rank 0 writes them in one checkpoint. Ranks whose parameters are not
        rank 0's (never seen: the Allreduce gives every rank the same sum) are set back
        to rank 0's with a warning."""
        mid_epoch = self.pos.window > 0
        own = (self.carry if mid_epoch else None, self.rng.bit_generator.state,
               params_digest(self.model.params))
        got = self.comm.gather(own, "saving a checkpoint")
        same = np.zeros(1, dtype=np.int64)
        if self.rank == 0:
            self.digests = [d for _, _, d in got]
            same[0] = len(set(self.digests)) == 1
            carry, meta = self.carry, self.meta
            if self.ranks > 1:
                self.carry = [c for c, _, _ in got] if mid_epoch else None
                self.meta = {**meta, "distributed": {
                    "ranks": self.ranks, "rng": [r for _, r, _ in got],
                    "param_digests": self.digests}}
            try:
                path = super().save()
            finally:
                self.carry, self.meta = carry, meta
        else:
            path = self.ckpt_path
        self.comm.bcast(same, "checking that the ranks agree")
        # past the Bcast, rank 0 has written it: a rank that names the last checkpoint
        # (a lost peer, an error) names one that exists
        self.saved = str(path)
        self.comm.checkpoint = self.saved
        if not same[0]:
            if self.rank == 0:
                sys.stderr.write("\nwarning: the ranks' parameters differ; every rank "
                                 "continues from rank 0's\n")
            self._broadcast_state()
        return path

    def _save_params(self, name: str, meta: dict) -> None:
        """best.npz, epochs/epoch_N.npz: every rank holds the same parameters and score;
        rank 0 writes the file."""
        if self.rank == 0:
            super()._save_params(name, meta)

    def restore(self, c) -> None:
        self.check_model(c)             # another model's checkpoint: said before ranks
        d = c.meta.get("distributed") or {"ranks": 1}
        if d["ranks"] != self.ranks:
            raise UsageError(f"{c.path}: was written by a run on {d['ranks']} rank(s); "
                             f"resume it on as many (mpiexec -n {d['ranks']} ... "
                             f"--distributed), since each rank's streams and state differ")
        super().restore(c)
        if self.ranks > 1:
            self.carry = c.carry[self.rank] if c.carry is not None else None
            self.rng.bit_generator.state = d["rng"][self.rank]
        self.comm.checkpoint = self.saved

    # --------------------------------------------------------------- the loop
    def fit(self, max_steps=None, deadline=None):
        """As `Trainer.fit`; first every rank takes rank 0's parameters (and optimiser
        state). `deadline` is read on every rank and agreed on in the next step's
        Allreduce, so all ranks stop after the same step."""
        self._deadline, self._time_up, self._agreed_signal = deadline, False, None
        done = self.saved and self.pos.epoch >= self.cfg.epochs     # refused by Trainer.fit
        try:
            if not done:
                self._broadcast_state()
            return super().fit(max_steps, deadline)
        except (TrainingDiverged, UsageError) as e:
            # every rank's: divergence is decided on the averaged loss and gradient, so
            # at the same step on all; a finished run is finished on all. Said once.
            if not (done or isinstance(e, TrainingDiverged)):
                raise
            raise Said(e.render() if self.rank == 0 else "") from None

    def _should_stop(self, max_steps, deadline) -> bool:
        return _stop(self.pos.step, max_steps, None) or self._time_up

    def _signal(self) -> int | None:
        """A signal stops every rank after the same step: the one in whose Allreduce
        some rank reported it (`_reduce`), SIGTERM before SIGINT when both came."""
        if self.ranks == 1:
            return super()._signal()
        return self._agreed_signal

    def _late_signal(self) -> int | None:
        """A signal after the last update, on any rank: every rank exits with it (one
        Allreduce; every rank finishes after the same step), SIGTERM before SIGINT."""
        if self.ranks == 1:
            return super()._late_signal()
        noted = self.interrupts.signal
        buf = np.array([noted == signal.SIGINT, noted == signal.SIGTERM], dtype=np.int64)
        self.comm.allreduce(buf, "agreeing on a signal after the last step")
        return signal.SIGTERM if buf[1] else signal.SIGINT if buf[0] else None

    def _reduce(self, res, batch):
        """One Allreduce: the gradients of all parameters (zeros where a rank has none)
        then [loss, loss summed over tokens, tokens, tokens read, deadline passed,
        SIGINT noted, SIGTERM noted], in the parameters' dtype. Gradients and the loss
        are divided by the number of ranks; the rest stay sums."""
        s, n, tokens = super()._reduce(res, batch)
        if self.ranks == 1 and self._deadline is None:
            return s, n, tokens
        late = self._deadline is not None and time.monotonic() >= self._deadline
        noted = self.interrupts.signal
        total = sum(size for _, _, size in self._layout)
        dtype = next(iter(self.model.params.values())).dtype
        buf = np.empty(total + 7, dtype=dtype)
        o = 0
        for name, _, size in self._layout:
            g = res.grads.get(name)
            buf[o:o + size] = 0 if g is None else np.ravel(g)
            o += size
        buf[o:] = (res.loss, s, n, tokens, float(late), float(noted == signal.SIGINT),
                   float(noted == signal.SIGTERM))
        self.comm.allreduce(buf, f"averaging the gradients of step {self.pos.step + 1}")
        buf[:total + 1] /= self.ranks
        o = 0
        for name, shape, size in self._layout:
            res.grads[name] = buf[o:o + size].reshape(shape)
            o += size
        res.loss = float(buf[total])
        s, n, tokens, late, sigint, sigterm = (float(v) for v in buf[total + 1:])
        self._time_up = late > 0
        self._agreed_signal = signal.SIGTERM if sigterm else signal.SIGINT if sigint else None
        return s, round(n), round(tokens)

    def _score(self):
        """The validation text's N x batch streams, each rank scoring its own; the sums
        added up over the ranks."""
        if not self.has_valid:
            return None
        if self.ranks == 1:
            return super()._score()
        has_acc = xent_output(self.graph, self.data.binding.target) is not None
        local = super()._score() if self.valid is not None else Score(0.0, 0, 0)
        buf = np.array([local.loss_sum, local.tokens, local.correct or 0], dtype=np.float64)
        self.comm.allreduce(buf, "validating")
        return Score(float(buf[0]), int(buf[1]), int(buf[2]) if has_acc else None,
                     nll=likelihood(self.graph))

    # ---------------------------------------------------------------- helpers
    def _broadcast_state(self) -> None:
        """Rank 0's parameters and optimiser state on every rank, in one Bcast of one
        buffer. Every rank holds the same optimiser slots: none before the first step,
        the checkpoint's after a resume, and then those of the same updates; likewise
        the parameters' moving averages (train key `average`), which every rank updates
        from the same parameters."""
        if self.ranks == 1:
            return
        opt = self.opt.state_dict()["arrays"]
        arrays = list(self.model.params.values()) + [opt[k] for k in sorted(opt)]
        if self.averages is not None:                       # train key `average`
            arrays += list(self.averages.avg.values())
        dtype = arrays[0].dtype
        buf = np.concatenate([np.ravel(a).astype(dtype, copy=False) for a in arrays])
        self.comm.bcast(buf, "receiving rank 0's parameters")
        o = 0
        for a in arrays:
            a[...] = buf[o:o + a.size].reshape(a.shape)
            o += a.size
