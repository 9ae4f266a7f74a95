"""The article's worked example, as exact fractions: the specification the tests check."""

from fractions import Fraction as F

W = (F(1, 200), F(-3000, 11_600_000), F(1, 5800))
X = ((100, 2000, 100), (200, 0, 0), (0, 2000, 3000))
Y = (0, 1, 1)
ZERO3 = (F(0), F(0), F(0))

# One dict per data input, every value the article shows (α = 1).
STEPS = [
    dict(x=X[0], o1=X[0], o2=0, o3=0, y=0, loss=0, d4=0, d3=0,
         d2=ZERO3, grad=ZERO3, d1=ZERO3, w_before=W, w_after=W),
    dict(x=X[1], o1=X[1], o2=1, o3=1, y=1, loss=0, d4=0, d3=0,
         d2=ZERO3, grad=ZERO3, d1=ZERO3, w_before=W, w_after=W),
    dict(x=X[2], o1=X[2], o2=0, o3=0, y=1, loss=F(1, 2), d4=-1, d3=-1,
         d2=tuple(-w for w in W), grad=(0, -2000, -3000), d1=tuple(-w for w in W),
         w_before=W,
         w_after=(F(1, 200), 2000 - F(3000, 11_600_000), 3000 + F(1, 5800))),
]  # fmt: skip
