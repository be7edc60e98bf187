"""The examples' own scripts run on what seqgraph gives them: examples/g2p/evaluate.py
scores a trained run, examples/sst/cv_select.py trains and scores one (each on a few
lines of data, a few steps: what is checked is that they run and report, not accuracy)."""
import importlib.util
import json
from pathlib import Path

from seqgraph.cli import main

ROOT = Path(__file__).resolve().parent.parent
TREES = ["(3 (2 a) (3 (4 good) (2 film)))", "(1 (1 bad) (2 (2 a) (2 plot)))",
         "(2 (2 it) (2 is))", "(4 (3 (4 great) (2 fun)) (2 (2 and) (3 warm)))"]


def script(path: str):
    """An example's script as a module (its `main` not run)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# a few CMUdict-style words (letters<TAB>phonemes); examples/g2p/prepare.py writes the
# real split, which is not in the repository
WORDS = """\
h o l l a n d e r s\tHH AA L AH N D ER Z
g r u m b l e\tG R AH M B AH L
p f a h l e r\tF AA L ER
e x p u n g e\tIH K S P AH N JH
h a n k y\tHH AE NG K IY
c a t\tK AE T
d o g\tD AO G
s t r o n g\tS T R AO NG
"""


def test_g2p_evaluate_scores_a_trained_run(tmp_path, capsys):
    data = tmp_path / "words.tsv"
    data.write_text(WORDS)
    run = tmp_path / "run"
    assert main(["train", str(ROOT / "examples/g2p/g2p.sg"), "--out", str(run), "--quiet",
                 "--steps", "2", "--set", f'data=pairs("{data}")',
                 "--set", f'valid=pairs("{data}")', "--set", "batch=8"]) == 0
    out = tmp_path / "results.json"
    script("examples/g2p/evaluate.py").main(
        ["--checkpoint", str(run), "--data", str(data), "--limit", "6", "--beam", "2",
         "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["greedy"]["words"] == res["beam2"]["words"] == 6
    assert 0 <= res["greedy"]["wer"] <= 1 and res["beam2"]["per"] >= 0
    assert res["step"] == 2
    assert "greedy: PER" in capsys.readouterr().out


def test_sst_cv_select_trains_and_scores_a_run(tmp_path, capsys):
    data = tmp_path / "trees.txt"
    data.write_text("\n".join(TREES) + "\n")
    run = tmp_path / "run"
    cv = script("examples/sst/cv_select.py")
    assert cv.train([str(ROOT / "examples/sst/rnn.sg"), "--out", str(run), "--quiet",
                     "--set", f'data=trees("{data}")', "--set", f'valid=trees("{data}")',
                     "--set", "epochs=2", "--set", "batch=2"]) == 0
    assert cv.score([str(run)]) == 0
    out = capsys.readouterr().out
    assert f"{run}: S " in out and "of 2 on all of dev" in out


def test_the_readmes_python_api_runs_verbatim(tmp_path, monkeypatch):
    """README.md's "The Python API" block, run as it stands from a folder holding the
    gallery (specs/) and the run it restores (`seqgraph train specs/tree2seq.sg`)."""
    import re
    block = re.search(r"## The Python API\n\n```python\n(.*?)```",
                      (ROOT / "README.md").read_text(), re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").symlink_to(ROOT / "specs")
    assert main(["train", "specs/tree2seq.sg", "--steps", "3", "--quiet"]) == 0
    names = {}
    exec(compile(block, "README.md", "exec"), names)  # noqa: S102  (the README's code)
    assert names["out"]["h"].shape == (4, 10, 16) and set(names["grads"]) == \
        set(names["m"].params)
