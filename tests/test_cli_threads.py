"""The CLI fixes the BLAS thread count before numpy loads its BLAS (seqgraph/cli.py)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_importing_the_cli_does_not_load_numpy():
    assert _run("import sys, seqgraph.cli; print('numpy' in sys.modules)", {}) == "False"


def test_default_is_one_thread_and_the_environment_or_flag_wins():
    code = ("import os; from seqgraph.cli import set_threads; "
            "rest = set_threads({argv}); "
            "print(rest, os.environ['OPENBLAS_NUM_THREADS'], os.environ['OMP_NUM_THREADS'])")
    assert _run(code.format(argv="['check', 'a.sg']"), {}) == "['check', 'a.sg'] 1 1"
    assert _run(code.format(argv="['check', 'a.sg']"),
                {"OPENBLAS_NUM_THREADS": "4"}) == "['check', 'a.sg'] 4 1"
    assert _run(code.format(argv="['--threads', '2', 'check', 'a.sg']"),
                {"OPENBLAS_NUM_THREADS": "4"}) == "['check', 'a.sg'] 2 2"
    # OpenBLAS reads OMP_NUM_THREADS when OPENBLAS_NUM_THREADS is unset: a default of 1
    # for the latter made OMP_NUM_THREADS=3 alone give one thread
    assert _run(code.format(argv="['check', 'a.sg']"),
                {"OMP_NUM_THREADS": "3"}) == "['check', 'a.sg'] 3 3"


def test_top_level_api_resolves_lazily():
    code = "import seqgraph; print(seqgraph.Model.__name__, seqgraph.read_spec.__name__)"
    assert _run(code, {}) == "Model read_spec"


def test_ctrl_c_while_the_subcommands_load_is_no_traceback(monkeypatch, capsys):
    """SIGINT in the first fraction of a second (numpy and numba still importing) ends as
    any other interrupt: one line, exit code 130."""
    from seqgraph import cli

    def interrupted():
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["check", "x.sg"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_version(capsys):
    from seqgraph import cli
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("seqgraph ")


@pytest.mark.parametrize("value", ["0", "-2"])
def test_numba_threads_below_one_is_a_usage_error_not_a_traceback(value):
    """NUMBA_NUM_THREADS=0 made the import of numba raise ValueError, with a traceback
    even for --version."""
    env = {**os.environ, "NUMBA_NUM_THREADS": value}
    p = subprocess.run([sys.executable, "-m", "seqgraph.cli", "--version"], env=env,
                       cwd=ROOT, capture_output=True, text=True, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr == f"seqgraph: error: NUMBA_NUM_THREADS={value} in the environment: " \
        "numba needs at least 1 thread (seqgraph runs none of its own; unset it, or give 1)\n"


def test_python_dash_m_seqgraph_runs_the_command():
    """`python -m seqgraph` said "No module named seqgraph.__main__"."""
    p = subprocess.run([sys.executable, "-m", "seqgraph", "--version"], cwd=ROOT,
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0 and p.stdout.startswith("seqgraph "), p.stderr


@pytest.mark.parametrize("argv", [["--threads", "abc", "check", "a.sg"], ["--threads"]])
def test_a_bad_threads_value_names_seqgraph_in_its_usage(capsys, argv):
    """`python -m seqgraph --threads abc` said 'usage: __main__.py [--threads THREADS]'
    (the parser that reads --threads first had no program name)."""
    from seqgraph.cli import set_threads
    with pytest.raises(SystemExit) as e:
        set_threads(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage: seqgraph [--threads N]\nseqgraph: "
                                                "error: argument --threads: "), err
