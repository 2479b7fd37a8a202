"""The ``nightowl`` command: demo data, nightly runs and backfills, the schedule, and queries."""

from __future__ import annotations

import contextvars
import errno
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nightowl.flows.runtime import cron_schedule, mark_crashed, running_flow_runs
from nightowl.flows.settings import ConfigError, Settings, load_settings
from nightowl.tasks.models.lifecycle import VersionsView, guard_text

if TYPE_CHECKING:
    import polars as pl

app = typer.Typer(
    name="nightowl",
    help="Nightly analytics for product operations: landing files → Parquet warehouse → "
    "prediction tables. Run `nightowl demo` to see it end to end.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True)  # error text is copied and grepped: never wrap it

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default: ./nightowl.toml if present)."),
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-root", help="Data root (landing/, warehouse/); default from config: ./data."
    ),
]
UsersOpt = Annotated[int, typer.Option(min=1, help="Users to generate.")]
ItemsOpt = Annotated[int, typer.Option(min=12, help="Catalogue items (at least one per category).")]
DaysOpt = Annotated[int, typer.Option(min=2, help="Days of history, one file per source per day.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")]
DateOpt = Annotated[
    str | None, typer.Option("--date", "-d", help="Run date YYYY-MM-DD (default: yesterday).")
]
LastDayOpt = Annotated[
    str | None,
    typer.Option("--date", "-d", help="Last day of data to use, YYYY-MM-DD (default: yesterday)."),
]


@dataclass
class _Command:
    """What this process's command is, for the line an unexpected error gets."""

    name: str | None = None
    args: list[str] = field(default_factory=list)
    data_root: Path | None = None  # its error log goes under it, once known
    debug: bool = False


_command = _Command()


@app.callback()
def _global_options(
    ctx: typer.Context,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="NIGHTOWL_DEBUG",
            help="Print the traceback of an unexpected error (it is always written to "
            "<data root>/_state/logs/errors.log).",
        ),
    ] = False,
) -> None:
    """Options of every command."""
    _command.name = ctx.invoked_subcommand
    _command.debug = debug


def _settings(config: Path | None, data_root: Path | None) -> Settings:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]config error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if data_root is not None:
        settings.data_root = data_root.absolute()
    _command.data_root = settings.data_root
    return settings


def _parse_date(value: str | None, settings: Settings) -> date:
    if value is None:
        return settings.yesterday()
    try:
        return date.fromisoformat(value)
    except ValueError:
        err.print(f"[red]--date:[/] expected YYYY-MM-DD, got {escape(repr(value))}")
        raise typer.Exit(2) from None


@app.command()
def generate(
    out: Annotated[
        Path | None, typer.Option(help="Landing folder to write (default: <data root>/landing).")
    ] = None,
    users: UsersOpt = 5000,
    items: ItemsOpt = 500,
    days: DaysOpt = 60,
    seed: SeedOpt = 7,
    end_date: Annotated[
        str | None, typer.Option("--end-date", help="Last day written (default: yesterday).")
    ] = None,
    activity: Annotated[
        float,
        typer.Option(
            min=0.01,
            help="Multiplies the odds of a visit: about 22 events per user over 90 days at 1, "
            "100 at 3.5 (the benchmarks' size L).",
        ),
    ] = 1.0,
    config: ConfigOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Write realistic synthetic landing files for all five sources, dirt included.

    [bold]Example[/]: nightowl generate --out data/landing --users 20000 --items 1000 --days 60
    [bold]Example[/]: nightowl generate --out big/landing --users 1000000 --days 90 --activity 3.5
    """
    from nightowl.demo.generate import generate_landing

    settings = _settings(config, data_root)
    target = out or settings.data_root / "landing"
    end = _parse_date(end_date, settings)
    started = time.perf_counter()
    with console.status("generating…") as status:
        summary = generate_landing(
            target,
            users=users,
            items=items,
            days=days,
            seed=seed,
            end_date=end,
            activity=activity,
            progress=lambda msg: status.update(msg),
        )
    console.print(
        f"wrote {len(summary.files)} files to {target} in {time.perf_counter() - started:.1f} s"
    )
    for source, rows in summary.rows.items():
        console.print(f"  {source:<18} {rows:>12,} rows")


ForceOpt = Annotated[
    str | None,
    typer.Option(
        "--force-steps",
        help="Recompute these steps and everything downstream, cached or not: comma-separated "
        "steps (ingest, clean, features, train, score, price-position, train-demand, forecast, "
        "train-sentiment, feedback, product-sentiment, support-queue, train-recommender, "
        "recommend), step runs "
        "(ingest-events, clean-items) or all. Naming a train step trains now, whatever the "
        "cadence says.",
    ),
]


@app.command()
def run(
    date_: DateOpt = None,
    force_steps: ForceOpt = None,
    config: ConfigOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Run the nightly flow for one date: ingest, clean and check every source; then user
    features, training when due and user_scores; price position and the demand forecast;
    feedback scores, product sentiment and the support queue; recommendations; and the report
    tables and page (<data root>/reports/<date>/index.html).

    Steps whose inputs did not change are reused from the cache (shown as Cached). Works with no
    Prefect server started: without PREFECT_API_URL a temporary local one is started, and
    stopped with the command however it ends. Ctrl-C or SIGTERM ends the run within seconds
    (exit 130 or 143); its finished steps are kept.

    [bold]Examples[/]:
      nightowl run --date 2026-11-27
      nightowl run --date 2026-11-27 --force-steps ingest-events
      nightowl run --date 2026-11-27 --force-steps train-sentiment
      nightowl run --date 2026-11-27 --force-steps train-recommender
    """
    settings = _settings(config, data_root)
    run_date = _parse_date(date_, settings)
    forced = _parse_steps(force_steps)
    _run_nightly(settings, config, [run_date], forced)


def _parse_steps(value: str | None) -> list[str] | None:
    from nightowl.flows.graph import forced_steps

    if not value:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    try:
        forced_steps(names)
    except ValueError as exc:
        err.print(f"[red]--force-steps:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    return names


def _require_storage(settings: Settings) -> None:
    """Exit 1 with the reason unless the data root can take a run's writes."""
    from nightowl.warehouse.store import Warehouse

    problem = Warehouse(settings.data_root).storage_problem(settings.run.min_free_bytes)
    if problem:
        err.print(f"[red]data root:[/] {escape(problem)}")
        raise typer.Exit(1)


def _prepare_prefect(settings: Settings, api: bool = False) -> None:
    """Point Prefect at the data root, once it is known to take a run's writes: before Prefect
    is imported, as it reads its settings then. ``api``: with no PREFECT_API_URL, start this
    command's temporary Prefect API (``_wait_for_api`` waits for it) and point Prefect at it."""
    from nightowl.flows import local_api
    from nightowl.flows.runtime import log_dir, prepare_prefect

    _require_storage(settings)
    prepare_prefect(settings.data_root)
    if api:
        local_api.start(log_dir(settings.data_root) / "prefect-api.log")


def _wait_for_api() -> None:
    """Wait for this command's temporary Prefect API to answer, if it started one; exit 1 with
    one line if it does not."""
    from nightowl.flows import local_api

    try:
        api = local_api.wait()
    except local_api.LocalAPIError as exc:
        err.print(f"[red]nightowl:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if api is not None and api.url not in _ANNOUNCED:  # a command may run several flows
        _ANNOUNCED.add(api.url)
        err.print(
            f"[dim]temporary Prefect API on {api.url} (up in {api.ready_after:.1f} s), "
            "stopped with this command[/]"
        )


#: The temporary APIs this command has named already.
_ANNOUNCED: set[str] = set()


def _nightly_flow(settings: Settings):
    """The nightly flow with the configured task runner, Prefect set up for the data root first
    (and this command's temporary Prefect API up, if it needs one)."""
    from nightowl.flows.runtime import task_runner

    _prepare_prefect(settings, api=True)  # the server starts while the flow's imports load
    from nightowl.flows.logs import quiet_failures
    from nightowl.flows.nightly import nightly

    quiet_failures()  # Prefect's console handlers exist once it is imported
    _wait_for_api()
    if settings.runner.kind != "threads" or settings.runner.threads:  # served: options and all
        return nightly.with_options(task_runner=task_runner(settings))
    return nightly


#: How a signal that ends a command is named in its last line.
SIGNALS = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}
#: At most this long to record the interrupted flow runs as Crashed, so a stop stays quick.
MARK_CRASHED_SECONDS = 3.0


class _FlowRuns:
    """The flow runs of a command, each called in a worker thread, so that the main thread stays
    free to act on SIGINT and SIGTERM at once, and in a context of its own, in which an
    interrupt finds the flow run still going (to mark it Crashed)."""

    def __init__(self, workers: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flow")
        self.contexts: list[contextvars.Context] = []

    def submit(self, flow: Callable[..., Any], **kwargs: Any) -> Future:
        """Call ``flow(**kwargs)`` in a worker, in a copy of this thread's context (Prefect's
        settings among it)."""
        context = contextvars.copy_context()
        self.contexts.append(context)
        return self.pool.submit(context.run, flow, **kwargs)  # type: ignore[arg-type]

    def completed(self, futures: list[Future]) -> Iterator[Future]:
        """``futures`` as they complete. The main thread wakes up four times a second meanwhile:
        a signal that another thread happened to take is acted on only when it runs Python."""
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            yield from (f for f in futures if f in done)  # in the order they were submitted

    def call(self, flow: Callable[..., Any], **kwargs: Any) -> Any:
        """``flow(**kwargs)`` in a worker; its result once it ends (see ``completed``)."""
        (done,) = self.completed([self.submit(flow, **kwargs)])
        return done.result()

    def running(self) -> list[Any]:
        """The ids of the flow runs still going: a flow run's context is set while it runs."""
        return running_flow_runs(self.contexts)


@contextmanager
def _ends_at_a_signal(what: Callable[[], str], kept: str, runs: _FlowRuns) -> Iterator[None]:
    """Within this, SIGINT and SIGTERM end the command within seconds, in one line on stderr
    (``<what> interrupted by SIGTERM: <kept>``): the flow runs still running are marked
    Crashed, the temporary Prefect API is stopped, and the process exits 130 or 143 without
    waiting for the steps still running in worker threads. Their writes are crash-safe (each is
    published whole or not at all), so a rerun picks up what they were doing."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    received: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in SIGNALS}
    try:
        yield
    except KeyboardInterrupt:
        _end_interrupted(received[0] if received else signal.SIGINT, what(), kept, runs)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _end_interrupted(signum: int, what: str, kept: str, runs: _FlowRuns) -> NoReturn:
    """Say in one line what was interrupted, record its runs as Crashed, stop the temporary API
    and exit at once: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)."""
    from nightowl.flows import local_api

    code = 128 + signum
    for other in SIGNALS:  # a second Ctrl-C: out now (the kernel stops the server)
        signal.signal(other, lambda *_: os._exit(code))
    logging.disable(logging.CRITICAL)  # the steps still running in threads say nothing more
    by = SIGNALS[signal.Signals(signum)]
    err.print(f"[red]{escape(what)} interrupted by {by}[/]: {escape(kept)}")
    mark_crashed(runs.running(), f"interrupted by {by}", MARK_CRASHED_SECONDS)
    local_api.stop()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # not sys.exit: that would wait for the worker threads' steps to end


def _interrupted_runs(dates: list[date], backfill: bool) -> tuple[str, str]:
    """What an interrupt of the nightly runs for ``dates`` ends, and what it keeps."""
    if len(dates) == 1 and not backfill:
        return (
            f"nightly run for {dates[0]}",
            "finished steps are kept (cached); run it again to finish",
        )
    what = f"{'backfill' if backfill else 'nightly runs for'} {dates[0]} … {dates[-1]}"
    return what, "finished dates and steps are kept (cached); run it again to finish"


def _run_nightly(
    settings: Settings,
    config: Path | None,
    dates: list[date],
    force: list[str] | None = None,
    *,
    progress: bool = False,
) -> None:
    runs, current = _FlowRuns(1), [dates[0]]
    what, kept = _interrupted_runs(dates, backfill=progress)
    with _ends_at_a_signal(
        lambda: what if len(dates) == 1 else f"{what} (at {current[0]})", kept, runs
    ):
        nightly = _nightly_flow(settings)  # first: it points Prefect at the data root
        from nightowl.flows.nightly import NightlyFailed

        with _dates_progress(len(dates) if progress else 0) as advance:
            for done, run_date in enumerate(dates):
                current[0] = run_date
                where = f" ({done + 1}/{len(dates)})" if progress else ""
                console.rule(f"nightly run for {run_date}{where}")
                try:
                    summary = runs.call(
                        nightly,
                        run_date=run_date,
                        config=str(config) if config else None,
                        data_root=str(settings.data_root),
                        force_steps=force,
                    )
                except NightlyFailed as exc:
                    err.print(_failed_line(settings, run_date, exc))
                    raise typer.Exit(1) from None
                _print_summary(summary)
                advance()
    runs.pool.shutdown()


def _failed_line(settings: Settings, run_date: date, exc: Exception) -> str:
    """The last lines of a failed run: which steps failed and why, what did not run because of
    them, and where to look next."""
    from nightowl.warehouse.store import Warehouse

    line = f"[red]nightly run for {run_date} failed[/]: {escape(str(exc))}"
    if not getattr(exc, "failed_steps", None):  # it failed before any step
        return line
    page = Warehouse(settings.data_root).page_dir(run_date.isoformat()) / "index.html"
    seen = f"The morning page says what is stale: {page}. " if page.exists() else ""
    return (
        f"{line}\n{escape(seen)}Fix the cause, then run the date again (or Retry in the UI): "
        "only the failed steps and what they feed run."
    )


@contextmanager
def _dates_progress(total: int) -> Iterator[Callable[[], None]]:
    """A progress bar over ``total`` dates below the runs' output (none when ``total`` is 0);
    yields the function that marks one date done."""
    if not total:
        yield lambda: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from nightowl.flows.runtime import console_logs_to_current_stderr

    columns = (
        TextColumn("dates"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("dates", total=total)
        console_logs_to_current_stderr()  # Prefect's log lines go above the bar
        try:
            yield lambda: bar.advance(task)
        finally:
            bar.refresh()
    console_logs_to_current_stderr()  # the real stderr again


def _print_summary(summary: dict[str, dict]) -> None:
    """The run's steps table, what changed in the deliveries, then which graph and provider each
    scoring step ran."""
    from nightowl.flows.summary import delivery_notes, health_notes, rule_notes, scoring_paths

    console.print(_summary_table(summary))
    for note in delivery_notes(summary):
        console.print(note, markup=False, highlight=False, emoji=False)
    for note in rule_notes(summary) + health_notes(summary):
        console.print(f"[yellow]{escape(note)}[/]")
    for step, path in scoring_paths(summary).items():
        console.print(f"[dim]{step}: scored with the {path.replace(' on ', ' graph on ')}[/]")


def _summary_table(summary: dict[str, dict]) -> Table:
    """The run's steps as the summary artifact lists them: rows in and out, quarantined, time."""
    from nightowl.flows.summary import summary_rows

    rows = summary_rows(summary)
    table = Table(title="steps", show_edge=False)
    for col in ("step", "new files", "rows in", "rows out", "quarantined", "partitions", "s"):
        table.add_column(col, justify="left" if col == "step" else "right")
    for r in rows:
        numbers = (r["files"], r["rows_in"], r["rows_out"], r["quarantined"], r["partitions"])
        table.add_row(r["step"], *(f"{n:,}" for n in numbers), f"{r['seconds']:.1f}")
    return table


@app.command()
def train(
    date_: LastDayOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="propensity, demand, sentiment or recommender; repeat for several (default: "
            "all four).",
        ),
    ] = None,
    config: ConfigOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Train models now, whatever the retrain cadence says.

    [bold]propensity[/]: time-split snapshots of user features, LightGBM with early stopping,
    beside recency-only and RFM baselines on the held-out snapshot.
    [bold]demand[/]: rolling-origin backtest over the last weeks (WAPE, bias, MASE per horizon,
    item and category level) beside seasonal-naive and a 28-day moving average, then the model.
    [bold]sentiment[/]: TF-IDF logistic regression on the rated feedback, the newest 20 % held
    out (accuracy, macro-F1, ROC-AUC) beside the VADER lexicon.
    [bold]recommender[/]: LightGBM lambdarank on candidates (repeat, viewed, co-purchased,
    category best sellers, trending, popular), trained on later windows' purchases; Recall,
    NDCG and MAP at 10, coverage and full lists on the newest 14 days beside global popularity,
    co-occurrence alone and repeat-buy, with repurchases counted and with new items only.
    Each is registered only if its ONNX export matches LightGBM (parity gate), and promoted to
    champion if at least as good as the current one.

    [bold]Examples[/]:
      nightowl train
      nightowl train --model demand --date 2026-11-27 --data-root demo
      nightowl train --model sentiment --data-root demo
      nightowl train -m recommender --config examples/online_retail/nightowl.toml --date 2010-12-09
    """
    settings = _settings(config, data_root)
    last_day = _parse_date(date_, settings)
    # Prefect reads its settings when first imported, and flows.train imports it: not before the
    # data root and the temporary API are set up (the server starts while the flow imports).
    _prepare_prefect(settings, api=True)
    from nightowl.flows.train import MODELS
    from nightowl.flows.train import train as train_flow

    unknown = sorted(set(model or []) - set(MODELS))
    if unknown:
        raise typer.BadParameter(f"unknown model {unknown}; expected {' or '.join(MODELS)}")
    runs = _FlowRuns(1)
    with _ends_at_a_signal(lambda: f"training on data to {last_day}", "run it again", runs):
        _wait_for_api()
        try:
            reports = runs.call(
                train_flow,
                last_day=last_day,
                config=str(config) if config else None,
                data_root=str(settings.data_root),
                models=model or None,
            )
        except Exception as exc:  # the flow's own failure message says what went wrong
            err.print(f"[red]training failed[/]: {escape(str(exc))}")
            raise typer.Exit(1) from None
    runs.pool.shutdown()
    failed = []
    for name, report in reports.items():
        if not report["trained"]:
            # Asked for by name, a model that cannot train is a failure; in "all" it is news.
            colour = "red" if model else "yellow"
            err.print(f"[{colour}]no {name} model trained[/]: {escape(report['reason'])}")
            failed.append(name)
            continue
        if name == "propensity":
            console.print(_metrics_table(report))
            parity = f"Parity max |ONNX - LightGBM| = {report['parity_max_diff']:.2g}"
        elif name == "sentiment":
            console.print(_sentiment_table(report))
            parity = f"Parity max |ONNX - scikit-learn| = {report['parity_max_diff']:.2g}"
        elif name == "recommender":
            console.print(_ranking_table(report))
            parity = f"Parity max relative |ONNX - LightGBM| = {report['parity_max_diff']:.2g}"
        else:
            for level in ("item", "category"):
                console.print(_backtest_table(report["backtest"], level))
            parity = f"Parity max relative |ONNX - LightGBM| = {report['parity_max_diff']:.2g}"
        verdict = "promoted to champion" if report["promoted"] else "registered (champion kept)"
        console.print(
            f"{name} model {report['version']}: {verdict}. {parity}. {escape(report['reason'])}"
        )
    if failed and (model or len(failed) == len(reports)):
        raise typer.Exit(1)


def _metrics_table(report: dict) -> Table:
    holdout = report["holdout"]
    table = Table(title=f"propensity: held-out snapshot as_of {holdout}", show_edge=False)
    for col in ("scorer", "ROC-AUC", "PR-AUC", "Brier", "lift@10%"):
        table.add_column(col, justify="left" if col == "scorer" else "right")
    for name, m in report["metrics"].items():
        table.add_row(
            name,
            _num(m["roc_auc"]),
            _num(m["pr_auc"]),
            _num(m["brier"]),
            _num(m["lift_top_decile"], 2),
        )
    return table


def _sentiment_table(report: dict) -> Table:
    """Held-out accuracy, macro-F1 and ROC-AUC of the model beside the lexicon."""
    rows = int(report["metrics"]["model"]["rows"])
    table = Table(title=f"sentiment: newest {rows:,} rated texts held out", show_edge=False)
    for col in ("scorer", "accuracy", "macro-F1", "ROC-AUC pos/neg"):
        table.add_column(col, justify="left" if col == "scorer" else "right")
    for name, m in report["metrics"].items():
        table.add_row(name, _num(m["accuracy"], 3), _num(m["macro_f1"], 3), _num(m["roc_auc"]))
    return table


def _ranking_table(report: dict) -> Table:
    """Recall, NDCG, MAP at K, coverage and full lists of the ranker and the three baselines,
    under both protocols."""
    k, metrics = report["top_k"], report["metrics"]
    users = int(metrics["model"]["all_users"] or 0)
    table = Table(
        title=f"recommender: purchases of the {users:,} buyers after as_of {report['holdout']} "
        "(all: repurchases count; new: items not bought before)",
        show_edge=False,
    )
    for col in (
        "scorer",
        "protocol",
        f"Recall@{k}",
        f"NDCG@{k}",
        f"MAP@{k}",
        "coverage",
        "full lists",
    ):
        table.add_column(col, justify="left" if col in ("scorer", "protocol") else "right")
    for protocol in ("all", "new"):
        for name, m in metrics.items():
            table.add_row(
                name,
                protocol,
                *(_num(m[f"{protocol}_{key}"]) for key in ("recall", "ndcg", "map")),
                _num(m[f"{protocol}_coverage"], 3),
                _num(m[f"{protocol}_full_lists"], 3),
            )
    return table


def _backtest_table(backtest: list[dict], level: str) -> Table:
    """WAPE, bias and MASE per horizon of the model beside the two baselines."""
    rows = [r for r in backtest if r["level"] == level]
    table = Table(
        title=f"demand backtest, {level} x day (model / seasonal naive / 28-day average)",
        show_edge=False,
    )
    for col in (
        "horizon",
        "WAPE",
        "s-naive",
        "MA-28",
        "bias",
        "s-naive",
        "MA-28",
        "MASE",
        "s-naive",
        "MA-28",
    ):
        table.add_column(col, justify="left" if col == "horizon" else "right")
    horizons = dict.fromkeys(r["horizon"] for r in rows)
    by = {(r["horizon"], r["forecaster"]): r for r in rows}
    names = ("model", "seasonal_naive", "moving_average_28d")
    for h in horizons:
        cells = [_num(by[h, n][m], 3) for m in ("wape", "bias", "mase") for n in names]
        table.add_row(h, *cells)
    return table


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@app.command()
def models(config: ConfigOpt = None, data_root: DataRootOpt = None) -> None:
    """List registered model versions with their metrics (propensity: held-out snapshot; demand:
    backtest); * marks the champion, and under each champion its newest matured figures (the
    predictions it served, judged once their outcomes were in, beside the best simple rule).

    [bold]Example[/]: nightowl models --data-root demo
    """
    from nightowl.tasks.behaviour import units as propensity
    from nightowl.tasks.feedback import units as sentiment
    from nightowl.tasks.health.matured import matured_lines
    from nightowl.tasks.health.units import health_history
    from nightowl.tasks.market import units as demand
    from nightowl.tasks.recommend import units as recommender
    from nightowl.warehouse.registry import Registry
    from nightowl.warehouse.store import Warehouse

    views = {m.MODEL: m.VERSIONS for m in (propensity, demand, sentiment, recommender)}
    settings = _settings(config, data_root)
    registry = Registry(Warehouse(settings.data_root))
    judged = health_history(registry.wh)
    names = registry.models()
    if not names:
        console.print(
            f"no models registered under {registry.root}: run `nightowl train`", soft_wrap=True
        )
        return
    for name in names:
        champion = registry.champion(name)
        cards = registry.versions(name)
        star = ["*" if champion and champion.version == c.version else "" for c in cards]
        view = views.get(name, VersionsView(f"{name} models"))
        console.print(_versions_table(view, cards, star))
        if champion:
            console.print(
                f"champion: {champion.version} since {champion.promoted_at} ({champion.reason})"
            )
            card = registry.card(name, champion.version)
            if card.serves_rule:
                console.print(
                    f"[yellow]served in its place: the simple rule {card.serves_rule}[/] "
                    f"({escape(guard_text(card))})"
                )
            for line in matured_lines(judged, name, card.version):
                console.print(escape(line), soft_wrap=True)


@app.command()
def evaluate(
    date_: LastDayOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="propensity (with churn), recommender, demand or sentiment; repeat for several "
            "(default: all four).",
        ),
    ] = None,
    origins: Annotated[
        int | None,
        typer.Option(
            "--origins",
            "-n",
            min=1,
            max=52,
            help="Past origins per model (default: the evaluate section's origins, 3).",
        ),
    ] = None,
    config: ConfigOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Do the models beat the simple rules? A rolling-origin backtest on your own warehouse.

    At each of N past origins every model is trained only on the data before it, as its
    nightly training would have been, and judged on what happened after it, beside its simple
    rules on the same users, items or texts. Nothing is registered. The figures go to the
    [bold]model_evaluation[/] table (one row per origin, scorer, protocol and metric), the
    report page shows them, and this command prints them with a verdict per model.

    [bold]propensity[/]: ROC-AUC, PR-AUC, Brier, lift of p(purchase in H days) over all users,
    beside recency, RFM score and BG/NBD expected purchases (rules) and LightGBM on RFM alone
    (a reference); [bold]churn[/] the same over the customers who bought within the look-back.
    [bold]recommender[/]: Recall, NDCG, MAP at K over every buyer of the window who had bought
    before, beside popularity, repeat-buy and co-occurrence; repurchases counted (all) and new
    items only (new).
    [bold]demand[/]: WAPE, MASE and bias per item-day and category-day over weekly origins
    beside seasonal naive and a 28-day average, and the model's interval coverage.
    [bold]sentiment[/]: macro-F1, accuracy, ROC-AUC on slices of the newest rated texts beside
    the VADER lexicon (rule) and TF-IDF + logistic regression (reference).

    [bold]Examples[/]:
      nightowl evaluate --data-root demo
      nightowl evaluate --model propensity --origins 5 --date 2026-12-05 --data-root demo
      nightowl evaluate --config examples/online_retail/nightowl.toml --date 2010-12-09
      nightowl query --data-root demo 'select * from model_evaluation where "primary"'
    """
    settings = _settings(config, data_root)
    last_day = _parse_date(date_, settings)
    _prepare_prefect(settings, api=True)
    from nightowl.flows.evaluate import MODELS

    unknown = sorted(set(model or []) - set(MODELS))
    if unknown:
        raise typer.BadParameter(f"unknown model {unknown}; expected {' or '.join(MODELS)}")
    report = _evaluate(settings, config, last_day, model or None, origins)
    for name, why in report["skipped"].items():
        colour = "red" if model else "yellow"
        err.print(f"[{colour}]{name} not evaluated[/]: {escape(why)}")
    if not report["rows"]:
        raise typer.Exit(1)
    _print_evaluation(settings, last_day, report)
    if model and report["skipped"]:
        raise typer.Exit(1)


def _evaluate(
    settings: Settings,
    config: Path | None,
    last_day: date,
    models: list[str] | None = None,
    origins: int | None = None,
) -> dict:
    """Run the evaluate flow (the Prefect API already prepared) and return its report."""
    from nightowl.flows.evaluate import evaluate as evaluate_flow

    runs = _FlowRuns(1)
    with _ends_at_a_signal(lambda: f"evaluating on data to {last_day}", "run it again", runs):
        _wait_for_api()
        try:
            report = runs.call(
                evaluate_flow,
                last_day=last_day,
                config=str(config) if config else None,
                data_root=str(settings.data_root),
                models=models,
                origins=origins,
            )
        except Exception as exc:  # the flow's own failure message says what went wrong
            err.print(f"[red]evaluation failed[/]: {escape(str(exc))}")
            raise typer.Exit(1) from None
    runs.pool.shutdown()
    return report


def _print_evaluation(settings: Settings, last_day: date, report: dict) -> None:
    """Each model's primary metric by origin beside its rules, and a verdict line per model."""
    from nightowl.tasks.evaluate import rows as evaluation
    from nightowl.tasks.evaluate.units import latest_evaluation
    from nightowl.warehouse.store import Warehouse

    figures = latest_evaluation(Warehouse(settings.data_root), last_day + timedelta(days=1))
    if figures is None:
        return
    for (name, protocol), part in figures.group_by("model", "protocol", maintain_order=True):
        console.print(_evaluation_table(str(name), str(protocol), evaluation.by_origin(part)))
    judged = evaluation.summary(evaluation.verdicts(figures, settings.evaluate.margin))
    for line in evaluation.verdict_lines(judged):
        console.print(escape(line), soft_wrap=True)
    console.print(
        f"Figures: model_evaluation as of {report['as_of']} ({report['rows']} rows); "
        f"nightowl query{_root_flag(settings)} "
        '"select * from model_evaluation"',
        soft_wrap=True,
    )


def _evaluation_table(name: str, protocol: str, table: pl.DataFrame) -> Table:
    """A model's primary metric per origin for every scorer, and its mean."""
    metric = table["metric"][0]
    out = Table(title=f"{name} ({protocol}): {metric} by origin", show_edge=False)
    origins = [c for c in table.columns if c[:1].isdigit()]
    for col in ("scorer", "kind", *origins, "mean"):
        out.add_column(col, justify="left" if col in ("scorer", "kind") else "right")
    for row in table.iter_rows(named=True):
        out.add_row(row["scorer"], row["kind"], *(_num(row[o]) for o in (*origins, "mean")))
    return out


def _versions_table(view: VersionsView, cards: list, star: list[str]) -> Table:
    """A model's registered versions with the figures its view names; ``star`` marks one."""
    table = Table(title=view.title, show_edge=False)
    headers = ("", "version", "data to", *(f.header for f in view.figures), "serves")
    for col in headers:
        table.add_column(col, justify="left" if col in ("", "version", "serves") else "right")
    for mark, card in zip(star, cards, strict=True):
        cells = [f.shown(card) for f in view.figures]
        # What the nightly flow serves when this version is the one chosen: itself, or the
        # simple rule it did not beat (- : registered before the guard).
        serves = "-" if card.guard is None else card.serves_rule or "model"
        table.add_row(mark, card.version, card.training["last_day"], *cells, serves)
    return table


@app.command()
def backfill(
    start: Annotated[str, typer.Option(help="First run date, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Last run date, YYYY-MM-DD (inclusive).")],
    force: Annotated[
        bool, typer.Option("--force", help="Run dates that are already complete too.")
    ] = False,
    force_steps: ForceOpt = None,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Dates run side by side (each source stays one at a time).")
    ] = 1,
    config: ConfigOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Run the nightly flow for every date from --start to --end, oldest first.

    Dates whose run already completed are skipped (unless --force), so a backfill that stopped
    half-way — a crash, Ctrl-C — picks up where it was when started again, and running a
    finished backfill again does nothing.

    [bold]Examples[/]:
      nightowl backfill --start 2026-11-01 --end 2026-11-07
      nightowl backfill --start 2026-11-01 --end 2026-11-07 --force --force-steps clean
      nightowl backfill --start 2026-10-01 --end 2026-10-31 --concurrency 2
    """
    from nightowl.warehouse.store import Warehouse

    settings = _settings(config, data_root)
    first, last = _parse_date(start, settings), _parse_date(end, settings)
    if last < first:
        err.print(f"[red]--end {last} is before --start {first}[/]")
        raise typer.Exit(2)
    forced = _parse_steps(force_steps)
    wh = Warehouse(settings.data_root)
    dates = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    todo = [d for d in dates if force or wh.completed_run(d.isoformat()) is None]
    skipped = len(dates) - len(todo)
    console.print(
        f"backfill {first} … {last}: {len(todo)} date(s) to run, {skipped} already complete"
    )
    if todo and concurrency == 1:
        _run_nightly(settings, config, todo, forced, progress=True)
    elif todo:
        _run_side_by_side(settings, config, todo, forced, concurrency)


def _run_side_by_side(
    settings: Settings, config: Path | None, dates: list[date], force: list[str] | None, k: int
) -> None:
    """Run dates ``k`` at a time; per-source locks keep two runs off the same source at once.
    They share this command's one temporary Prefect API (if it needs one)."""
    kwargs = {
        "config": str(config) if config else None,
        "data_root": str(settings.data_root),
        "force_steps": force,
    }
    failed: list[str] = []
    runs = _FlowRuns(k)
    what, kept = _interrupted_runs(dates, backfill=True)
    with _ends_at_a_signal(lambda: what, kept, runs):
        nightly = _nightly_flow(settings)  # first: it points Prefect at the data root
        from nightowl.flows.nightly import NightlyFailed

        with _dates_progress(len(dates)) as advance:
            started = {runs.submit(nightly, run_date=d, **kwargs): d for d in dates}
            for done, future in enumerate(runs.completed(list(started)), start=1):
                run_date = started[future]
                try:
                    future.result()
                    console.print(f"[green]✓[/] {run_date} ({done}/{len(dates)})")
                except NightlyFailed as exc:
                    failed.append(f"{run_date}: {exc}")
                    console.print(f"[red]✗[/] {run_date} ({done}/{len(dates)})")
                advance()
    runs.pool.shutdown()
    if failed:
        err.print("[red]backfill failed for[/]:\n" + escape("\n".join(failed)))
        raise typer.Exit(1)


@app.command()
def demo(
    users: UsersOpt = 20_000,
    items: ItemsOpt = 1_000,
    days: DaysOpt = 130,  # the first (backfilled) night's training needs about 90 days
    runs: Annotated[
        int, typer.Option(min=1, help="Nightly runs, one per date, ending yesterday.")
    ] = 2,
    history_nights: Annotated[
        int,
        typer.Option(
            min=0,
            help="Nightly runs, one per date, about five weeks before the last ones (a backfill): "
            "their predictions have matured by the last night, which judges them in "
            "model_health.",
        ),
    ] = 2,
    seed: SeedOpt = 7,
    evaluate_models: Annotated[
        bool,
        typer.Option(
            "--evaluate/--no-evaluate",
            help="Before the last night, backtest every model beside its simple rules "
            "(nightowl evaluate), so that the last report shows the verdicts.",
        ),
    ] = True,
    evaluate_origins: Annotated[
        int, typer.Option("--origins", min=1, max=52, help="Past origins of that evaluation.")
    ] = 2,
    config: ConfigOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Generate demo data, run the nightly flow over the last few days, show what came out.

    First a backfill of --history-nights nights about five weeks back: the first of them
    ingests all history up to its date, trains the propensity, demand, sentiment and
    recommender models (no champions yet), scores every user, forecasts every item, scores
    every feedback item, triages the support tickets, recommends 10 items to every customer
    and writes the report. Then the --runs last nights: each picks up the files since (and the
    late events they carry), retrains when due, and scores, forecasts and recommends with the
    champions; the last one judges the backfilled nights' predictions, whose outcomes are in
    by then, in model_health. Before the last run, nightowl evaluate backtests every model
    beside its simple rules at two past origins, and the last report says whether each beats
    them.

    [bold]Examples[/]:
      nightowl demo --data-root demo --users 20000 --runs 3
      nightowl demo --data-root demo --no-evaluate --history-nights 0
    """
    from nightowl.demo.generate import generate_landing

    settings = _settings(config, data_root)
    _require_storage(settings)  # before generating into it
    end = settings.yesterday()
    started = time.perf_counter()
    with console.status("generating demo landing files…") as status:
        summary = generate_landing(
            settings.data_root / "landing",
            users=users,
            items=items,
            days=days,
            seed=seed,
            end_date=end,
            progress=lambda msg: status.update(msg),
        )
    console.print(
        f"generated {len(summary.files)} landing files under {settings.data_root}/landing"
    )
    dates = [end - timedelta(days=i) for i in reversed(range(min(runs, days)))]
    past = backfilled_nights(settings, dates[0], end - timedelta(days=days - 1), history_nights)
    if past:
        console.print(f"backfilling {len(past)} earlier night(s), from {past[0]}")
        _run_nightly(settings, config, past)
    if evaluate_models and len(dates) > 1:
        # Every model beside its simple rules on the history so far, before the last night,
        # whose report page then shows the verdicts.
        _run_nightly(settings, config, dates[:-1])
        console.print(f"evaluating the models beside their simple rules on data to {dates[-2]}")
        report = _evaluate(settings, config, dates[-2], origins=evaluate_origins)
        _print_evaluation(settings, dates[-2], report)
        _run_nightly(settings, config, dates[-1:])
    else:
        _run_nightly(settings, config, dates)
    tables(config=config, data_root=settings.data_root)
    root = settings.data_root
    dr = _root_flag(settings)
    me = _invocation()
    console.print(
        f"\n[bold]Done in {time.perf_counter() - started:.0f} s.[/] Outputs: Parquet under "
        f"{root}/warehouse (clean/, raw/, quarantine/, features/, predictions/, reports/), one "
        "folder per table and date; models under models/.\n"
        f"The morning report: {root / 'reports' / end.isoformat() / 'index.html'} "
        "(open it in a browser).\n"
        "Try:\n"
        f'  {me} query{dr} "select event_type, count(*) n from events group by 1 order by n desc"\n'
        f'  {me} query{dr} "select risk_tier, count(*), avg(p_purchase_30d) from user_scores '
        'group by 1"\n'
        f'  {me} query{dr} "select item_id, category, sum(forecast) units_next_7d '
        'from demand_forecast group by all order by 3 desc limit 5"\n'
        f'  {me} query{dr} "select item_id, our_price, competitor_median, gap_pct, our_rank '
        'from price_position order by gap_pct desc limit 5"\n'
        f'  {me} query{dr} "select rank, topic, round(urgency, 2) urgency, faq_question, text '
        'from support_queue order by rank limit 5"\n'
        f'  {me} query{dr} "select sentiment_label, count(*), avg(rating) from feedback_scores '
        'group by 1"\n'
        f'  {me} query{dr} "select rank, title, category, reason from recommendations '
        "where user_id = 'u000042' order by rank\"\n"
        f'  {me} query{dr} "select day, revenue, revenue_wow, conversion from kpi_daily '
        'order by day desc limit 7"\n'
        f'  {me} query{dr} "select segment, audience, headline, send_time from campaign_briefs"\n'
        f"  {me} models{dr}\n"
        f"  {me} evaluate{dr} --origins 3\n"
        f'  {me} query{dr} "select source, reason, count(*) n from quarantine group by all"\n'
        f"  {me} tables{dr}",
        soft_wrap=True,  # the commands are copied and pasted: a wrapped one breaks
    )


def backfilled_nights(settings: Settings, first_run: date, first_day: date, n: int) -> list[date]:
    """The demo's ``n`` backfilled run dates, oldest first: before ``first_run`` by the longest
    outcome window (the propensity model's 30 days) and a few days to spare, so the last night
    judges them; only those with the history a first training needs after ``first_day``."""
    matured = max(settings.model.horizon_days, settings.recommend.horizon_days) + 5
    nights = [first_run - timedelta(days=matured + i) for i in reversed(range(n))]
    needed = settings.model.min_history_days + 2 * settings.model.horizon_days
    return [d for d in nights if (d - first_day).days + 1 >= needed]


def _invocation() -> str:
    """How to run this command again: ``nightowl`` if that is on PATH, else the path used."""
    used = Path(sys.argv[0])
    on_path = shutil.which("nightowl")
    if used.name == "nightowl" and (on_path is None or Path(on_path).resolve() != used.resolve()):
        return _shown(used.absolute())
    return "nightowl"


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="Address to bind (default: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: 4200).")] = None,
    config: ConfigOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Start the Prefect UI and API for nightowl, with its database under the data root, and
    serve the report pages read-only on the same port: <data root>/reports/<date>/index.html at
    /reports/<date>/index.html. A run that reports to this server links its page there.

    Binds to loopback unless told otherwise (put authentication in front before exposing it).
    Stop it with Ctrl-C.

    [bold]Example[/]: nightowl server --port 4200   # then open http://127.0.0.1:4200
    (a report: http://127.0.0.1:4200/reports/2026-11-27/index.html)
    """
    import subprocess

    from nightowl.warehouse.store import PAGES_URL_PATH, Warehouse

    settings = _settings(config, data_root)
    host = host or settings.server.host
    port = port or settings.server.port
    quiet = "PREFECT_SERVER_LOGGING_LEVEL" not in os.environ
    _prepare_prefect(settings)
    if quiet:  # this server is the one people look at: its warnings and errors are shown
        os.environ["PREFECT_SERVER_LOGGING_LEVEL"] = "WARNING"
    ui_api = os.environ.get("PREFECT_UI_API_URL") or ui_api_url(host, port)
    pages = Warehouse(settings.data_root).pages_root
    console.print(
        f"Prefect UI and API on http://{host}:{port} "
        f"(database under {os.environ['PREFECT_HOME']}),\n"
        f"the reports of {pages} on http://{host}:{port}{PAGES_URL_PATH}.\n"
        f"Point other commands at it with PREFECT_API_URL=http://{host}:{port}/api. Ctrl-C stops.",
        soft_wrap=True,  # addresses and paths are copied: never wrap them
    )
    if ui_api != f"http://{host}:{port}/api":
        console.print(
            f"The UI calls the API at {ui_api}; for browsers on other machines set "
            "PREFECT_UI_API_URL to the address they reach this one at.",
            markup=False,
        )
    # The UI asks the server where its API is: without these it answers port 4200 (Prefect's
    # default) whatever --port says, or another server's PREFECT_API_URL from the environment.
    env = os.environ | {
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": ui_api,
    }
    # Prefect's app as `prefect server start` runs it, with the pages root at /reports/ beside it.
    command = [
        sys.executable,
        "-m",
        "nightowl.flows.webserver",
        "--host",
        host,
        "--port",
        str(port),
    ]
    proc = subprocess.Popen([*command, "--pages", str(pages)], env=env)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop is a Ctrl-C
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = _stop(proc)
    raise typer.Exit(0 if code in (0, -signal.SIGINT, -signal.SIGTERM, 130) else code)


def ui_api_url(host: str, port: int) -> str:
    """Where a browser finds the API of a server bound to ``host``:``port`` (a wildcard bind is
    reached at loopback from this machine)."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in shown and not shown.startswith("["):  # an IPv6 address in a URL
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/api"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop(proc) -> int:
    """Pass Ctrl-C (or a TERM) on to the server, let it shut down, insist if it takes too long."""
    import subprocess

    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.terminate()
        return proc.wait()


def _stoppable_by_interrupt() -> None:
    """Make SIGINT stop this process even when it was started with SIGINT ignored or blocked
    (``cmd &`` in a script, or a parent whose thread had it masked): both are inherited."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@app.command()
def serve(
    config: ConfigOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Create or update the nightly deployment with its schedule, and run its flow runs.

    The schedule is `[schedule] cron` from nightowl.toml (default 02:00) in the configured time
    zone. Needs a Prefect server: `nightowl server`, or PREFECT_API_URL. Restarting it updates the
    same deployment; stopping it leaves the schedule active. Stop it with Ctrl-C.

    [bold]Example[/]: nightowl serve --config nightowl.toml
    """
    settings = _settings(config, data_root)
    _stoppable_by_interrupt()
    os.environ.setdefault("PREFECT_API_URL", settings.server.api_url)  # before Prefect loads
    _require_api(os.environ["PREFECT_API_URL"])
    nightly = _nightly_flow(settings)
    schedule = settings.schedule
    console.print(
        f"serving deployment nightowl-nightly/{schedule.deployment}: {schedule.cron} "
        f"({settings.timezone}) against {os.environ['PREFECT_API_URL']}; Ctrl-C stops"
    )
    try:
        nightly.serve(
            name=schedule.deployment,
            schedule=cron_schedule(schedule.cron, settings.timezone),
            parameters={
                "config": str(config.absolute()) if config else None,
                "data_root": str(settings.data_root),
            },
            pause_on_shutdown=False,  # a restart must find the schedule as it was
            print_starting_message=False,
        )
    except KeyboardInterrupt:
        console.print("stopped serving; the schedule stays active")


def _require_api(url: str) -> None:
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError:
        err.print(
            f"[red]no Prefect API at {escape(url)}[/]: start one with `nightowl server` "
            "(or set PREFECT_API_URL)"
        )
        raise typer.Exit(2) from None


Format = Literal["table", "csv", "json", "parquet"]


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="One read-only SQL statement (DuckDB dialect).")],
    format_: Annotated[
        Format | None,
        typer.Option(
            "--format", "-f", help="table, csv, json or parquet (default: from --output)."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Rows shown in the terminal table.")] = 50,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0,
            metavar="SECONDS",
            help="Stop the query after this long; 0: no limit (default: query.timeout_seconds "
            "in the config, 300).",
        ),
    ] = None,
    config: ConfigOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Run read-only SQL over the warehouse; tables are views named after them.

    Views: events, items, feedback, market_prices, market_indicators, quarantine, held (early
    rows waiting for their day), ingest_ledger (one row per delivery), raw_<source>,
    items_history; the prediction tables (user_scores, price_position,
    demand_forecast, category_forecast, price_scenarios, feedback_scores, product_sentiment,
    support_queue, recommendations) and the report tables (kpi_daily, segments,
    at_risk_customers, product_health, campaign_briefs) at their latest as_of, <table>_history
    for every night's; user_features. In CSV output, lists are joined with "; ".
    Statements that write or reach outside the warehouse are refused.

    [bold]Examples[/]:
      nightowl query "select event_type, count(*) from events group by 1"
      nightowl query "select * from quarantine" --output rejects.csv
      nightowl query "select source, dt, waits_for, count(*) from held group by all"
      nightowl query "select rank, topic, urgency, suggested_answer from support_queue limit 10"
      nightowl query "select * from recommendations where user_id = 'u000042' order by rank"
      nightowl query "explain analyze select count(*) from events" --timeout 60
    """
    import duckdb

    from nightowl.warehouse.query import QueryRefused, QueryTimedOut, explain_missing, run_query
    from nightowl.warehouse.store import Warehouse

    settings = _settings(config, data_root)
    seconds = settings.query.timeout_seconds if timeout is None else timeout
    try:
        frame = run_query(Warehouse(settings.data_root), sql, timeout=seconds)
    except QueryRefused as exc:
        err.print(f"[red]query refused:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except QueryTimedOut as exc:
        err.print(
            f"[red]{escape(str(exc))} (--timeout);[/] narrow it (a where on dt or as_of, a "
            "limit) or raise --timeout (0: no limit)"
        )
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("[red]query interrupted[/] (Ctrl-C)")
        raise typer.Exit(130) from None
    except Exception as exc:  # DuckDB's own message names the missing table or column
        why = explain_missing(exc) if isinstance(exc, duckdb.Error) else None
        err.print(f"[red]query failed:[/] {escape(why or str(exc).splitlines()[0])}")
        raise typer.Exit(1) from None
    fmt = format_ or (output.suffix.lstrip(".").lower() if output else "table")
    if fmt not in ("table", "csv", "json", "parquet"):
        err.print(
            f"[red]--format:[/] expected table, csv, json or parquet, got {escape(repr(fmt))}"
        )
        raise typer.Exit(2)
    if fmt == "table":
        _print_frame(frame, limit)
        return
    if output is None and fmt == "parquet":
        err.print("[red]--format parquet needs --output FILE[/]")
        raise typer.Exit(2)
    target = output if output is not None else sys.stdout
    if fmt == "csv":
        from nightowl.tasks.report.page import csv_ready

        csv_ready(frame).write_csv(target)  # lists and structs have no CSV form of their own
    elif fmt == "json":
        frame.write_ndjson(target)
    else:
        assert output is not None  # refused above
        frame.write_parquet(output)
    if output is not None:
        err.print(f"wrote {frame.height:,} rows to {output}")


def _print_frame(frame, limit: int) -> None:
    from rich.text import Text

    # Text cells are printed as they are: no markup ([red]), no emoji codes (:x: in root:x:0:0).
    table = Table(show_edge=False)
    for name in frame.columns:
        table.add_column(Text(name))
    for row in frame.head(limit).iter_rows():
        table.add_row(*(Text("" if v is None else str(v)) for v in row))
    console.print(table)
    more = f" (showing {limit})" if frame.height > limit else ""
    console.print(f"{frame.height:,} rows{more}")


@app.command()
def report(
    date_: DateOpt = None,
    config: ConfigOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Write the report tables (kpi_daily, segments, at_risk_customers, product_health,
    campaign_briefs) as of the day after the run date, and the report page
    <data root>/reports/<date>/index.html, with every table beside it as CSV.

    The nightly flow does the same as its last step; this rebuilds it from what the warehouse
    holds now, without Prefect. The page is one self-contained file: it opens with no
    network.

    [bold]Examples[/]:
      nightowl report --data-root demo
      nightowl report --date 2026-11-27
      nightowl query "select day, revenue, revenue_wow from kpi_daily order by day desc limit 7"
    """
    from nightowl.errors import NotEnoughHistory
    from nightowl.tasks.report.units import build_report
    from nightowl.warehouse.manifest import code_version
    from nightowl.warehouse.store import Warehouse

    settings = _settings(config, data_root)
    run_date = _parse_date(date_, settings)
    wh = Warehouse(settings.data_root, code_version())
    try:
        with console.status(f"building the report for {run_date}…"):
            built = build_report(wh, run_date, settings.report, settings.timezone)
    except NotEnoughHistory as exc:
        err.print(f"[red]no report for {run_date}:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except ValueError as exc:  # a brief writer that cannot be loaded names the setting
        err.print(f"[red]report failed:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    console.print(f"[bold]What changed on {run_date}[/]")
    for line in built.summary:
        console.print(f"  • {escape(line)}")
    table = Table(show_edge=False)
    table.add_column("table (as_of " + built.as_of + ")")
    table.add_column("rows", justify="right")
    for name, part in built.tables.items():
        table.add_row(name, f"{part['rows']:,}")
    console.print(table)
    for line in built.missing:
        console.print(f"[yellow]not in this report:[/] {escape(line)}")
    console.print(
        f"Report: {built.page}\nOpen it in a browser (file://), or query its tables: "
        f'{_invocation()} query{_root_flag(settings)} "select * from segments"',
        soft_wrap=True,
    )


def _root_flag(settings: Settings) -> str:
    root = settings.data_root
    return "" if root == Path("data").absolute() else f" --data-root {_shown(root)}"


@app.command()
def catalog(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="DuckDB file to write (default: <data root>/nightowl.duckdb)."
        ),
    ] = None,
    config: ConfigOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Write a DuckDB database file whose views are the warehouse's tables, for BI tools
    (Metabase, Superset, Tableau, DBeaver… through their DuckDB drivers) and notebooks.

    The file holds no data: its views read the Parquet files in place and follow each night's
    new partitions. Open it read-only; run this again when new tables appear.

    [bold]Examples[/]:
      nightowl catalog --data-root demo
      duckdb -readonly demo/nightowl.duckdb "select * from kpi_daily order by day desc limit 7"
    """
    from nightowl.warehouse.query import write_catalog
    from nightowl.warehouse.store import Warehouse

    settings = _settings(config, data_root)
    target = (output or settings.data_root / "nightowl.duckdb").absolute()
    names = write_catalog(Warehouse(settings.data_root), target)
    console.print(f"wrote {len(names)} views to {target}: {', '.join(names)}", soft_wrap=True)


@app.command()
def tables(config: ConfigOpt = None, data_root: DataRootOpt = None) -> None:
    """List every table with its partitions, rows, bytes and last update; then the early rows
    held for their day, and the corrections and copies among the deliveries.

    [bold]Example[/]: nightowl tables --data-root demo
    """
    from nightowl.warehouse.catalog import delivery_lines, table_summaries
    from nightowl.warehouse.store import Warehouse, human_bytes

    settings = _settings(config, data_root)
    frame = table_summaries(Warehouse(settings.data_root))
    if frame.is_empty():
        console.print(f"no tables yet under {settings.data_root}/warehouse; run `nightowl run`")
        return
    table = Table(title=f"tables in {settings.data_root}/warehouse", show_edge=False)
    for name in frame.columns:
        table.add_column(name, justify="right" if frame[name].dtype.is_integer() else "left")
    for row in frame.iter_rows(named=True):
        row["bytes"] = human_bytes(row["bytes"])
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    console.print(table)
    for line in delivery_lines(Warehouse(settings.data_root)):
        console.print(line, markup=False, highlight=False, emoji=False)


#: Errors of the machine, not of nightowl: said in one line, without a traceback.
MACHINE_ERRORS = (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``nightowl`` command.

    A temporary Prefect API the command started is stopped at exit (flows/local_api.py): after
    Prefect has sent it its last logs and events."""
    _command.args = list(sys.argv[1:] if args is None else args)
    try:
        app(args)
    except OSError as exc:  # a folder it may not write, a full disk
        if exc.errno not in MACHINE_ERRORS:
            _unexpected(exc)
        where = f": {exc.filename}" if exc.filename else ""
        err.print(f"[red]nightowl:[/] {escape((exc.strerror or str(exc)) + where)}")
        raise SystemExit(1) from None
    except Exception as exc:
        _unexpected(exc)


#: The error log of unexpected errors, under the data root's _state/logs/ (or the current folder).
ERROR_LOG = "errors.log"


def _unexpected(exc: BaseException) -> NoReturn:
    """An error nightowl has no message for: one line on stderr naming it and where its
    traceback went (the error log; --debug or NIGHTOWL_DEBUG=1 prints it too); exit 1."""
    text = "".join(traceback.format_exception(exc))
    log = _log_traceback(text)
    if _command.debug or log is None:
        sys.stderr.write(text)
    what = f"{_command.name} failed: " if _command.name else ""
    message = next(iter(str(exc).strip().splitlines()), "")
    detail = f"{type(exc).__name__}: {message[:300]}" if message else type(exc).__name__
    if log is None:
        where = "no error log could be written: traceback above"
    else:
        where = f"traceback in {log}" + ("" if _command.debug else "; --debug shows it")
    err.print(f"[red]nightowl:[/] {escape(what + detail)} ({escape(where)})")
    raise SystemExit(1) from None


def _log_traceback(text: str) -> Path | None:
    """Append ``text`` to the error log, under the data root if one is known, else in the
    current folder; the file written, or None if neither can be."""
    from nightowl.flows.runtime import log_dir

    places = [log_dir(_command.data_root) / ERROR_LOG] if _command.data_root else []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    command = shlex.join(["nightowl", *_command.args])
    for path in [*places, Path.cwd() / f"nightowl-{ERROR_LOG}"]:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as log:
                log.write(f"--- {stamp} pid {os.getpid()}: {command}\n{text}\n")
        except OSError:
            continue
        return path.absolute()
    return None
