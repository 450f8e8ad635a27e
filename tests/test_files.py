"""wm.files: atomic writes, and the JSON/CSV formats of metrics files."""

import json
import os

import pytest

from wm.files import METRIC_DIGITS, atomic_path, write_bytes, write_csv, write_json


def test_atomic_path_renames_a_hidden_sibling_on_success(tmp_path):
    path = tmp_path / "new" / "folder" / "model.pt"
    with atomic_path(path) as tmp:
        # a hidden sibling that keeps the suffix (writers that pick the format by it) and names the writer
        assert tmp == path.with_name(f".model.{os.getpid()}.tmp.pt")
        assert tmp.parent.is_dir()  # parents are created
        tmp.write_bytes(b"complete")
        assert not path.exists()  # nothing under the real name until the block succeeds
    assert path.read_bytes() == b"complete"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


@pytest.mark.parametrize("existing", [False, True])
def test_atomic_path_commits_nothing_on_failure(tmp_path, existing):
    path = tmp_path / "metrics.json"
    if existing:
        path.write_text("old")
    with pytest.raises(RuntimeError, match="writer died"), atomic_path(path) as tmp:
        tmp.write_text("half-done")
        raise RuntimeError("writer died")
    if existing:
        assert path.read_text() == "old"  # the previous output is untouched
    assert [p.name for p in tmp_path.iterdir()] == (["metrics.json"] if existing else [])  # no temporary left


def test_atomic_path_tolerates_a_writer_that_wrote_nothing_on_failure(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "x.h5"):
        raise KeyboardInterrupt
    assert not list(tmp_path.iterdir())


def test_write_bytes_replaces(tmp_path):
    path = tmp_path / "a" / "b.bin"
    write_bytes(path, b"one")
    write_bytes(path, b"two")
    assert path.read_bytes() == b"two" and [p.name for p in path.parent.iterdir()] == ["b.bin"]


def test_write_json_sorted_keys_and_rounded_floats(tmp_path):
    path = tmp_path / "m.json"
    data = {
        "b": 0.1 + 0.2,  # 0.30000000000000004: its last bits depend on the BLAS kernels of the machine
        "a": [1 / 3, {"x": 2 / 3, "n": 7}, (1e-20 / 3, 12345678901234.567)],
        "flag": True,
        "s": "text",
        "big": 2**60,
    }
    write_json(path, data)
    text = path.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"') < text.index('"big"') < text.index('"flag"')
    assert json.loads(text) == {
        "a": [0.333333333333, {"n": 7, "x": 0.666666666667}, [3.33333333333e-21, 12345678901200.0]],
        "b": 0.3,
        "big": 2**60,  # integers are exact
        "flag": True,
        "s": "text",
    }
    assert METRIC_DIGITS == 12
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_write_csv_six_significant_digits(tmp_path):
    path = tmp_path / "p" / "history.csv"
    rows = [
        {"epoch": 1, "loss": 0.123456789, "mse": 1e-7, "name": "a"},
        {"epoch": 2, "loss": 0.0987654321, "mse": 12345678.9, "name": "b"},
    ]
    write_csv(path, rows)
    assert path.read_text() == "epoch,loss,mse,name\n1,0.123457,1e-07,a\n2,0.0987654,1.23457e+07,b\n"
