"""Checkpoints: readable with numpy alone, atomic, and refused by the wrong spec."""
import json
import os

import numpy as np
import pytest

from seqgraph.errors import DataError
from seqgraph.train import checkpoint as ck


def params():
    rng = np.random.default_rng(1)
    return {"W": rng.normal(size=(4, 3)).astype(np.float32),
            "enc.U": rng.normal(size=(4, 4)).astype(np.float32), "b": np.zeros(4, np.float32)}


def test_round_trip_with_spec_names_meta_optimiser_state_and_carry(tmp_path):
    p = params()
    carry = {"h": np.ones((2, 4)), "c": (np.zeros((2, 4)), 3)}
    optim = {"m/W": np.full((4, 3), 0.5), "v/enc.U": np.ones((4, 4))}
    path = ck.save(tmp_path / "run" / "checkpoint.npz", p, {"model": "lm", "step": 7},
                   optim, carry)
    with np.load(path, allow_pickle=False) as z:          # plain numpy can read it
        assert {"W", "enc.U", "b", "__meta__"} <= set(z.files)
        assert json.loads(str(z["__meta__"]))["step"] == 7
    c = ck.load(path)
    assert set(c.params) == set(p)
    for k in p:
        np.testing.assert_array_equal(c.params[k], p[k])
        assert c.params[k].dtype == np.float32
    assert c.meta["model"] == "lm" and c.meta["shapes"]["enc.U"] == [4, 4]
    np.testing.assert_array_equal(c.optim["m/W"], optim["m/W"])
    np.testing.assert_array_equal(c.carry["h"], carry["h"])
    assert isinstance(c.carry["c"], tuple) and c.carry["c"][1] == 3
    assert c.path == str(path)


def test_no_carry_is_none(tmp_path):
    c = ck.load(ck.save(tmp_path / "c.npz", params(), {}))
    assert c.carry is None and c.optim == {}


def test_write_is_atomic_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = ck.save(tmp_path / "c.npz", params(), {"step": 1})
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        ck.save(path, params(), {"step": 2})
    assert path.read_bytes() == before               # the old checkpoint is whole
    assert os.listdir(tmp_path) == ["c.npz"]         # and no temporary is left over


def test_reserved_names_are_refused(tmp_path):
    with pytest.raises(DataError, match="'__meta__' starts with '__'"):
        ck.save(tmp_path / "c.npz", {"__meta__": np.zeros(1)}, {})


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.npz: no such checkpoint"):
        ck.load(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DataError, match=r"junk\.npz: not a readable checkpoint: not an "
                                        r"\.npz archive") as e:
        ck.load(tmp_path / "junk.npz")
    assert "pickle" not in str(e.value)      # not numpy's advice to load it unsafely
    np.savez(tmp_path / "plain.npz", W=np.zeros(2))
    with pytest.raises(DataError, match=r"plain\.npz: not a seqgraph checkpoint"):
        ck.load(tmp_path / "plain.npz")


def test_a_damaged_checkpoint_is_a_data_error_wherever_the_damage_is(tmp_path):
    """Bytes flipped anywhere in the archive (the arrays, the meta, the zip directory):
    the checkpoint loads, or it is a DataError; never another exception."""
    path = ck.save(tmp_path / "c.npz", {"W": np.arange(6.0).reshape(2, 3)}, {"model": "m"})
    whole = path.read_bytes()
    rng = np.random.default_rng(0)
    kinds = set()
    for at in sorted(set(rng.integers(0, len(whole) - 16, 120).tolist()) |
                     set(range(len(whole) - 400, len(whole) - 16, 8))):
        bad = bytearray(whole)
        bad[at:at + 16] = bytes(255 - b for b in bad[at:at + 16])
        path.write_bytes(bytes(bad))
        try:
            ck.load(path)
            kinds.add("loaded")
        except DataError:
            kinds.add("refused")
    assert "refused" in kinds


def test_check_params_names_the_file_and_first_mismatch(tmp_path):
    c = ck.load(ck.save(tmp_path / "c.npz", params(), {"model": "lm"}))
    ck.check_params(c, params())
    other = params()
    other["enc.U"] = np.zeros((5, 4))
    with pytest.raises(DataError, match=r"c\.npz: parameter 'enc\.U' has shape \[5, 4\] in "
                                        r"the spec but \[4, 4\] in this checkpoint"):
        ck.check_params(c, other)
    with pytest.raises(DataError, match=r"c\.npz: the spec's parameter 'V' is not in"):
        ck.check_params(c, {**params(), "V": np.zeros(1)})
    fewer = params()
    del fewer["b"]
    with pytest.raises(DataError, match="checkpoint has parameter 'b', which the spec"):
        ck.check_params(c, fewer)


def test_restore_params_copies_in_place(tmp_path):
    c = ck.load(ck.save(tmp_path / "c.npz", params(), {}))
    target = {k: np.zeros_like(v) for k, v in params().items()}
    W = target["W"]
    ck.restore_params(c, target)
    assert target["W"] is W
    np.testing.assert_array_equal(W, params()["W"])


def _rewrite_meta(path, edit):
    """The checkpoint at `path` with its __meta__ JSON passed through `edit`, the rest
    (its digest included) as it was: a hand edit."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["__meta__"]))
    arrays["__meta__"] = np.array(json.dumps(edit(meta)))
    np.savez(path, **arrays)


def _vocab_null(meta):
    return {**meta, "vocab": None}


def _step_a_string(meta):
    meta["state"]["position"]["step"] = "five"
    return meta


@pytest.mark.parametrize("edit", [_vocab_null, _step_a_string])
def test_a_hand_edited_meta_is_refused_by_eval_and_sample(tmp_path, monkeypatch, capsys,
                                                         edit):
    """eval and sample read the vocabulary, sizes and position from __meta__; an edited one
    crashed inside them (walk 12). Its digest no longer matches: refused at load."""
    from conftest import TINY_LM, fails, train_quiet
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.txt").write_text("the cat sat on the mat. " * 20)
    (tmp_path / "lm.sg").write_text(TINY_LM)
    assert train_quiet("lm.sg", "run", "--steps", "2") == 0
    ck.load("run/checkpoint.npz")                    # as written, it loads
    _rewrite_meta("run/checkpoint.npz", edit)
    for argv in (["eval", "lm.sg", "--checkpoint", "run/checkpoint.npz"],
                 ["sample", "lm.sg", "--checkpoint", "run/checkpoint.npz"],
                 ["train", "lm.sg", "--resume", "run"]):
        err = fails(capsys, *argv)
        assert "run/checkpoint.npz" in err and "does not match its digest" in err, err


def test_a_checkpoint_without_a_digest_still_loads(tmp_path):
    """Checkpoints written before the digest existed load as before."""
    ck.save(tmp_path / "c.npz", params(), {"model": "m"})
    with np.load(tmp_path / "c.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "__meta_sha256__"}
    np.savez(tmp_path / "old.npz", **arrays)
    assert ck.load(tmp_path / "old.npz").meta["model"] == "m"
    _rewrite_meta(tmp_path / "c.npz", lambda m: {**m, "model": "m2"})
    with pytest.raises(DataError, match="edited or damaged"):
        ck.load(tmp_path / "c.npz")


def _replace_array(path, key, value):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[key] = value
    np.savez(path, **arrays)


def test_hand_edited_arrays_that_do_not_fit_are_refused(tmp_path, monkeypatch, capsys):
    """The parameter arrays may be edited, but one of strings raised ValueError inside
    numpy in eval, sample and resume (a traceback), and an optimiser array of another
    shape was read by the fused Adam kernel beyond its end, so the resumed run diverged
    (review 39). Both are refused, naming the array."""
    from conftest import TINY_LM, fails, train_quiet
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.txt").write_text("the cat sat on the mat. " * 20)
    (tmp_path / "lm.sg").write_text(TINY_LM)
    assert train_quiet("lm.sg", "run", "--steps", "2") == 0
    good = (tmp_path / "run/checkpoint.npz").read_bytes()
    shape = ck.load("run/checkpoint.npz").params["W"].shape
    _replace_array("run/checkpoint.npz", "W", np.full(shape, "x"))
    for argv in (["eval", "lm.sg", "--checkpoint", "run"], ["sample", "lm.sg", "--checkpoint",
                 "run"], ["train", "lm.sg", "--resume", "run", "--steps", "3"]):
        err = fails(capsys, *argv)
        assert "run/checkpoint.npz: parameter 'W' holds <U1 values, not real numbers" in err, \
            err
    for key, value, said in (
            ("__optim__/m/W", np.zeros((3, 3), np.float32), "has shape [3, 3], but parameter "
             f"'W' {list(shape)}"),
            ("__optim__/m/W", np.full(shape, "x"), "holds <U1 values, not real numbers"),
            ("__optim__/q/W", np.zeros(shape, np.float32), "is not state of this run's "
             "optimiser (adam keeps m and v for each parameter)")):
        (tmp_path / "run/checkpoint.npz").write_bytes(good)
        _replace_array("run/checkpoint.npz", key, value)
        err = fails(capsys, "train", "lm.sg", "--resume", "run", "--steps", "3")
        assert f"run/checkpoint.npz: the optimiser's array '{key}' {said}" in err, err


def test_optimiser_arrays_resume_in_their_parameters_dtype(tmp_path, monkeypatch):
    """The optimiser's arrays were kept in the checkpoint's dtype: one edited into whole
    numbers (real numbers of its shape, which the docs allow) failed in Adam's in-place
    update, a traceback; a run resumed with another dtype kept float64 moments beside
    float32 parameters (review 44). Each takes its parameter's dtype, and so do the
    moving averages."""
    from conftest import TINY_LM, train_quiet
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.txt").write_text("the cat sat on the mat. " * 20)
    (tmp_path / "lm.sg").write_text(TINY_LM)
    assert train_quiet("lm.sg", "run", "--steps", "2", "--set", "dtype=float64") == 0
    m = ck.load("run/checkpoint.npz").optim["m/W"]
    _replace_array("run/checkpoint.npz", "__optim__/m/W", np.round(m * 1e6).astype(np.int64))
    assert train_quiet("lm.sg", "run", "--resume", "run", "--steps", "3",
                       "--set", "dtype=float32") == 0
    optim = ck.load("run/checkpoint.npz").optim
    assert {a.dtype for a in optim.values()} == {np.dtype(np.float32)}
    # the moving averages (`average = d`) likewise
    assert train_quiet("lm.sg", "avg", "--steps", "2", "--set", "average=0.9") == 0
    avg = ck.load("avg/checkpoint.npz").average["W"]
    _replace_array("avg/checkpoint.npz", "__average__/W", np.round(avg).astype(np.int64))
    assert train_quiet("lm.sg", "avg", "--resume", "avg", "--steps", "3", "--set",
                       "average=0.9") == 0
    assert ck.load("avg/checkpoint.npz").average["W"].dtype == np.float32
