"""Display text shared by the views: ordinals, abbreviated exact fractions, LaTeX numbers."""

from __future__ import annotations


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th`` … ``11th``, ``21st``.

    >>> ordinal(3), ordinal(11), ordinal(21)
    ('3rd', '11th', '21st')
    """
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _split_sign(text: str) -> tuple[str, str]:
    return ("-", text[1:]) if text.startswith("-") else ("", text)


def abbreviate(text: str, digits: int = 24) -> str:
    """Shorten the long integers of an exact fraction for a table cell; the full text stays
    in the step view (``SampleValues.text``).

    >>> abbreviate("123456789012345678901234567890/7", digits=10)
    '12345…67890 (30 digits)/7'
    """
    out = []
    for part in text.split("/"):
        sign, body = _split_sign(part)
        if body.isdigit() and len(body) > digits:
            half = digits // 2
            body = f"{body[:half]}…{body[-half:]} ({len(body)} digits)"
        out.append(sign + body)
    return "/".join(out)


def latex_number(text: str) -> str:
    r"""A number's display text as LaTeX.

    >>> print(latex_number("-3/11600"), latex_number("1e-07"), latex_number("-inf"))
    -\frac{3}{11600} 1 \times 10^{-7} -\infty
    """
    sign, body = _split_sign(text)
    if "/" in body:
        num, den = body.split("/", 1)
        return rf"{sign}\frac{{{num}}}{{{den}}}"
    if "e" in body and body not in ("inf", "nan"):
        mant, exp = body.split("e", 1)
        return rf"{sign}{mant} \times 10^{{{int(exp)}}}"
    return sign + {"inf": r"\infty", "nan": r"\text{NaN}"}.get(body, body)
