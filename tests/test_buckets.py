"""Min/max buckets aligned on powers of two: merged from finer buckets, or from pieces of a run
read at different times, they equal the buckets of every step taken at once."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from steptrace.views.buckets import MinMax, bucket_width

# Few distinct values, so that ties (the first step reaching a min or max wins) are common.
VALUES = st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, np.inf, -np.inf, np.nan])


def _same(a: MinMax, b: MinMax) -> None:
    assert a.width == b.width
    for field in ("key", "count", "min_step", "max_step"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    for field in ("min_value", "max_value"):  # -0.0 and 0.0 told apart
        assert getattr(a, field).tobytes() == getattr(b, field).tobytes(), field


@given(
    first=st.integers(0, 40),
    values=st.lists(VALUES, min_size=1, max_size=120),
    fine=st.integers(0, 3),
    coarse=st.integers(0, 4),
    cuts=st.lists(st.integers(0, 120), max_size=5),
    gaps=st.none() | st.lists(st.integers(1, 3), min_size=120, max_size=120),
)
def test_buckets_merged_in_any_way_equal_the_buckets_of_every_step(
    first: int, values: list[float], fine: int, coarse: int, cuts: list[int],
    gaps: list[int] | None,
) -> None:  # fmt: skip
    """Steps one after the other (a run's: bucketed as a table) or with gaps (bucketed by
    merging), read in pieces, kept at a finer width and coarsened, or at once: the same."""
    if gaps is None:
        steps = np.arange(first, first + len(values))
    else:
        steps = first + np.cumsum(gaps[: len(values)]) - gaps[0]
    v = np.array(values)
    width = 2 ** (fine + coarse)
    direct = MinMax.of(steps, v, width)
    # The run read in pieces, kept at a finer width, then coarsened.
    bounds = [0, *sorted(c for c in cuts if c < len(values)), len(values)]
    pieces = [MinMax.of(steps[a:b], v[a:b], 2**fine) for a, b in itertools.pairwise(bounds)]
    _same(MinMax.join(pieces, 2**fine).coarsen(width), direct)
    # Grown a piece at a time, as a followed run is.
    grown = MinMax.empty(2**fine)
    for piece in pieces:
        grown = MinMax.join([grown, piece], 2**fine)
    _same(grown.coarsen(width), direct)
    # Every bucket: its steps counted, its min and max the first step that reaches them.
    assert direct.steps() == len(values)
    fields = ("key", "min_value", "min_step", "max_value", "max_step")
    for k, lo, lo_step, hi, hi_step in zip(*(getattr(direct, f) for f in fields), strict=True):
        inside = (steps // width) == k
        finite = v[inside][np.isfinite(v[inside])]
        if len(finite) == 0:
            assert lo == np.inf and hi == -np.inf
            continue
        assert lo == finite.min() and hi == finite.max()
        chosen = steps[inside][np.isfinite(v[inside])]
        assert lo_step == chosen[np.flatnonzero(finite == lo)[0]]
        assert hi_step == chosen[np.flatnonzero(finite == hi)[0]]
    # The points: each bucket's min and max in step order, the finite ones only.
    s, p = direct.points()
    assert np.all(np.diff(s) > 0) and np.all(np.isfinite(p))
    assert set(s.tolist()) == {
        int(x) for x, y in zip(direct.min_step, direct.min_value, strict=True) if np.isfinite(y)
    } | {int(x) for x, y in zip(direct.max_step, direct.max_value, strict=True) if np.isfinite(y)}


@given(lo=st.integers(0, 10**9), span=st.integers(0, 10**7), points=st.integers(2, 5000))
def test_bucket_width_is_the_narrowest_that_fits(lo: int, span: int, points: int) -> None:
    hi = lo + span
    width = bucket_width(lo, hi, span + 1, points)
    if span + 1 <= points:
        assert width == 1
        return
    half = points // 2

    def buckets(w: int) -> int:
        return hi // w - lo // w + 1

    assert width & (width - 1) == 0 and buckets(width) <= half
    assert width == 2 or buckets(width // 2) > half
