"""Display text shared by the views: ordinals, abbreviated exact fractions, LaTeX numbers,
vectors and matrices written out as the article writes them."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence


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


# --- vectors and matrices as the article writes them ---------------------------------------------


def width(text: str) -> int:
    """Columns a text takes on screen: combining marks (the hat of ``b̂``) take none."""
    return sum(1 for ch in text if not unicodedata.combining(ch))


def pad(text: str, columns: int) -> str:
    """``text`` padded with spaces to ``columns`` on screen."""
    return text + " " * max(columns - width(text), 0)


def vector(parts: Sequence[str]) -> str:
    """``(0, 2000, 3000)``"""
    return "(" + ", ".join(parts) + ")"


def one_line(rows: Sequence[Sequence[str]]) -> str:
    """A matrix on one line, a row per vector: ``((1, 2), (3, 4))``; one row is its vector.

    >>> one_line([["1", "2"]]), one_line([["1", "2"], ["3", "4"]])
    ('(1, 2)', '((1, 2), (3, 4))')
    """
    if len(rows) == 1:
        return vector(rows[0])
    return vector([vector(r) for r in rows])


def matrix_lines(rows: Sequence[Sequence[str]]) -> list[str]:
    """A matrix over as many lines as it has rows, its columns aligned; one row is its vector.

    >>> print("\\n".join(matrix_lines([["1/200", "-3/11600"], ["-1/1000", "1"]])))
    ((1/200,   -3/11600),
     (-1/1000, 1))
    """
    if len(rows) == 1:
        return [vector(rows[0])]
    columns = len(rows[0])
    widths = [max(width(r[c]) + 1 for r in rows) for c in range(columns - 1)]
    lines = []
    for j, row in enumerate(rows):
        cells = [pad(cell + ",", w) for cell, w in zip(row[:-1], widths, strict=False)]
        inner = "(" + " ".join([*cells, row[-1]]) + ")"
        first, last = j == 0, j == len(rows) - 1
        lines.append(("(" if first else " ") + inner + (")" if last else ","))
    return lines


def hang(prefix: str, lines: Sequence[str]) -> list[str]:
    """``prefix`` before the first line, the others indented to line up under it."""
    indent = " " * width(prefix)
    return [prefix + lines[0], *(indent + line for line in lines[1:])]


#: How far apart a matrix's rows are set, in units of the usual distance. KaTeX (the
#: dashboard's) sets rows of fractions at the usual distance, and one row's denominators run
#: into the next row's numerators.
MATRIX_ROWS_STRETCH = 1.6


def latex_matrix(rows: Sequence[Sequence[str]]) -> str:
    r"""A vector or matrix of display texts as LaTeX: ``\left(…\right)`` for one row, a
    ``pmatrix`` for several, its rows :data:`MATRIX_ROWS_STRETCH` apart (in a group: the
    setting stays with the matrix).

    >>> print(latex_matrix([["1/2", "3"]]))
    \left(\frac{1}{2}, 3\right)
    >>> print(latex_matrix([["1/2"], ["3"]]))
    {\def\arraystretch{1.6}\begin{pmatrix}\frac{1}{2} \\ 3\end{pmatrix}}
    """
    if len(rows) == 1:
        return r"\left(" + ", ".join(latex_number(c) for c in rows[0]) + r"\right)"
    body = r" \\ ".join(" & ".join(latex_number(c) for c in row) for row in rows)
    stretch = rf"\def\arraystretch{{{MATRIX_ROWS_STRETCH}}}"
    return "{" + stretch + r"\begin{pmatrix}" + body + r"\end{pmatrix}}"


def update_lines(
    before: Sequence[str], lr: str, grads: Sequence[Sequence[str]], minus: str, scale: str
) -> list[str]:
    """``w − α·grad`` with its operands written out (``grads``: one per data input of the
    step, added up), on one line when every operand fits on one, else a line per matrix row.

    >>> update_lines(["(1, 2)"], "1/10", [["(3, 4)"], ["(5, 6)"]], "-", " * ")
    ['(1, 2) - 1/10 * ((3, 4) + (5, 6))']
    >>> update_lines(["1/2"], "1", [["-2"]], "−", "·")
    ['1/2 − 1·(-2)']
    """
    op = f"{minus} {lr}{scale}"
    if all(len(block) == 1 for block in [before, *grads]):
        terms = [g[0] for g in grads]
        total = terms[0] if len(terms) == 1 else "(" + " + ".join(terms) + ")"
        if total.startswith("-"):  # one neuron's gradient, negative: α·(-2), not α·-2
            total = f"({total})"
        return [f"{before[0]} {op}{total}"]
    lines, op = list(before), " " + op  # the operator under the matrix's rows
    if len(grads) == 1:
        return lines + hang(op, grads[0])
    lines += hang(op + "(", grads[0])
    for g in grads[1:]:
        lines += hang(" " * (width(op) - 1) + "+ ", g)  # each term under the first
    lines[-1] += ")"
    return lines
