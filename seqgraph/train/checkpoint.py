"""Checkpoints: one `.npz` a user can open with numpy alone.

Each parameter is an array under its spec name (`W`, `enc.U`). Everything else sits under
reserved keys that start with `__`: `__meta__` is a 0-d string array holding JSON (the
spec's text, the bound dims, the vocabulary, the training position and configuration),
`__optim__/m/W` the optimiser's state arrays, `__average__/W` the moving averages of the
parameters (train key `average`; the top-level arrays stay the raw parameters, which a
resumed run continues from) and `__carry__/...` the recurrent state of a run stopped
mid-epoch. Nothing needs pickle to load.

Writing is atomic (a temporary file in the same directory, fsync, `os.replace`): a run
killed while saving leaves the previous checkpoint whole, and the temporary file it leaves
behind is removed by the next save into that directory.

`Interrupts` turns SIGINT (Ctrl-C) and SIGTERM during training into a request that the
loop honours between two updates, so the checkpoint it then writes is consistent; the
environment variable SEQGRAPH_CHECKPOINT_EVERY=N (train --help names it; for long epochs)
adds a checkpoint every N updates. docs/reliability.md lists what is guaranteed.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np

from ..errors import DataError, UsageError, named, whole_number

FORMAT, VERSION = "seqgraph-checkpoint", 1
META, OPTIM, CARRY, AVERAGE = "__meta__", "__optim__/", "__carry__/", "__average__/"
META_SHA = "__meta_sha256__"           # the JSON's digest: an edited meta is refused


@dataclass
class Checkpoint:
    params: dict                        # name -> array, the spec's names
    meta: dict                          # the JSON entry
    optim: dict = field(default_factory=dict)   # "slot/param" -> array
    carry: object = None                # the state to continue from, or None
    path: str = ""
    average: dict = field(default_factory=dict)  # name -> moving average (train: average)


# ------------------------------------------------------------------ nested carry state
def flatten(obj, prefix: str, out: dict):
    """Arrays of a nested dict/list/tuple under `prefix...` keys of `out`, and a JSON
    skeleton that `unflatten` fills back in (the carry's layout is the executor's)."""
    if isinstance(obj, np.ndarray):
        out[prefix] = obj
        return {"array": prefix}
    if isinstance(obj, dict):
        return {"dict": {k: flatten(v, f"{prefix}/{k}", out) for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        return {"tuple" if isinstance(obj, tuple) else "list":
                [flatten(v, f"{prefix}/{i}", out) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    if isinstance(obj, np.generic):
        return {"value": obj.item()}
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def unflatten(skeleton: dict, arrays):
    (kind, body), = skeleton.items()
    if kind == "array":
        return np.array(arrays[body])
    if kind == "dict":
        return {k: unflatten(v, arrays) for k, v in body.items()}
    if kind in ("list", "tuple"):
        items = [unflatten(v, arrays) for v in body]
        return tuple(items) if kind == "tuple" else items
    return body


# ------------------------------------------------------------------------------ write
def save(path: str | Path, params: dict, meta: dict, optim: dict | None = None,
         carry=None, average: dict | None = None) -> Path:
    """Write the checkpoint atomically; returns its path. `average`: the parameters'
    moving averages, kept beside the raw parameters under `__average__/NAME`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clash = [n for n in params if n.startswith("__")]
    if clash:
        raise DataError(f"parameter name '{clash[0]}' starts with '__', which checkpoints "
                        f"reserve", file=str(path))
    arrays = dict(params)
    for key, a in (optim or {}).items():
        arrays[OPTIM + key] = a
    for key, a in (average or {}).items():
        arrays[AVERAGE + key] = a
    meta = {**meta, "format": FORMAT, "version": VERSION,
            "shapes": {n: list(np.shape(a)) for n, a in params.items()}}
    meta["carry"] = None if carry is None else flatten(carry, CARRY.rstrip("/"), arrays)
    arrays[META] = np.array(text := json.dumps(meta))
    arrays[META_SHA] = np.array(_digest(text))
    _write_atomic(path, arrays)
    return path


def _umask() -> int:
    """The process's umask (read by setting it: a moment's change, harmless in this
    single-threaded writer; POSIX only, as os.fchmod)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_atomic(path: Path, arrays: dict) -> None:
    _remove_stale(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())     # mkstemp's 0600: as open() would make it
        with named(path), os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:                                     # make the rename itself durable
        dirfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dirfd)
    except OSError:
        pass
    finally:
        os.close(dirfd)


def _remove_stale(path: Path) -> None:
    """Temporary files of `path` left by a process killed while it saved."""
    for old in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            old.unlink()
        except OSError:
            pass


def lock_folder(folder: Path):
    """An exclusive lock on a run folder (DIR/.lock, holding the owner's process id),
    held until the process ends, however it ends: two runs writing one folder would
    delete each other's temporary files and interleave metrics.csv. A folder another
    process holds is a UsageError naming it."""
    import errno
    import fcntl
    folder = Path(folder)
    try:               # (train's own check of the folder cannot foresee every refusal:
        folder.mkdir(parents=True, exist_ok=True)    # root may write, /proc may not)
    except OSError as e:
        raise UsageError(f"{folder}: cannot make the run folder ({e.strerror or e})") \
            from None

    def cannot(e) -> None:
        sys.stderr.write(f"seqgraph: warning: {folder}: cannot lock the run folder "
                         f"({e.strerror or e}); make sure no other run writes it\n")
    try:
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        mine = True
    except PermissionError:          # another user's lock file: locked read-only
        try:
            fd, mine = os.open(folder / ".lock", os.O_RDONLY), False
        except OSError as e:
            return cannot(e)
    except OSError as e:             # a folder named .lock, a read-only file system
        return cannot(e)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):     # no locks here (NFS)
            os.close(fd)
            return cannot(e)
        owner = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        who = f" (process {owner})" if owner else ""   # (its pid not written yet)
        raise UsageError(f"{folder}: another seqgraph train{who} is writing "
                         f"this folder; wait for it to end, or give this run another "
                         f"--out") from None
    if mine:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
    return fd                       # kept open: the lock lasts as long as the process


# ------------------------------------------------------------------ kills and signals
EVERY_ENV = "SEQGRAPH_CHECKPOINT_EVERY"


def every_from_env() -> int | None:
    """N of SEQGRAPH_CHECKPOINT_EVERY=N: also save every N updates (None: unset or 0,
    only at the end of each epoch and when the run stops)."""
    raw = os.environ.get(EVERY_ENV, "").strip()
    if not raw:
        return None
    if not whole_number(raw):
        raise UsageError(f"{EVERY_ENV}={raw!r}: expected a whole number of updates (0: "
                         "only at the end of each epoch)")
    return int(raw) or None


class Interrupts:
    """A context in which SIGINT and SIGTERM only set `signal` (their number): the
    training loop sees it between two updates, saves and stops. A second signal raises
    KeyboardInterrupt at once (the last checkpoint on disk stays whole). Outside the
    main thread, where Python cannot handle signals, it does nothing. `echo` seconds:
    the same signal again within them is the first one's echo, not a second (under MPI
    a rank may get one SIGTERM from whoever sent it and one forwarded by mpiexec)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, echo: float = 0.0):
        self.signal: int | None = None
        self.echo, self._at = echo, None
        self._old: dict = {}

    def _handle(self, signum, frame):
        if self.signal is not None:
            if signum == self.signal and time.monotonic() - self._at < self.echo:
                return
            stop = KeyboardInterrupt()
            stop.signum = signum         # the exit code says which (cli.main)
            raise stop
        self.signal, self._at = signum, time.monotonic()

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                if signal.getsignal(s) is not signal.SIG_IGN:    # ignored stays ignored
                    self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            late = self._late_echo(old) if s == self.signal and self.echo else old
            signal.signal(s, late)
        self._old = {}

    def _late_echo(self, old):
        """The handler of the signal that stopped the run, once the context is left: its
        echo may come after the run has saved (mpiexec forwards late on a busy machine)
        and must not kill the rank, with the default action, before it says where it
        stopped. Within `echo` seconds of the first it is ignored; later, or any other
        signal, meets the handler there was before."""
        def handle(signum, frame):
            if time.monotonic() - self._at < self.echo:
                return
            signal.signal(signum, old)
            signal.raise_signal(signum)
        return handle


# ------------------------------------------------------------------------------- read
# a damaged archive fails in many ways inside zipfile and numpy (a bad CRC, a flag it
# does not implement, a name it cannot find, bad JSON): each is the same answer
DAMAGED = (OSError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError,
           KeyError, RuntimeError, UnicodeDecodeError)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load(path: str | Path) -> Checkpoint:
    """Read a checkpoint; a missing, truncated or foreign file is a DataError."""
    file = str(path)
    if not Path(path).is_file():
        raise DataError("no such checkpoint", file=file)
    if not zipfile.is_zipfile(path):
        raise DataError("not a readable checkpoint: not an .npz archive (another kind of "
                        "file, or one cut short); `seqgraph train` writes RUN/checkpoint.npz "
                        "and RUN/best.npz", file=file)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if META not in arrays:
            raise DataError("not a seqgraph checkpoint (no __meta__ entry)", file=file)
        text, sha = str(arrays.pop(META)), arrays.pop(META_SHA, None)
        meta = json.loads(text)
    except DAMAGED as e:
        raise DataError(f"not a readable checkpoint ({e})", file=file) from None
    if sha is not None and str(sha) != _digest(text):
        # the meta drives eval and sample (vocabulary, sizes, position): one edited by
        # hand would fail anywhere inside them, so it is refused here, whole
        raise DataError("the checkpoint's metadata (__meta__) does not match its digest: "
                        "it was edited or damaged; seqgraph reads a checkpoint's metadata "
                        "only as training wrote it (its parameter arrays may be edited)",
                        file=file)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError("not a seqgraph checkpoint", file=file)
    optim = {k[len(OPTIM):]: a for k, a in arrays.items() if k.startswith(OPTIM)}
    average = {k[len(AVERAGE):]: a for k, a in arrays.items() if k.startswith(AVERAGE)}
    params = {k: a for k, a in arrays.items() if not k.startswith("__")}
    carry = None if meta.get("carry") is None else unflatten(meta["carry"], arrays)
    return Checkpoint(params, meta, optim, carry, file, average)


def check_params(ckpt: Checkpoint, params: dict) -> None:
    """The checkpoint belongs to this spec: the same parameter names and shapes (the
    first difference, `_mismatch`, is the error), each array of real numbers (the
    arrays may be edited by hand: `not_numbers`)."""
    why = _mismatch(ckpt, {n: p.shape for n, p in params.items()})
    if why is not None:
        raise DataError(f"{why} (saved from model '{ckpt.meta.get('model')}')",
                        file=ckpt.path)
    for name in params:
        not_numbers(f"parameter '{name}'", ckpt.params[name], ckpt.path)


def not_numbers(what: str, array, path: str) -> None:
    """A DataError when an array (`what`: "parameter 'W'") does not hold real numbers
    (strings, complex numbers, dates): copied into the model it failed inside numpy, or
    lost a part."""
    if np.asarray(array).dtype.kind not in "biuf":
        raise DataError(f"{what} holds {array.dtype} values, not real numbers (an array "
                        f"edited by hand?)", file=path)


def check_optim(ckpt: Checkpoint, params: dict, opt) -> None:
    """The optimiser's arrays (`__optim__/SLOT/NAME`) are of `opt`'s slots and of this
    model's parameters, with their shapes, in real numbers: the fused update kernel
    indexes them as the parameter and does not check bounds (an edited array of another
    shape wrote outside it)."""
    for key, a in ckpt.optim.items():
        slot, _, name = key.partition("/")
        what = f"the optimiser's array '{OPTIM}{key}'"
        if slot not in opt.slots or name not in params:
            keeps = f"keeps {' and '.join(opt.slots)} for each parameter" if opt.slots \
                else "keeps no arrays"
            raise DataError(f"{what} is not state of this run's optimiser ({opt.name} "
                            f"{keeps})", file=ckpt.path)
        not_numbers(what, a, ckpt.path)
        if a.shape != params[name].shape:
            raise DataError(f"{what} has shape {list(a.shape)}, but parameter '{name}' "
                            f"{list(params[name].shape)} (an array edited by hand?)",
                            file=ckpt.path)


def check_model(ckpt: Checkpoint, model: str, shapes: dict, spec_path: str = "",
                dims: dict | None = None,
                fix: str = "resume from a checkpoint of this model, or start a new run "
                           "(no --resume)") -> None:
    """Resume's first check, before its data, batch, bptt or settings: the checkpoint was
    saved from this model (the same parameter names, and the same shapes where `shapes`,
    name -> tuple with None for a size not known yet, gives them). Otherwise one error
    naming both models: another model's checkpoint is the cause, whatever else differs."""
    names = list(ckpt.params)
    why = _mismatch(ckpt, shapes)
    if why is None:
        return
    was = ckpt.meta.get("model", "?")
    held = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    spec = spec_path or "the spec"
    # the same name is an edited spec (a size, a parameter); another is another model
    which = f"with parameters other than {spec} declares now" if was == model else \
        f"(parameters {held}), not from model '{model}' of {spec}"
    # a size --dim gives, or gave the run, that is not the checkpoint's: say the sizes
    trained = {k: v for k, v in (ckpt.meta.get("dims") or {}).items()
               if k in (dims or {}) and dims[k] != v}
    if was == model and trained:
        fix = "its sizes: " + ", ".join(f"--dim {k}={v}" for k, v in trained.items())
        which = f"with other sizes ({', '.join(f'{k}={dims[k]}' for k in trained)} here)"
    raise DataError(f"was saved from model '{was}' {which}: {why}; {fix}", file=ckpt.path)


def _mismatch(ckpt: Checkpoint, shapes: dict) -> str | None:
    """The first difference between the spec's parameters and the checkpoint's: a
    missing one, an extra one, then a shape (None in `shapes`: any size)."""
    for n in shapes:
        if n not in ckpt.params:
            return f"the spec's parameter '{n}' is not in this checkpoint"
    for n in ckpt.params:
        if n not in shapes:
            return f"this checkpoint has parameter '{n}', which the spec does not declare"
    for n, want in shapes.items():
        have = ckpt.params[n].shape
        if len(want) != len(have) or any(w not in (None, h)
                                         for w, h in zip(want, have, strict=True)):
            return (f"parameter '{n}' has shape {list(want)} in the spec but {list(have)} "
                    f"in this checkpoint")
    return None


def run_dims(ckpt: Checkpoint | None) -> dict:
    """The sizes a run bound (its data's and its --dim), to read its spec with: a spec
    whose sizes check only once they are numbers (model.read_spec)."""
    if ckpt is None:
        return {}
    return {**(ckpt.meta.get("dims") or {}), **(ckpt.meta.get("dim_overrides") or {})}


def model_dims(ckpt: Checkpoint, open_dims) -> dict:
    """The sizes a model restored from `ckpt` is built with: those the spec leaves open
    (`open_dims`) as the run bound them, and those `--dim` gave the run over the spec's
    own (`train --dim H=8` on a spec that says `dim H = 16` trained an H = 8 model). A
    size the spec now declares otherwise is not overridden: it shows as a mismatch."""
    dims = {k: v for k, v in (ckpt.meta.get("dims") or {}).items() if k in open_dims}
    return {**dims, **(ckpt.meta.get("dim_overrides") or {})}


def check_resume(ckpt: Checkpoint, spec, dims: dict | None = None, **fix) -> None:
    """`check_model` for `seqgraph train --resume` before the data is read: the spec's
    parameter shapes, with its sizes bound by `dims` (--dim) or, where the spec leaves
    them to the data, by the checkpoint's run."""
    from ..graph.check import check
    known = {**ckpt.meta.get("dims", {}), **(dims or {})}
    checked = check(spec.graph, dims) if dims else spec.checked   # --dim over `dim H = 16`
    # an unused parameter has no shape and no array (model.init_params): none is saved
    shapes = {p: tuple(_evaluate(d, known) for d in shape)
              for p, shape in checked.param_shapes.items() if shape}
    check_model(ckpt, spec.name, shapes, spec.path, dims, **fix)


def _evaluate(lin, dims: dict) -> int | None:
    """A size expression (const + sum of coef x name) under `dims`; None if open."""
    if any(name not in dims for name, _ in lin.terms):
        return None
    return int(lin.const + sum(c * int(dims[name]) for name, c in lin.terms))


def restore_params(ckpt: Checkpoint, params: dict, average: bool = False) -> None:
    """Copy the checkpoint's values into the model's arrays, in place, after checking;
    `average`: its moving averages of the parameters instead (`__average__/`), an error
    when it holds none."""
    check_params(ckpt, params)
    kept = (ckpt.meta.get("best") or ckpt.meta.get("epoch") or {}).get("average")
    if average and set(ckpt.average) != set(params):
        if kept:                 # best.npz, epochs/: what validation scored, the averages
            raise DataError(f"holds the parameters a validation pass scored, which are "
                            f"the moving averages already (the run was trained with "
                            f"average = {kept:g}): leave --average out", file=ckpt.path)
        raise DataError("holds no averaged parameters: --average reads the moving "
                        "averages a checkpoint.npz keeps when the run was trained with "
                        "the train key `average` (its best.npz holds them as its "
                        "parameters); this one was not, so leave --average out",
                        file=ckpt.path)
    src = ckpt.average if average else ckpt.params
    for name, p in params.items():
        p[...] = src[name]
