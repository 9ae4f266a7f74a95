"""Checking a trace's integrity: every row must follow from the run's settings and the maths.

:func:`verify` reads a run the way a sceptical reader would and stops at the first thing that
does not hold, in this order:

1. **metadata**: ``_run.json`` and the copy inside every part file agree on the run's settings
   (the model and its initial parameters, the tensors, the dataset …), and the settings agree
   with each other (steps per epoch, steps, a model that reads the features and gives one
   output per target, the tensors that model records …);
2. **columns**: every part has exactly the trace format's columns for those tensors, with their
   types (a version 1 trace, the article's model only, its own version 1 names);
3. **rows**, read a chunk at a time (memory stays bounded whatever the trace's size):

   - *where*: the step, epoch and sample of every row follow from the settings — steps run
     0, 1, 2 … with each step's rows together, ``epoch = step // steps_per_epoch`` and the
     samples in the run's (possibly shuffled) order;
   - *constants*: ``run_id``, ``numerics``, ``batch_size`` and ``lr`` equal the metadata;
   - *parameters*: every ``w{k}_before`` and ``b{k}_before`` of step 0 is the model's initial
     one, of step s the ``_after`` of step s - 1, the same on every row of a step (stored once,
     they are put back by the plan's rows, and at a part's first step from its footer: so this
     checks each part's footer entry against the part before);
   - *data*: ``x`` and ``y`` are the same each time a sample comes back;
   - *maths*: every layer's output, the loss, every δ and every gradient recomputed from the
     row's ``x``, ``y``, parameters before the step and ``lr``, and the step's update from all
     its rows, by the model's own layer code (:mod:`steptrace.model`), in the run's number
     system — exact runs from their ``_exact`` texts, float32 runs from the float64 columns
     cast back to float32 (they hold float32 values exactly) — equal to what is recorded:
     exactly for rationals, bit for bit for floats (NaN equals NaN); in exact runs every
     float64 column is its text correctly rounded;

4. **counts**: a ``complete`` run holds all its rows, and the summary in ``_run.json`` is the
   one its rows give.

A run recorded by another framework (its metadata's ``recorded_with``, e.g. PyTorch through
``steptrace.torch``) computed its values with its own kernels, which add in their own order: its
recomputed values are compared within a tolerance (:data:`.settings.FRAMEWORK_TOLERANCE`, or
the ``rtol`` and ``atol`` given), stated in the report. When its optimizer is not plain SGD
(``recorded_with.update`` is ``optimizer``: momentum, Adam …) the update is not the gradient's
``w − α·Σ grad``: everything but the update is checked, and each step starts from the
parameters the previous one recorded.

A problem names the first row that does not follow (step, sample, column, what is recorded and
what it should be). When a single value has been changed, the problem points at that value.
Recomputed from its inputs, a row shows a changed result in that column alone, and a changed
input in the columns that depend on it or as a disagreement with its copy: the parameters and
lr are checked against the run, and x and y are tried with the values the rest of the row
implies (x_k is copied by the input layer into ``o1_k``; y_j follows from the last output and
the δ at the loss). Two pairs of columns can be told apart only by their effect on the rest of
the row: ``x_k`` and its copy ``o1_k`` (when nothing above depends on ``x_k``, e.g. its weights
are 0 and the δ coming back is 0), and ``y_j`` and the δ at the loss (a reflected ``y_j`` when
nothing below the loss lets δ through). When nothing tells them apart, both are named.

The checks, one concern a module (each imports only those above it):

- :mod:`.problem`: a :class:`Problem`, and when two values are the same (exactly or within a
  tolerance);
- :mod:`.layout`: where a stack's values sit in a row, the run's settings and its step plan;
- :mod:`.metadata`: every copy of the metadata agrees; :mod:`.settings`: the settings hold
  together, read into :class:`~.layout.RunSettings`;
- :mod:`.context`, :mod:`.steps`, :mod:`.floats`: rows recomputed, one step value by value
  (exact runs, and the first step of a float run where numpy saw a difference) or a chunk of
  a float run with numpy;
- :mod:`.chunks`: a run's rows read back in whole steps; :mod:`.checker`: the checks in order;
- :mod:`.report`: :func:`verify` and its :class:`VerifyReport`.
"""

from .problem import Problem
from .report import VerifyReport, verify

__all__ = ["Problem", "VerifyReport", "verify"]
