from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from steptrace.errors import ConfigError, ExactLimitError
from steptrace.numerics import EXACT_MAX_BITS, get_numerics, parse_exact, to_float32


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-7", Fraction(1, 10_000_000)),
        ("0.1", Fraction(1, 10)),
        ("1/200", Fraction(1, 200)),
        ("-3000/11600000", Fraction(-3, 11600)),
        (" 2.5 ", Fraction(5, 2)),
        (".5", Fraction(1, 2)),
        ("1E3", Fraction(1000)),
        ("+7", Fraction(7)),
        (3, Fraction(3)),
        (0.5, Fraction(1, 2)),
    ],
)
def test_numbers_are_read_exactly(text, value):
    assert parse_exact(text) == value


def test_a_float_is_taken_as_the_binary_value_it_holds():
    assert parse_exact(0.1) == Fraction(3602879701896397, 36028797018963968)
    assert parse_exact("0.1") != parse_exact(0.1)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "abc", "", "1/0", "1,5", "0x10", True, None])
def test_what_is_not_a_finite_number_is_refused_with_its_name(bad):
    with pytest.raises(ConfigError, match="learning rate"):
        parse_exact(bad, what="learning rate")


@pytest.mark.parametrize(
    "huge",
    ["1e99999999999", "1e-4001", "1" * 4001, "1/" + "3" * 4001, "0." + "1" * 4001, "2e" + "9" * 50,
     "1" * 9000, "1" * 4000 + "0e1"],
)  # fmt: skip
def test_numbers_too_long_to_hold_exactly_are_refused_at_once(huge):
    with pytest.raises(ConfigError, match=r"learning rate .* is too long to read exactly"):
        parse_exact(huge, what="learning rate")


def test_numbers_at_the_length_limit_read_and_their_exact_text_reads_back():
    edge = ["1e-4000", "1e4000", "9" * 4000, "1/" + "9" * 4000, "0." + "3" * 4000]
    for text in edge:
        q = parse_exact(text)
        assert parse_exact(f"{q.numerator}/{q.denominator}") == q


def test_unknown_numerics_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown numerics 'float16'; choose one of: exact, "):
        get_numerics("float16")


@given(st.fractions(min_value=-1e30, max_value=1e30, max_denominator=10**40))
def test_float32_rounding_is_correct_without_double_rounding(q):
    got = to_float32(q)
    assert got.dtype == np.float32
    below = np.nextafter(got, np.float32(-np.inf))
    above = np.nextafter(got, np.float32(np.inf))
    gap = abs(Fraction(float(got)) - q)
    assert gap <= abs(Fraction(float(below)) - q)
    assert gap <= abs(Fraction(float(above)) - q)


def test_float32_rounding_of_a_double_rounding_trap():
    # Halfway between two float32s, plus a hair that float64 rounding would lose.
    lo = Fraction(float(np.float32(1.0)))
    ulp = Fraction(1, 2**23)
    q = lo + ulp / 2 + Fraction(1, 2**80)
    assert to_float32(q) == np.nextafter(np.float32(1), np.float32(2))
    assert np.float32(float(q)) == np.float32(1)  # what naive conversion gives


def test_each_system_makes_its_own_kind_of_number():
    q = Fraction(1, 3)
    assert get_numerics("exact").make(q) == q
    assert get_numerics("float64").make(q) == 1 / 3
    assert get_numerics("float32").make(q) == np.float32(1 / 3)


def test_exact_size_check_stops_before_python_limits():
    exact = get_numerics("exact")
    exact.check_size([Fraction(1, 2**EXACT_MAX_BITS - 1), Fraction(3)], step=5)
    with pytest.raises(ExactLimitError, match="exact arithmetic stopped at step 5"):
        exact.check_size([Fraction(3), Fraction(2**EXACT_MAX_BITS, 3)], step=5)
    get_numerics("float64").check_size((1.0,), step=5)  # floats never stop
