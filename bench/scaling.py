"""Data-parallel scaling (docs/scaling.md): training steps per second of
`specs/charlm.sg` on 1 and 2 MPI ranks of this machine, each step split into compute
(forward and BPTT) and communication (the one Allreduce of the packed gradients); then,
for every model of the gallery (specs/*.sg), the bytes each step sends and the measured
compute of one step, which docs/scaling.md turns into an estimate at 8, 64 and 512 ranks.
Run by hand (needs `pip install 'seqgraph[mpi]'`), not by the tests:

    python bench/scaling.py                   # both parts, markdown and JSON on stdout
    python bench/scaling.py --steps 20 --no-gallery

Weak scaling: the batch is per rank (B = 32 streams of 64 steps), so N ranks read N
times the tokens per step. One BLAS thread per rank, so that 2 ranks on 2 cores do not
oversubscribe them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
B, T, V = 32, 64, 65
SMALL = 65                       # every size the data would bind (V, K, ...)
THREADS = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                            "NUMBA_NUM_THREADS")}


def _batch(model, rng, B=B, T=T):
    """Random inputs and targets for each declared variable: ids [B, T], floats
    [B, T, D], per example [B] / [B, D]."""
    import numpy as np
    ins, tgs = {}, {}
    for v in model.graph.vars:
        if v.role == "hidden":
            continue
        shape = (B,) if v.index is None else (B, T)
        n = model.sizes[v.name]
        if v.is_ids:
            a = rng.integers(0, n, size=shape)
        elif v.kind == "binary":
            a = (rng.random(shape + (n,)) < 0.5).astype(np.float64)
        else:
            a = rng.normal(size=shape + (n,))
        (ins if v.role == "input" else tgs)[v.name] = a
    return ins, tgs


# ------------------------------------------------------------------------- worker
def worker(args) -> None:
    """One rank: the training step of DistributedTrainer (run, pack, Allreduce, unpack,
    clip, Adam), timed in parts; rank 0 prints JSON."""
    import numpy as np

    from seqgraph import Model, read_spec
    from seqgraph.train.distributed import connect
    from seqgraph.train.optim import Adam, clip_global_norm

    comm = connect(600)
    model = Model(read_spec(args.spec), dims={"V": V}, dtype=args.dtype,
                  executor=args.executor)
    rng = np.random.default_rng(comm.rank)
    x = rng.integers(0, V, size=(B, T + 1))
    inputs, targets = {"x": x[:, :-1]}, {"y": x[:, 1:]}
    opt = Adam(0.001)
    layout = [(k, p.shape, p.size) for k, p in model.params.items()]
    total = sum(s for _, _, s in layout)
    carry, times = None, {"compute": [], "comm": [], "step": []}
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        res = model.run(inputs, targets, carry=carry, train=True, grads=True)
        t1 = time.perf_counter()
        buf = np.empty(total + 5, dtype=model.params[layout[0][0]].dtype)
        o = 0
        for name, _, size in layout:
            buf[o:o + size] = res.grads[name].ravel()
            o += size
        buf[o:] = (res.loss, 0, 0, 0, 0)
        comm.allreduce(buf, "benchmarking")
        buf[:total + 1] /= comm.size
        o = 0
        for name, shape, size in layout:
            res.grads[name] = buf[o:o + size].reshape(shape)
            o += size
        t2 = time.perf_counter()
        clip_global_norm(res.grads, 5.0)
        opt.step(model.params, res.grads)
        carry = res.carry
        t3 = time.perf_counter()
        if step >= args.warmup:
            times["compute"].append(t1 - t0 + t3 - t2)
            times["comm"].append(t2 - t1)
            times["step"].append(t3 - t0)
    # the slowest rank sets the pace: report rank 0's view (it waits for the others in
    # the Allreduce, so its comm time includes their lag)
    if comm.rank == 0:
        med = {k: float(np.median(v)) for k, v in times.items()}
        mean_step = float(np.mean(times["step"]))
        print(json.dumps({
            "ranks": comm.size, "spec": args.spec, "executor": args.executor,
            "dtype": args.dtype, "batch_per_rank": B, "bptt": T,
            "param_count": total, "bytes_per_step": int(buf.nbytes),
            "median_compute_s": med["compute"], "median_comm_s": med["comm"],
            "median_step_s": med["step"], "steps_per_s": 1 / mean_step,
            "tokens_per_s": comm.size * B * T / mean_step}))


# ------------------------------------------------------------------------- gallery
def gallery(executor: str, reps: int) -> list[dict]:
    """Per spec of specs/: parameters, bytes per step (float32) and the median time of
    one forward + backward pass on B x T random data (sizes the data binds = 65)."""
    import numpy as np

    from seqgraph import Model, read_spec
    out = []
    for path in sorted((ROOT / "specs").glob("*.sg")):
        spec = read_spec(str(path))
        dims = {d: SMALL for d in spec.unbound_dims()}
        row = {"spec": path.name}
        try:
            model = Model(spec, dims=dims, dtype="float32", executor="interp")
            n = sum(p.size for p in model.params.values())
            row.update(params=int(n), bytes_per_step=int(4 * n))
            if any(k == "tree" for _, k in model.graph.indexes):
                row["note"] = "trees: compute not measured"
                out.append(row)
                continue
            try:
                model = Model(spec, dims=dims, dtype="float32", executor=executor)
                row["executor"] = executor
            except Exception:                                     # noqa: BLE001
                row["executor"] = "interp"
            ins, tgs = _batch(model, np.random.default_rng(0))
            model.run(ins, tgs, train=True, grads=True)            # compile, warm up
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                model.run(ins, tgs, train=True, grads=True)
                ts.append(time.perf_counter() - t0)
            row["compute_s"] = float(np.median(ts))
        except Exception as e:                                    # noqa: BLE001
            row["note"] = f"{type(e).__name__}: {str(e)[:80]}"
        out.append(row)
        print(f"  {row}", file=sys.stderr, flush=True)
    return out


def estimate(bytes_per_step: int, ranks: int, gbit: float, latency: float = 5e-6) -> float:
    """Ring Allreduce: 2(N-1)/N x bytes over the link, plus 2(N-1) message latencies."""
    if ranks == 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * bytes_per_step / (gbit * 1e9 / 8) + \
        2 * (ranks - 1) * latency


# ------------------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=str(ROOT / "specs/charlm.sg"))
    ap.add_argument("--executor", default="compiled", choices=["compiled", "interp"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--no-gallery", action="store_true")
    ap.add_argument("--reps", type=int, default=5, help="timed passes per gallery model")
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    os.environ.update(THREADS)                 # before numpy loads, for the gallery part
    sys.path.insert(0, str(ROOT))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    here = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(here) if here.exists() else "mpiexec"
    runs = []
    for n in map(int, args.ranks.split(",")):
        cmd = [mpiexec, "-n", str(n), sys.executable, __file__, "--worker",
               "--spec", args.spec, "--executor", args.executor, "--dtype", args.dtype,
               "--steps", str(args.steps), "--warmup", str(args.warmup)]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if p.returncode:
            sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    print("| ranks | steps/s | tokens/s | compute ms/step | Allreduce ms/step | bytes/step |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['ranks']} | {r['steps_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
              f"{1e3 * r['median_compute_s']:.1f} | {1e3 * r['median_comm_s']:.3f} | "
              f"{r['bytes_per_step']} |")
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
              "load_average": os.getloadavg(), "runs": runs}
    if not args.no_gallery:
        rows = gallery(args.executor, args.reps)
        result["gallery"] = rows
        print("\n| model | params | MB/step | compute ms | "
              + " | ".join(f"comm ms N={n} @{g}G" for n in (8, 64, 512) for g in (10, 100))
              + " |")
        print("|---|---|---|---|" + "---|" * 6)
        for r in rows:
            if "params" not in r:
                continue
            cells = [f"{1e3 * estimate(r['bytes_per_step'], n, g):.3f}"
                     for n in (8, 64, 512) for g in (10, 100)]
            comp = f"{1e3 * r['compute_s']:.1f}" if "compute_s" in r else "-"
            print(f"| {r['spec']} | {r['params']} | {r['bytes_per_step'] / 1e6:.3f} | "
                  f"{comp} | " + " | ".join(cells) + " |")
    print("\n" + json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
