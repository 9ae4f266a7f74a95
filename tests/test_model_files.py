"""Model files on the command line: a good one records every layer; a bad one gets one
``Error:`` line naming the layer and the field, and nothing is written."""

from __future__ import annotations

import json

import pytest

import steptrace

from .conftest import REPO

TWO_LAYER = REPO / "examples" / "two-layer.json"


def test_record_a_model_file_and_its_every_layer(traces, run_cli):
    result = run_cli("record", "--model", TWO_LAYER, "--out", traces, "--lr", "1/1000")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{traces}/seed-two-layer-exact-lr1_1000: 3 steps, 3 rows;")
    trace = steptrace.open_trace(traces / "seed-two-layer-exact-lr1_1000")
    assert [t.name for t in trace.tensors if t.name.startswith(("w", "b"))] == [
        "w2_before", "w2_after", "b2_before", "b2_after", "w4_before", "w4_after",
    ]  # fmt: skip
    assert trace.meta["model"]["layers"][1]["biases"] == ["0", "1/10"]


def test_every_example_model_records_and_verifies(traces, run_cli):
    for path in sorted((REPO / "examples").glob("*.json")):
        # An image model records the embedded images, in float64: exact fractions outgrow
        # the exact limit within the first epoch of a convolution.
        image = "shape" in json.loads(path.read_text())["layers"][0]
        numerics = "float64" if "logistic" in path.name or image else "exact"
        result = run_cli("record", "--model", path, "--out", traces, "--numerics", numerics,
                         "--lr", "1/100000", "--name", path.stem,
                         "--dataset", "shapes" if image else "seed")  # fmt: skip
        assert result.exit_code == 0, (path.name, result.output)
        assert steptrace.verify(traces / path.stem).ok, path.name


def test_several_targets_one_per_output_neuron(tmp_path, traces, run_cli):
    data = tmp_path / "two.csv"
    data.write_text("a,b,t1,t2\n1,2,1,0\n0,1,0,1\n")
    model = tmp_path / "m.json"
    linear = {"type": "linear", "out": 2, "weights": [["1", "0"], ["0", "1"]]}
    model.write_text(json.dumps({"layers": [{"type": "input"}, linear]}))
    result = run_cli("record", "--dataset", data, "--target", "t1,t2", "--model", model,
                     "--out", traces)  # fmt: skip
    assert result.exit_code == 0, result.output
    y = steptrace.load_tensor(traces / "two-m-exact-lr1", "y", exact=True)
    assert y.tolist() == [[1, 0], [0, 1]]


def bad(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


LINEAR = {"type": "linear", "out": 1, "weights": [["1", "2", "3"]]}
IMAGE = {"type": "input", "shape": [3, 1, 1]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"layers": [', "bad.json: not valid JSON (Expecting value at line 1, column 13)"),
        ("[1, 2]", 'bad.json: a model file is a JSON object {"layers": [...], "loss": ...}'),
        ({"layers": []}, 'bad.json: "layers" must be a non-empty list of layers'),
        ({"layers": [{"type": "input"}, LINEAR], "loss": "hinge"},
         "bad.json: unknown loss 'hinge'; choose one of: squared_error"),
        ({"layers": [{"type": "input"}, {"type": "dropout"}]},
         "bad.json: layer 2: unknown type 'dropout'; choose one of: input, identity, linear, "
         "relu, leaky_relu, heaviside, logistic, conv2d, maxpool2d, flatten, normalization"),
        ({"layers": [LINEAR]},
         "bad.json: layer 1 (linear): the input layer comes first and only first"),
        ({"layers": [{"type": "input"}, {**LINEAR, "weights": [["1", "2"]]}]},
         "bad.json: layer 2 (linear): weights: row 1 needs 3 values (one per input of the "
         "layer below), got 2 values"),
        ({"layers": [{"type": "input"}, {**LINEAR, "out": 2}]},
         'bad.json: layer 2 (linear): weights: needs 2 rows (one per neuron, "out"), got 1 rows'),
        ({"layers": [{"type": "input"}, {**LINEAR, "weights": [["1", "x", "3"]]}]},
         "bad.json: layer 2 (linear): weights[1][2] must be a number such as 0.5, 1e-7 or 1/200, "
         "got 'x'"),
        ({"layers": [{"type": "input"}, {**LINEAR, "weights": [["1", "NaN", "3"]]}]},
         "layer 2 (linear): weights[1][2] must be a finite number, got 'NaN'"),
        ('{"layers": [{"type": "input"}, {"type": "linear", "out": 1, '
         '"weights": [[1, Infinity, 3]]}]}',
         "layer 2 (linear): weights[1][2] must be a finite number, got 'Infinity'"),
        ({"layers": [{"type": "input"}, {**LINEAR, "bias": True, "biases": ["1", "2"]}]},
         "bad.json: layer 2 (linear): biases: needs a list of 1 values (one per neuron), "
         "got 2 values"),
        ({"layers": [{"type": "input"}, {**LINEAR, "bias": False, "biases": ["1"]}]},
         'bad.json: layer 2 (linear): "biases" given but "bias" is false'),
        ({"layers": [{"type": "input"}, {**LINEAR, "bais": True}]},
         "bad.json: layer 2 (linear): unknown field 'bais' (fields: type, out, bias, weights, "
         "biases)"),
        ({"layers": [{"type": "input"}, {**LINEAR, "out": 0}]},
         'bad.json: layer 2 (linear): "out" must be a whole number of neurons ≥ 1, got 0'),
        ({"layers": [{"type": "input"}, LINEAR, {"type": "leaky_relu", "slope": "steep"}]},
         "bad.json: layer 3 (leaky_relu): slope must be a number such as 0.5"),
        ({"layers": [{"type": "input"}, {"type": "linear", "out": 2}]},
         "the model's last layer has 2 outputs but the dataset has 1 target column (good_shape); "
         "give one target per output neuron with --target a,b"),
        ({"layers": [{"type": "input"}, {"type": "linear", "out": 100_000_000}]},
         "bad.json: layer 2 (linear): 100,000,000 neurons × 3 inputs is 300,000,000 weights; a "
         "trace holds a column per value, so a layer has at most 100,000"),
        ("[" * 100_000 + "]" * 100_000, "bad.json: nested too deeply to be a model file"),
        ({"layers": [{"type": "input"}, {**LINEAR, "weights": [["1e99999999999", "2", "3"]]}]},
         "bad.json: layer 2 (linear): weights[1][1] '1e99999999999' is too long to read exactly"),
        # The images chapters' layers, on the article's three features as a 3 × 1 × 1 image.
        ({"layers": [IMAGE, {"type": "conv2d", "out": 1, "kernel": 2}]},
         'bad.json: layer 2 (conv2d): "kernel" must be an odd whole number (1, 3, 5 …: the '
         "output keeps the input's size), got 2"),
        ({"layers": [IMAGE, {"type": "conv2d", "out": 1, "kernel": None}]},
         'bad.json: layer 2 (conv2d): "kernel" must be an odd whole number'),
        ({"layers": [IMAGE, {"type": "conv2d", "out": 1, "kernel": 1, "weights": [[["1"]]]}]},
         "bad.json: layer 2 (conv2d): weights[1]: needs 3 values, got 1 values: the weights of "
         "a conv2d layer are out × in × kernel × kernel (1 × 3 × 1 × 1)"),
        ({"layers": [{"type": "input"}, {"type": "conv2d", "out": 1}]},
         "bad.json: layer 2 (conv2d): a conv2d layer takes images (channels × rows × columns), "
         'not a vector of 3; give the input layer a "shape": [C, H, W]'),
        ({"layers": [{"type": "input", "shape": [1, 1, 3]}, {"type": "maxpool2d", "size": 2}]},
         'bad.json: layer 2 (maxpool2d): "size" 2 does not divide the 1 × 3 grids it pools'),
        ({"layers": [IMAGE, {"type": "linear", "out": 1}]},
         "bad.json: layer 2 (linear): a linear layer takes a vector, not a 3 × 1 × 1 image; put "
         'a {"type": "flatten"} layer before it'),
        ({"layers": [{"type": "input", "shape": [2, 2, 2]}, {"type": "flatten"}]},
         'bad.json: layer 1 (input): "shape" 2×2×2 holds 8 values but the data has 3 feature '
         "columns"),
        ({"layers": [{"type": "input", "shape": [3, 1]}]},
         'bad.json: layer 1 (input): "shape" must be [channels, rows, columns] of whole numbers'),
        ({"layers": [{"type": "input"}, LINEAR, {"type": "normalization"}]},
         "layer 3 (normalization) is not rational (it needs a square root): exact arithmetic "
         "cannot run it; use --numerics float64 or float32"),
        ({"layers": [{"type": "input"}, LINEAR, {"type": "normalization", "eps": "0"}]},
         'bad.json: layer 3 (normalization): "eps" must be greater than 0, got 0'),
        ({"layers": [{"type": "input"}, LINEAR, {"type": "normalization", "gamma": ["1", "2"]}]},
         "bad.json: layer 3 (normalization): gamma: needs a list of 1 values (one per neuron)"),
    ],
)  # fmt: skip
def test_a_bad_model_file_gets_one_line_naming_layer_and_field_and_writes_nothing(
    tmp_path, traces, run_cli, content, message
):
    result = run_cli("record", "--model", bad(tmp_path, content), "--out", traces)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert message in result.stderr
    assert list(traces.iterdir()) == []


def test_a_missing_model_file_and_exact_logistic_write_nothing(traces, run_cli):
    result = run_cli("record", "--model", traces / "nope.json", "--out", traces)
    assert result.exit_code == 2 and "does not exist (or use --model article)" in result.stderr
    result = run_cli("record", "--model", REPO / "examples" / "logistic.json", "--out", traces)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: layer 3 (logistic) is not rational (it needs e^x)")
    assert list(traces.iterdir()) == []


def test_init_is_for_the_articles_model_only(traces, run_cli):
    result = run_cli("record", "--model", TWO_LAYER, "--init", "1,2,3", "--out", traces)
    assert result.exit_code == 2
    assert "--init sets the article model's weights; a model file gives its own" in result.stderr
