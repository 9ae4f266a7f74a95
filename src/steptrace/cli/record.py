"""``steptrace record``: run the learning phase and write its trace."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click
from click._termui_impl import ProgressBar

from ..data import Dataset, load_dataset
from ..errors import ConfigError, ExactLimitError, ModelError, SteptraceError
from ..numerics import format_value
from ..trace.keep import Selection
from ..trace.opener import open_trace
from ..train.api import sweep
from ..train.recorder import Progress, RunResult, record_settings
from ..train.resumer import resume
from ..train.settings import Settings
from ..train.sweeps import RunsLost

#: Runs of fewer rows finish before a progress bar would be any use.
PROGRESS_MIN_ROWS = 20_000


def describe(result: RunResult, drawn: bool = False) -> str:
    """One line per run: where it went and what it came to; with ``drawn`` (no --seed was
    given), the seed drawn for it, if it needed one (to shuffle, or to draw weights)."""
    s = result.summary
    loss = "no steps" if s.final_loss is None else f"final loss {format_value(s.final_loss)}"
    if s.diverged_at is not None:
        fate = f"DIVERGED at step {s.diverged_at} ({s.diverged_why})"
    else:
        fate = "did not diverge"
    status = "" if result.status == "complete" else f" [{result.status}]"
    line = f"{result.path}: {s.steps} steps, {s.rows} rows{status}; {loss}; {fate}"
    seed = _seed(result.path) if drawn else None
    if seed is not None:
        line += f"; seed {seed} drawn (--seed {seed} records it again)"
    return line


def _seed(run: Path) -> int | None:
    """The seed a run recorded (None: it needed none, or its metadata cannot be read)."""
    try:
        seed = open_trace(run).meta.get("seed")
    except (SteptraceError, OSError):
        return None
    return seed if isinstance(seed, int) else None


def columns_taken(ds: Dataset) -> str:
    """Which columns of a dataset file became the features and which the target, when no
    --target named it: the last column, perhaps not the one meant."""
    n = len(ds.features)
    names = list(ds.features)
    shown = ", ".join(names if n <= 8 else [*names[:3], "…", *names[-2:]])
    columns = f"{n} feature column{'s' if n != 1 else ''}, {shown},"
    return (
        f"{Path(ds.source).name} was read as {columns} and the target {', '.join(ds.targets)}: "
        "its last column, as no --target was given; name the target column(s) with --target"
    )


def _last_column_target(dataset: str | Path) -> bool:
    """Whether the dataset's target defaults to its last column: a CSV or Parquet file."""
    return Path(str(dataset)).suffix.lower() in (".csv", ".parquet")


def where_it_stopped(exc: ExactLimitError) -> str:
    """The exact-limit stop's message, with the folder of the run it stopped and the command
    that replays the steps it kept."""
    if exc.run_dir is None:
        return str(exc)
    run = str(exc.run_dir)
    return (
        f"{exc}. The run is in {run}, marked incomplete; replay its steps with: "
        f"steptrace replay {shlex.quote(run)}"
    )


@click.command("record")
@click.option(
    "--dataset",
    default="seed",
    show_default=True,
    help="'seed' (the article's three patients), 'shapes' (16 8×8 images of crosses and "
    "squares), a .csv/.parquet/.npz file, or a folder of PNG images with labels.csv "
    "(docs/images.md).",
)
@click.option(
    "--target",
    help="Output column(s) of a dataset file, comma-separated, one per output neuron "
    "[default: a CSV/Parquet file's last column; an .npz file's y; a PNG folder's labels].",
)
@click.option("--features", help="Comma-separated input columns [default: all but the target].")
@click.option(
    "--lr",
    "lrs",
    multiple=True,
    default=("1",),
    show_default=True,
    help="Learning rate α, read exactly (0.001, 1e-7, 1/200). Repeat for a sweep.",
)
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option(
    "--batch-size",
    "batch_sizes",
    type=int,
    multiple=True,
    default=(1,),
    show_default=True,
    help="Samples per weight update; the batch loss is their mean. Repeat for a sweep.",
)
@click.option(
    "--numerics",
    "numerics",
    type=click.Choice(["exact", "float64", "float32"]),
    multiple=True,
    default=("exact",),
    show_default=True,
    help="Number system the maths runs in. Repeat for a sweep.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    default=("article",),
    show_default=True,
    metavar="article|FILE",
    help="The article's model, or a JSON model file of layers (see examples/*.json). "
    "Repeat for a sweep.",
)
@click.option(
    "--init",
    help="The article model's initial weights W1,W2,… read exactly "
    "[default: the article's 1/200,-3000/11600000,1/5800].",
)
@click.option(
    "--shuffle/--no-shuffle",
    default=False,
    show_default=True,
    help="Visit the samples in a new random order each epoch.",
)
@click.option(
    "--seed",
    "seeds",
    type=int,
    multiple=True,
    help="Seed of the shuffling and of drawn weights (chosen and recorded if omitted). "
    "Repeat for a sweep.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("traces"),
    show_default=True,
    help="Folder the run folders go into.",
)
@click.option(
    "--name",
    help="Run folder name [default: DATASET-NUMERICS-lrLR]; a sweep's runs add the settings "
    "that vary.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Processes recording a sweep's runs side by side [default: one per core when the "
    "sweep is big enough to gain from it].",
)
@click.option(
    "--scheduler",
    metavar="tcp://HOST:PORT",
    help="Send the runs to a running Dask cluster (pip install 'steptrace[dask]'); its "
    "workers must see --out at the same path.",
)
@click.option(
    "--resume",
    "resume_run",
    type=click.Path(path_type=Path),
    metavar="RUN",
    help="Continue the incomplete run folder RUN with its own settings.",
)
@click.option(
    "--every",
    type=int,
    metavar="N",
    help="Record every value of every N-th step (0, N, 2N …) "
    "only; the per-step figures cover every step.",
)
@click.option("--steps", metavar="RANGES", help="Record only these steps: 0-99,1000-1099.")
@click.option(
    "--tensors",
    metavar="NAMES",
    help="Record only these tensors, comma-separated names or "
    "globs of load_tensor's names: loss,o*,w*_after.",
)
@click.option("--layers", metavar="K,…", help="Record only the values of these layers: 2,4.")
@click.option(
    "--keep-last",
    type=int,
    metavar="N",
    help="Flight recorder: keep every value of the last N steps in memory, write them when a "
    "trigger fires (and at the end, whatever ends the run).",
)
@click.option("--after", type=int, metavar="M", help="With --keep-last: M more steps after it.")
@click.option(
    "--trigger",
    metavar="KIND",
    help="With --keep-last: nonfinite (the default), loss_spike:K (the batch loss above K "
    "times its lowest so far), or both, comma-separated.",
)
@click.option(
    "--flush-seconds",
    type=float,
    default=1.0,
    hidden=True,
    help="Longest time between flushes (tests make it short).",
)
@click.pass_context
def command(
    ctx: click.Context, dataset: str, target: str | None, features: str | None,
    lrs: tuple[str, ...], epochs: int, batch_sizes: tuple[int, ...], numerics: tuple[str, ...],
    models: tuple[str, ...], init: str | None, shuffle: bool, seeds: tuple[int, ...], out: Path,
    name: str | None, workers: int | None, scheduler: str | None, resume_run: Path | None,
    every: int | None, steps: str | None, tensors: str | None, layers: str | None,
    keep_last: int | None, after: int | None, trigger: str | None, flush_seconds: float,
) -> None:  # fmt: skip
    """Record every step of training into Parquet traces, one run per combination of the
    settings given several times (--lr, --batch-size, --numerics, --seed, --model).

    \b
    Example:
        steptrace record                                  # the article, exactly
        steptrace record --numerics float64 --lr 1e-7 --lr 1e-6 --epochs 100
        steptrace record --numerics float64 --lr 1e-3 --lr 1e-2 --batch-size 1 --batch-size 2
        steptrace record --model examples/two-layer.json --lr 1/1000 --epochs 3
        steptrace record --lr 1e-7 --lr 1e-6 --scheduler tcp://head:8786 --out /shared/traces
        steptrace record --resume traces/seed-float64-lr1e-7
        steptrace record --numerics float64 --lr 1e-7 --epochs 1000 --every 100
        steptrace record --numerics float64 --lr 1e3 --epochs 1000 --keep-last 50
    """
    selection = chosen(every, steps, tensors, layers, keep_last, after, trigger)
    if resume_run is not None:
        _resume(ctx, resume_run, dataset, flush_seconds)
        return
    ds = load_dataset(dataset, target, features.split(",") if features else None)
    runs = len(lrs) * len(batch_sizes) * len(numerics) * max(len(seeds), 1) * len(models)
    if not selection.everything:
        if runs > 1 or workers is not None or scheduler is not None:
            raise ConfigError(
                "--every, --steps, --tensors, --layers and --keep-last record one run: give "
                "one value of each setting (no --workers, no --scheduler)"
            )
        one = Settings.parse(ds, lrs[0], epochs, batch_sizes[0], numerics[0], init, shuffle,
                             seeds[0] if seeds else None, models[0])  # fmt: skip
        try:
            result = record_settings(ds, one, out, name, flush_seconds=flush_seconds,
                                     selection=selection)  # fmt: skip
        except ExactLimitError as exc:
            raise ExactLimitError(where_it_stopped(exc)) from None
        click.echo(describe(result, drawn=not seeds))
        click.echo(f"Replay it: steptrace replay {shlex.quote(str(result.path))}")
        return
    settings: dict[str, Any] = dict(
        epochs=epochs, batch_size=list(batch_sizes), numerics=list(numerics), init=init,
        shuffle=shuffle, seed=list(seeds) or None, model=list(models),
    )  # fmt: skip
    with _progress_bar(len(ds) * max(epochs, 1) * runs) as bar:
        try:
            results = sweep(
                list(lrs), ds, out=out, name=name, progress=_updater(bar),
                flush_seconds=flush_seconds, workers=workers, scheduler=scheduler, **settings,
            )  # fmt: skip
        except RunsLost as lost:
            for result in lost.results:
                click.echo(describe(result, drawn=not seeds))
            raise
        except ExactLimitError as exc:
            raise ExactLimitError(where_it_stopped(exc)) from None
        except ConfigError as exc:
            # The width of the data decides what the model must take: say how the file was
            # read when the target was left to default.
            # (An .npz file's or a PNG folder's targets are their own, not a last column.)
            if target is None and _last_column_target(dataset) and _about_the_data(exc):
                raise type(exc)(f"{exc} ({columns_taken(ds)})") from None
            raise
    for result in results:
        click.echo(describe(result, drawn=not seeds))
    if len(results) == 1:
        click.echo(f"Replay it: steptrace replay {shlex.quote(str(results[0].path))}")


def chosen(
    every: int | None,
    steps: str | None,
    tensors: str | None,
    layers: str | None,
    keep_last: int | None = None,
    after: int | None = None,
    trigger: str | None = None,
) -> Selection:
    """What the options choose to record, checked (one line for a bad choice)."""
    numbers = None
    if layers is not None:
        try:
            numbers = [int(k) for k in layers.split(",")]
        except ValueError:
            raise ConfigError(f"--layers {layers!r}: give layer numbers, such as 2,4") from None
    return Selection.of(every, steps, tensors, numbers, keep_last, after, trigger)


def _about_the_data(exc: ConfigError) -> bool:
    """Whether the dataset's columns may be why a setting was refused: a model file that does
    not fit them (or does not load), the article's weights against their count."""
    return isinstance(exc, ModelError) or "feature column" in str(exc)


def _resume(ctx: click.Context, run: Path, dataset: str, flush_seconds: float) -> None:
    settings = {"target": "--target", "features": "--features", "lrs": "--lr",
                "epochs": "--epochs", "batch_sizes": "--batch-size", "numerics": "--numerics",
                "models": "--model", "init": "--init", "shuffle": "--shuffle", "seeds": "--seed",
                "out": "--out", "name": "--name", "workers": "--workers",
                "scheduler": "--scheduler", "every": "--every", "steps": "--steps",
                "tensors": "--tensors", "layers": "--layers", "keep_last": "--keep-last",
                "after": "--after", "trigger": "--trigger"}  # fmt: skip
    given = [
        option
        for name, option in settings.items()
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    ]
    if given:
        raise ConfigError(f"--resume takes its settings from the run; drop {', '.join(given)}")
    explicit = ctx.get_parameter_source("dataset") == click.core.ParameterSource.COMMANDLINE
    trace = open_trace(run)
    total = int(trace.meta["dataset"]["rows"]) * int(trace.meta["epochs"])
    with _progress_bar(total) as bar:
        result = resume(run, dataset if explicit else None, _updater(bar), flush_seconds)
    click.echo(describe(result))


def _progress_bar(total_rows: int) -> ProgressBar[int]:
    """A progress bar on stderr, shown only on a terminal and for runs long enough to need it."""
    return click.progressbar(
        length=total_rows, label="recording", file=sys.stderr,
        hidden=total_rows < PROGRESS_MIN_ROWS or not sys.stderr.isatty(),
    )  # fmt: skip


def _updater(bar: ProgressBar[int]) -> Progress:
    """A progress callback moving ``bar``; each run of a sweep restarts its row count."""
    last = 0

    def progress(rows: int, _run_total: int) -> None:
        nonlocal last
        if rows < last:  # the next run of the sweep has started
            last = 0
        bar.update(rows - last)
        last = rows

    return progress
