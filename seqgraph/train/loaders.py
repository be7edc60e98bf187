"""Loaders of the `train` block (LANGUAGE.md section 7).

`chars(path)` and `words(path, vocab=10000)` read one token stream (language models).
`pairs`, `labeled`, `tagged`, `series` and `treepairs` read examples: one per line (a
sentence pair, a labelled text, a tagged sentence, a tree and a sequence) or windows of
one long series.

A text loader only reads a file into a list of tokens. The vocabulary is built once from the
training tokens and then reused for the validation text, for evaluation and for sampling
(it is saved in the checkpoint), so a loader never decides ids on its own.

Every problem with a file is a `DataError` naming that file: a user should never see a
traceback because a path is wrong or a byte is not UTF-8.
"""
from __future__ import annotations

import csv
import importlib.util
import inspect
import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError, did_you_mean, whole_number

EOS = "</s>"       # the line-end token of `words` (the Penn Treebank set-up)
UNK = "<unk>"      # a word outside the vocabulary
BOS = "<s>"        # what a fed-back target reads before its first step (pairs)


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
        root = (Path(next(iter(found.submodule_search_locations)))
                if found.submodule_search_locations else Path(found.origin).parent)
        full = root / rel
    else:
        full = Path(path)
        if not full.is_absolute() and base is not None:
            full = Path(base) / full
    try:
        if not full.is_file():
            raise DataError("no such file" if not full.exists() else "not a file",
                            file=str(full))
    except OSError as e:                  # a name too long, a path the system refuses
        raise DataError(f"cannot use this path ({e.strerror})", file=str(full)) from None
    return full


def loader_path(call):
    """The file a loader call names (its first value, or `path = ...`), None if none."""
    return call.kwargs.get("path", call.args[0] if call.args else None)


def _loader_files(cfg, from_set: bool):
    """(key, call, path, base) of the data and valid loader calls that name a file, those
    `--set` gave (`from_set`) or those of the spec."""
    for key, base in (("data", cfg.base), ("valid", cfg.valid_base)):
        call = getattr(cfg, key)
        path = loader_path(call) if hasattr(call, "name") else None
        if isinstance(path, str) and (key in cfg.from_set) == from_set:
            yield key, call, path, base


def spec_file_errors(graph, cfg) -> list:
    """The data and valid files the spec's train block names that cannot be found, each
    a SpecError at its path in the spec (nothing is read)."""
    from ..errors import SpecError
    out = []
    for key, call, path, base in _loader_files(cfg, from_set=False):
        try:
            resolve_path(path, base)
        except DataError as e:
            where = call.kw_pos.get("path") if "path" in call.kwargs else \
                (call.arg_pos[0] if call.arg_pos else call.pos)
            hint = (f"a path in the spec is relative to the spec's folder ({base}); "
                    if not path.startswith("pkg:") else "") + \
                f"another file can be given with --set '{key}={_elsewhere(call)}'"
            out.append(SpecError(f"{key} file {e.file}: {e.message}", where, hint,
                                 graph.path, graph.source))
    return out


def _elsewhere(call) -> str:
    """The loader call with "..." for its path, its other options kept:
    trees("...", vocab = 8737)."""
    def show(v):                       # as the spec writes values
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(show(x) for x in v) + "]"
        return f'"{v}"' if isinstance(v, str) else str(v)
    rest = [show(a) for a in call.args[1:]]
    rest += [f"{k} = {show(v)}" for k, v in call.kwargs.items() if k != "path"]
    return call.name + "(" + ", ".join(['"..."', *rest]) + ")"


def set_file_errors(cfg) -> list:
    """(key, DataError) of the files `--set` names that cannot be found: the user's own,
    relative to the current directory, not located in the spec."""
    out = []
    for key, _, path, base in _loader_files(cfg, from_set=True):
        try:
            resolve_path(path, base)
        except DataError as e:
            out.append((key, e))
    return out


# ------------------------------------------------------------------------------- text
def _decode(raw: bytes, file: str) -> str:
    """UTF-8 text, or a DataError that says where the first bad byte is."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:       # lines end at LF, CRLF or CR (read_text)
        before = raw[:e.start].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        line = before.count(b"\n") + 1
        col = len(before) - (before.rfind(b"\n") + 1) + 1
        raise DataError(f"not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} "
                        f"(column {col})", file=file, line=line) from None


def text_lines(text: str) -> list[str]:
    """The lines of a text read_text gave: ended by "\n" only, the one line end left
    (str.splitlines would also end a line at \x0b, \x0c, \x1c-\x1e, \x85, U+2028 and
    U+2029, characters inside a line of text); no empty line after a final "\n"."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _jsonl_values(text: str, field: str, file: str):
    """(line number, the `field`) of every non-blank JSON line, checked."""
    for n, line in enumerate(text_lines(text), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            why = "" if file.lower().endswith(".jsonl") else \
                f"; field = {field!r} reads JSON lines: is {field!r} another file? a " \
                f"loader reads one"            # chars("a.txt", "b.txt")
            raise DataError(f"not a JSON line ({e.msg}){why}", file=file, line=n) from None
        if not isinstance(record, dict) or field not in record:
            raise DataError(f"no field '{field}' in this JSON line", file=file, line=n)
        if not isinstance(record[field], str):       # null would be read as "None"
            raise DataError(f"field '{field}' is {json.dumps(record[field])[:40]}, not a "
                            f"string of text", file=file, line=n)
        _no_surrogate(record[field], field, file, n)
        if "\0" in record[field]:                     # as _no_nul, in one line
            raise DataError(f"field '{field}' holds a NUL character (\\u0000): not text",
                            file=file, line=n)
        yield n, _clean(record[field])


def _jsonl_field(text: str, field: str, file: str) -> str:
    """The `field` of every JSON line, joined by newlines (one verse, one line)."""
    out = [value for _, value in _jsonl_values(text, field, file)]
    return "\n".join(out) + ("\n" if out else "")


def jsonl_line(path: Path, field: str, k: int) -> int:
    """The line of a JSON-lines file that holds line k of the text of its `field`s
    (read_text): blank lines are skipped and a field may hold several lines. Read again,
    for an error's message only."""
    file, seen, n = str(path), 0, k
    text = _clean(_decode(path.read_bytes(), file))
    for n, value in _jsonl_values(text, field, file):
        seen += value.count("\n") + 1
        if seen >= k:
            break
    return n


def _clean(text: str) -> str:
    """Text as the loaders read it: Windows (CRLF) and old Mac (CR) line ends as "\n",
    as Python's text files read them (kept, "\r" would be a symbol of a chars model);
    no U+FEFF. A byte-order mark (Excel's and Notepad's UTF-8) is not text: kept, it
    would be the first word's, label's or column name's first character, and one inside
    (a second file's, `cat a.tsv b.tsv`; a zero-width no-break space, long deprecated)
    would be glued to the next token ('\ufeff2' a label other than '2')."""
    return text.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n")


SURROGATE = re.compile("[\ud800-\udfff]")


def _no_surrogate(value: str, field: str, file: str, line: int) -> None:
    """A JSON escape of half a UTF-16 pair ("\\ud800" alone) reads as a lone surrogate,
    a code point that is no character (UTF-8 cannot hold it): an error at its line."""
    bad = SURROGATE.search(value)
    if bad:
        raise DataError(f"field '{field}' holds \\u{ord(bad.group()):04x} at character "
                        f"{bad.start() + 1}, an unpaired surrogate (half of a UTF-16 pair), "
                        f"not a character", file=file, line=line)


def _no_nul(text: str, file: str) -> None:
    """A NUL character is no text (a binary file, or UTF-16 read as UTF-8): an error at
    its line and column, not a symbol of the model."""
    at = text.find("\0")
    if at >= 0:
        column = at - text.rfind("\n", 0, at)
        raise DataError(f"holds a NUL character (column {column}): not text; a binary "
                        f"file?", file=file, line=text.count("\n", 0, at) + 1)


def read_text(path: Path, field: str | None = None) -> str:
    """The text of a file; with `field`, that field of each line of a `.jsonl` file."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read ({e.strerror})", file=file) from None
    text = _clean(_decode(raw, file))             # line ends as "\n", no U+FEFF
    _no_nul(text, file)
    if field is not None:
        text = _jsonl_field(text, field, file)
    if not text.strip():
        raise DataError("is empty: there is no text in it", file=file)
    return text


def word_tokens(text: str) -> list[str]:
    """Whitespace tokens, each line closed by `</s>`."""
    out: list[str] = []
    for line in text_lines(text):
        out.extend(line.split())
        out.append(EOS)
    return out


def _csv_rows(text: str, file: str) -> list[tuple[int, list[str]]]:
    """(line, cells) of each CSV row, the line the row starts on (a quoted cell may span
    lines: the reader's line count, not the row's index); the csv module's refusals (a
    cell over its 131,072 characters, as an unclosed quote makes) a DataError at the
    line of the row."""
    reader = csv.reader(io.StringIO(text))
    rows, start = [], 1
    try:
        for row in reader:
            rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as e:
        what = f"a cell longer than {csv.field_size_limit():,} characters (or a quote \" " \
            f"never closed, which reads on to the end of the file)" \
            if "field larger" in str(e) else str(e)
        raise DataError(f"not CSV as expected: {what}", file=file, line=start) from None
    return rows


# ------------------------------------------------------------------------- vocabulary
@dataclass(frozen=True)
class Vocab:
    """Ids for tokens. `kind` says how tokens join back into text ('chars' or 'words';
    'labels' for class names and tags, 'series' for column names, 'vectors' for the
    positions of a source read as numbers, whose `encode` gives the numbers themselves:
    `pairs` feeding a per-example `c : vec(D)`). Example loaders keep
    the target's own vocabulary in `target` (target tokens of `pairs`, the labels of
    `labeled`, the tags of `tagged`, the target columns of `series`); `stats` holds a
    series' column means and standard deviations (the scaling)."""
    kind: str
    tokens: tuple
    target: Vocab | None = None
    stats: dict | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def index(self) -> dict:
        return {tok: i for i, tok in enumerate(self.tokens)}

    @property
    def unk(self) -> int | None:
        return self.index.get(UNK)

    def encode(self, tokens: list[str], file: str = "<text>") -> np.ndarray:
        """Token ids; an unknown word becomes `<unk>`, an unknown character is an error
        (a character model has no `<unk>` and must not silently drop text)."""
        if self.kind == "vectors":
            return _vector(tokens, len(self), file)
        index, unk = self.index, self.unk
        if self.kind == "chars":
            ids = self._encode_chars(tokens)
        else:
            ids = np.fromiter((index.get(t, -1) for t in tokens), dtype=np.int64,
                              count=len(tokens))
        bad = np.flatnonzero(ids < 0)
        if bad.size and unk is not None:
            ids[bad] = unk
        elif bad.size:
            first = int(bad[0])
            line = sum(1 for t in tokens[:first] if t in ("\n", EOS)) + 1
            raise DataError(f"symbol {quote_token(tokens[first])} is not in the model's "
                            f"vocabulary of {len(self)} symbols", file=file, line=line)
        if self.kind == "chars" and len(self) <= 256:
            ids = ids.astype(np.uint8)       # a corpus of 4M characters: 4 MB, not 34
        return ids

    def _encode_chars(self, chars) -> np.ndarray:
        """Characters (a str, or a list of one-character tokens) to ids through a table
        indexed by code point: one numpy gather instead of a dictionary look-up per
        character (4M characters: 30 ms, not 1 s). Latin-1 text goes through one byte a
        character, other text through four."""
        text = chars if isinstance(chars, str) else "".join(chars)
        if len(text) != len(chars):          # a token of several characters: the slow way
            return np.fromiter((self.index.get(t, -1) for t in chars), dtype=np.int64,
                               count=len(chars))
        try:
            points = np.frombuffer(text.encode("latin-1"), dtype=np.uint8)
        except UnicodeEncodeError:
            points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        known = {ord(t): i for t, i in self.index.items() if len(t) == 1}
        table = np.full(max(known, default=0) + 2, -1, dtype=np.int32)
        table[list(known)] = list(known.values())
        top = len(table) - 1                 # the last entry: -1, any unknown character
        if points.dtype == np.uint8 and top >= 255:
            return table[points]             # every byte is inside the table
        return table[np.minimum(points, top)]

    def decode(self, ids) -> str:
        """Text again: characters joined; words joined by spaces, `</s>` a line end."""
        toks = [self.tokens[int(i)] for i in ids]
        if self.kind == "chars":
            return "".join(toks)
        if self.kind in ("labels", "series"):
            return " ".join(toks)
        lines, line = [], []
        for t in toks:
            if t == EOS:
                lines.append(" ".join(line))
                line = []
            else:
                line.append(t)
        return "\n".join(lines + [" ".join(line)])

    # a series' standardisation (`stats`, from the training split): the inputs and the
    # targets to the units the model is trained in, and its outputs back
    def standardise(self, x: np.ndarray) -> np.ndarray:
        st = self.stats
        return x if not st else (x - np.asarray(st["mean"])) / np.asarray(st["std"])

    def standardise_target(self, y: np.ndarray) -> np.ndarray:
        st = self.stats
        return y if not st else \
            (y - np.asarray(st["target_mean"])) / np.asarray(st["target_std"])

    def unstandardise_target(self, o: np.ndarray) -> np.ndarray:
        st = self.stats
        return o if not st else o * np.asarray(st["target_std"]) + np.asarray(st["target_mean"])

    def to_json(self) -> dict:
        out = {"kind": self.kind, "tokens": list(self.tokens)}
        if self.target is not None:
            out["target"] = self.target.to_json()
        if self.stats is not None:
            out["stats"] = self.stats
        return out

    @staticmethod
    def from_json(d: dict) -> Vocab:
        target = Vocab.from_json(d["target"]) if d.get("target") else None
        return Vocab(d["kind"], tuple(d["tokens"]), target, d.get("stats"))


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

    def tokens(self):
        """The tokens: for characters the text itself (a str is a sequence of its
        characters; a list of 4M one-character strings would take 34 MB), else a list
        of words."""
        text = read_text(self.path, self.field)
        return text if self.kind == "chars" else word_tokens(text)

    def vocab(self, tokens: list[str]) -> Vocab:
        return build_vocab(self.kind, tokens, self.vocab_size)

    def encode(self, vocab: Vocab, tokens) -> np.ndarray:
        """`vocab.encode` of this loader's tokens, an error at the line of the file (a
        JSON field's text counts its own lines: jsonl_line finds the file's)."""
        try:
            return vocab.encode(tokens, str(self.path))
        except DataError as e:
            if self.field is None or e.line is None:
                raise
            raise DataError(e.message, e.file, jsonl_line(self.path, self.field,
                                                          e.line)) from None

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


# -------------------------------------------------------------------- example loaders
@dataclass(frozen=True)
class Raw:
    """Examples as read from a file, before any vocabulary: `source` token lists (or a
    float matrix for a series), `target` token lists / labels, and the line of each."""
    source: list
    target: list
    lines: list


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every non-blank line of a UTF-8 file; an empty file is
    an error."""
    text = read_text(path)
    return [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]


def _split_tokens(text: str, chars: bool) -> list[str]:
    return list(text.strip()) if chars else text.split()




def parse_number(text: str) -> float:
    """A number as data writes it: plain ASCII decimal or scientific notation (float()
    would also take '1_000', '١٢', 'inf' and 'nan'), finite (1e400 is float64's inf). A
    ValueError saying why otherwise. (A float32 model's range is its own: a series is
    standardised before it is read, a float64 model holds 1e39.)"""
    if not NUMBER.fullmatch(text):
        raise ValueError("not a number")
    v = float(text)
    if not math.isfinite(v):
        raise ValueError("too large a number (at most 1.8e308)")
    return v


def number_problem(text: str) -> str:
    """Why `text` is not a number data may hold ("not a number", "too large ...")."""
    try:
        parse_number(text)
    except ValueError as e:
        return str(e)
    return ""


def split_numbers(text: str) -> tuple[np.ndarray | None, int, str | None]:
    """The numbers of `text`, separated by whitespace or commas: (values, count, None),
    or (None, position from 1, the part) for the first part that is not a number
    (parse_number; number_problem says why). One rule for a `pairs` source column and
    for `seqgraph sample --input`."""
    parts = text.replace(",", " ").split()
    out = []
    for i, part in enumerate(parts, 1):
        try:
            out.append(parse_number(part))
        except ValueError:
            return None, i, part
    return np.array(out, dtype=np.float64), len(out), None


def _vector(tokens, width: int, file: str) -> np.ndarray:
    """A source vector again: the numbers a vector loader read (or, from a loader that
    did not know the model, their text), checked against the width it was trained on."""
    if isinstance(tokens, np.ndarray) and tokens.dtype.kind == "f":
        values = tokens
    else:
        values, n, bad = split_numbers(" ".join(map(str, tokens)))
        if values is None:
            raise DataError(f"value {n} of a source vector is {quote_token(bad)}, "
                            f"{number_problem(bad)}", file=file)
    if len(values) != width:
        raise DataError(f"a source vector has {len(values)} numbers; the model reads "
                        f"{width}", file=file)
    return np.asarray(values, dtype=np.float64)


def build_example_vocab(tokens_lists, chars: bool, size: int | None, specials=()) -> Vocab:
    """`<unk>` and `specials` first, then the tokens by falling frequency (ties: first
    seen), at most `size` entries in all; characters keep code-point order."""
    counts, first = Counter(), {}
    for toks in tokens_lists:
        for t in toks:
            counts[t] += 1
            first.setdefault(t, len(first))
    for sp in (UNK, *specials):
        counts.pop(sp, None)
    fixed = (UNK, *specials)
    if chars:
        ranked = sorted(counts, key=lambda t: (-counts[t], t))
        keep = sorted(ranked if size is None else ranked[:max(size - len(fixed), 0)])
    else:
        ranked = sorted(counts, key=lambda t: (-counts[t], first[t]))
        keep = ranked if size is None else ranked[:max(size - len(fixed), 0)]
    return Vocab("chars" if chars else "words", (*fixed, *keep))


NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")   # plain decimal


def id_at_least(label: str, limit: int) -> bool:
    """Is class id `label` (is_class_id) `limit` or more? Its digits are counted before
    int(), which refuses a label of 5000 digits."""
    digits = label.lstrip("0")
    return len(digits) > len(str(limit)) or int(label) >= limit


def is_class_id(label: str) -> bool:
    """A label that is a class id: a whole number written in ASCII digits."""
    return whole_number(label)


def _class_ids_alike(labels: list, file: str) -> None:
    """Labels that are class ids (0, 1, 2 ...) but for one line whose label looks like a
    number and is none (-1, 1.5), a header on the first line, or a name among labels
    most of which are class ids (`l` for `1`, `0x1`): an error at its line, not a class of
    its own (which shifts the others' ids, all then read as names in sorted order).
    Labels of a scale of their own (-1 and 1, ratings 3.5) are names, as before."""
    ids = sum(is_class_id(label) for label, _ in labels)
    odd = [(label, n) for label, n in labels if not is_class_id(label)]
    if not ids or not odd:
        return
    if len(odd) == 1 and NUMBER.fullmatch(odd[0][0]):
        label, n = odd[0]
        raise DataError(f"label {quote_token(label)} is not a class id: the other labels "
                        f"are class ids, whole numbers 0, 1, 2, ...", file=file, line=n)
    names = [(label, n) for label, n in odd if not NUMBER.fullmatch(label)]
    if not names or ids < len(odd):   # names, or a scale of its own (-1/1, 3.5 ratings)
        return
    label, n = names[0]
    if n == labels[0][1]:
        raise DataError(f"label {quote_token(label)} on the first line looks like a header "
                        f"(the other labels are class ids); remove that line", file=file,
                        line=n)
    raise DataError(f"label {quote_token(label)} is not a class id: the other labels are "
                    f"class ids, whole numbers 0, 1, 2, ... in ASCII digits (a name among "
                    f"them would be a class of its own and renumber the others)", file=file, line=n)


def header_warning(labels: list, lines: list, file: str) -> str | None:
    """A warning for named labels whose first line's label appears nowhere else while
    the others repeat (a header `label<TAB>text` read as a class of one example), None
    otherwise. Integer labels are checked harder (_class_ids_alike refuses a header)."""
    if len(labels) < 3 or labels[0] in labels[1:] or is_class_id(labels[0]):
        return None
    rest = Counter(labels[1:])
    if len(rest) > (len(labels) - 1) / 2:        # the other labels are mostly one-offs
        return None
    return (f"{file}:{lines[0]}: warning: label {quote_token(labels[0])} of the first line appears "
            f"nowhere else, while the {len(rest)} other labels repeat: is it a header? a "
            f"header is read as a class of one example (remove the line)")


MAX_CLASSES = 1_000_000      # class ids past this are refused (a typo: 2000000000)


def label_vocab(labels, lines=(), file: str | None = None) -> Vocab:
    """Class names: integers 0..K-1 when every label is a non-negative integer (so a
    label means its own class id), else the distinct labels in sorted order. A class id
    that would make more classes than MAX_CLASSES is an error at its line, not a name for
    every id up to it (however few the lines: a subset of many classes is data too; the
    model's class(K) is checked against the labels later, data.check_labels)."""
    distinct = set(labels)
    if distinct and all(is_class_id(label) for label in distinct):
        # the largest by its digits: int() of a label of 5000 digits is refused by Python
        big = max(distinct, key=lambda label: (len(label.lstrip("0")), label.lstrip("0")))
        limit = MAX_CLASSES
        if id_at_least(big, limit):
            line = next((n for label, n in zip(labels, lines, strict=False) if label == big),
                        None)
            raise DataError(f"label {quote_token(big)} is too large a class id (integer labels "
                            f"are class ids 0, 1, 2, ..., a class for each id up to the "
                            f"largest): at most {limit:,} classes, ids 0..{limit - 1}",
                            file=file, line=line)
        top = int(big)
        return Vocab("labels", tuple(str(i) for i in range(top + 1)))
    return Vocab("labels", tuple(sorted(distinct)))


def quote_token(token: str, width: int = 60) -> str:
    """A token as an error shows it: quoted, cut to `width` characters (a 200,000-digit
    label is not printed whole)."""
    return repr(token) if len(token) <= width else \
        f"{token[:width]!r}... ({len(token)} characters)"


@dataclass(frozen=True)
class ExampleLoader:
    """`pairs`, `labeled`, `tagged` or `series` with its path resolved and its options."""
    kind: str
    path: Path
    chars: bool = False
    vocab_size: int | None = None
    inputs: tuple = ()
    targets: tuple = ()
    window: int | None = None
    stride: int | None = None
    horizon: int = 1
    scale: bool = True
    source_chars: bool = False     # pairs: the source as characters, the target as words
    vector: str | None = None      # pairs: the per-example `vec` input the source feeds
    width: int | None = None       # ... and its declared size (None: the data binds it)
    binarize: bool = False         # treepairs: collapse unary, right-branch wider nodes

    def describe(self) -> str:
        return f"{self.kind}({str(self.path)!r})"

    # ---------------------------------------------------------------- reading
    def read(self) -> Raw:
        return getattr(self, "_read_" + self.kind)()

    def _fields(self, n: int, line: str, want: int, what: str) -> list[str]:
        parts = line.split("\t")
        if len(parts) != want:
            found = "no tab" if len(parts) == 1 else f"{len(parts)} tab-separated fields"
            raise DataError(f"expected {what}, found {found}", file=str(self.path), line=n)
        return parts

    def _read_pairs(self) -> Raw:
        return self._read_two("source<TAB>target", lambda n, a, before: (
            self._source_vector(n, a, before) if self.vector else
            _split_tokens(a, self.chars or self.source_chars)))

    def _read_treepairs(self) -> Raw:
        """`tree<TAB>target`: the source a bracketed tree as `trees` reads it (its node
        labels are read and not fed), the target tokens as `pairs` reads them."""
        from .trees import parse_tree  # trees.py builds on this module
        return self._read_two("tree<TAB>target", lambda n, a, before: parse_tree(
            a, str(self.path), n, self.binarize, "treepairs")[:3])

    def _read_two(self, what: str, source) -> Raw:
        """Lines of two fields, `what` (`source<TAB>target`): `source(n, text, before)`
        reads line n's source (`before`: the sources read so far), the target is tokens
        (characters with `chars`); neither empty, no `<s>` or `</s>` in the target."""
        src, tgt, lines = [], [], []
        for n, line in _lines(self.path):
            a, b = self._fields(n, line, 2, what)
            s, t = source(n, a, src), _split_tokens(b, self.chars)
            if not len(s) or not t:
                side = "source" if not len(s) else "target"
                raise DataError(f"expected {what}, the {side} is empty",
                                file=str(self.path), line=n)
            self._no_marks(t, n)
            src.append(s), tgt.append(t), lines.append(n)
        return Raw(src, tgt, lines)

    def _no_marks(self, target: list, n: int) -> None:
        """A target token `<s>` or `</s>` is refused: the loader closes every target
        with `</s>` itself (and a fed-back target reads `<s>` before its first step)."""
        mark = next((t for t in target if t in (BOS, EOS)), None)
        if mark is not None:
            raise DataError(f"the target holds {mark!r}, which the loader adds itself "
                            f"(</s> ends every target, <s> is read before its first "
                            f"step): leave it out", file=str(self.path), line=n)

    def _source_vector(self, n: int, text: str, before: list) -> np.ndarray:
        """Line n's source as the numbers of one vector (the model's `c : vec(D)`): D of
        them when the spec fixes D, else as many as on the first line."""
        width = self.width if self.width is not None else (len(before[0]) if before
                                                           else None)
        size = self.width if self.width is not None else "D"
        want = (f"the source as {width if width is not None else 'D'} numbers for "
                f"{self.vector} : vec({size})")
        values, count, bad = split_numbers(text)
        if values is None:
            raise DataError(f"expected {want}; value {count} is {quote_token(bad)}, "
                            f"{number_problem(bad)}", file=str(self.path), line=n)
        if count and width is not None and count != width:
            first = "" if self.width is not None else " (as on the first line)"
            raise DataError(f"expected {want}{first}, found {count}",
                            file=str(self.path), line=n)
        return values

    def _read_labeled(self) -> Raw:
        src, tgt, lines, texts = [], [], [], []
        for n, line in _lines(self.path):
            label, text = self._fields(n, line, 2, "label<TAB>text")
            toks = _split_tokens(text, self.chars)
            if not label.strip() or not toks:
                what = "label" if not label.strip() else "text"
                raise DataError(f"expected label<TAB>text, the {what} is empty",
                                file=str(self.path), line=n)
            src.append(toks), tgt.append(label.strip()), lines.append(n)
            texts.append(text.strip())
        _not_swapped(tgt, texts, lines, str(self.path))
        _class_ids_alike(list(zip(tgt, lines, strict=True)), str(self.path))
        return Raw(src, tgt, lines)

    def _read_tagged(self) -> Raw:
        src, tgt, lines = [], [], []
        for n, line in _lines(self.path):
            words, tags = [], []
            for i, tok in enumerate(line.split(), 1):
                word, slash, tag = tok.rpartition("/")
                if not slash or not word or not tag:
                    raise DataError(f"expected word/TAG tokens, token {i} is {quote_token(tok)}",
                                    file=str(self.path), line=n)
                words.append(word), tags.append(tag)
            src.append(words), tgt.append(tags), lines.append(n)
        return Raw(src, tgt, lines)

    def _read_series(self) -> Raw:
        file = str(self.path)
        rows = _csv_rows(read_text(self.path), file)
        while rows and not any(c.strip() for c in rows[-1][1]):
            rows.pop()
        if not rows:
            raise DataError("is empty: there is no series to train on", file=file)
        header = [h.strip() for h in rows[0][1]]
        cols = {}
        for name in (*self.inputs, *self.targets):
            if name not in header:
                raise DataError(f"no column '{name}' in the header (columns: "
                                f"{', '.join(header)})", file=file, line=rows[0][0])
            cols[name] = header.index(name)
        values, lines = [], []
        for n, row in rows[1:]:
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise DataError(f"expected {len(header)} comma-separated values as in the "
                                f"header, found {len(row)}", file=file, line=n)
            values.append([self._cell(row[cols[name]].strip(), name, n)
                           for name in dict.fromkeys((*self.inputs, *self.targets))])
            lines.append(n)
        if len(values) < 2:
            raise DataError(f"{len(values)} rows: a series needs at least 2", file=file)
        names = list(dict.fromkeys((*self.inputs, *self.targets)))
        m = np.asarray(values, dtype=np.float64)
        x = m[:, [names.index(c) for c in self.inputs]]
        y = m[:, [names.index(c) for c in self.targets]]
        return Raw(x, y, lines)

    def _cell(self, cell: str, name: str, n: int) -> float:
        """The number in column `name` of line n (parse_number), or a DataError."""
        try:
            return parse_number(cell)
        except ValueError as e:
            if cell.lower() not in ("", "na", "nan", "null", "none"):
                raise DataError(f"column '{name}' has {quote_token(cell)}, {e}",
                                file=str(self.path), line=n) from None
            raise DataError(f"column '{name}' has a missing value; series need every value "
                            f"(fill or drop the row first)", file=str(self.path),
                            line=n) from None

    # ---------------------------------------------------------------- vocabulary
    def vocab(self, raw: Raw) -> Vocab:
        """Built from the training examples only."""
        if self.kind == "pairs":
            t = build_example_vocab(raw.target, self.chars, self.vocab_size, (BOS, EOS))
            if self.vector:             # a vector's positions: len() is its width
                width = len(raw.source[0]) if raw.source else (self.width or 0)
                return Vocab("vectors", tuple(str(i) for i in range(width)), t)
            v = build_example_vocab(raw.source, self.chars or self.source_chars,
                                    self.vocab_size)
            return Vocab(v.kind, v.tokens, t)
        if self.kind == "treepairs":          # the leaves' words; the target as pairs'
            v = build_example_vocab([[w for w in words if w is not None]
                                     for _, _, words in raw.source], False, self.vocab_size)
            t = build_example_vocab(raw.target, self.chars, self.vocab_size, (BOS, EOS))
            return Vocab(v.kind, v.tokens, t)
        if self.kind == "labeled":
            v = build_example_vocab(raw.source, self.chars, self.vocab_size)
            return Vocab(v.kind, v.tokens, label_vocab(raw.target, raw.lines, str(self.path)))
        if self.kind == "tagged":
            v = build_example_vocab(raw.source, False, self.vocab_size)
            tags = sorted({t for ts in raw.target for t in ts})
            return Vocab(v.kind, v.tokens, Vocab("labels", tuple(tags)))
        x, y = np.asarray(raw.source), np.asarray(raw.target)
        stats = None
        if self.scale:
            stats = {"mean": x.mean(0).tolist(), "std": _std(x).tolist(),
                     "target_mean": y.mean(0).tolist(), "target_std": _std(y).tolist()}
        return Vocab("series", tuple(self.inputs), Vocab("series", tuple(self.targets)),
                     stats)


def _std(a: np.ndarray) -> np.ndarray:
    s = a.std(0)
    return np.where(s > 0, s, 1.0)


def _vocab_opt(vocab, name):
    if vocab is None:
        return None
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2:
        raise UsageError(f"{name}(): vocab must be an integer of at least 2, not {vocab!r}")
    return vocab


def _bool(v, what):
    if not isinstance(v, bool):
        raise UsageError(f"{what} must be true or false, not {v!r}")
    return v


def pairs(path: str, chars: bool = False, vocab: int | None = None,
          source_chars: bool = False, *, base: str | Path | None = None) -> ExampleLoader:
    """TSV `source<TAB>target`: x[t] the source tokens, y[u] the target tokens closed by
    `</s>` (and `<s>` read before the first step when y is fed back). `chars` reads both
    sides as characters, `source_chars` the source only (grapheme-to-phoneme: a word,
    then its phonemes). For a model whose source is one vector per example (`c : vec(D)`,
    Fig. 10.9) the binding sets `vector` (binding.fit_loader): the source column is then
    D numbers."""
    return ExampleLoader("pairs", resolve_path(str(path), base), _bool(chars, "pairs(): chars"),
                         _vocab_opt(vocab, "pairs"),
                         source_chars=_bool(source_chars, "pairs(): source_chars"))


def treepairs(path: str, chars: bool = False, vocab: int | None = None,
              binarize: bool = False, *, base: str | Path | None = None) -> ExampleLoader:
    """TSV `tree<TAB>target`: a tree encoder's data (LANGUAGE.md section 6, `h[root]`).
    w[n] the words at the leaves of a bracketed tree as `trees` reads it, `(3 (2 a) (3
    film))` (a label at every node, not fed; `binarize` as trees'), y[u] the target tokens
    closed by `</s>`, as `pairs` reads them (`chars`: characters)."""
    return ExampleLoader("treepairs", resolve_path(str(path), base),
                         _bool(chars, "treepairs(): chars"), _vocab_opt(vocab, "treepairs"),
                         binarize=_bool(binarize, "treepairs(): binarize"))


SWAPPED_LINES = 10      # the fewest lines on which columns are judged swapped


def _not_swapped(labels: list, texts: list, lines: list, path: str) -> None:
    """Refuse text<TAB>label given to `labeled`: on SWAPPED_LINES lines or more, every
    "label" a phrase of several words and nearly each its own (as texts are), every
    "text" one word, of few values (as labels are). A names-to-classes file whose
    classes are phrases (`South Korean<TAB>Kim`) repeats them, and is read."""
    n = len(labels)
    if n < SWAPPED_LINES or len(set(labels)) < 0.9 * n or len(set(texts)) > n / 2 or \
            any(len(a.split()) < 2 for a in labels) or any(len(t.split()) != 1 for t in texts):
        return
    raise DataError(f"expected label<TAB>text, found several words before the tab "
                    f"({quote_token(labels[0])}) and one word after "
                    f"({quote_token(texts[0])}) on all {n} lines, "
                    f"the first column nearly always different: the columns look swapped "
                    f"(text<TAB>label)", file=path, line=lines[0])


def labeled(path: str, chars: bool = False, vocab: int | None = None, *,
            base: str | Path | None = None) -> ExampleLoader:
    """TSV `label<TAB>text`: x[t] the tokens of the text, y its class (many-to-one)."""
    return ExampleLoader("labeled", resolve_path(str(path), base),
                         _bool(chars, "labeled(): chars"), _vocab_opt(vocab, "labeled"))


def tagged(path: str, vocab: int | None = None, *,
           base: str | Path | None = None) -> ExampleLoader:
    """One sentence a line of `word/TAG` tokens: x[t] the words, y[t] the tags."""
    return ExampleLoader("tagged", resolve_path(str(path), base), False,
                         _vocab_opt(vocab, "tagged"))


def series(path: str, inputs=(), targets=(), window: int | None = None,
           stride: int | None = None, horizon: int = 1, scale: bool = True, *,
           base: str | Path | None = None) -> ExampleLoader:
    """A CSV file with a header: x[t] the `inputs` columns at row t, y[t] the `targets`
    columns at row t + horizon; one long series cut into windows of `window` rows
    (default: the train block's bptt) every `stride` rows (default: window)."""
    def names(v, what):
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or not v or \
                not all(isinstance(c, str) for c in v):
            raise UsageError(f"series(): {what} must be a list of column names such as "
                             f"[\"a\", \"b\"], not {v!r}")
        return tuple(v)

    def count(v, what, lo):
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise UsageError(f"series(): {what} must be an integer of at least {lo}, "
                             f"not {v!r}")
        return v
    return ExampleLoader("series", resolve_path(str(path), base), inputs=names(inputs, "inputs"),
                         targets=names(targets, "targets"), window=count(window, "window", 1),
                         stride=count(stride, "stride", 1),
                         horizon=count(horizon, "horizon", 0),
                         scale=_bool(scale, "series(): scale"))


LOADERS = {"chars": chars, "words": words, "pairs": pairs, "labeled": labeled,
           "tagged": tagged, "series": series, "treepairs": treepairs}
STREAM_KINDS = ("chars", "words")           # one token stream: a language model
EXAMPLE_KINDS = ("pairs", "labeled", "tagged", "series", "treepairs")
TREE_LOADERS = ("trees",)          # train/trees.py: the data of a tree model


def data_call(text: str, cfg):
    """`--data TEXT` as a loader call: `chars("f.txt")` as written; a bare path read with
    the training loader's kind and options, given by name or by place (the same jsonl
    field, trees' binarize), a path that is not .jsonl being plain text."""
    from ..errors import SpecError
    from ..graph.report import loader_args
    from ..lang.parse import parse_value
    try:
        value = parse_value(text)
        if hasattr(value, "name"):
            return value
    except SpecError as e:
        called = re.match(r"\s*([A-Za-z_]\w*)\s*\(", text)
        if called and called.group(1) in (*LOADERS, *TREE_LOADERS) and \
                not Path(text).expanduser().exists():      # `chars(1).txt` is a file
            # `chars("x.txt"`: a call written wrong, not a file of that name
            from .config import value_error
            msg, hint = value_error(e, text)
            raise UsageError(f"--data {text}: cannot read the loader call: {msg}" +
                             (f"; {hint}" if hint else "")) from None
    base = cfg.data
    if base is None:
        raise UsageError(f"--data {text}: give a loader call such as 'chars(\"{text}\")'")
    kwargs = {**loader_args(base), "path": text}
    if not text.lower().endswith(".jsonl"):
        kwargs.pop("field", None)
    path = kwargs.pop("path")
    return type(base)(base.name, (path,), kwargs)


def _loader_function(call, key: str = "data"):
    """The function of a loader call (`trees` too), or a BadValue with a did-you-mean."""
    from .config import BadValue
    name = getattr(call, "name", None)
    known = (*LOADERS, *TREE_LOADERS)
    if name is None:
        if isinstance(call, str) and call in known:      # `data = chars`: no file
            hint = f"a loader call names its file: {call}(\"file.txt\")"
        else:
            near = did_you_mean(call, known) if isinstance(call, str) else ""
            hint = f"{near} (loaders: {', '.join(known)})" if near else \
                f"loaders: {', '.join(known)}"
        raise BadValue(f"{key} must be a loader call such as chars(\"file.txt\"), "
                       f"not {call!r}", hint)
    if name not in known:
        near = did_you_mean(name, known)
        supported = f"supported: {', '.join(known)}"
        raise BadValue(f"loader '{name}' is not supported by training",
                       f"{near} ({supported})" if near else supported, ("name",))
    if name in TREE_LOADERS:
        from .trees import trees
        return trees
    return LOADERS[name]


SPLITS = ("chars", "source_chars")    # the options that decide what a token is


def same_splits(data, other, what: str) -> None:
    """`other` (a valid or eval loader call) reads tokens as `data` does (the vocabulary
    is the data's: words read as characters would all be `<unk>`), else a UsageError
    naming the option. Both calls name a loader of one kind."""
    def splits(call):
        fn = LOADERS.get(call.name)
        if fn is None:
            return {}
        bound = inspect.signature(fn).bind_partial(*call.args, **call.kwargs)
        bound.apply_defaults()
        return {k: bound.arguments[k] for k in SPLITS if k in bound.arguments}
    a, b = splits(data), splits(other)
    for k in a:
        if a[k] != b.get(k, a[k]):
            raise UsageError(f"{what} reads with {k} = {str(b[k]).lower()}, the training data "
                             f"with {k} = {str(a[k]).lower()}: both must read tokens alike "
                             f"(the vocabulary is the training data's)")


def check_loader_call(call, key: str = "data") -> None:
    """A loader call checked without touching its file: the loader's name, its arguments
    (an unknown keyword gets a did-you-mean and the accepted ones) and their values (the
    loader is built with a stand-in file that exists, this module's own)."""
    from .config import BadValue, call_checked
    fn = _loader_function(call, key)
    name = call.name
    bound = inspect.signature(fn).parameters
    given = dict(zip(bound, call.args, strict=False))
    given.update(call.kwargs)
    path = given.get("path")
    if "path" in given and not isinstance(path, str):
        where = ("kw", "path") if "path" in call.kwargs else ("arg", 0)
        raise BadValue(f"{name}(): the file must be a string such as \"data.txt\", not "
                       f"{path!r}", f"write {name}(\"file.txt\", ...)", where)
    call_checked(call, fn, skip=("base",), name=name, replace={"path": __file__}
                 if "path" in given else None)


def make_loader(call, base: str | Path | None = None) -> TextLoader | ExampleLoader:
    """A loader from a `Call` value of the train block (or of `--set data=...`)."""
    from .config import BadValue, call_checked
    fn = _loader_function(call)
    if call.name in TREE_LOADERS:
        raise BadValue(f"{call.name}(...) reads trees alone: it is the data (and valid) "
                       f"of a model over a tree index only", "a sequence model reads chars, "
                       "words, pairs, labeled, tagged or series; a tree encoder with a "
                       "decoder treepairs", ("name",))
    try:
        return call_checked(call, fn, skip=("base",), name=call.name, base=base)
    except BadValue as e:
        raise BadValue(f"bad loader call: {e.message}", e.hint, e.at) from None
