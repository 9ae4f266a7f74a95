import itertools
from fractions import Fraction

import pytest

from steptrace.data import Dataset, seed_dataset
from steptrace.errors import ConfigError, DatasetError
from steptrace.model import article as model
from steptrace.train.trainer import ARTICLE_INIT, Settings, iter_blocks, iter_events, plan


def five_rows() -> Dataset:
    xs = [(1, 2), (3, -1), (0, 4), (2, 2), (-1, 5)]
    return Dataset(
        "five", ("a", "b"), "t",
        tuple(tuple(Fraction(v) for v in x) for x in xs),
        tuple(Fraction(v) for v in (1, 0, 2, 1, 3)),
    )  # fmt: skip


def test_default_weights_are_the_articles_with_the_minus_sign():
    s = Settings.parse(seed_dataset())
    assert s.init == (Fraction(1, 200), Fraction(-3000, 11_600_000), Fraction(1, 5800))
    assert ARTICLE_INIT[1].startswith("-")


def test_batches_use_the_mean_loss_and_one_update_per_batch_with_a_partial_last_batch():
    ds = five_rows()
    s = Settings.parse(ds, lr="1/10", batch_size=2, init="1/2,1/4")
    events = list(iter_events(ds, s))
    assert [(e.step, e.sample) for e in events] == [(0, 0), (0, 1), (1, 2), (1, 3), (2, 4)]
    w = s.init
    for step in range(3):
        rows = [e for e in events if e.step == step]
        m = len(rows)  # 2, 2, then the partial batch of 1
        assert m == (1 if step == 2 else 2)
        grads = []
        for e in rows:
            assert e.w_before == w
            o2 = model.dot(w, e.x)
            o3 = o2 if o2 >= 0 else 0
            assert e.loss == Fraction(1, 2) * (o3 - e.y) ** 2  # the sample's own loss
            assert e.d4 == (o3 - e.y) / m  # δ4 of a mean loss
            grads.append(e.grad)
        total = tuple(sum(g[k] for g in grads) for k in range(2))
        w = tuple(wk - Fraction(1, 10) * gk for wk, gk in zip(w, total, strict=True))
        assert all(e.w_after == w for e in rows)


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


@pytest.mark.parametrize("numerics", ["exact", "float64", "float32"])
def test_continuing_from_a_step_gives_the_same_events(numerics):
    ds = five_rows()
    s = Settings.parse(ds, lr="1/100", epochs=3, batch_size=2, init="1/2,1/4",
                       numerics=numerics, shuffle=True, seed=3)  # fmt: skip
    events = list(iter_events(ds, s))
    resumed = list(iter_events(ds, s, start_step=4, w=events[7].w_before))
    assert events[7].step == 4
    assert resumed == events[7:]


@pytest.mark.parametrize("numerics", ["exact", "float64", "float32"])
def test_blocks_end_on_step_boundaries_and_carry_every_row(numerics):
    ds = five_rows()
    s = Settings.parse(ds, lr="1/100", epochs=7, batch_size=2, init="1/2,1/4", numerics=numerics)
    blocks = list(iter_blocks(ds, s, max_rows=4))
    steps = [int(st) for b in blocks for st in b["step"]]
    assert steps == [e.step for e in iter_events(ds, s)]
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
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ConfigError) as info:
        Settings.parse(seed_dataset(), **kwargs)
    assert message in str(info.value)


def test_default_weights_need_three_features():
    with pytest.raises(DatasetError, match="has 2 feature columns but the default weights have 3"):
        Settings.parse(five_rows())
