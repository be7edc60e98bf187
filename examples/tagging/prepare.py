"""Write data/train.txt and data/test.txt (one sentence a line, word/TAG tokens) from the
Turkish UD treebanks of the PyPI package `turkish-treebanks` (pip install
turkish-treebanks): the universal POS tags (UPOS) of web.conllu (train) and the last
10% of wiki.conllu (test). Words are lower-cased."""
import importlib.metadata
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
try:
    files = importlib.metadata.files("turkish-treebanks")
except importlib.metadata.PackageNotFoundError:
    sys.exit("pip install turkish-treebanks first")
conllu = {f.name: Path(f.locate()) for f in files if str(f).endswith(".conllu")}


def sentences(path):
    sent = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                if sent:
                    yield sent
                sent = []
            elif not line.startswith("#"):
                cols = line.split("\t")
                if cols[0].isdigit():              # skip multi-word ranges (1-2) and empties
                    word = cols[1].lower().replace("/", "\u2215").replace(" ", "_")
                    sent.append(f"{word}/{cols[3]}")
    if sent:
        yield sent


web = list(sentences(conllu["web.conllu"]))
wiki = list(sentences(conllu["wiki.conllu"]))
cut = int(len(wiki) * 0.9)
(here / "data").mkdir(exist_ok=True)
for name, sents in (("train.txt", web + wiki[:cut]), ("test.txt", wiki[cut:])):
    with open(here / "data" / name, "w", encoding="utf-8") as f:
        f.writelines(" ".join(s) + "\n" for s in sents)
    print(f"data/{name}: {len(sents)} sentences, {sum(map(len, sents))} tokens")
