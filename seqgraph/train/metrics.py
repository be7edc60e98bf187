"""What a training run reports: `metrics.csv`, a loss-curve PNG beside it, and a one-line
progress bar on stderr.

The CSV has one row per update (step, epoch, train loss per token, gradient norm before
clipping, tokens per second) and one row per validation pass (step, epoch, valid loss), so
a spreadsheet or pandas reads the curves without any seqgraph code.
"""
from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

COLUMNS = ("step", "epoch", "train_loss", "valid_loss", "grad_norm", "tokens_per_s")


class MetricsLog:
    """Appends rows to DIR/metrics.csv; `plot()` draws DIR/loss.png."""

    def __init__(self, out_dir: str | Path, resume_step: int | None = None,
                 resumed_from: str | Path | None = None):
        self.path = Path(out_dir) / "metrics.csv"
        self.png = self.path.with_name("loss.png")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A resumed run continues the curve of the run it resumes (its metrics.csv, in
        # the checkpoint's directory): rows that run wrote after its checkpoint are
        # replaced by the ones the resumed run writes.
        old = Path(resumed_from or out_dir) / "metrics.csv"
        rows = _read(old) if resume_step is not None and old.exists() else []
        rows = [r for r in rows if int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS)
            w.writeheader()
            w.writerows(rows)

    def _append(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow({k: _fmt(row.get(k)) for k in COLUMNS})

    def step(self, step, epoch, train_loss, grad_norm, tokens_per_s) -> None:
        self._append(dict(step=step, epoch=epoch, train_loss=train_loss,
                          grad_norm=grad_norm, tokens_per_s=tokens_per_s))

    def valid(self, step, epoch, valid_loss) -> None:
        self._append(dict(step=step, epoch=epoch, valid_loss=valid_loss))

    def read(self) -> list[dict]:
        return _read(self.path)

    def plot(self) -> Path | None:
        """The loss curves (per token, natural log) against the step; None without rows."""
        rows = self.read()
        train = [(int(r["step"]), float(r["train_loss"])) for r in rows if r["train_loss"]]
        valid = [(int(r["step"]), float(r["valid_loss"])) for r in rows if r["valid_loss"]]
        if not train and not valid:
            return None
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        if train:
            ax.plot(*zip(*train), lw=0.8, alpha=0.5, label="train")
            ax.plot(*zip(*_smooth(train)), lw=1.5, label="train (moving average)")
        if valid:
            ax.plot(*zip(*valid), "o-", label="valid")
        ax.set_xlabel("step")
        ax.set_ylabel("loss per token (nats)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.png)
        plt.close(fig)
        return self.png


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _smooth(points, window: int = 25):
    out, acc = [], []
    for s, v in points:
        acc.append(v)
        acc = acc[-window:]
        out.append((s, sum(acc) / len(acc)))
    return out


class Progress:
    """`epoch 1/2 [#####.....] 120/240 loss 2.31 tok/s 41k ETA 0:42`, redrawn with \\r
    at most ten times a second; nothing at all with `quiet`."""

    def __init__(self, total_steps: int, epochs: int, quiet: bool = False, stream=None):
        self.total, self.epochs, self.quiet = total_steps, epochs, quiet
        self.stream = stream or sys.stderr
        self.last, self.start, self.start_step = 0.0, time.perf_counter(), None
        self.width = 0

    def update(self, step, epoch, loss, tokens_per_s, force=False) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if self.start_step is None:
            self.start, self.start_step = now, step - 1
        if not force and now - self.last < 0.1:
            return
        self.last = now
        done = min(step / max(self.total, 1), 1.0)
        bar = "#" * int(done * 20) + "." * (20 - int(done * 20))
        elapsed = now - self.start
        rate = (step - self.start_step) / elapsed if elapsed > 1e-3 else 0.0
        eta = (self.total - step) / rate if rate > 0 else math.inf
        line = (f"epoch {epoch + 1}/{self.epochs} [{bar}] {step}/{self.total} "
                f"loss {loss:.4f} tok/s {_si(tokens_per_s)} ETA {_clock(eta)}")
        self.stream.write("\r" + line.ljust(self.width))
        self.width = len(line)
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line of its own (an epoch summary) that the bar does not overwrite."""
        if self.quiet:
            return
        self.stream.write("\r" + text.ljust(self.width) + "\n")
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
