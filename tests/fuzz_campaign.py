"""The long fuzzing campaign, run by hand (not collected by pytest):

    python tests/fuzz_campaign.py --minutes 10 [--seed 1] [--out fuzz-crashes]

Feeds the front end the inputs of tests/test_fuzz.py (grammar sentences and mutated
gallery specs) for the given time, with the same oracle: each input must check or fail
with a located SpecError, within the time limit. Prints the number of inputs tried, how
many checked, were refused, and failed, and one line per distinct failure (the exception
type and the innermost seqgraph frame), writing one reproducer of each into --out.
The numbers of the last recorded run are in docs/reliability.md.
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_fuzz as F


def signature(e: BaseException) -> str:
    e = getattr(e, "orig_exc", None) or e        # lark wraps a transformer's exception
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "seqgraph" in f.filename
              and "test_fuzz" not in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(e).__name__} at {where}: {str(e).splitlines()[0][:80] if str(e) else ''}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="fuzz-crashes")
    args = ap.parse_args(argv)
    out = Path(args.out)
    rnd = random.Random(args.seed)
    counts, labels = collections.Counter(), collections.Counter()
    failures: dict[str, int] = {}
    t0 = time.monotonic()
    end = t0 + 60 * args.minutes
    slowest = (0.0, "")
    with tempfile.TemporaryDirectory() as tmp:
        while time.monotonic() < end:
            seed = rnd.getrandbits(64)
            label, data = F.generate(random.Random(seed))
            labels[label] += 1
            t = time.monotonic()
            try:
                counts[F.outcome(data, Path(tmp))] += 1
            except BaseException as e:          # noqa: BLE001  (that is the point)
                if isinstance(e, KeyboardInterrupt):
                    break
                counts["failed"] += 1
                sig = signature(e)
                if sig not in failures:
                    failures[sig] = seed
                    out.mkdir(exist_ok=True)
                    ext = "bin" if isinstance(data, bytes) else "sg"
                    p = out / f"crash{len(failures):03d}-{label}.{ext}"
                    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8",
                                                                                 "surrogatepass"))
                    print(f"NEW {sig}  (seed {seed}, {p})", flush=True)
            dt = time.monotonic() - t
            if dt > slowest[0]:
                slowest = (dt, f"{label} seed {seed}")
            n = sum(counts.values())
            if n % 2000 == 0:
                print(f"{n} inputs, {time.monotonic() - t0:.0f} s: {dict(counts)}", flush=True)
    n = sum(counts.values())
    print(f"\ninputs tried: {n} in {time.monotonic() - t0:.0f} s "
          f"({n / max(time.monotonic() - t0, 1e-9):.0f}/s)")
    print(f"checked: {counts['ok']}, refused with a located SpecError: {counts['error']}, "
          f"failed: {counts['failed']} ({len(failures)} distinct)")
    print(f"by source: {dict(labels)}")
    print(f"slowest input: {slowest[0]:.2f} s ({slowest[1]})")
    for sig, seed in failures.items():
        print(f"  {sig}  (seed {seed})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
