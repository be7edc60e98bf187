"""Write data/sunspots.csv (columns year, sunactivity) from statsmodels' sunspots data set
(pip install statsmodels): yearly mean sunspot numbers, 1700-2008, 309 values."""
from pathlib import Path

try:
    from statsmodels.datasets import sunspots
except ImportError:
    raise SystemExit("pip install statsmodels first")

here = Path(__file__).resolve().parent
df = sunspots.load_pandas().data
(here / "data").mkdir(exist_ok=True)
with open(here / "data" / "sunspots.csv", "w") as f:
    f.write("year,sunactivity\n")
    f.writelines(f"{int(year)},{v}\n"
                 for year, v in zip(df["YEAR"], df["SUNACTIVITY"], strict=True))
print(f"data/sunspots.csv: {len(df)} years")
