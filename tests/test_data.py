import json
import sys
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

import steptrace
from steptrace.data import load_dataset, seed_dataset, shapes_dataset
from steptrace.errors import DatasetError
from steptrace.numerics import get_numerics

from .conftest import REPO


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
    with pytest.raises(
        DatasetError,
        match="unknown dataset type '.txt'; give a .csv, .parquet or "
        r"\.npz file, or a folder of PNG images with labels.csv",
    ):
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


# --- images: a CSV of pixels, .npz arrays, a folder of PNG files, the embedded shapes

CONV = [{"type": "conv2d", "out": 2, "kernel": 3, "bias": True}, {"type": "relu"},
        {"type": "maxpool2d", "size": 2}, {"type": "flatten"}]  # fmt: skip


def image_model(tmp_path, shape, out=1):
    """A model file: an input of ``shape`` (None: no shape), the convolution above (for an
    image), a linear layer of ``out`` neurons."""
    layers = [{"type": "input", **({"shape": shape} if shape else {})}, *(CONV if shape else [])]
    path = tmp_path / f"model{out}{'' if shape else '-flat'}.json"
    path.write_text(json.dumps({
        "layers": [*layers, {"type": "linear", "out": out, "bias": True}],
        "loss": "squared_error"}))  # fmt: skip
    return path


def record(run_cli, tmp_path, dataset, model, *args):
    """Record a float64 run of ``dataset``; the run's folder."""
    out = tmp_path / "traces"
    result = run_cli("record", "--dataset", dataset, "--model", model, "--numerics", "float64",
                     "--lr", "1/100", "--seed", "1", "--out", out, *args)  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = out.iterdir()
    assert run_cli("verify", run).exit_code == 0
    return run


def test_a_csv_of_pixels_is_an_image_dataset(tmp_path, run_cli):
    # The targets first and in another order than the file's, named by --target; the 32 pixel
    # columns become a 2 × 4 × 4 image row-major (channel, row, column).
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 5, size=(6, 2, 4, 4))
    frame = pd.DataFrame(pixels.reshape(6, -1), columns=[f"p{i}" for i in range(32)])
    frame.insert(0, "t1", [0, 1, 0, 1, 1, 0])
    frame.insert(0, "t2", [1, 1, 0, 0, 1, 0])
    frame.to_csv(tmp_path / "pixels.csv", index=False)
    run = record(run_cli, tmp_path, tmp_path / "pixels.csv", image_model(tmp_path, [2, 4, 4], 2),
                 "--target", "t1,t2")  # fmt: skip
    np.testing.assert_array_equal(steptrace.load_tensor(run, "x"), pixels)
    np.testing.assert_array_equal(steptrace.load_tensor(run, "y"), frame[["t1", "t2"]])


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_images_are_named_as_the_trace_names_them(tmp_path, run_cli):
    x = np.arange(2 * 2 * 2 * 4).reshape(2, 2, 2, 4)  # N, C, H, W
    path = save_npz(tmp_path / "images.npz", x=x, y=np.array([0, 1]), note=np.zeros(1))
    ds = load_dataset(path)
    assert ds.features[:5] == ("x_1_1_1", "x_1_1_2", "x_1_1_3", "x_1_1_4", "x_1_2_1")
    assert ds.features[-1] == "x_2_2_4" and ds.targets == ("y_1",)
    assert ds.inputs == tuple(tuple(map(Fraction, image.reshape(-1).tolist())) for image in x)
    assert (ds.name, ds.source, ds.outputs) == ("images", str(path.resolve()), ((0,), (1,)))
    # A run's metadata names the columns: --resume reads the file again with them.
    assert load_dataset(path, ds.targets, ds.features) == ds
    run = record(run_cli, tmp_path, path, image_model(tmp_path, [2, 2, 4]))
    np.testing.assert_array_equal(steptrace.load_tensor(run, "x"), x)


def test_npz_values_are_read_exactly_and_targets_can_be_chosen(tmp_path):
    x = np.array([[0.1, 2**60 + 1], [-1.5, 3]], dtype=object).astype(np.float64)
    path = save_npz(tmp_path / "d.npz", x=x, y=np.array([[0.1, 7], [2, 3]], dtype=np.float32))
    ds = load_dataset(path)
    assert (ds.features, ds.targets) == (("x_1", "x_2"), ("y_1", "y_2"))
    # A float is the binary value it holds: 0.1 in float64 is not one tenth, nor in float32.
    assert ds.inputs[0][0] == Fraction(0.1) != Fraction(1, 10)
    assert ds.outputs[0] == (Fraction(float(np.float32(0.1))), Fraction(7))
    ints = save_npz(tmp_path / "ints.npz", x=np.array([[2**62 + 1]]), y=np.array([3], np.uint8))
    assert load_dataset(ints).inputs == ((Fraction(2**62 + 1),),)  # not rounded to a float
    assert load_dataset(path, target="y_2").targets == ("y_2",)
    assert load_dataset(path, target="y_2").features == ("x_1", "x_2")
    assert load_dataset(path, target="y_2", features=["x_2"]).inputs == ((2**60,), (3,))


def test_a_model_without_a_shape_reads_npz_images_flat(tmp_path, run_cli):
    # The shape is the model file's to give: without it the pixels are plain features.
    x = np.arange(12).reshape(2, 1, 2, 3) % 5
    path = save_npz(tmp_path / "flat.npz", x=x, y=np.array([1, 0]))
    run = record(run_cli, tmp_path, path, image_model(tmp_path, None))
    np.testing.assert_array_equal(steptrace.load_tensor(run, "x"), x.reshape(2, 6))


NPZ_ERRORS = [
    ({"x": np.zeros((2, 3))}, "d.npz: no array 'y' (the file holds: x); save the inputs as x "
     "and the targets as y"),
    ({"a": np.zeros(2)}, "d.npz: no array 'x' or 'y' (the file holds: a)"),
    ({"x": np.zeros((2, 3, 3)), "y": np.zeros(2)},
     "d.npz: array 'x' has shape (2, 3, 3); give (N, features), or (N, C, H, W) for images "
     "(grey images: C = 1)"),
    ({"x": np.zeros(2), "y": np.zeros(2)}, "d.npz: array 'x' has shape (2,); give (N, features)"),
    ({"x": np.zeros((2, 3)), "y": np.zeros((2, 1, 1))},
     "d.npz: array 'y' has shape (2, 1, 1); give (N,) or (N, targets)"),
    ({"x": np.zeros((2, 3)), "y": np.zeros(3)},
     "d.npz: x has 2 rows but y has 3; give one row of y per row of x"),
    ({"x": np.zeros((2, 3)), "y": np.zeros((2, 0))},
     "d.npz: array 'y' has shape (2, 0): no targets"),
    ({"x": np.zeros((2, 0)), "y": np.zeros(2)}, "d.npz: array 'x' has shape (2, 0): no features"),
    ({"x": np.zeros((0, 3)), "y": np.zeros(0)}, "d.npz: the dataset has no rows"),
    ({"x": np.array([[1.0, np.nan]]), "y": np.zeros(1)},
     "d.npz: column 'x_2', row 0 is nan; values must be finite"),
    ({"x": np.zeros((2, 1)), "y": np.array([1, -np.inf], np.float32)},
     "d.npz: column 'y_1', row 1 is -inf; values must be finite"),
    ({"x": np.zeros((1, 2), bool), "y": np.zeros(1)},
     "d.npz: array 'x' holds true/false values; give integers or floats"),
    ({"x": np.zeros((1, 2)), "y": np.array(["a"])}, "d.npz: array 'y' holds text; give integers"),
    ({"x": np.zeros((1, 2), complex), "y": np.zeros(1)}, "d.npz: array 'x' holds complex numbers"),
    ({"x": np.array([[1, "a"]], dtype=object), "y": np.zeros(1)},
     "d.npz: array 'x' holds Python objects; give integers or floats (steptrace does not "
     "unpickle data files)"),
]  # fmt: skip


@pytest.mark.parametrize(("arrays", "message"), NPZ_ERRORS)
def test_bad_npz_datasets_are_named_and_explained(tmp_path, arrays, message):
    path = save_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_npz_files_that_are_not_archives_of_arrays(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(DatasetError, match="one.npz: holds a single array, not arrays named x"):
        load_dataset(tmp_path / "one.npz")
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    with pytest.raises(DatasetError, match="text.npz: cannot be read as npz: "):
        load_dataset(tmp_path / "text.npz")


RAN = []


def _ran(*args):
    RAN.append(args)


class Payload:
    """An object whose unpickling calls _ran: loading it would run the file's code."""

    def __reduce__(self):
        return (_ran, ("unpickled",))


def test_an_object_array_is_never_unpickled(tmp_path):
    path = save_npz(tmp_path / "evil.npz", x=np.array([Payload()], dtype=object), y=np.zeros(1))
    with pytest.raises(DatasetError, match="holds Python objects"):
        load_dataset(path)
    assert RAN == []
    np.load(path, allow_pickle=True)["x"]  # the test's own check that the payload would run
    assert RAN == [("unpickled",)]


def save_pngs(folder, images, labels="file,target\n"):
    """PNG files ``0.png, 1.png …`` of ``images`` (H × W or H × W × 3 uint8 arrays) and a
    labels.csv of ``labels`` (its header and rows)."""
    from PIL import Image

    folder.mkdir(exist_ok=True)
    for i, pixels in enumerate(images):
        pixels = np.asarray(pixels)
        pixels = pixels if pixels.dtype == np.uint16 else pixels.astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    (folder / "labels.csv").write_text(labels)
    return folder


def test_a_folder_of_grey_pngs_reads_each_value_k_as_k_over_255(tmp_path, run_cli):
    grey = np.array([[[0, 255, 1, 2]] * 4, [[128, 51, 3, 4]] * 4])
    folder = save_pngs(tmp_path / "digits", grey, "file,one,two\n1.png,1,0.5\n0.png,0,1/3\n")
    ds = load_dataset(folder)
    assert (ds.name, ds.source, ds.targets) == ("digits", str(folder.resolve()), ("one", "two"))
    assert ds.features[:5] == ("x_1_1_1", "x_1_1_2", "x_1_1_3", "x_1_1_4", "x_1_2_1")
    assert len(ds.features) == 16
    assert ds.inputs[0][:4] == (
        Fraction(128, 255),
        Fraction(1, 5),
        Fraction(1, 85),
        Fraction(4, 255),
    )
    assert ds.inputs[1][:2] == (0, 1)
    assert ds.outputs == ((1, Fraction(1, 2)), (0, Fraction(1, 3)))  # labels read like CSV cells
    assert load_dataset(folder, target="two").features == ds.features
    assert load_dataset(folder, ds.targets, ds.features) == ds
    run = record(run_cli, tmp_path, folder, image_model(tmp_path, [1, 4, 4], 2))
    np.testing.assert_array_equal(
        steptrace.load_tensor(run, "x"), grey[[1, 0], np.newaxis] / 255)  # fmt: skip


def test_rgb_pngs_are_three_channels_red_green_blue(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1] = (255, 0, 51)  # row 1, column 2: red, no green, a fifth of blue
    rgb[1, 0, 1] = 102  # row 2, column 1: 2/5 green
    ds = load_dataset(save_pngs(tmp_path / "rgb", [rgb], "file,t\n0.png,1\n"))
    image = dict(zip(ds.features, ds.inputs[0], strict=True))
    assert len(image) == 12
    assert (image["x_1_1_2"], image["x_2_1_2"], image["x_3_1_2"]) == (1, 0, Fraction(1, 5))
    assert image["x_2_2_1"] == Fraction(2, 5)
    assert sum(image.values()) == Fraction(8, 5)


def test_bilevel_pngs_are_grey_with_values_0_and_1(tmp_path):
    bits = np.array([[0, 255], [255, 0]], np.uint8)
    from PIL import Image

    folder = tmp_path / "bits.v2"
    folder.mkdir()
    Image.fromarray(bits).convert("1").save(folder / "a.png")
    (folder / "labels.csv").write_text("file,t\na.png,0\n")
    ds = load_dataset(folder)
    assert ds.inputs == ((0, 1, 1, 0),)
    assert ds.name == "bits.v2"  # a folder's whole name: it has no suffix to drop


def bad_folders(folder):
    """Folders of PNG images each wrong one way, and the line that says so."""
    from PIL import Image

    one = np.zeros((2, 2), np.uint8)
    yield save_pngs(folder / "a", [one], "t\n1\n"), (
        "a/labels.csv: no column 'file' (columns: ['t']); name each image's PNG file in a column "
        "'file'")  # fmt: skip
    yield save_pngs(folder / "b", [one], "file\n0.png\n"), "b/labels.csv: needs a target column"
    yield save_pngs(folder / "c", [one], "file,t\n"), "c/labels.csv: the dataset has no rows"
    yield (
        save_pngs(folder / "d", [one], "file,t\n0.png,1\nnone.png,0\n"),
        ("d/labels.csv: column 'file', row 1: 'none.png' is not a file in d"),
    )
    yield (
        save_pngs(folder / "e", [one], "file,t\n,1\n"),
        "e/labels.csv: column 'file', row 0 is empty",
    )
    yield (
        save_pngs(folder / "f", [one], "file,t\n0.png,x\n"),
        ("f/labels.csv: column 't', row 0 must be a number such as 0.5, 1e-7 or 1/200"),
    )
    yield (
        save_pngs(folder / "g", [one], "file,t\n0.png,nan\n"),
        ("g/labels.csv: column 't', row 0 is nan; values must be finite"),
    )
    yield (
        save_pngs(folder / "h", [one, np.zeros((2, 3))], "file,t\n0.png,1\n1.png,0\n"),
        ("1.png is 2×3 pixels (rows×columns) but 0.png is 2×2; give images of one size"),
    )
    yield (
        save_pngs(folder / "i", [one, np.zeros((2, 2, 3))], "file,t\n0.png,1\n1.png,0\n"),
        ("1.png is RGB but 0.png is grey; give images of one kind"),
    )
    yield (
        save_pngs(folder / "j", [np.zeros((2, 2, 4))], "file,t\n0.png,1\n"),
        ("0.png: an RGBA image (transparency); give grey or RGB images, 8 bits a channel"),
    )
    yield (
        save_pngs(folder / "k", [np.zeros((2, 2), np.uint16)], "file,t\n0.png,1\n"),
        ("0.png: a 16-bit grey image; give grey or RGB images, 8 bits a channel"),
    )
    palette = save_pngs(folder / "l", [], "file,t\n0.png,1\n")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).convert("P").save(palette / "0.png")
    yield palette, "0.png: a palette (P) image; give grey or RGB images"
    jpeg = save_pngs(folder / "m", [], "file,t\n0.jpg,1\n")
    Image.fromarray(one).save(jpeg / "0.jpg")
    yield jpeg, "0.jpg: cannot be read as PNG: cannot identify image file"
    yield (
        save_pngs(folder / "n", [one], "file,x_1_1_1\n0.png,1\n"),
        ("n/labels.csv: duplicate column(s) x_1_1_1; give each column its own name"),
    )
    yield (
        save_pngs(folder / "o", [np.zeros((4, 4))], "file,t\n0.png,1\n"),
        (
            "o/labels.csv: no target column 'u' (columns: ['x_1_1_1', 'x_1_1_2', 'x_1_1_3', "
            "'x_1_1_4', …, 'x_1_4_2', 'x_1_4_3', 'x_1_4_4', 't'])"
        ),
    )  # --target u below
    (folder / "p").mkdir()
    yield (
        folder / "p",
        (
            f"dataset '{folder}/p' is a folder without labels.csv; give a .csv, .parquet or .npz "
            "file, or a folder of PNG images with labels.csv"
        ),
    )


def test_bad_png_folders_are_named_and_explained(tmp_path):
    for folder, message in bad_folders(tmp_path):
        with pytest.raises(DatasetError) as info:
            load_dataset(folder, target="u" if folder.name == "o" else None)
        assert message in str(info.value), folder.name
        assert "\n" not in str(info.value)


def test_without_pillow_one_line_says_what_to_install(tmp_path, monkeypatch):
    folder = save_pngs(tmp_path / "p", [np.zeros((2, 2))], "file,t\n0.png,1\n")
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now fails, as if not installed
    with pytest.raises(DatasetError) as info:
        load_dataset(folder)
    assert str(info.value) == (
        "a folder of PNG images needs Pillow: pip install 'steptrace[images]'")  # fmt: skip


def test_bad_image_datasets_stop_the_cli_in_one_line_writing_nothing(tmp_path, run_cli):
    bad = [save_npz(tmp_path / "d.npz", x=np.zeros((2, 3)), y=np.zeros(3)),
           save_pngs(tmp_path / "f", [np.zeros((2, 2))], "file,t\n0.png,1\n1.png,0\n"),
           tmp_path / "d.npy"]  # fmt: skip
    for dataset in bad:
        out = tmp_path / "traces"
        result = run_cli("record", "--dataset", dataset, "--out", out)
        assert result.exit_code == 2
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
        assert not out.exists() and result.stdout == ""


SHAPES_SHA256 = "abc3e28097e973b50a4b47068eab12576f9fd0d33705a34f7af07b6a28f742b2"
FIRST_CROSS_AND_SQUARE = """\
........  ........
..#.....  .###....
.###....  .#.#....
..#.....  .###....
........  ........
........  ........
........  ........
........  ........"""


def picture(image):
    return ["".join(".#"[int(v)] for v in image[r * 8 : r * 8 + 8]) for r in range(8)]


def test_the_shapes_are_drawn_the_same_way_every_time():
    ds = shapes_dataset()
    assert ds == shapes_dataset() == load_dataset("shapes", ds.targets, ds.features)
    assert ds.sha256 == SHAPES_SHA256  # a changed drawing changes every recorded shapes run
    assert (ds.name, ds.source, len(ds), ds.targets) == ("shapes", "shapes", 16, ("cross",))
    assert ds.features == tuple(f"x_1_{i}_{j}" for i in range(1, 9) for j in range(1, 9))
    rows = zip(*(picture(image) for image in ds.inputs[:2]), strict=True)
    assert "\n".join("  ".join(row) for row in rows) == FIRST_CROSS_AND_SQUARE


def test_the_shapes_labels_say_cross_or_square():
    ds = shapes_dataset()
    assert [y for (y,) in ds.outputs] == [1, 0] * 8  # cross, square, cross, square …
    assert len(set(ds.inputs)) == 16 and {v for x in ds.inputs for v in x} == {0, 1}
    for image, (cross,) in zip(ds.inputs, ds.outputs, strict=True):
        drawn = {(r, c) for r, line in enumerate(picture(image)) for c, v in enumerate(line)
                 if v == "#"}  # fmt: skip
        rows, columns = {r for r, _ in drawn}, {c for _, c in drawn}
        centre = (sorted(rows)[len(rows) // 2], sorted(columns)[len(columns) // 2])
        arm = len(rows) // 2
        assert len(rows) == len(columns) == 2 * arm + 1 and arm in (1, 2)
        if cross:  # a plus: every drawn pixel on the centre's row or column
            assert all(r == centre[0] or c == centre[1] for r, c in drawn)
            assert len(drawn) == 4 * arm + 1
        else:  # a square's outline: every drawn pixel on its border, the centre empty
            assert len(drawn) == 8 * arm and centre not in drawn


def test_the_shapes_dataset_has_fixed_columns():
    with pytest.raises(DatasetError, match="the shapes dataset's columns are fixed: x_1_1_1 … "
                       "x_1_8_8 → cross"):  # fmt: skip
        load_dataset("shapes", target="y")


def test_the_shapes_example_learns_and_verifies(tmp_path, run_cli):
    # The command docs/images.md gives: the loss falls from the first epoch to the last.
    args = ["--dataset", "shapes", "--model", "examples/shapes.json", "--numerics", "float64",
            "--lr", "0.05", "--epochs", "20", "--seed", "1"]  # fmt: skip
    assert f"steptrace record {' '.join(args)}\n" in (REPO / "docs/images.md").read_text()
    out = tmp_path / "traces"
    args[3] = str(REPO / args[3])
    result = run_cli("record", *args, "--out", out)
    assert result.exit_code == 0, result.output
    assert "final loss 0.0009320295438397691; did not diverge" in result.output  # as documented
    run = out / "shapes-shapes-float64-lr0.05"
    assert run_cli("verify", run).output.startswith(f"OK {run}: 320 steps, 320 rows, float64")
    loss = steptrace.load_tensor(run, "loss").reshape(20, 16).mean(axis=1)
    assert loss[-1] < loss[0] / 50
    assert steptrace.load_tensor(run, "x").shape == (320, 1, 8, 8)
