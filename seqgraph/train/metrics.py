"""What a training run reports: `metrics.csv`, a loss curve (`loss.png`) and a gradient-
norm plot (`grad_norm.png`) beside it, warnings about the gradients, and a one-line
progress bar on stderr.

The CSV has one row per update (step, epoch, train loss per token, gradient norm before
clipping, tokens per second, and the norm of each parameter's gradient in a column
`grad_norm.NAME`) and one row per validation pass (step, epoch, valid loss), so a
spreadsheet or pandas reads the curves without any seqgraph code.

Gradient monitoring (Deep Learning, section 10.7: gradients that explode through time):
a warning on stderr when the global norm jumps to 100 times its running median or more,
and at the end of the first epoch in which clipping fired on most updates, if the
training loss stalled there (a clip that fires on every update of a run whose loss falls
only caps its steps: the loss is summed over a window's steps, so its gradient norm
grows with the window).
"""
from __future__ import annotations

import csv
import io
import math
import os
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from ..errors import DataError, named, whole_number

COLUMNS = ("step", "epoch", "train_loss", "valid_loss", "grad_norm", "tokens_per_s")
PARAM_PREFIX = "grad_norm."      # a column per parameter: grad_norm.W, grad_norm.enc.U
JUMP = 100.0                     # a global norm >= JUMP x its running median is a warning
MEDIAN_OF = 100                  # ... over the last MEDIAN_OF updates (at least 10 seen)
MOST = 0.5                       # clipping on more than this fraction of an epoch's updates
FALLS = 0.99                     # progress: a mean loss below FALLS x the one before it
THIRD = 5                        # within one epoch: judged on thirds of 5 updates or more
LOG_EVERY = 30.0                 # seconds between progress lines in a log (not a terminal)


def _to_stderr(text: str) -> None:
    """A warning on a line of its own: over the progress bar on a terminal (\\r), as a
    plain line in a log."""
    live = getattr(sys.stderr, "isatty", lambda: False)()
    sys.stderr.write(("\r" if live else "") + text + "\n")


class GradMonitor:
    """Watches the global gradient norm: jumps over the running median, and how often
    clipping fires in each epoch. `warn` receives each warning's text."""

    def __init__(self, warn=None):
        self.warn = warn or _to_stderr
        self.recent = deque(maxlen=MEDIAN_OF)
        self.epoch, self.steps, self.clipped = None, 0, 0
        self.losses: list[float] = []  # the epoch's training losses (when given)
        self.before = None             # the mean training loss of the epoch before
        self.clip_said = False       # the clipping warning: once a run
        self.last_jump = -10**9
        self.warnings: list[str] = []

    def _say(self, text: str) -> None:
        self.warnings.append(text)
        self.warn(text)

    def step(self, step: int, epoch: int, norm: float, norms: dict | None = None,
             clipped: bool | None = None, loss: float | None = None) -> None:
        if epoch != self.epoch:
            self.end_epoch()
            self.epoch, self.steps, self.clipped, self.losses = epoch, 0, 0, []
        self.steps += 1
        self.clipped += bool(clipped)
        if loss is not None and math.isfinite(loss):
            self.losses.append(loss)
        if not math.isfinite(norm):
            return
        if len(self.recent) >= 10:
            med = statistics.median(self.recent)
            if med > 0 and norm >= JUMP * med and step - self.last_jump >= MEDIAN_OF:
                self.last_jump = step
                top = max(norms, key=norms.get) if norms else None
                worst = f"; largest: {top} ({norms[top]:.3g})" if top else ""
                self._say(f"warning: step {step}: the gradient norm {norm:.3g} is "
                          f"{norm / med:.0f}x its running median {med:.3g}{worst}: "
                          f"exploding gradients? (a smaller lr or clip helps)")
        self.recent.append(norm)

    def end_epoch(self) -> None:
        """The clipping report of the epoch seen so far. It judges the first epoch in
        which clipping fired on most updates (and that can tell, `_trend`): a loss that
        falls there means the clip only caps the steps, and nothing is said, then or
        later; a loss that stalled, or no losses given, is a warning, said once."""
        if self.epoch is None or self.steps < 10:
            return
        trend, words = self._trend()
        if self.losses:
            self.before = statistics.fmean(self.losses)
        if not self.clip_said and self.clipped > MOST * self.steps and trend != "unknown":
            self.clip_said = True                  # judged: once a run, said or not
            if trend != "fell":
                how = f" and the training loss stalled ({words})" if words else ""
                self._say(f"warning: epoch {self.epoch}: clipping fired on {self.clipped} "
                          f"of {self.steps} updates{how}; the gradients are often larger "
                          f"than clip: raise clip or lower lr (said once)")
        self.steps = 0          # reported: not again for this epoch

    def _trend(self) -> tuple[str, str]:
        """("fell" | "stalled" | "unknown" | "no losses", the numbers in words): the
        epoch's mean loss against FALLS x the epoch before's, or (the run's first epoch)
        the mean of its last third against FALLS x its first third's, which needs
        3 x THIRD updates to tell."""
        if not self.losses:
            return "no losses", ""
        now = statistics.fmean(self.losses)
        if self.before is not None:
            return ("fell", "") if now < FALLS * self.before else \
                ("stalled", f"{self.before:.4g} the epoch before, {now:.4g} in this one")
        n = len(self.losses) // 3
        if n < THIRD:
            return "unknown", ""
        first, last = statistics.fmean(self.losses[:n]), statistics.fmean(self.losses[-n:])
        return ("fell", "") if last < FALLS * first else \
            ("stalled", f"{first:.4g} in the epoch's first third, {last:.4g} in its last")


class MetricsLog:
    """Appends rows to DIR/metrics.csv; `plot()` draws DIR/loss.png."""

    def __init__(self, out_dir: str | Path, resume_step: int | None = None,
                 resumed_from: str | Path | None = None,
                 ylabel: str = "loss per token (nats)", resume_rows: int | None = None):
        self.path = Path(out_dir) / "metrics.csv"
        self.png = self.path.with_name("loss.png")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A resumed run continues the curve of the run it resumes (its metrics.csv, in
        # the checkpoint's directory): rows that run wrote after its checkpoint are
        # replaced by the ones the resumed run writes. The checkpoint counts its rows
        # (`resume_rows`): a validation row written at its step, by an end of epoch
        # killed before its checkpoint, goes too (an older checkpoint: by step alone).
        old = Path(resumed_from or out_dir) / "metrics.csv"
        rows = _kept_rows(old, resume_step, resume_rows) if resume_step is not None else []
        extra = [k for k in (rows[0] if rows else {}) if k.startswith(PARAM_PREFIX)]
        self.columns = list(COLUMNS) + extra
        self._rewrite(rows)
        self.rows = len(rows)     # the rows metrics.csv holds (counted, never re-read)
        self.monitor = GradMonitor()
        self.ylabel = ylabel      # of the loss plot: per token or node, nats or not
        self._child = None        # a plotting child still drawing (plot(wait=False))
        self._child_rows = 0      # the rows metrics.csv had when it started

    def _rewrite(self, rows) -> None:
        """metrics.csv written whole or not at all (a temporary file renamed over it):
        a resumed run rewrites the rows of the run it continues, and a kill or a full
        disk in the middle of that must leave them, not a file cut short."""
        _remove_stale(self.path)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with named(self.path), open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, self.columns, restval="", extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def _append(self, row: dict) -> None:
        new = [k for k in row if k not in self.columns]
        if new:            # the first per-parameter norms: widen the header
            rows = self.read()
            self.columns += new
            self._rewrite(rows)
        with named(self.path), open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(
                {k: _fmt(row.get(k)) for k in self.columns})
        self.rows += 1

    def step(self, step, epoch, train_loss, grad_norm, tokens_per_s, norms=None,
             clipped=None) -> None:
        """One update: `norms` are the gradient norms of each parameter before clipping,
        `clipped` whether clipping fired."""
        row = dict(step=step, epoch=epoch, train_loss=train_loss, grad_norm=grad_norm,
                   tokens_per_s=tokens_per_s)
        row.update({PARAM_PREFIX + k: v for k, v in (norms or {}).items()})
        self._append(row)
        self.monitor.step(step, epoch, grad_norm, norms, clipped, train_loss)

    def valid(self, step, epoch, valid_loss) -> None:
        self._append(dict(step=step, epoch=epoch, valid_loss=valid_loss))

    def read(self) -> list[dict]:
        return _read(self.path)

    def plot(self, wait: bool = True) -> Path | None:
        """Draws DIR/loss.png and DIR/grad_norm.png (None without rows), in a child
        process: matplotlib costs a process ~30 MB of peak memory, which the training
        process does not need to carry (the run's peak RSS is a target of its own), and
        about a second. With wait=False (the end of an epoch) the child draws while
        training goes on, and none is started while one still draws; the end of a run
        waits, drawing once more unless the last child saw every row. A failure to draw
        is a warning, never the end of a run."""
        self.monitor.end_epoch()
        rows = self.rows
        if not rows:
            return None
        if self._child is not None:
            if not wait and self._child.poll() is None:
                return None
            if self._reap() and self._child_rows == rows:
                return self.png
        cmd = [sys.executable, "-m", "seqgraph.train.metrics", str(self.path.parent),
               self.ylabel]
        try:
            if not wait:
                self._child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.PIPE, text=True,
                                               env=_child_env())
                self._child_rows = rows
                return None
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                                  env=_child_env(), check=False)
            failed = done.returncode != 0 and _last_line(done.stderr)
        except (OSError, subprocess.TimeoutExpired) as e:
            failed = str(e)
        return None if self._failed(failed) else self.png

    def _reap(self) -> bool:
        """Wait for the plotting child; warn if it failed, else True. A child ended by
        a signal (Ctrl-C at a terminal reaches the whole process group; under MPI,
        mpiexec's own process handling does) returns False without a word: the caller
        draws once more, which says why if that fails too."""
        child, self._child = self._child, None
        try:
            _, err = child.communicate(timeout=600)
            if child.returncode < 0:
                return False
            failed = child.returncode != 0 and _last_line(err)
        except subprocess.TimeoutExpired as e:
            child.kill()
            child.communicate()
            failed = str(e)
        return not self._failed(failed)

    def _failed(self, failed) -> bool:
        if failed:
            self.monitor.warn(f"warning: the plots of {self.path.parent} were not drawn: "
                              f"{failed}")
        return bool(failed)


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["?"])[-1]


def draw(out_dir: str | Path, ylabel: str = "loss per token (nats)") -> None:
    """DIR/loss.png and DIR/grad_norm.png from DIR/metrics.csv (its complete lines: the
    training process may be appending a row)."""
    path = Path(out_dir) / "metrics.csv"
    text = path.read_text()
    rows = list(csv.DictReader(io.StringIO(text[:text.rfind("\n") + 1])))
    draw_loss(rows, path.with_name("loss.png"), ylabel)
    draw_grads(rows, path.with_name("grad_norm.png"))


def draw_loss(rows: list[dict], png: Path, ylabel: str = "loss per token (nats)") -> Path | None:
    """The loss curves (per token, natural log) against the step; None without rows."""
    train = [(int(r["step"]), float(r["train_loss"])) for r in rows if r["train_loss"]]
    valid = [(int(r["step"]), float(r["valid_loss"])) for r in rows if r["valid_loss"]]
    if not train and not valid:
        return None
    fig, ax = figure()
    if train:
        ax.plot(*zip(*_thin(train), strict=True), lw=0.8, alpha=0.5, label="train")
        ax.plot(*zip(*_thin(_smooth(train)), strict=True), lw=1.5, label="train (moving average)")
    if valid:
        ax.plot(*zip(*valid, strict=True), "o-", label="valid")
    _step_axis(ax)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, png)
    return png


def draw_grads(rows: list[dict], out: Path) -> Path | None:
    """The global gradient norm and each parameter's, per step (log scale), before
    clipping."""
    cols = ["grad_norm"] + [c for c in (rows[0] if rows else {}) if c.startswith(PARAM_PREFIX)]
    series = {}
    for c in cols:
        pts = [(int(r["step"]), float(r[c])) for r in rows if r.get(c)]
        pts = [(s, v) for s, v in pts if math.isfinite(v) and v > 0]
        if pts:
            series[c] = _thin(pts)
    if not series:
        return None
    fig, ax = figure((8, 4))        # an inch wider than loss.png: room for the legend
    for c, pts in series.items():
        label = "global" if c == "grad_norm" else c[len(PARAM_PREFIX):]
        ax.plot(*zip(*pts, strict=True), lw=1.6 if c == "grad_norm" else 0.8,
                color="black" if c == "grad_norm" else None, label=label)
    ax.set_yscale("log")
    _plain_log_labels(ax.yaxis)
    _step_axis(ax)
    ax.set_ylabel("gradient norm (before clipping)")
    if len(series) <= 16:
        # beside the axes, not in them: a norm's curve runs anywhere across the steps
        # (in a corner, the legend hid the smallest norms of the first steps)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0.0)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_figure(fig, out)
    return out


def _step_axis(ax) -> None:
    """The x axis counts updates: whole numbers (a short run had ticks at 2.5, 7.5)."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")


def _plain_log_labels(axis) -> None:
    """Log-scale ticks labelled as plain numbers, 0.01, 2, 30, where matplotlib writes
    2x10^0 on a range within one decade; matplotlib still decides which ticks get one."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""
    axis.set_major_formatter(Plain(labelOnlyBase=False))
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def save_figure(fig, path: Path) -> None:
    """Written whole or not at all (a temporary file renamed over it): a kill while it
    draws leaves the last plot, not an empty file."""
    path = Path(path)
    _remove_stale(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale(path: Path) -> None:
    """The temporary files of `path` that a process killed while writing it left."""
    for old in path.parent.glob(f".{path.name}.*.tmp"):
        old.unlink(missing_ok=True)


def _child_env() -> dict:
    """The environment of the plotting child: this one, with this process's import path
    (so a source checkout draws with its own seqgraph)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def figure(figsize=(7, 4)):
    """A figure on the Agg canvas, without pyplot (whose import costs time and memory,
    switches the process's backend and keeps every figure alive until closed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _kept_rows(path: Path, step: int, count: int | None) -> list[dict]:
    """The rows of a resumed run's metrics.csv that its checkpoint had written: those up
    to its `step`, at most `count` (None: an older checkpoint, which did not count). A
    file that cannot be read is a DataError naming it (and the line), not a traceback;
    one that holds fewer rows than were written (cut short, replaced or removed by hand)
    is a warning: the curve continues with a gap."""
    kept, there = [], True
    try:
        # (a row past the checkpoint's step is dropped, its other fields unread: a kill
        # may have cut the last one short, inside a character)
        with open(path, newline="", errors="replace") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if count is not None and len(kept) >= count:
                    break
                at = (row.get("step") or "").strip()
                if whole_number(at) and int(at) > step:
                    continue
                bad = _damage(row, at)
                if bad:
                    raise DataError(f"{bad}: not a row of a seqgraph run's metrics (edited "
                                    f"or damaged?); mend or delete the line, or move the "
                                    f"file away to resume without the curve so far",
                                    file=str(path), line=reader.line_num)
                kept.append(row)
    except FileNotFoundError:
        there = False
    except csv.Error as e:
        raise DataError(f"cannot read the metrics of the run that is resumed ({e}); move "
                        f"the file away to resume without the curve so far",
                        file=str(path)) from None
    if count and not there:
        _to_stderr(f"warning: {path} is not there: the {count} rows of metrics the run "
                   f"had written when it saved its checkpoint are not carried over")
    elif count is not None and len(kept) < count:
        _to_stderr(f"warning: {path} holds {len(kept)} of the {count} rows the run had "
                   f"written when it saved its checkpoint (cut short or replaced): its "
                   f"curve continues with a gap")
    return kept


def _damage(row: dict, at: str) -> str:
    """What shows that a row of metrics.csv (`at`: its step) is not one seqgraph wrote,
    or ''. (csv.DictReader files the fields past the header's under the key None.)"""
    if not whole_number(at):
        return f"the step {at!r} is not a whole number"
    if None in row:
        n = len(row[None])
        return f"{n} field{'s' * (n > 1)} more than the header names"
    if any("\ufffd" in str(v) for v in row.values()):
        return "bytes that are not UTF-8"
    return ""


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _thin(points, most: int = 4000):
    """At most about `most` of the (step, value) points, drawn as the full series is: the
    steps cut into `most / 2` runs of equal length, and each run's lowest and highest
    point in step order (a spike stays visible), and the first and last points (the
    curve spans the same steps). 100k steps draw in a second, not 15."""
    if len(points) <= most:
        return points
    size = -(-len(points) // (most // 2))
    keep = {0, len(points) - 1}
    for start in range(0, len(points), size):
        run = range(start, min(start + size, len(points)))
        keep.add(min(run, key=lambda i: points[i][1]))
        keep.add(max(run, key=lambda i: points[i][1]))
    return [points[i] for i in sorted(keep)]


def _smooth(points, window: int = 25):
    """The loss's moving average as TensorBoard smooths: an exponential one, m_k = b m_(k-1)
    + (1 - b) v_k with b = 1 - 2 / (window + 1) (the mean age of its terms is that of a
    `window`-step mean), divided by 1 - b^k so that its first points are the mean of the
    few there are (started from 0, it would begin near 0). A mean over the last `window`
    steps bent where the first, high losses left it (step 25 of every run)."""
    b = 1 - 2 / (window + 1)
    out, m = [], 0.0
    for k, (s, v) in enumerate(points, 1):
        m = b * m + (1 - b) * v
        out.append((s, m / (1 - b ** k)))
    return out


class Progress:
    """`epoch 1/2 [#####.....] 120/240 loss 2.31 tok/s 41k ETA 0:42`, redrawn with \\r
    at most ten times a second on a terminal; on a file or a pipe (a log) written as a
    line of its own every LOG_EVERY seconds, between the epoch lines; nothing at all with
    `quiet`."""

    def __init__(self, total_steps: int, epochs: int, quiet: bool = False, stream=None):
        self.total, self.epochs, self.quiet = total_steps, epochs, quiet
        self.stream = stream or sys.stderr
        self.last, self.start, self.start_step = 0.0, time.perf_counter(), None
        self.width = 0
        try:
            self.live = self.stream.isatty()      # a bar redrawn in place
        except (AttributeError, ValueError):      # no isatty, or a closed stream
            self.live = False

    def update(self, step, epoch, loss, tokens_per_s, force=False) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if self.start_step is None:
            self.start, self.start_step = now, step - 1
            if not self.live:
                self.last = now                   # a log: the first line LOG_EVERY on
        wait = 0.1 if self.live else LOG_EVERY
        if now - self.last < wait and not (force and self.live):
            return
        self.last = now
        done = min(step / max(self.total, 1), 1.0)
        bar = "#" * int(done * 20) + "." * (20 - int(done * 20))
        elapsed = now - self.start
        rate = (step - self.start_step) / elapsed if elapsed > 1e-3 else 0.0
        eta = (self.total - step) / rate if rate > 0 else math.inf
        line = (f"epoch {epoch + 1}/{self.epochs} [{bar}] {step}/{self.total} "
                f"loss {loss:.4f} tok/s {_si(tokens_per_s)} ETA {_clock(eta)}")
        if self.live:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:                                     # a log: a line of its own
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line of its own (an epoch summary) that the bar does not overwrite."""
        if self.quiet:
            return
        self.stream.write(("\r" + text.ljust(self.width) if self.width else text) + "\n")
        self.width = 0
        self.stream.flush()


def _si(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


if __name__ == "__main__":          # the plotting child of MetricsLog.plot
    draw(*sys.argv[1:3])
