"""The training loop: batches of data (truncated-BPTT windows of a token stream, batches
of examples, batches of trees), with clipping, a schedule, validation each epoch, metrics
and checkpoints.

A run is a pure function of (spec, data, configuration, seed): the parameters, the
optimiser and schedule state, the random generator, the position in the data and the
carried recurrent state all go into the checkpoint, so a run stopped and resumed ends
with exactly the parameters of a run that never stopped.

What depends on the kind of data is a small object beside the loop (`SequenceKind` here,
`TreeKind` in trees.py): how the batches are cut and run, which rows of a sparse gradient
a batch touches, how the validation data is scored, and which validation scores may pick
the parameters kept in `best.npz` (the train block's `select`: `Selects`). Resume,
signals, `--minutes`, `--on-nan`, metrics.csv and the plots are the loop's own, the same
for every kind. `Averages` is the train key `average`: a moving average of the
parameters, which the validation pass and best.npz see in place of the raw ones.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import SeqgraphError, UsageError
from . import checkpoint as ck
from .batches import Streams, eval_streams, run_batch  # noqa: F401  (Streams: subclasses)
from .data import Dataset, feeds
from .evaluate import likelihood, score, shown, token_terms
from .metrics import MetricsLog, Progress
from .optim import clip_global_norm, global_norm, make_optimizer
from .schedules import make_schedule

# under MPI, the same signal again within ECHO seconds is the first one forwarded by
# mpiexec (a job's every process signalled at once), not a second that stops at once
ECHO = 2.0


class TrainingDiverged(SeqgraphError):
    """The loss or a gradient became NaN or infinite: training stops, naming where."""


@dataclass
class Position:
    """Where the run is: updates done, the epoch, the next window of that epoch."""
    step: int = 0
    epoch: int = 0
    window: int = 0


class Selects:
    """The train block's `select`: which validation score picks the parameters kept in
    best.npz. A kind lists the choices it has (`selects`: name -> (the metric's name in
    best.npz, whether higher is better)) and the one it takes when `select` is not
    given (`default_select`; None: no best.npz)."""
    selects: ClassVar[dict] = {}
    default_select: str | None = None
    what = "this data"
    select: str | None = None
    best_metric: str | None = None      # the validation score best.npz keeps, if any

    def choose(self, cfg) -> None:
        s = getattr(cfg, "select", None)
        if s is not None and s not in self.selects:
            raise UsageError(f"train: select = {s} does not apply to {self.what}; its "
                             f"best.npz is chosen by {' or '.join(self.selects)}")
        self.select = self.default_select if s is None else s
        self.best_metric = self.selects[self.select][0] if self.select else None

    def best(self, v) -> float | None:
        """The validation score that picks best.npz (None: this kind keeps none)."""
        return None if self.select is None else float(self.read(v, self.select))

    def better(self, value: float, than: float) -> bool:
        return value > than if self.selects[self.select][1] else value < than

    def read(self, v, select: str) -> float:
        raise NotImplementedError


def data_hash(data) -> str:
    """A hash of the training data as the model reads it (ids, labels, trees, their
    order), whatever file it came from: a resumed run must read the same, not only as
    much (a file's name and paths are left out, so the data may move)."""
    h = hashlib.sha1()

    def add(x):
        if isinstance(x, np.ndarray):
            h.update(f"{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                add(v)
            h.update(b"]")
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                add(x[k])
        elif is_dataclass(x):
            for f in fields(x):
                add(getattr(x, f.name))
        elif hasattr(x, "__dict__"):
            add(vars(x))
        elif not isinstance(x, (str, Path)):      # numbers, None; not names of files
            h.update(repr(x).encode())
    add(data)
    return h.hexdigest()


class SequenceKind(Selects):
    """The loop's pieces for sequences (data.py): truncated-BPTT windows of a token
    stream (state carried) or batches of examples (pairs, labeled, ...). best.npz only
    with `select = loss` (the lowest validation loss)."""
    unit = ""                           # of the training loss in the epoch's line
    resume_keys = ("batch", "bptt")     # settings a resumed run must keep
    counts = "tokens"                   # what the checkpoint's train_tokens counts
    selects: ClassVar[dict] = {"loss": ("valid_loss", False)}
    default_select = None
    what = "a sequence model"

    def __init__(self, graph, data, cfg):
        self.graph, self.data, self.cfg = graph, data, cfg
        if getattr(data.binding, "examples", False):
            self.counts = "examples"        # len(data.train): examples, not tokens
        self.choose(cfg)

    def batches(self):
        return self.data.batches(self.cfg)

    def valid_batches(self):
        return self.data.valid_batches(self.cfg)

    def run(self, model, batch, **kw):
        return run_batch(model, batch, **kw)

    def rows(self, batch) -> dict | None:
        """Sparse gradients: {param: (axis, ids)} the batch touched (None: all dense)."""
        return None

    def score(self, model, valid):
        return score(model, self.graph, self.data.binding, valid)

    def describe(self, v) -> str:
        ppl = "" if v.perplexity is None else f" (ppl {shown(v.perplexity)})"
        return f", valid {v.loss:.4f}{ppl}"

    def read(self, v, select: str) -> float:
        return v.loss


class Averages:
    """An exponential moving average of every parameter (train key `average = d`), as
    TensorFlow's ExponentialMovingAverage with `num_updates`. Started from the initial
    parameters (avg_0 = p_0); after each optimiser step, t the updates before it:

        d_t   = min(d, (1 + t) / (10 + t))       warm-up: 0.1, 0.18, 0.25, ... -> d
        avg  <- d_t * avg + (1 - d_t) * p          (computed as avg += (1 - d_t)(p - avg))

    so early averages forget the random initialisation fast, and later ones average over
    about 1 / (1 - d) updates. Validation, best.npz (and so `eval` of it) see the
    averages; training continues from the raw parameters."""

    def __init__(self, decay: float, params: dict):
        self.decay = decay
        self.avg = {k: np.array(p, copy=True) for k, p in params.items()}
        self._tmp = {k: np.empty_like(p) for k, p in params.items()}   # scratch/backup

    def update(self, params: dict, t: int) -> None:
        """Fold in the parameters after update t + 1 (t: the updates before it)."""
        d = min(self.decay, (1 + t) / (10 + t))
        for k, a in self.avg.items():
            tmp = np.subtract(params[k], a, out=self._tmp[k])    # p - avg
            tmp *= 1 - d
            a += tmp

    @contextmanager
    def swapped_in(self, params: dict):
        """The averages in the model's own arrays (in place: executors hold them) for
        the block; the raw parameters back after it, bit for bit."""
        for k, p in params.items():
            np.copyto(self._tmp[k], p)
            np.copyto(p, self.avg[k])
        try:
            yield
        finally:
            for k, p in params.items():
                np.copyto(p, self._tmp[k])


def data_kind(graph, data, cfg):
    """The loop's pieces for `data`: trees (trees.py) or sequences."""
    if getattr(data, "kind", None) == "trees":
        from .trees import TreeKind
        return TreeKind(graph, data, cfg)
    return SequenceKind(graph, data, cfg)


class Trainer:
    """The one training loop, over the batches `kind` cuts (sequences or trees). A run
    stopped (`--steps`, `--minutes`, SIGINT/SIGTERM) and resumed ends with the parameters
    of one that never stopped."""

    def __init__(self, model, graph, data: Dataset, cfg, out_dir: str | Path, meta: dict,
                 quiet: bool = False):
        self.model, self.graph, self.data, self.cfg = model, graph, data, cfg
        self.out = Path(out_dir)
        self.ckpt_path = self.out / "checkpoint.npz"
        self.meta = meta
        self.kind = data_kind(graph, data, cfg)
        self.streams = self.kind.batches()
        self.valid = self.kind.valid_batches()
        self.opt = make_optimizer(cfg.optimizer, cfg.l2, model.params)
        self.sched = make_schedule(cfg.schedule)
        self.rng = np.random.default_rng(cfg.seed)
        self.pos, self.carry, self.saved = Position(), None, None
        self.epoch_loss = [0.0, 0]      # loss summed over this epoch's tokens, tokens
        self.total = cfg.epochs * len(self.streams)
        self.extra = _run_options(model, data.binding, cfg)
        model.start_ids.update(getattr(data.binding, "start_ids", {}) or {})
        self.skipped = 0                # batches skipped by on_nan = skip, this run
        self.streak = 0                 # ... in a row, since the last update
        self.epoch_skips = [0, 0, 0]    # this epoch's: count, first batch, updates before
        self.first_step = 0             # the step this run (fit) started from
        self.quiet = quiet
        self.progress = Progress(self.total, cfg.epochs, quiet)
        self.metrics: MetricsLog | None = None
        self.best = None                # the best validation score (kind.best) so far
        self.best_partial = False       # ... of a stop mid-epoch: any epoch's replaces it
        self.seconds = 0.0              # spent in updates, over the whole run
        self.averages: Averages | None = None   # train key `average`; made in fit()

    # ------------------------------------------------------------------- resume
    @property
    def data_hash(self) -> str:
        """`data_hash` of the training data, computed once (the data does not change)."""
        if getattr(self, "_data_hash", None) is None:
            self._data_hash = data_hash(self.data.train)
        return self._data_hash

    def check_labels(self, c: ck.Checkpoint) -> None:
        """The spec reads its target as the run did (one label an example or tree, or
        one a step or node): the same parameters may have learnt the other."""
        from .binding import Binding
        from .session import reads_labels
        if not c.meta.get("binding"):
            return
        said = reads_labels(self.graph, Binding(**c.meta["binding"]))
        if said is not None:
            raise UsageError(f"{c.path}: its run read {self.data.binding.target} as "
                             f"{said[0]}; this spec reads it as {said[1]}: resume with "
                             f"the run's spec, or start a new run")

    def restore(self, c: ck.Checkpoint) -> None:
        """Continue from checkpoint `c`: parameters, optimiser, schedule, generator,
        position and carried state. The model is checked first: another model's
        checkpoint would otherwise be blamed on its data or settings."""
        self.check_model(c)
        self.check_labels(c)
        st = c.meta.get("state")
        if st is None:
            raise UsageError(f"{c.path}: holds no training state to resume from")
        was, keys = st["config"], self.kind.resume_keys
        # what the checkpoint's position counts in: the data's size and the batching
        then = {"data": f"{st['train_tokens']} {self.kind.counts}",
                **{k: str(was[k]) for k in keys}}
        now = {"data": f"{len(self.data.train)} {self.kind.counts}",
               **{k: str(getattr(self.cfg, k)) for k in keys}}
        differ = [k for k in then if then[k] != now[k]]
        if not differ and st.get("data_hash") not in (None, self.data_hash):
            raise UsageError(f"{c.path}: resume with the same data: this run's training "
                             f"data holds as many {self.kind.counts} as the checkpoint's, "
                             f"but other ones (other text, labels or order)")
        if differ:
            same = ", ".join(("data",) + keys[:-1]) + f" and {keys[-1]}"
            shown = "; ".join(f"{k}: {then[k]} in the checkpoint, {now[k]} now"
                              for k in differ)
            raise UsageError(f"{c.path}: resume with the same {same} ({shown})")
        was_select = st.get("select", self.kind.default_select)
        if st.get("best") is not None and was_select != self.kind.select:
            raise UsageError(f"{c.path}: best.npz was chosen by select = {was_select}; "
                             f"resume with the same select (this run: "
                             f"{self.kind.select or 'none'})")
        ck.restore_params(c, self.model.params)
        self._finite_params(c)
        self._restore_averages(c)
        if st["optimizer"]["name"] != self.opt.name:
            raise UsageError(f"{c.path}: its run trained with {st['optimizer']['name']}, "
                             f"this one with {self.opt.name}: resume with the same "
                             f"optimizer (its rate and other values may change)")
        ck.check_optim(c, self.model.params, self.opt)
        self.opt.load_state_dict({**st["optimizer"], "arrays": _like_params(
            c.optim, self.model.params, lambda key: key.partition("/")[2])})
        if str(was.get("schedule", self.sched.name)).partition("(")[0] == self.sched.name:
            self.sched.load_state_dict(st["schedule"])
        # else another schedule (said by _note_changes) starts as in a new run: the state
        # of one is not the other's (plateau's best loss, from a step's nothing)
        self.rng.bit_generator.state = st["rng"]
        self.pos = Position(**st["position"])
        self.epoch_loss = list(st["epoch_loss"])
        self.best, self.seconds = st.get("best"), st.get("seconds", 0.0)
        self.best_partial = st.get("best_partial", False)
        self.resume_rows = st.get("metrics_rows")
        self.carry = c.carry
        self.saved = c.path
        self._note_changes(c.path, was)     # once nothing refuses the resume

    def _finite_params(self, c: ck.Checkpoint) -> None:
        """A checkpoint saved after an update that overflowed a parameter holds it (inf
        or nan): every batch of the resumed run would diverge again, said as that update's
        fault with the advice of a smaller lr, which cannot mend it. Refused, naming it."""
        bad = self._overflowed_param()
        if bad is not None:
            raise UsageError(f"{c.path}: parameter '{bad}' is not finite (inf or nan): the "
                             f"checkpoint was saved after an update that overflowed it (or "
                             f"edited by hand), and every batch that reads it would diverge; "
                             f"resume from an earlier checkpoint, or start a new run (with "
                             f"a smaller lr, or clip)")

    def check_model(self, c: ck.Checkpoint) -> None:
        """`c` was saved from this model: its parameters' names and shapes."""
        shapes = {k: p.shape for k, p in self.model.params.items()}
        ck.check_model(c, self.graph.name, shapes, self.graph.path)

    # settings read from the spec and --set again on resume (docs/training.md)
    CHANGEABLE = ("optimizer", "l2", "clip", "schedule", "teacher", "average", "on_nan",
                  "seed", "keep", "dtype")

    def _note_changes(self, path, was: dict) -> None:
        """A warning naming each setting that differs from the checkpoint's run: the
        resumed run uses the new value (a resume without the first run's --set options
        would otherwise change them unnoticed)."""
        now = self.cfg.as_dict()
        changed = [f"{k} = {was[k]} -> {now[k]}" for k in self.CHANGEABLE
                   if k in was and was[k] != now[k]]
        if was.get("epochs", now["epochs"]) != now["epochs"]:
            # a cosine and a linear teacher span the whole run, epochs x batches: another
            # length moves them (a cosine at its floor jumps back up)
            spans = [f"{k} = {now[k]}" for k in ("schedule", "teacher")
                     if str(now[k]).startswith(("cosine", "linear"))]
            if spans:
                changed.append(f"epochs = {was['epochs']} -> {now['epochs']}, over which "
                               f"{' and '.join(spans)} run{'s' if len(spans) == 1 else ''}"
                               f": {'it is' if len(spans) == 1 else 'they are'} stretched "
                               f"to the new length from here")
        if changed and getattr(self, "rank", 0) == 0:     # --quiet or not, once
            sys.stderr.write(f"warning: {path} was trained with other settings; this run "
                             f"uses the new ones: {'; '.join(changed)}\n")

    def _restore_averages(self, c: ck.Checkpoint) -> None:
        """The checkpoint's moving averages; a run must keep averaging (or not)."""
        decay = getattr(self.cfg, "average", 0.0)
        if bool(c.average) != bool(decay):
            was = "averaged" if c.average else "did not average"
            raise UsageError(f"{c.path}: its run {was} the parameters; resume with the "
                             f"same average (this run: average = {decay:g})")
        if decay:
            ck.check_params(ck.Checkpoint(c.average, c.meta, path=c.path), self.model.params)
            self.averages = Averages(decay, _like_params(c.average, self.model.params))

    def _averaged(self):
        """A context in which the model holds the averaged parameters (if any)."""
        if self.averages is None:
            return nullcontext()
        return self.averages.swapped_in(self.model.params)

    # --------------------------------------------------------------------- save
    def save(self) -> Path:
        mid_epoch = self.pos.window > 0
        state = {"position": asdict(self.pos), "config": self.cfg.as_dict(),
                 "train_tokens": len(self.data.train), "epoch_loss": self.epoch_loss,
                 "data_hash": self.data_hash,
                 "optimizer": {k: v for k, v in self.opt.state_dict().items() if k != "arrays"},
                 "schedule": self.sched.state_dict(), "rng": self.rng.bit_generator.state,
                 "best": self.best, "best_partial": self.best_partial,
                 "select": self.kind.select, "seconds": self.seconds,
                 # the rows of metrics.csv this state has written: a resumed run keeps
                 # these and no more (a kill between a validation row and this save)
                 "metrics_rows": getattr(getattr(self, "metrics", None), "rows", None)}
        path = ck.save(self.ckpt_path, self.model.params, {**self.meta, "state": state},
                       self.opt.state_dict()["arrays"], self.carry if mid_epoch else None,
                       self.averages.avg if self.averages is not None else None)
        self.saved = str(path)
        return path

    def _keep_best(self, v, partial: bool = False) -> None:
        """best.npz: the parameters of the best validation score so far, the score
        chosen by `select` (trees: the root accuracy unless told; sequences: none unless
        `select = loss`). Its meta names the metric, its value and the epoch's scores.
        The validation of a run stopped mid-epoch (`partial`) writes it only while no
        epoch has been validated, and the next epoch's replaces it whatever its score
        (`best_partial`): resumed, the run keeps the best.npz of one never stopped (a tie
        keeps the earlier)."""
        value = self.kind.best(v)
        if value is None or (self.best is not None and not self.best_partial and (
                partial or not self.kind.better(value, self.best))):
            return
        self.best, self.best_partial = value, partial
        p = self.pos
        scores = {k: x for k, x in v.as_dict().items()
                  if x is None or isinstance(x, (int, float))}
        self._save_params("best.npz", {**self.meta, "best": {
            "epoch": p.epoch + 1, "step": p.step, "select": self.kind.select,
            "metric": self.kind.best_metric, "value": value, "valid": scores,
            "average": getattr(self.cfg, "average", 0.0)}})

    def _keep_epoch(self, v) -> None:
        """`keep = all`: DIR/epochs/epoch_N.npz, the parameters this epoch validated
        (the averages, if any), with its scores, readable by eval and sample."""
        p = self.pos
        scores = {} if v is None else {k: x for k, x in v.as_dict().items()
                                       if x is None or isinstance(x, (int, float))}
        self._save_params(f"epochs/epoch_{p.epoch + 1:03d}.npz", {**self.meta, "epoch": {
            "epoch": p.epoch + 1, "step": p.step, "valid": scores,
            "average": getattr(self.cfg, "average", 0.0)}})

    def _save_params(self, name: str, meta: dict) -> None:
        """Called while the model holds what was validated (the averages, if any). Its
        meta says how the validation cut a text (`cut`: batch, bptt, ranks), so that
        `eval` of the file scores it the same (checkpoint.npz says it in its state)."""
        (self.out / name).parent.mkdir(parents=True, exist_ok=True)
        cut = {"batch": self.cfg.batch, "bptt": self.cfg.bptt,
               "ranks": getattr(self, "ranks", 1)}
        ck.save(self.out / name, self.model.params, {**meta, "cut": cut})

    # ------------------------------------------------------------------ the loop
    def fit(self, max_steps: int | None = None, deadline: float | None = None) -> Position:
        """Train until the last epoch ends, `max_steps` updates are done or the clock
        passes `deadline` (time.monotonic()); always ends with a checkpoint. The run
        folder is locked meanwhile: one run writes it at a time."""
        try:
            if self.saved and self.pos.epoch >= self.cfg.epochs:   # a resumed run, done
                raise UsageError(f"{self.saved}: the run is at epoch {self.pos.epoch} of "
                                 f"epochs = {self.cfg.epochs}: nothing is left to train; "
                                 f"raise --epochs (or --set epochs=N) to train on")
            self.lock()
            return self._fit(max_steps, deadline)
        finally:
            self.unlock()

    _lock, _locked = None, False

    def unlock(self) -> None:
        """Release the run folder's lock (if this process holds one)."""
        if self._lock is not None:
            os.close(self._lock)
        self._lock, self._locked = None, False

    def lock(self, held: int | None = None, tried: bool = False) -> None:
        """Lock the run folder (rank 0 under MPI), or a UsageError naming the process
        that holds it; train calls it before the ranks agree that all are ready, with
        the lock it `held` where it `tried` already (an existing folder, locked before
        anything was said). Where the file system has no locks, the run goes on without
        (said once)."""
        if tried:
            self._lock, self._locked = held, True
        if not self._locked and getattr(self, "rank", 0) == 0:
            self._lock, self._locked = ck.lock_folder(self.out), True

    def _fit(self, max_steps, deadline) -> Position:
        if not self.saved and getattr(self, "rank", 0) == 0:
            # a new run over another (--overwrite): that run's checkpoint goes before
            # this run's metrics.csv replaces its own, so that a kill before this run's
            # first checkpoint leaves no checkpoint to resume beside other metrics
            Path(self.ckpt_path).unlink(missing_ok=True)
        self.metrics = self._open_metrics()
        self.first_step = self.pos.step
        if getattr(self.cfg, "average", 0.0) and self.averages is None:
            self.averages = Averages(self.cfg.average, self.model.params)   # avg_0 = p_0
        every = ck.every_from_env()
        # SIGINT/SIGTERM stop the run between two updates, with a checkpoint (under MPI
        # after the step in whose Allreduce the ranks learn of it: distributed.py)
        with ck.Interrupts(echo=ECHO if getattr(self, "comm", None) else 0.0) as signals:
            self.interrupts = signals
            while self.pos.epoch < self.cfg.epochs:
                for i, batch in self._batches():
                    signum = self._signal()
                    if signum is not None:
                        return self._interrupted(signum)
                    if self._should_stop(max_steps, deadline):
                        return self._finish(early=True)
                    self._update(batch)
                    self.pos.window = i + 1
                    if every and self.pos.step % every == 0:
                        self.save()
                self._end_epoch()
            return self._finish()

    def _signal(self) -> int | None:
        """The signal that stops the run before the next update (None: none came)."""
        return self.interrupts.signal

    def _interrupted(self, signum: int) -> Position:
        """Stopped by a signal: save where the run is (no validation pass, to stop
        quickly), then draw the curves so far; `interrupted` tells the command to exit
        with 128 + the signal."""
        self.interrupted = signum
        self._say_skips()
        self.save()
        self.metrics.plot()
        return self.pos

    def _batches(self):
        """(index, Batch) of this epoch from the current position."""
        if hasattr(self.streams, "batches"):
            return self.streams.batches(self.pos.window, self.pos.epoch)
        return ((i, stream_batch(self.data.binding, x, y))
                for i, x, y in self.streams.windows(self.pos.window))

    def _update(self, batch) -> None:
        t0 = time.perf_counter()
        p, cfg = self.pos, self.cfg
        lr = self.opt.lr * self.sched.scale(p.step, p.epoch, self.total)
        extra = dict(self.extra)
        if "teacher" in extra:         # a constant or linear(a, b) over the run
            extra["teacher"] = cfg.teacher_at(p.step, self.total)
        carry = self.carry if batch.carry else None
        rows = self.kind.rows(batch)   # a sparse gradient counts and moves only these
        # overflow is reported once, by the guard below, rather than as numpy warnings
        with np.errstate(over="ignore", invalid="ignore"):
            res = self.kind.run(self.model, batch, carry=carry, train=True, grads=True,
                                rng=self.rng, **extra)
            s, n, tokens = self._reduce(res, batch)
            norms = param_norms(res.grads, rows)
            norm = clip_global_norm(res.grads, cfg.clip, rows)
            if not (math.isfinite(res.loss) and math.isfinite(norm)):
                if getattr(cfg, "on_nan", "stop") != "skip":
                    raise self._diverged(res, norm)
                self._skip()
                return
            self.opt.step(self.model.params, res.grads, lr, rows=rows)
        if self.averages is not None:
            self.averages.update(self.model.params, p.step)
        self.streak = 0
        self.carry = res.carry if batch.carry else None
        p.step += 1
        dt = max(time.perf_counter() - t0, 1e-9)
        self.seconds += dt
        loss, tps = s / max(n, 1), tokens / dt
        clipped = bool(cfg.clip) and norm > cfg.clip
        self.metrics.step(p.step, p.epoch + 1, loss, norm, tps, norms, clipped)
        self.progress.update(p.step, p.epoch, loss, tps)
        self.epoch_loss = [self.epoch_loss[0] + s, self.epoch_loss[1] + n]

    def _skip(self) -> None:
        """on_nan = skip: no update and no state carried on; counted, and said once an
        epoch (_say_skips: a line per batch would flood the output, all naming the same
        update, since a skipped batch is no update). An epoch's worth of batches skipped
        in a row is an error: the parameters have not changed, so the next epoch would
        skip them all again."""
        p, e = self.pos, self.epoch_skips
        self.skipped, self.streak, self.carry = self.skipped + 1, self.streak + 1, None
        if not e[0]:
            e[1:] = [p.window + 1, p.step]
        e[0] += 1
        if self.streak >= len(self.streams):
            raise self._stuck()

    def _say_skips(self) -> None:
        """The epoch's skipped batches, in one warning (kept by --quiet, as the gradient
        warnings are)."""
        n, first, before = self.epoch_skips
        if n:
            self._warn(f"warning: epoch {self.pos.epoch + 1}: {n} of {len(self.streams)} "
                       f"batches skipped for a non-finite loss or gradient (on_nan = skip; "
                       f"the first: batch {first}, after update {before})")
        self.epoch_skips = [0, 0, 0]

    def _warn(self, text: str) -> None:
        """A warning on stderr, --quiet or not; once under MPI (rank 0)."""
        if getattr(self, "rank", 0) != 0:
            return
        if self.quiet:
            sys.stderr.write(text + "\n")
        else:
            self.progress.note(text)       # on a line of its own, not over the bar

    def _stuck(self) -> TrainingDiverged:
        """Every batch since the last update (or of the whole run) was skipped."""
        p, n = self.pos, self.streak
        what = f"every batch since update {p.step} ({n} in a row) had" \
            if p.step > self.first_step else f"every batch of this run ({n}) had"
        cannot = "the parameters no longer change, so training cannot recover" \
            if p.step > self.first_step else "no update was made"
        overflowed = self._overflowed()
        cause = f"; the cause is {overflowed}" if overflowed else ""
        return TrainingDiverged(
            f"{what} a non-finite loss or gradient and was skipped (on_nan = skip): "
            f"{cannot}{cause}. Last checkpoint: {self.saved or 'none yet'}. Try a smaller "
            f"lr, or clip (e.g. clip = 1.0)")

    # hooks that the distributed trainer (distributed.py) overrides
    def _open_metrics(self) -> MetricsLog:
        per = {"/node": "node", "/tree": "tree"}.get(self.kind.unit, "token")
        nats = " (nats)" if likelihood(self.graph) else ""
        return MetricsLog(self.out, self.pos.step if self.saved else None,
                          Path(self.saved).parent if self.saved else None,
                          ylabel=f"loss per {per}{nats}",
                          resume_rows=getattr(self, "resume_rows", None))

    def _should_stop(self, max_steps, deadline) -> bool:
        return _stop(self.pos.step, max_steps, deadline)

    def _reduce(self, res, batch) -> tuple[float, int, int]:
        """The batch's loss summed over its tokens, those tokens, and the tokens read;
        called between the gradients and clipping (where ranks average gradients)."""
        s, n = token_terms(self.graph, res, self.data.binding.target)
        return s, n, batch.tokens

    def _score(self):
        """The validation pass (None without validation data)."""
        return self.kind.score(self.model, self.valid) if self.valid else None

    def _end_epoch(self) -> None:
        p = self.pos
        train, vloss = self._validate()
        self.sched.end_epoch(train if vloss is None else vloss)
        p.epoch, p.window, self.carry, self.epoch_loss = p.epoch + 1, 0, None, [0.0, 0]
        self.opt.end_epoch(p.epoch)     # adagrad(reset = k): before the checkpoint
        self.save()
        self.metrics.plot(wait=False)       # drawn beside training; _finish waits

    def _validate(self, partial: bool = False) -> tuple[float, float | None]:
        """Score the validation text, log it, print the epoch's summary line (and with
        `keep = all`, keep a whole epoch's parameters); returns (this epoch's training
        loss per token, validation loss or None)."""
        p = self.pos
        self._say_skips()
        train = self.epoch_loss[0] / max(self.epoch_loss[1], 1)
        # validated and kept: the averages, if any; a non-finite loss shows in the line
        with self._averaged(), np.errstate(over="ignore", invalid="ignore"):
            v = self._score()
            if v is not None:
                self.metrics.valid(p.step, p.epoch + 1, v.loss)
                self._keep_best(v, partial)
            if self.cfg.keep == "all" and not partial:
                self._keep_epoch(v)
        vtext = self.kind.describe(v) if v is not None else ""
        self.progress.note(f"epoch {p.epoch + 1}/{self.cfg.epochs}: step {p.step}, train "
                           f"{train:.4f}{self.kind.unit}{vtext} ({self.seconds:.0f} s "
                           f"of training in all)")
        return train, (v.loss if v is not None else None)

    def _finish(self, early: bool = False) -> Position:
        """The last checkpoint; a run stopped mid-epoch is validated first, so even a
        short run reports a held-out loss (the schedule does not see this pass). A run
        that ends skipping every batch since its last update, more of them than it made
        updates, is an error (on_nan = skip): it ended stuck."""
        if self.streak and self.streak > self.pos.step - self.first_step:
            raise self._stuck()
        if early and self.pos.window > 0:
            self._validate(partial=True)
        self.save()
        self.metrics.plot()
        # a signal during this last validation, save or plot (after the last check,
        # between two updates): the run ends where it would have, checkpoint and all, and
        # the command exits as interrupted rather than drop it
        self.interrupted = self._late_signal()
        return self.pos

    def _late_signal(self) -> int | None:
        """The signal that came after the last update (None: none came)."""
        return self.interrupts.signal

    def _diverged(self, res, norm) -> TrainingDiverged:
        bad_var = next((k for k, v in res.values.items()
                        if not np.all(np.isfinite(v))), None)
        bad_grad = next((k for k, g in res.grads.items() if not np.all(np.isfinite(g))), None)
        where = [f"variable '{bad_var}'" if bad_var else "",
                 f"gradient of '{bad_grad}'" if bad_grad else ""]
        where = " and ".join(w for w in where if w) or (
            "the loss" if not math.isfinite(res.loss) else
            "the gradient norm (every gradient finite, the sum of their squares not)")
        last = f"Last good checkpoint: {self.saved or 'none yet'}"
        overflowed = self._overflowed()
        if overflowed:           # the batch is not the cause: an update was
            where = overflowed
            last = f"Last checkpoint: {self.saved}, which holds it too if it was saved " \
                f"after that update" if self.saved else "Last good checkpoint: none yet"
        return TrainingDiverged(
            f"training diverged at step {self.pos.step + 1} (epoch {self.pos.epoch + 1}): "
            f"loss {res.loss}, gradient norm {norm}; first non-finite: {where}. "
            f"{last}. Try a smaller lr or clip.")

    def _overflowed(self) -> str:
        """'' while the parameters are finite; else which is not, and why: an update of
        finite gradients (lr x gradient past the float range) made it so, and every
        later batch fails whatever its data. Looked at only once training has failed."""
        bad = self._overflowed_param()
        return "" if bad is None else (
            f"parameter '{bad}' itself, which an earlier update made non-finite (its lr x "
            f"gradient went past the float range)")

    def _overflowed_param(self) -> str | None:
        """The first parameter that is not finite, or None."""
        return next((k for k, p in self.model.params.items()
                     if not np.all(np.isfinite(p))), None)


def _like_params(arrays: dict, params: dict, param_of=lambda key: key) -> dict:
    """A checkpoint's state arrays (the optimiser's `slot/W`, the averages' `W`), each in
    the dtype of its parameter `param_of(key)`, as a new run makes them: one edited into
    whole numbers failed inside an in-place update (a traceback), and one of a run with
    another dtype stayed in that dtype beside the parameter."""
    return {k: a.astype(params[param_of(k)].dtype, copy=False) for k, a in arrays.items()}


def param_norms(grads: dict, rows: dict | None) -> dict:
    """Each parameter's gradient norm; a sparse one's over the rows the batch touched
    (the others are zero), so that an embedding's norm costs what its update costs."""
    return {k: global_norm({k: g}, rows) for k, g in grads.items()}


def _stop(step, max_steps, deadline) -> bool:
    return ((max_steps is not None and step >= max_steps)
            or (deadline is not None and time.monotonic() >= deadline))


def _run_options(model, binding, cfg) -> dict:
    """Keyword arguments for `model.run` beyond the batch: scheduled sampling when the
    target is fed back and teacher < 1 (refused if the executor cannot do it); the
    value of a schedule is set at each step."""
    low = getattr(cfg, "teacher_min", cfg.teacher)
    if low >= 1 or not binding.feedback:
        return {}
    if "teacher" not in inspect.signature(model.run).parameters:
        shown = cfg.as_dict()["teacher"] if hasattr(cfg, "as_dict") else cfg.teacher
        raise UsageError(f"teacher = {shown}: scheduled sampling is not supported by "
                         f"this executor yet; use teacher = 1")
    return {"teacher": low}


def stream_batch(binding, x, y):
    """A window of a token stream as a Batch (for a subclass that cuts its own windows)."""
    from .batches import Batch
    inputs, targets = feeds(binding, x, y)
    return Batch(inputs, targets, None, x.size, True)
