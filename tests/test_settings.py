"""Settings and the schedule: batches, shuffles, models, and bad settings refused clearly."""

import itertools
from fractions import Fraction

import pytest

from steptrace.data import seed_dataset
from steptrace.errors import ConfigError, ModelError
from steptrace.model import ARTICLE_INIT
from steptrace.schedule import plan
from steptrace.train.columns import iter_blocks
from steptrace.train.settings import Settings

from .conftest import REPO
from .reference import dataset, reference

FIVE = dataset([(1, 2, 1), (3, -1, 0), (0, 4, 2), (2, 2, 1), (-1, 5, 3)], "five")


def test_default_model_is_the_articles_with_the_minus_sign():
    s = Settings.parse(seed_dataset())
    assert s.model.name == "article"
    w = [[Fraction(1, 200), Fraction(-3000, 11_600_000), Fraction(1, 5800)]]
    assert s.model.init[2].w.tolist() == w
    assert ARTICLE_INIT[1].startswith("-")


def test_batches_use_the_mean_loss_and_one_update_per_batch_with_a_partial_last_batch():
    s = Settings.parse(FIVE, lr="1/10", batch_size=2, init="1/2,1/4")
    rows = reference(FIVE, s)
    assert list(zip(rows["step"], rows["sample"], strict=True)) == [
        (0, 0), (0, 1), (1, 2), (1, 3), (2, 4),
    ]  # fmt: skip
    w = [Fraction(1, 2), Fraction(1, 4)]
    for step in range(3):
        idx = [i for i, st in enumerate(rows["step"]) if st == step]
        m = len(idx)  # 2, 2, then the partial batch of 1
        assert m == (1 if step == 2 else 2)
        total = [Fraction(0), Fraction(0)]
        for i in idx:
            value = {
                c: Fraction(rows[c + "_exact"][i])
                for c in ("x_1", "x_2", "y_1", "o3_1", "loss", "d4_1", "grad_w2_1_1", "grad_w2_1_2")
            }
            assert [Fraction(rows[f"w2_before_1_{k}_exact"][i]) for k in (1, 2)] == w
            o2 = w[0] * value["x_1"] + w[1] * value["x_2"]
            o3 = o2 if o2 >= 0 else 0
            assert value["o3_1"] == o3
            assert value["loss"] == Fraction(1, 2) * (o3 - value["y_1"]) ** 2  # its own loss
            assert value["d4_1"] == (o3 - value["y_1"]) / m  # δ4 of a mean loss
            total = [t + value[f"grad_w2_1_{k}"] for k, t in zip((1, 2), total, strict=True)]
        w = [wk - Fraction(1, 10) * gk for wk, gk in zip(w, total, strict=True)]
        for i in idx:
            assert [Fraction(rows[f"w2_after_1_{k}_exact"][i]) for k in (1, 2)] == w  # fmt: skip


def test_shuffling_is_deterministic_per_seed_and_visits_every_sample_each_epoch():
    steps = list(plan(7, epochs=4, batch_size=3, shuffle=True, seed=11))
    again = list(plan(7, epochs=4, batch_size=3, shuffle=True, seed=11))
    other = list(plan(7, epochs=4, batch_size=3, shuffle=True, seed=12))
    assert steps == again
    assert steps != other
    for epoch in range(4):
        seen = [i for st in steps if st.epoch == epoch for i in st.samples]
        assert sorted(seen) == list(range(7))
    assert [len(st.samples) for st in steps if st.epoch == 0] == [3, 3, 1]
    assert [st.step for st in steps] == list(range(12))


def test_unshuffled_order_is_the_dataset_order():
    assert [st.samples for st in plan(3, 2, 1)] == [(0,), (1,), (2,), (0,), (1,), (2,)]


def test_shuffle_without_seed_picks_one_and_records_it():
    s = Settings.parse(seed_dataset(), shuffle=True)
    assert isinstance(s.seed, int)


def test_a_model_with_drawn_weights_picks_a_seed_and_records_it_and_the_weights():
    model = {"layers": [{"type": "input"}, {"type": "linear", "out": 1}]}
    s = Settings.parse(seed_dataset(), model=model)
    assert isinstance(s.seed, int) and s.model.drawn
    again = Settings.parse(seed_dataset(), model=model, seed=s.seed)
    assert again.model.to_json() == s.model.to_json()


def test_an_article_run_without_shuffle_records_no_seed():
    assert Settings.parse(seed_dataset()).seed is None


@pytest.mark.parametrize("numerics", ["exact", "float64", "float32"])
def test_blocks_end_on_step_boundaries_and_carry_every_row(numerics):
    s = Settings.parse(FIVE, lr="1/100", epochs=7, batch_size=2, init="1/2,1/4", numerics=numerics)
    blocks = list(iter_blocks(FIVE, s, max_rows=4))
    steps = [int(st) for b in blocks for st in b["step"]]
    assert steps == [st.step for st in plan(5, 7, 2) for _ in st.samples]
    for a, b in itertools.pairwise(blocks):
        assert a["step"][-1] != b["step"][0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": "0"}, "learning rate must be greater than 0, got 0"),
        ({"lr": "-1"}, "learning rate must be greater than 0, got -1"),
        ({"lr": "nan"}, "learning rate must be a finite number, got 'nan'"),
        ({"lr": "1e-50", "numerics": "float32"}, "learning rate 1e-50 rounds to 0 in float32"),
        ({"lr": "1e39", "numerics": "float32"}, "learning rate 1e39 is too large for float32"),
        ({"epochs": 0}, "epochs must be a whole number of at least 1, got 0"),
        ({"batch_size": 0}, "batch size must be a whole number of at least 1, got 0"),
        ({"batch_size": 4}, "batch size 4 is larger than the dataset (3 rows)"),
        ({"init": "1,2"}, "--init has 2 weights but dataset 'seed' has 3 feature columns"),
        ({"init": "1,x,3"}, "initial weight 2 must be a number such as 0.5, 1e-7 or 1/200"),
        ({"numerics": "float16"}, "unknown numerics 'float16'"),
        ({"seed": -1}, "seed must be a whole number of at least 0, got -1"),
        (
            {"init": "1,2,3", "model": REPO / "examples" / "two-layer.json"},
            "--init sets the article model's weights; a model file gives its own",
        ),
        (
            {"numerics": "exact", "model": REPO / "examples" / "logistic.json"},
            "layer 3 (logistic) is not rational (it needs e^x): exact arithmetic cannot run it",
        ),
        (
            {
                "numerics": "float32",
                "model": {
                    "layers": [
                        {"type": "input"},
                        {"type": "linear", "out": 1, "weights": [["1e39", "0", "0"]]},
                    ]
                },
            },
            "layer 2 (linear): weights[1][1] (1e+39) is too large for float32",
        ),
        (
            {"model": {"layers": [{"type": "input"}, {"type": "linear", "out": 2}]}},
            "the model's last layer has 2 outputs but the dataset has 1 target column "
            "(good_shape); give one target per output neuron with --target a,b",
        ),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ConfigError) as info:
        Settings.parse(seed_dataset(), **kwargs)
    assert message in str(info.value)


def test_the_articles_weights_need_three_features():
    with pytest.raises(
        ConfigError, match="dataset 'five' has 2 feature columns but the article's weights are 3"
    ):
        Settings.parse(FIVE)


def test_model_problems_are_model_errors():
    with pytest.raises(ModelError):
        Settings.parse(seed_dataset(), model={"layers": [{"type": "conv"}]})
