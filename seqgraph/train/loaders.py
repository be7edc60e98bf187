"""Text loaders of the `train` block (LANGUAGE.md section 7): `chars(path)` and
`words(path, vocab=10000)`.

A loader only reads a file into a list of tokens. The vocabulary is built once from the
training tokens and then reused for the validation text, for evaluation and for sampling
(it is saved in the checkpoint), so a loader never decides ids on its own.

Every problem with a file is a `DataError` naming that file: a user should never see a
traceback because a path is wrong or a byte is not UTF-8.
"""
from __future__ import annotations

import importlib.util
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError

EOS = "</s>"       # the line-end token of `words` (the Penn Treebank set-up)
UNK = "<unk>"      # a word outside the vocabulary


# ------------------------------------------------------------------------------ paths
def resolve_path(path: str, base: str | Path | None = None) -> Path:
    """The file a loader names: `pkg:PACKAGE/rel/path` is a data file inside an installed
    package (so the demo needs no download); any other path is relative to `base`, the
    directory of the spec that names it."""
    if path.startswith("pkg:"):
        package, _, rel = path[4:].partition("/")
        try:
            found = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            found = None
        if found is None or not (found.submodule_search_locations or found.origin):
            raise DataError(f"package '{package}' is not installed (pip install it)", file=path)
        root = (Path(list(found.submodule_search_locations)[0])
                if found.submodule_search_locations else Path(found.origin).parent)
        full = root / rel
    else:
        full = Path(path)
        if not full.is_absolute() and base is not None:
            full = Path(base) / full
    if not full.is_file():
        raise DataError("no such file" if not full.exists() else "not a file", file=str(full))
    return full


# ------------------------------------------------------------------------------- text
def _decode(raw: bytes, file: str) -> str:
    """UTF-8 text, or a DataError that says where the first bad byte is."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} "
                        f"(column {col})", file=file, line=line) from None


def _jsonl_field(text: str, field: str, file: str) -> str:
    """The `field` of every JSON line, joined by newlines (one verse, one line)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"not a JSON line ({e.msg})", file=file, line=n) from None
        if not isinstance(record, dict) or field not in record:
            raise DataError(f"no field '{field}' in this JSON line", file=file, line=n)
        out.append(str(record[field]))
    return "\n".join(out) + ("\n" if out else "")


def read_text(path: Path, field: str | None = None) -> str:
    """The text of a file; with `field`, that field of each line of a `.jsonl` file."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read ({e.strerror})", file=file) from None
    text = _decode(raw, file)
    if field is not None:
        text = _jsonl_field(text, field, file)
    if not text.strip():
        raise DataError("is empty: there is no text to train on", file=file)
    return text


def char_tokens(text: str) -> list[str]:
    return list(text)


def word_tokens(text: str) -> list[str]:
    """Whitespace tokens, each line closed by `</s>`."""
    out: list[str] = []
    for line in text.splitlines():
        out.extend(line.split())
        out.append(EOS)
    return out


# ------------------------------------------------------------------------- vocabulary
@dataclass(frozen=True)
class Vocab:
    """Ids for tokens. `kind` says how tokens join back into text ('chars' or 'words')."""
    kind: str
    tokens: tuple

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> dict:
        return {tok: i for i, tok in enumerate(self.tokens)}

    @property
    def unk(self) -> int | None:
        return self.index.get(UNK)

    def encode(self, tokens: list[str], file: str = "<text>") -> np.ndarray:
        """Token ids; an unknown word becomes `<unk>`, an unknown character is an error
        (a character model has no `<unk>` and must not silently drop text)."""
        index, unk = self.index, self.unk
        ids = np.fromiter((index.get(t, -1) for t in tokens), dtype=np.int64, count=len(tokens))
        bad = np.flatnonzero(ids < 0)
        if bad.size and unk is not None:
            ids[bad] = unk
        elif bad.size:
            first = int(bad[0])
            line = sum(1 for t in tokens[:first] if t in ("\n", EOS)) + 1
            raise DataError(f"symbol {tokens[first]!r} is not in the model's vocabulary of "
                            f"{len(self)} symbols", file=file, line=line)
        return ids

    def decode(self, ids) -> str:
        """Text again: characters joined; words joined by spaces, `</s>` a line end."""
        toks = [self.tokens[int(i)] for i in ids]
        if self.kind == "chars":
            return "".join(toks)
        lines, line = [], []
        for t in toks:
            if t == EOS:
                lines.append(" ".join(line))
                line = []
            else:
                line.append(t)
        return "\n".join(lines + [" ".join(line)])

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokens": list(self.tokens)}

    @staticmethod
    def from_json(d: dict) -> "Vocab":
        return Vocab(d["kind"], tuple(d["tokens"]))


def build_vocab(kind: str, tokens: list[str], size: int | None = None) -> Vocab:
    """Characters in code-point order; words by falling frequency (ties: first seen),
    `<unk>` and `</s>` always in, at most `size` entries in all."""
    if kind == "chars":
        return Vocab("chars", tuple(sorted(set(tokens))))
    counts = Counter(tokens)
    counts.pop(UNK, None)
    counts.pop(EOS, None)
    first = {}
    for i, t in enumerate(tokens):
        first.setdefault(t, i)
    ranked = sorted(counts, key=lambda t: (-counts[t], first[t]))
    keep = ranked if size is None else ranked[:max(size - 2, 0)]
    return Vocab("words", (UNK, EOS, *keep))


# ---------------------------------------------------------------------------- loaders
@dataclass(frozen=True)
class TextLoader:
    """A loader call with its path resolved: reads tokens, knows its vocabulary rule."""
    kind: str                  # 'chars' | 'words'
    path: Path
    field: str | None = None
    vocab_size: int | None = None

    def tokens(self) -> list[str]:
        text = read_text(self.path, self.field)
        return char_tokens(text) if self.kind == "chars" else word_tokens(text)

    def vocab(self, tokens: list[str]) -> Vocab:
        return build_vocab(self.kind, tokens, self.vocab_size)

    def describe(self) -> str:
        return f"{self.kind}({str(self.path)!r})"


def chars(path: str, field: str | None = None, *, base: str | Path | None = None) -> TextLoader:
    """Characters of a text file (or of `field` of each line of a .jsonl file)."""
    return TextLoader("chars", resolve_path(str(path), base), _field(field))


def words(path: str, vocab: int = 10000, field: str | None = None, *,
          base: str | Path | None = None) -> TextLoader:
    """Whitespace-separated words with `</s>` at each line end; the `vocab` most frequent
    words (counting `<unk>` and `</s>`) keep their own id, the rest become `<unk>`."""
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 3:
        raise UsageError(f"words(): vocab must be an integer of at least 3, not {vocab!r}")
    return TextLoader("words", resolve_path(str(path), base), _field(field), vocab)


def _field(field):
    if field is not None and not isinstance(field, str):
        raise UsageError(f"field must be a string such as \"text\", not {field!r}")
    return field


LOADERS = {"chars": chars, "words": words}
PLANNED = ("tagged", "labeled", "pairs", "trees", "series")


def make_loader(call, base: str | Path | None = None) -> TextLoader:
    """A loader from a `Call` value of the train block (or of `--set data=...`)."""
    name = getattr(call, "name", None)
    if name is None:
        raise UsageError(f"data must be a loader call such as chars(\"file.txt\"), not {call!r}")
    if name not in LOADERS:
        known = ", ".join(LOADERS)
        extra = " yet" if name in PLANNED else ""
        raise UsageError(f"loader '{name}' is not supported by training{extra} "
                         f"(supported: {known})")
    try:
        return LOADERS[name](*call.args, **dict(call.kwargs), base=base)
    except TypeError as e:
        msg = str(e).replace(f"{LOADERS[name].__name__}()", f"{name}()")
        raise UsageError(f"bad loader call: {msg}") from None
