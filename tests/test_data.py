from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from steptrace.data import load_dataset, seed_dataset
from steptrace.errors import DatasetError
from steptrace.numerics import get_numerics


def test_the_seed_is_the_articles_three_patients():
    ds = seed_dataset()
    assert ds.features == ("broccoli", "tagada_strawberries", "workout_hours")
    assert ds.inputs == ((100, 2000, 100), (200, 0, 0), (0, 2000, 3000))
    assert ds.outputs == ((0,), (1,), (1,))  # bad shape, good shape, good shape
    assert ds.targets == ("good_shape",)
    assert load_dataset("seed") == ds


def test_csv_cells_are_read_exactly(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("a,b,shape\n0.1,1/3,1\n2e-3, 7,0\n")
    ds = load_dataset(path)
    assert ds.features == ("a", "b") and ds.targets == ("shape",)
    assert ds.inputs == ((Fraction(1, 10), Fraction(1, 3)), (Fraction(1, 500), Fraction(7)))
    assert ds.name == "people"


def test_target_and_features_can_be_named(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("y,a,b,c\n1,2,3,4\n")
    ds = load_dataset(path, target="y", features=["c", "a"])
    assert (ds.features, ds.targets, ds.inputs, ds.outputs) == (
        ("c", "a"), ("y",), ((4, 2),), ((1,),))  # fmt: skip


def test_several_targets_one_per_output_neuron(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,t1,t2\n1,2,3,4\n5,6,7,8\n")
    ds = load_dataset(path, target="t1,t2")
    assert (ds.features, ds.targets) == (("a", "b"), ("t1", "t2"))
    assert ds.outputs == ((3, 4), (7, 8))
    assert load_dataset(path, target=["t2", "t1"]).outputs == ((4, 3), (8, 7))
    with pytest.raises(DatasetError, match="no target column 't3'"):
        load_dataset(path, target="t1,t3")
    with pytest.raises(DatasetError, match="names the output columns, comma-separated"):
        load_dataset(path, target="t1,")
    with pytest.raises(DatasetError, match="a target column is named twice"):
        load_dataset(path, target="t1,t1")


def test_parquet_datasets_and_the_hash_depends_on_content_not_file_type(tmp_path):
    frame = pd.DataFrame({"broccoli": [100, 200, 0], "tagada_strawberries": [2000, 0, 2000],
                          "workout_hours": [100, 0, 3000], "good_shape": [0, 1, 1]})  # fmt: skip
    frame.to_parquet(tmp_path / "seed.parquet")
    frame.to_csv(tmp_path / "seed.csv", index=False)
    from_parquet = load_dataset(tmp_path / "seed.parquet")
    assert from_parquet.inputs == seed_dataset().inputs
    assert from_parquet.sha256 == load_dataset(tmp_path / "seed.csv").sha256
    assert from_parquet.sha256 == seed_dataset().sha256


def test_values_are_rounded_once_into_each_number_system():
    ds = seed_dataset()
    x, y = ds.as_arrays(get_numerics("float32"))
    assert x.dtype == np.float32 and x.shape == (3, 3) and y.tolist() == [[0], [1], [1]]
    exact_x, _ = ds.as_arrays(get_numerics("exact"))
    assert exact_x.dtype == object and exact_x[2, 2] == Fraction(3000)


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("a,b\n", {}, "d.csv: the dataset has no rows"),
        ("", {}, "d.csv: the file is empty"),
        ("a\n1\n", {}, "d.csv: needs at least one feature column and a target column"),
        ("a,b\n1,2\n", {"target": "t"}, "d.csv: no target column 't' (columns: ['a', 'b'])"),
        ("a,b\n1,2\n", {"features": ["z"]}, "d.csv: no feature column(s) ['z']"),
        ("a,a,t\n1,2,3\n", {}, "d.csv: duplicate column(s) a"),
        ("a,t\nx,1\n", {}, "d.csv: column 'a', row 0 must be a number such as 0.5, 1e-7 or 1/200"),
        ("a,t\n1,NaN\n", {}, "d.csv: column 't', row 0 is NaN; values must be finite"),
        ("a,t\n-inf,1\n", {}, "d.csv: column 'a', row 0 is -inf; values must be finite"),
        ("a,t\n1,\n", {}, "d.csv: column 't', row 0 is empty"),
    ],
)
def test_bad_csv_datasets_are_named_and_explained(tmp_path, content, kwargs, message):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(DatasetError) as info:
        load_dataset(path, **kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_unknown_dataset_files(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope.csv")
    (tmp_path / "d.txt").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="unknown dataset type '.txt'; use .csv or .parquet"):
        load_dataset(tmp_path / "d.txt")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match="bad.parquet: cannot be read as parquet"):
        load_dataset(tmp_path / "bad.parquet")


def test_values_beyond_a_number_systems_range_are_refused(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("a,t\n1e39,1\n")
    ds = load_dataset(path)
    ds.in_numerics(get_numerics("float64"))
    with pytest.raises(
        DatasetError, match="value 1e\\+39 in column 'a', row 0 is too large for float32"
    ):
        ds.in_numerics(get_numerics("float32"))
