"""The char LM of LANGUAGE.md section 1, one training step (forward, BPTT, Adam) of the
compiled executor against torch.nn.RNN + nn.Linear doing the same in the same process,
interleaved. Run by hand, not by the tests:

    python bench/charlm.py                 # everything, JSON on stdout
    python bench/charlm.py --quick         # fewer repetitions, no process timings

Each thread count runs in its own process with OPENBLAS/OMP/NUMBA thread counts set
before any library loads (numpy and Numba link two OpenBLAS copies: both are limited with
threadpoolctl after scipy's is loaded). OPENBLAS_CORETYPE is removed for the run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V, B, T = 65, 32, 64


def flops_per_step(H):
    """GEMM flops of one training step: the recurrent product forward, the state
    gradient and dU backward (3 x 2BH^2 per step), the output layer forward, dh and dWo
    (3 x 2BHV per step). The one-hot input is a gather: no flops."""
    return 6 * T * B * (H * H + H * V)


# --------------------------------------------------------------------------- worker
def _limit(n):
    import scipy.linalg.cython_blas  # noqa: F401  (Numba's BLAS: load it before limiting)
    from threadpoolctl import threadpool_info, threadpool_limits
    import numba
    import torch
    threadpool_limits(n)
    torch.set_num_threads(n)
    numba.set_num_threads(n)
    return [(i["prefix"], i.get("architecture"), i["num_threads"])
            for i in threadpool_info()]


def gemm_peak(reps=7):
    """Best single-call sgemm rate (GFLOP/s) at 1024^3 through Numba's BLAS."""
    import numpy as np
    from seqgraph.compile import kernels
    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    out = np.empty_like(a)
    kernels._dot(a, a, out)
    best = min(_timed(lambda: kernels._dot(a, a, out)) for _ in range(reps))
    return 2 * 1024 ** 3 / best / 1e9


def _timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def make_seqgraph(H):
    import numpy as np
    import seqgraph
    from seqgraph.compile import kernels
    text = open(os.path.join(ROOT, "specs/charlm.sg")).read()
    text = text.replace("dim H = 128", f"dim H = {H}")
    spec = seqgraph.read_spec("charlm.sg", text)
    m = seqgraph.Model(spec, dims={"V": V}, dtype="float32", seed=0, executor="compiled")
    mom = {k: np.zeros_like(v) for k, v in m.params.items()}
    vel = {k: np.zeros_like(v) for k, v in m.params.items()}
    f = np.float32
    it = [0]

    def step(X, Y):
        res = m.run({"x": X}, {"y": Y}, train=True, grads=True)
        it[0] += 1
        c1, c2 = 1 - 0.9 ** it[0], 1 - 0.999 ** it[0]
        for k, p in m.params.items():
            kernels.adam_update(p, res.grads[k], mom[k], vel[k], f(0.002), f(0.9),
                                f(0.999), f(1e-8), f(c1), f(c2))
        return res.loss
    return step


def make_torch(H):
    import torch
    torch.manual_seed(0)
    rnn = torch.nn.RNN(V, H, batch_first=True)
    lin = torch.nn.Linear(H, V)
    opt = torch.optim.Adam(list(rnn.parameters()) + list(lin.parameters()), lr=0.002)

    def step(X, Y):
        xt, yt = torch.from_numpy(X), torch.from_numpy(Y)
        opt.zero_grad()
        hs, _ = rnn(torch.nn.functional.one_hot(xt, V).float())
        o = lin(hs)
        loss = torch.nn.functional.cross_entropy(o.reshape(-1, V), yt.reshape(-1),
                                                 reduction="sum") / B
        loss.backward()
        opt.step()
        return loss.item()
    return step


def worker(n, Hs, reps):
    import numpy as np
    pools = _limit(n)
    out = {"threads": n, "blas": pools, "results": []}
    if n == 1:
        out["gemm_peak_gflops_1thread"] = round(gemm_peak(), 1)
    rng = np.random.default_rng(0)
    X = rng.integers(0, V, (B, T))
    Y = rng.integers(0, V, (B, T))
    for H in Hs:
        sg, th = make_seqgraph(H), make_torch(H)
        for _ in range(3):
            sg(X, Y)
            th(X, Y)
        ts, tt = [], []
        for _ in range(reps):          # interleaved: both see the same machine noise
            ts.append(_timed(lambda: sg(X, Y)))
            tt.append(_timed(lambda: th(X, Y)))
        ms, mt = float(np.median(ts)) * 1e3, float(np.median(tt)) * 1e3
        out["results"].append({
            "H": H, "seqgraph_ms_per_step": round(ms, 3), "torch_ms_per_step": round(mt, 3),
            "seqgraph_tokens_per_s": round(B * T / ms * 1e3),
            "torch_tokens_per_s": round(B * T / mt * 1e3),
            "ratio_vs_torch": round(mt / ms, 2),
            "seqgraph_gflops": round(flops_per_step(H) / ms / 1e6, 1),
            "torch_gflops": round(flops_per_step(H) / mt / 1e6, 1)})
    print(json.dumps(out))


# --------------------------------------------------------------------- whole process
def _env(n):
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(n)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_measured(cmd, env):
    """Wall time and peak RSS (MB) of a child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode()[-400:]
    p.stderr.close()
    if status != 0:
        raise RuntimeError(f"{cmd} failed: {err}")
    return wall, ru.ru_maxrss / 1024


TORCH_SCRIPT = f"""
import numpy as np, torch
V, B, T, H = {V}, {B}, {T}, 128
torch.set_num_threads(1)
rnn = torch.nn.RNN(V, H, batch_first=True); lin = torch.nn.Linear(H, V)
opt = torch.optim.Adam(list(rnn.parameters()) + list(lin.parameters()), lr=0.002)
rng = np.random.default_rng(0)
X = torch.from_numpy(rng.integers(0, V, (B, T))); Y = torch.from_numpy(rng.integers(0, V, (B, T)))
hs, _ = rnn(torch.nn.functional.one_hot(X, V).float())
loss = torch.nn.functional.cross_entropy(lin(hs).reshape(-1, V), Y.reshape(-1), reduction='sum') / B
loss.backward(); opt.step()
"""


def process_timings():
    """From `seqgraph train` start to its first finished step, with a cold and a warm
    kernel cache, and peak RSS of that process and of torch doing one step."""
    out = {}
    env = _env(1)
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as runs:
        env["SEQGRAPH_CACHE"] = os.path.join(cache, "sg")
        env["NUMBA_CACHE_DIR"] = os.path.join(cache, "numba")
        cmd = [sys.executable, "-m", "seqgraph.cli", "train",
               os.path.join(ROOT, "specs/charlm.sg"), "--steps", "1", "--quiet",
               "--executor", "compiled", "--out", os.path.join(runs, "r")]
        if not _cli_runs():
            cmd = [sys.executable, os.path.abspath(__file__), "--one-step"]
        cold, rss_cold = _run_measured(cmd, env)
        warm = []
        for i in range(3):
            if "--out" in cmd:
                cmd[cmd.index("--out") + 1] = os.path.join(runs, f"w{i}")
            warm.append(_run_measured(cmd, env))
        out["command"] = " ".join(os.path.basename(c) if c.startswith("/") else c
                                  for c in cmd)
        out["first_step_cold_s"] = round(cold, 2)
        out["first_step_warm_s"] = round(sorted(w for w, _ in warm)[1], 2)
        out["seqgraph_peak_rss_mb"] = round(max(r for _, r in warm), 1)
    _, rss_torch = _run_measured([sys.executable, "-c", TORCH_SCRIPT], env)
    out["torch_peak_rss_mb"] = round(rss_torch, 1)
    out["rss_ratio"] = round(out["seqgraph_peak_rss_mb"] / rss_torch, 2)
    return out


def _cli_runs():
    return os.path.exists(os.path.join(ROOT, "seqgraph/cmd/train.py"))


def one_step():
    """The fallback of process_timings: load the model, run one training step."""
    import numpy as np
    step = make_seqgraph(128)
    rng = np.random.default_rng(0)
    step(rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T)))


# ---------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", type=int)
    ap.add_argument("--H", default="128,512")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--one-step", action="store_true")
    a = ap.parse_args()
    Hs = [int(h) for h in a.H.split(",")]
    if a.one_step:
        return one_step()
    if a.worker:
        return worker(a.worker, Hs, a.reps)
    reps = 10 if a.quick else a.reps
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or
              platform.machine(), "cpus": os.cpu_count(), "B": B, "T": T, "V": V,
              "dtype": "float32", "runs": []}
    for n in (1, 2):
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", str(n),
                            "--H", a.H, "--reps", str(reps)], env=_env(n),
                           capture_output=True, text=True)
        if r.returncode:
            sys.exit(r.stderr)
        report["runs"].append(json.loads(r.stdout.strip().splitlines()[-1]))
    peak = report["runs"][0].get("gemm_peak_gflops_1thread")
    report["gemm_peak_gflops_1thread"] = peak
    for res in report["runs"][0]["results"]:
        res["fraction_of_gemm_peak"] = round(res["seqgraph_gflops"] / peak, 2)
    if not a.quick:
        report["process"] = process_timings()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
