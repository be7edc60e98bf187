"""`seqgraph train SPEC`: train a model on the data its train block names."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..errors import SeqgraphError, UsageError, whole_number

HELP = "train a model on the data of its train block"


def add_arguments(p) -> None:
    p.epilog = ("A checkpoint is written at the end of every epoch and when the run stops "
                "(Ctrl-C or SIGTERM); SEQGRAPH_CHECKPOINT_EVERY=N in the environment also "
                "writes one every N updates (0: off).")
    p.add_argument("spec", help="the .sg file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a train-block key, e.g. --set batch=16 "
                        "--set 'optimizer=sgd(lr=0.5)'")
    p.add_argument("--epochs", type=int, help="the same as --set epochs=N")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                   help="bind a size the spec leaves open, e.g. --dim V=65")
    p.add_argument("--out", help="run directory (default: runs/<model name>)")
    run = p.add_mutually_exclusive_group()      # continue a run, or write over one
    run.add_argument("--resume", metavar="DIR",
                     help="continue from DIR/checkpoint.npz (or a checkpoint file)")
    run.add_argument("--overwrite", action="store_true",
                     help="start a new run in a folder that holds another run's checkpoint "
                          "(refused without it: that run would be lost)")
    p.add_argument("--executor", choices=["interp", "compiled"],
                   help="default: compiled when available, else interp")
    p.add_argument("--steps", type=int, help="stop after N updates in all (for tests)")
    p.add_argument("--minutes", type=float, help="stop after this much wall-clock time")
    p.add_argument("--on-nan", choices=["stop", "skip"],
                   help="a non-finite loss or gradient stops training (default) or skips "
                        "the batch")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar, epoch lines or final summary (warnings stay)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI ranks: mpiexec -n N seqgraph train SPEC "
                        "--distributed (batch is per rank; docs/scaling.md)")
    p.add_argument("--mpi-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --distributed: stop all ranks when another rank has sent "
                        "nothing for this long (default 300)")


def run(args) -> int:
    _check_limits(args)
    comm = None
    if args.distributed:                  # first: MPI starts, ranks above 0 keep quiet
        from ..train.distributed import DEFAULT_TIMEOUT, connect
        comm = connect(DEFAULT_TIMEOUT if args.mpi_timeout is None else args.mpi_timeout)
        args.quiet = args.quiet or comm.rank > 0
    elif args.mpi_timeout is not None:
        print(f"{args.spec}: warning: --mpi-timeout does nothing without --distributed "
              f"(a run on one process waits for no other)", file=sys.stderr)
    speak = comm is None or comm.rank == 0         # warnings are said once, --quiet or not
    try:
        trainer, out, made = _prepare(args, comm, speak)
    except SeqgraphError as e:
        if comm is None:
            raise
        _agree(comm, e)
    except BaseException as e:              # a bug, a Ctrl-C to this rank alone
        _alone(comm, e)
        raise
    if comm is not None:
        try:
            _agree(comm, None)
            _same_inputs(comm, trainer)
        except SeqgraphError:               # refused: the folder made for it goes too
            _unmake(trainer, out, made)
            raise
    deadline = time.monotonic() + 60 * args.minutes if args.minutes else None
    try:
        pos = trainer.fit(args.steps, deadline)
    except OSError as e:         # a full disk, a folder made read-only during the run
        last = f"the last good checkpoint is {trainer.saved} (checkpoints are written " \
            f"whole or not at all)" if trainer.saved else "no checkpoint was written"
        if trainer.saved and not Path(trainer.saved).is_file():    # the folder removed
            last = f"the last checkpoint it wrote, {trainer.saved}, is no longer there"
        err = UsageError(f"cannot write {e.filename or out} ({e.strerror or e}); {last}")
        _alone(comm, err)
        raise err from None
    except BaseException as e:              # ends every rank, or raised again
        _alone(comm, e)
        raise
    return _stopped(args, trainer, pos, out)


def _alone(comm, e: BaseException) -> None:
    """Under MPI, `e` is an error of this rank alone (every rank's are `Said` by now):
    the others wait for this one in a collective, so it says `e` and ends every rank at
    once. Returns (the caller raises `e`) on one process."""
    from ..train.distributed import Said
    if comm is not None and comm.size > 1 and not isinstance(e, (Said, SystemExit)):
        comm.fail(e)


def _same_inputs(comm, trainer) -> None:
    """Every rank read the same spec, settings and data (distributed.agree_on_inputs);
    a failure of one rank while it takes its digests ends every rank at once, as in
    training (the others wait for its digests in a collective)."""
    from ..train.distributed import agree_on_inputs, inputs
    try:
        agree_on_inputs(comm, inputs(trainer))
    except BaseException as e:
        _alone(comm, e)
        raise


def _agree(comm, failure) -> None:
    from ..train.distributed import agree
    agree(comm, failure)


def _prepare(args, comm, speak: bool):
    """The trainer of a run (restored from the checkpoint it resumes), its folder and the
    outermost folder locking it made (None: it was there): everything before training's
    first collective, so that an input error here is said once under MPI (`_agree`)."""
    from .. import read_spec
    from ..train import checkpoint as ck
    from ..train.session import checkpoint_in
    from . import parse_dims
    resumed = ck.load(checkpoint_in(args.resume)) if args.resume else None
    spec = read_spec(args.spec, dims=parse_dims(args.dim), bound=ck.run_dims(resumed))
    _has_loss(args, spec)
    out = _run_folder(args, spec)
    # one run writes a folder at a time: one that exists is locked before anything is
    # said or written (a new one when training starts: a refused run leaves none)
    tried = out.is_dir() and (comm is None or comm.rank == 0)
    lock = ck.lock_folder(out) if tried else None
    try:
        trainer = _prepare_locked(args, comm, speak, spec, resumed, out)
    except BaseException:
        if lock is not None:
            os.close(lock)
        raise
    # the lock taken (released when fit ends), or a new folder made and locked now,
    # every input checked (before the ranks agree, under MPI)
    made = _first_missing(out)
    trainer.lock(lock, tried)
    return trainer, out, made


def _prepare_locked(args, comm, speak: bool, spec, resumed, out):
    from .. import Model
    from ..resources import check_training
    from ..train.data import load_dataset
    from ..train.loaders import Vocab
    from ..train.session import choose_executor, init_rule
    dims = _dims(args, spec, resumed)     # another model's checkpoint is said first
    _steps_left(args, resumed)            # before the data is read: nothing to train
    cfg = _config(args, spec, resumed)
    _another_run(args, out, speak, resumed)   # once the settings are good: no false alarm
    _warn_of_leaks(args, spec, cfg, speak)
    _warn_of_unused(args, spec, speak)
    from .check import loader_fits
    loader_fits(spec, cfg)                # the loader of another kind of data: at its line
    vocab = Vocab.from_json(resumed.meta["vocab"]) if resumed and "vocab" in resumed.meta \
        else None
    data = load_dataset(spec.graph, cfg, dims, vocab)
    _warn_of_one_class(args, data, speak)
    for note in getattr(data, "notes", ()) if speak else ():   # (trees' data: none)
        print(note, file=sys.stderr)        # a header among named labels, say
    bound = {**dims, **data.binding.dims}
    executor = choose_executor(args.executor)
    _warn_of_another_executor(resumed, executor, speak)
    model = Model(spec, dims=bound, dtype=cfg.dtype, seed=cfg.seed, executor=executor,
                  param_init=init_rule(cfg.param_init))
    check_training(model, cfg.batch, cfg.bptt, getattr(cfg.optimizer, "name", cfg.optimizer))
    _note_interpreted(model, executor, speak and not args.quiet)
    meta = _meta(args, spec, model, cfg, data, dims, bound)
    return _trainer(args, model, spec, data, cfg, out, meta, comm, resumed)


def _check_limits(args) -> None:
    # `--out "$DIR"` with DIR unset was taken as no --out: a run in runs/MODEL
    for flag, value, fix in (("--out", args.out, "the folder to write, or leave --out out "
                                                  "for runs/<model name>"),
                             ("--resume", args.resume, "the run folder to continue")):
        if value is not None and not value.strip():
            raise UsageError(f"{flag} is given an empty path (an unset variable?); give "
                             f"{fix}")
    if args.steps is not None and args.steps < 0:
        raise UsageError("--steps must be 0 or more")
    if args.minutes is not None and not args.minutes > 0:
        raise UsageError(f"--minutes must be a positive number of minutes (e.g. 0.5), not "
                         f"{args.minutes:g}; leave it out for no time limit")
    _one_process_under_mpi(args)


def _has_loss(args, spec) -> None:
    """A model without a loss has nothing to minimise: refused, not trained on zeros."""
    if not spec.graph.losses:
        raise UsageError(f"{args.spec}: model '{spec.name}' has no loss, so there is "
                         f"nothing to train (check and the Python API run it); add one "
                         f"such as `loss xent(o[t], y[t])` (docs/language.md)")


def _steps_left(args, resumed) -> None:
    """`--steps N` counts updates from the start of the run: a resumed run already at
    step N or past it has nothing to do, said before its data is read."""
    if resumed is None or args.steps is None:
        return
    done = ((resumed.meta.get("state") or {}).get("position") or {}).get("step", 0)
    if done >= args.steps:
        raise UsageError(f"{resumed.path}: the run is at step {done} already; --steps "
                         f"{args.steps} counts updates in all, from the start of the run: "
                         f"give more than {done} to train on")


def _warn_of_one_class(args, data, speak: bool) -> None:
    """Training labels (labeled, tagged, trees) that hold one class: the model can only
    learn to predict it, most often a data mistake (a wrong column, a filtered file)."""
    import numpy as np

    from ..train.data import training_labels
    labels = training_labels(data)
    if speak and labels is not None and len(np.unique(labels)) == 1 and len(labels) > 1:
        name = data.vocab.target.tokens[int(labels[0])] \
            if getattr(data.vocab, "target", None) is not None else str(int(labels[0]))
        print(f"{args.spec}: warning: every training label of {data.binding.target} is "
              f"{name!r} ({len(labels)} of them in {data.train_file}): the model can only "
              f"learn to predict it", file=sys.stderr)


def _warn_of_leaks(args, spec, cfg, speak: bool) -> None:
    """An output that can read the answer its loss asks for (graph/leaks.py)."""
    from ..graph.leaks import target_leaks
    if speak:
        for msg in target_leaks(spec.checked, cfg.data):
            print(f"{args.spec}: warning: {msg}", file=sys.stderr)


def _unused_keys(graph) -> dict:
    """{train key: why the model has no use for it}: `bptt` for a model over a tree (a
    tree is processed whole, no windows), `teacher` for a model that reads no target
    back (teacher forcing feeds a delayed target, `R @ y[t-1]`)."""
    from ..graph.folded import fed_back
    out = {}
    if any(k == "tree" for _, k in graph.indexes):
        out["bptt"] = "a tree is processed whole (no windows)"
    if not any(fed_back(graph, y.name) for y in graph.targets()):
        out["teacher"] = "it reads no target back (no y[t-1]), so there is nothing to force"
    return out


def _warn_of_unused(args, spec, speak: bool) -> None:
    """A train key given (in the spec or by --set) that the model has no use for."""
    if not speak:
        return
    given = set(dict(spec.train or {})) | {s.partition("=")[0].strip() for s in args.set}
    unused = _unused_keys(spec.graph)
    for key in sorted(given & set(unused)):
        print(f"{args.spec}: warning: {key} does nothing for model '{spec.graph.name}': "
              f"{unused[key]}", file=sys.stderr)


def _note_interpreted(model, executor: str, speak: bool) -> None:
    """The compiled executor asked for (or chosen) but running the model in the
    interpreter: said once, with the reason `check --explain` gives."""
    if not speak or executor != "compiled":
        return
    from ..compile import interpreted
    why = interpreted(model, training=True)
    if why:
        print(f"note: this model trains in the interpreter ({why}); seqgraph check --explain "
              f"says how each part runs", file=sys.stderr)


def _warn_of_another_executor(resumed, executor: str, speak: bool) -> None:
    was = resumed.meta.get("executor") if resumed is not None else None
    if speak and was not in (None, executor):
        print(f"warning: the run was trained with the {was} executor and continues with "
              f"the {executor} one: the two round float32 differently, so the run will "
              f"not be the one an unstopped run would have been (--executor {was} keeps "
              f"it)", file=sys.stderr)


def _meta(args, spec, model, cfg, data, dims: dict, bound: dict) -> dict:
    """What a checkpoint keeps of the run besides its arrays: the spec, the sizes (and
    those --dim gave), the vocabulary and binding, and the loaders --set gave."""
    from ..train.session import set_loaders
    return {"model": spec.name, "spec_path": str(args.spec), "spec": spec.source,
            "dims": {**model.dims, **bound}, "dtype": cfg.dtype,
            "executor": model.executor_name, "vocab": data.vocab.to_json(),
            "binding": vars(data.binding),
            "data": {"train": data.train_file, "valid": data.valid_file},
            "dim_overrides": dims, "loaders": set_loaders(cfg)}


def _one_process_under_mpi(args) -> None:
    """`mpiexec -n 4 seqgraph train SPEC` without --distributed starts 4 runs that know
    nothing of each other and write one folder: warned (each MPI names its world size)."""
    import os
    size = next((os.environ[k] for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                         "MPI_LOCALNRANKS") if k in os.environ), "1")
    if not args.distributed and whole_number(size) and int(size) > 1:
        print(f"warning: started by mpiexec with {size} processes but without "
              f"--distributed: each trains alone, into the same folder; add --distributed "
              f"for one data-parallel run", file=sys.stderr)


def _run_folder(args, spec) -> Path:
    """The run's folder (--out, the resumed run's, or runs/MODEL): one that could not be
    made or written is said before any data is read (it is made when training starts,
    so a run refused before that leaves nothing behind)."""
    import os
    out = Path(args.out or args.resume and _run_dir(args.resume) or Path("runs") / spec.name)
    flag = "--out" if args.out else "the run folder"
    there = out
    while not there.exists() and there != there.parent:   # the part that exists
        there = there.parent
    if there.exists() and not there.is_dir():
        raise UsageError(f"{flag} {out}: cannot make it ({there} is a file)")
    if there.exists() and not os.access(there, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out}: cannot write into {there} (permission denied)")
    return out


def _first_missing(out: Path) -> Path | None:
    """The outermost folder of `out` that does not exist yet (None: `out` exists), which
    locking the run folder makes."""
    if out.exists():
        return None
    while not out.parent.exists() and out.parent != out:
        out = out.parent
    return out


def _unmake(trainer, out: Path, made: Path | None) -> None:
    """A run refused once its folder was made and locked (the ranks did not agree, or
    read other inputs): the folders it made go, with their lock, so that it leaves no
    trace (rank 0 made them; a folder that holds anything else stays)."""
    if made is None or getattr(trainer, "rank", 0) != 0:
        return
    (out / ".lock").unlink(missing_ok=True)        # held until the file is gone
    trainer.unlock()
    there = out
    while True:
        try:
            there.rmdir()                          # only if empty
        except OSError:
            return
        if there == made:
            return
        there = there.parent


def _dims(args, spec, resumed) -> dict:
    """`--dim`, over the sizes `--dim` gave the run that is resumed; the model is checked
    against the checkpoint before any data is read (another model's is said as such)."""
    from ..train import checkpoint as ck
    from . import parse_dims
    dims = parse_dims(args.dim, spec)
    if resumed is None:
        return dims
    dims = {**(resumed.meta.get("dim_overrides") or {}), **dims}
    ck.check_resume(resumed, spec, dims)
    return dims


def _another_run(args, out: Path, speak: bool, resumed=None) -> None:
    """A new run into a folder that holds another run's checkpoint is refused: that run
    would be lost (re-running a command writes runs/MODEL again). With --overwrite it is
    replaced, and said: its checkpoint.npz and metrics are written over, its best.npz and
    epochs/ stay until this run writes its own. A resumed run writes over the folder's
    checkpoint.npz only when that is the one it continues: another (a later one, when
    the run resumes a copy kept beside it) would be lost with its metrics' rows, and
    --overwrite does not go with --resume."""
    from ..train.session import checkpoint_in
    there = out / "checkpoint.npz"
    if not there.exists():
        return
    if args.resume:
        src = Path(checkpoint_in(args.resume))
        if src.resolve() == there.resolve() or resumed.meta.get("state") is None:
            return          # (best.npz, epochs/: no state to resume, said as such later)
        # (another run's, or a later checkpoint of the run `src` was copied from)
        raise UsageError(f"{out} holds a checkpoint.npz other than the one resumed ({src}): "
                         f"continuing there would write over it, with its metrics; give "
                         f"this run another --out, or move {there} away")
    if not args.overwrite:
        raise UsageError(f"{out} holds another run (its checkpoint.npz); --resume {out} "
                         f"continues it, --out DIR starts this one beside it, --overwrite "
                         f"replaces it")
    stale = [n for n in ("best.npz", "epochs") if (out / n).exists()]
    stay = f"; its {' and '.join(stale)} stay{'s' * (len(stale) == 1)} until this run " \
        f"writes its own" if stale else ""
    if speak:
        print(f"warning: --overwrite: this run writes over {out}/checkpoint.npz and "
              f"metrics{stay}", file=sys.stderr)


def _config(args, spec, resumed=None):
    """The train block, then `--set`, `--epochs` and `--on-nan`, checked; a resumed run
    reads the data and valid `--set` gave it, unless `--set` gives them again."""
    from ..train.config import make_config, parse_sets
    from ..train.session import recorded_sets
    sets = parse_sets(args.set)
    if resumed is not None:
        sets.update(recorded_sets(resumed.meta, resumed.path, given=sets))
    if args.epochs is not None:
        sets["epochs"] = args.epochs
    if args.on_nan:
        sets["on_nan"] = args.on_nan
    return make_config(spec.train, sets, Path(args.spec).resolve().parent)


def _trainer(args, model, spec, data, cfg, out, meta, comm, resumed):
    """The trainer (one per MPI rank under --distributed), restored from `resumed`."""
    from ..train.loop import Trainer
    if comm is not None:
        from ..train.distributed import DistributedTrainer
        trainer = DistributedTrainer(model, spec.graph, data, cfg, out, meta,
                                     quiet=args.quiet, comm=comm)
    elif resumed and (resumed.meta.get("distributed") or {}).get("ranks", 1) > 1:
        ranks = resumed.meta["distributed"]["ranks"]
        raise UsageError(f"{resumed.path}: was written by a run on {ranks} MPI ranks; "
                         f"resume it with mpiexec -n {ranks} ... --distributed")
    else:
        trainer = Trainer(model, spec.graph, data, cfg, out, meta, quiet=args.quiet)
    if resumed:
        trainer.restore(resumed)
    return trainer


def _stopped(args, trainer, pos, out) -> int:
    """Where the run stopped, and the exit code: 0, or 128 + the signal that stopped it
    (said even with --quiet, with the command that continues it)."""
    signum = getattr(trainer, "interrupted", None)
    done = pos.epoch >= trainer.cfg.epochs and pos.window == 0
    if signum:
        import signal
        import sys
        # (a signal during the last epoch's validation or save: the run is whole)
        how = f"came as the run finished ({pos.epoch} epoch{'s' * (pos.epoch != 1)}, " \
            f"{pos.step} steps); checkpoint {trainer.saved}; nothing is left to train " \
            f"(--resume {out} with more --epochs trains on)" if done else \
            f"stopped at step {pos.step}; checkpoint {trainer.saved}; continue with: " \
            f"{_continue_command(args, out, trainer)}"
        if getattr(trainer, "rank", 0) == 0:          # under MPI, said once
            print(f"\n{signal.Signals(signum).name}: {how}", file=sys.stderr)
        return 128 + signum
    # the epoch of the last update (none at step 0: --steps 0, or --minutes run out first)
    epoch = f"epoch {pos.epoch + (pos.window > 0)}" if pos.step else "before the first update"
    how = f"finished: {pos.epoch} epoch{'s' * (pos.epoch != 1)}, {pos.step} steps" if done else \
        f"stopped at step {pos.step} ({epoch}; the " \
        f"{'--steps' if args.steps is not None and pos.step >= args.steps else '--minutes'}" \
        f" limit)"
    more = "" if done else f"; continue with: {_continue_command(args, out, trainer)}"
    best = ""
    if trainer.best is not None and (out / "best.npz").exists():
        best = f"; best {out / 'best.npz'} ({trainer.kind.best_metric} {trainer.best:.4g})"
    trainer.progress.note(f"{how}; checkpoint {trainer.saved}{best}; metrics "
                          f"{out / 'metrics.csv'}{more}")
    return 0


def _continue_command(args, out, trainer=None) -> str:
    """The command that continues this run: its own flags (what --set, --epochs, --dim
    ... gave it), with --resume instead of --out, --steps and --minutes; under MPI
    started by mpiexec on as many ranks."""
    import shlex
    parts = ["seqgraph", "train", args.spec]
    if args.distributed:
        parts = ["mpiexec", "-n", str(getattr(trainer, "ranks", 1)), *parts, "--distributed"]
        if args.mpi_timeout is not None:
            parts += ["--mpi-timeout", f"{args.mpi_timeout:g}"]
    for item in args.set:
        parts += ["--set", item]
    for flag, value in (("--epochs", args.epochs), ("--on-nan", args.on_nan),
                        ("--executor", args.executor)):
        if value is not None:
            parts += [flag, str(value)]
    for item in args.dim:
        parts += ["--dim", item]
    return shlex.join(parts + ["--resume", str(out)])


def _run_dir(path: str) -> Path:
    from ..train.session import checkpoint_in
    p = Path(checkpoint_in(path))
    return p.parent
