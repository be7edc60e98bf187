"""The char LM of LANGUAGE.md section 1, one training step (forward, BPTT, Adam) of the
compiled executor against torch.nn.RNN + nn.Linear doing the same in the same process,
interleaved in turns of --block steps (10: each library steps as it does in training,
with its own arrays in cache; 1: strictly alternating single steps). Run by hand, not by
the tests:

    python bench/charlm.py                 # everything, JSON on stdout
    python bench/charlm.py --quick         # fewer repetitions, no process timings
    python bench/charlm.py --cell rnn --H 128 --threads 1 --no-process --block 1

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


GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def flops_per_step(H, cell="rnn"):
    """GEMM flops of one training step: the recurrent product forward, the state
    gradient and dU backward (3 x 2BH^2 per step and gate), the output layer forward, dh
    and dWo (3 x 2BHV per step). The one-hot input is a gather: no flops."""
    return 6 * T * B * (GATES[cell] * H * H + H * V)


CELL_SPEC = """
model charlm_{cell}
dim H = {H}
input  x[t] : onehot(V)
target y[t] : class(V)
param Wo, bo
h = {cell}(x, H)
o[t] = Wo @ h[t] + bo
loss xent(o[t], y[t])
"""


# --------------------------------------------------------------------------- worker
def _limit(n):
    import numba
    import scipy.linalg.cython_blas  # noqa: F401  (Numba's BLAS: load it before limiting)
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits
    threadpool_limits(n)
    torch.set_num_threads(n)
    numba.set_num_threads(n)
    return [(i["prefix"], i.get("architecture"), i["num_threads"])
            for i in threadpool_info()]


def gemm_peak(reps=15):
    """Best single-call sgemm rate (GFLOP/s) at 1024^3 through Numba's BLAS: by wall
    time and by CPU time."""
    import numpy as np

    from seqgraph.compile import kernels
    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    out = np.empty_like(a)
    kernels._dot(a, a, out)
    runs = [_timed2(lambda: kernels._dot(a, a, out)) for _ in range(reps)]
    fl = 2 * 1024 ** 3 / 1e9
    return fl / min(w for w, _ in runs), fl / min(c for _, c in runs)


def make_seqgraph(H, cell="rnn", dropout=0.0):
    import numpy as np

    import seqgraph
    from seqgraph.compile import kernels
    if cell == "rnn":          # the spec of LANGUAGE.md section 1, as written out
        with open(os.path.join(ROOT, "specs/charlm.sg")) as f:
            text = f.read()
        text = text.replace("dim H = 128", f"dim H = {H}")
    else:                      # the prelude's cell
        text = CELL_SPEC.format(cell=cell, H=H)
    if dropout:                # on the outputs of the recurrence, as torch below
        text = text.replace("o[t] = Wo @ h[t] + bo", f"o[t] = Wo @ dropout(h[t], {dropout}) + bo")
        assert "dropout(h[t]" in text
    spec = seqgraph.read_spec(f"charlm_{cell}.sg", text)
    m = seqgraph.Model(spec, dims={"V": V}, dtype="float32", seed=0, executor="compiled")
    rng = np.random.default_rng(0)
    mom = {k: np.zeros_like(v) for k, v in m.params.items()}
    vel = {k: np.zeros_like(v) for k, v in m.params.items()}
    f = np.float32
    it = [0]

    def step(X, Y):
        res = m.run({"x": X}, {"y": Y}, train=True, grads=True, rng=rng)
        it[0] += 1
        c1, c2 = 1 - 0.9 ** it[0], 1 - 0.999 ** it[0]
        for k, p in m.params.items():
            kernels.adam_update(p, res.grads[k], mom[k], vel[k], f(0.002), f(0.9),
                                f(0.999), f(1e-8), f(c1), f(c2))
        return res.loss
    return step


def make_torch(H, cell="rnn", dropout=0.0):
    import torch
    torch.manual_seed(0)
    rnn = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](
        V, H, batch_first=True)
    lin = torch.nn.Linear(H, V)
    opt = torch.optim.Adam(list(rnn.parameters()) + list(lin.parameters()), lr=0.002)

    def step(X, Y):
        xt, yt = torch.from_numpy(X), torch.from_numpy(Y)
        opt.zero_grad()
        hs, _ = rnn(torch.nn.functional.one_hot(xt, V).float())
        if dropout:
            hs = torch.nn.functional.dropout(hs, dropout, training=True)
        o = lin(hs)
        loss = torch.nn.functional.cross_entropy(o.reshape(-1, V), yt.reshape(-1),
                                                 reduction="sum") / B
        loss.backward()
        opt.step()
        return loss.item()
    return step


def worker(n, Hs, reps, cell="rnn", block=10, dropout=0.0):
    import numpy as np
    pools = _limit(n)
    out = {"threads": n, "cell": cell, "blas": pools, "block": block, "dropout": dropout,
           "results": []}
    if n == 1:
        wall, cpu = gemm_peak()
        out["gemm_peak_gflops_1thread"] = round(wall, 1)
        out["gemm_peak_gflops_1thread_cpu"] = round(cpu, 1)
    rng = np.random.default_rng(0)
    X = rng.integers(0, V, (B, T))
    Y = rng.integers(0, V, (B, T))
    for H in Hs:
        sg, th = make_seqgraph(H, cell, dropout), make_torch(H, cell, dropout)
        for _ in range(3):
            sg(X, Y)
            th(X, Y)
        ts, tt, cs, ct = [], [], [], []
        # interleaved, so that both see the same machine noise, in blocks of `block`
        # steps: within a block a library runs back to back, as in training, with its
        # own data in cache (block = 1 times every step just after the other library's,
        # with caches it has filled)
        for _ in range(reps):
            for f, wall, cpu in ((sg, ts, cs), (th, tt, ct)):
                for _ in range(block):
                    w, c = _timed2(lambda f=f: f(X, Y))
                    wall.append(w)
                    cpu.append(c)
        ms, mt = float(np.median(ts)) * 1e3, float(np.median(tt)) * 1e3
        cms, cmt = float(np.median(cs)) * 1e3, float(np.median(ct)) * 1e3
        fl = flops_per_step(H, cell)
        out["results"].append({
            "H": H, "seqgraph_ms_per_step": round(ms, 3), "torch_ms_per_step": round(mt, 3),
            "seqgraph_tokens_per_s": round(B * T / ms * 1e3),
            "torch_tokens_per_s": round(B * T / mt * 1e3),
            "ratio_vs_torch": round(mt / ms, 2),
            "seqgraph_gflops": round(fl / ms / 1e6, 1),
            "torch_gflops": round(fl / mt / 1e6, 1),
            # CPU time of the process per step (median): what a loaded machine steals
            # from wall time does not count; with 1 thread the fairer comparison
            "seqgraph_cpu_ms_per_step": round(cms, 3), "torch_cpu_ms_per_step": round(cmt, 3),
            "ratio_vs_torch_cpu": round(cmt / cms, 2),
            "seqgraph_gflops_cpu": round(fl / cms / 1e6, 1)})
    print(json.dumps(out))


def _timed2(f):
    w0, c0 = time.perf_counter(), time.process_time()
    f()
    return time.perf_counter() - w0, time.process_time() - c0


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


# `seqgraph train` with marks: wall time since the parent spawned it (SG_T0) and peak
# RSS when the CLI is imported, the data loaded, the model built and the first step done
# (Trainer._update returns). Nothing in seqgraph changes: the functions are wrapped here.
MARKED = r"""
import json, os, resource, sys, time
T0 = float(os.environ["SG_T0"])
marks = {"python_started": time.time() - T0}
def mark(name):
    marks[name] = round(time.time() - T0, 3)
    marks[name + "_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    with open(os.environ["SG_MARKS"], "w") as f:
        json.dump(marks, f)
import seqgraph.cli
from seqgraph.train import data, loop
mark("imported")
load = data.load_dataset
def load_dataset(*a, **k):
    out = load(*a, **k)
    mark("data_loaded")
    return out
data.load_dataset = load_dataset
init = loop.Trainer.__init__
def trainer_init(self, *a, **k):
    mark("model_built")
    init(self, *a, **k)
loop.Trainer.__init__ = trainer_init
update = loop.Trainer._update
def first_update(self, *a, **k):
    update(self, *a, **k)
    if "first_step" not in marks:
        mark("first_step")
loop.Trainer._update = first_update
sys.argv = ["seqgraph"] + sys.argv[1:]
sys.exit(seqgraph.cli.main())
"""


def process_timings():
    """From `seqgraph train` start to its first finished step, with a cold and a warm
    kernel cache (marks on the way: imports, data, model), the whole process's wall time,
    and peak RSS of that process and of torch doing one step."""
    import json as _json
    out = {}
    env = _env(1)
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as runs:
        env["SEQGRAPH_CACHE"] = os.path.join(cache, "sg")
        env["NUMBA_CACHE_DIR"] = os.path.join(cache, "numba")
        marks_file = os.path.join(runs, "marks.json")
        env["SG_MARKS"] = marks_file
        args = ["train", os.path.join(ROOT, "specs/charlm.sg"), "--steps", "1", "--quiet",
                "--executor", "compiled", "--out"]
        runs_marks = []
        for i in range(4):                 # the first with a cold cache
            env["SG_T0"] = repr(time.time())
            wall, rss = _run_measured([sys.executable, "-c", MARKED] + args +
                                      [os.path.join(runs, f"r{i}")], env)
            with open(marks_file) as f:
                m = _json.load(f)
            m["process_exit"], m["peak_rss_mb"] = round(wall, 3), round(rss, 1)
            runs_marks.append(m)
        warm = sorted(runs_marks[1:], key=lambda m: m["first_step"])[1]     # median of 3
        out["command"] = "seqgraph " + " ".join(
            os.path.basename(c) if c.startswith("/") else c for c in args) + " r"
        out["first_step_cold_s"] = runs_marks[0]["first_step"]
        out["first_step_warm_s"] = warm["first_step"]
        out["warm_marks"] = warm
        out["cold_marks"] = runs_marks[0]
        out["seqgraph_peak_rss_mb"] = max(m["peak_rss_mb"] for m in runs_marks[1:])
        # the same program as the torch one: model, one random batch, one step (no
        # corpus, no validation, no plot), warm cache
        rss_one = min(_run_measured([sys.executable, os.path.abspath(__file__),
                                     "--one-step"], env)[1] for _ in range(2))
    _, rss_torch = _run_measured([sys.executable, "-c", TORCH_SCRIPT], env)
    out["torch_peak_rss_mb"] = round(rss_torch, 1)
    out["rss_ratio"] = round(out["seqgraph_peak_rss_mb"] / rss_torch, 2)
    out["seqgraph_one_step_peak_rss_mb"] = round(rss_one, 1)
    out["rss_ratio_one_step"] = round(rss_one / rss_torch, 2)
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
    ap.add_argument("--cell", default="rnn",
                    help="rnn, gru or lstm (several: comma-separated), against nn.RNN, "
                         "nn.GRU, nn.LSTM (+ Linear, Adam)")
    ap.add_argument("--threads", default=None, help="default 1,2 for rnn, 1 for cells")
    ap.add_argument("--H", default="128,512")
    ap.add_argument("--reps", type=int, default=30, help="rounds (of --block steps each)")
    ap.add_argument("--block", type=int, default=10,
                    help="steps a library runs back to back before the other's turn "
                         "(medians over reps * block steps each; 1: strictly alternating)")
    ap.add_argument("--dropout", type=float, default=0.0,
                    help="dropout(h[t], P) before the output layer, in both libraries")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-process", action="store_true", help="skip the process timings")
    ap.add_argument("--one-step", action="store_true")
    a = ap.parse_args()
    Hs = [int(h) for h in a.H.split(",")]
    if a.one_step:
        return one_step()
    cells = a.cell.split(",")
    if a.worker:
        return worker(a.worker, Hs, a.reps, cells[0], a.block, a.dropout)
    reps = 10 if a.quick else a.reps
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "B": B, "T": T, "V": V, "dtype": "float32",
              "load_average_before": [round(x, 2) for x in os.getloadavg()], "runs": []}
    peak = peak_cpu = None
    for cell in cells:
        threads = a.threads or ("1,2" if cell == "rnn" else "1")
        for n in (int(t) for t in threads.split(",")):
            r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", str(n),
                                "--cell", cell, "--H", a.H, "--reps", str(reps),
                                "--block", str(a.block), "--dropout", str(a.dropout)],
                               env=_env(n), capture_output=True, text=True, check=False)
            if r.returncode:
                sys.exit(r.stderr)
            run = json.loads(r.stdout.strip().splitlines()[-1])
            run["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            peak = run.get("gemm_peak_gflops_1thread") or peak
            peak_cpu = run.get("gemm_peak_gflops_1thread_cpu") or peak_cpu
            if n == 1 and peak:
                for res in run["results"]:
                    res["fraction_of_gemm_peak"] = round(res["seqgraph_gflops"] / peak, 2)
                    res["fraction_of_gemm_peak_cpu"] = round(
                        res["seqgraph_gflops_cpu"] / peak_cpu, 2)
            report["runs"].append(run)
    report["gemm_peak_gflops_1thread"] = peak
    report["gemm_peak_gflops_1thread_cpu"] = peak_cpu
    if not (a.quick or a.no_process):
        report["process"] = process_timings()
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        sys.exit("this benchmark measures against PyTorch, which is not installed: "
                 "pip install '.[torch]' (the pinned CPU build, torch==2.13.0)")
    main()
