"""The ``driftline demo`` command: options, the platform, the run, the summary and report."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from driftline.cli.context import SecureOption, console, err_console, state, use_secure_mode
from driftline.cli.demo.live_view import live_view
from driftline.cli.demo.ops_check import OpsOutcome, collect_ops
from driftline.cli.demo.options import DemoOptions
from driftline.cli.demo.platform import Started, ensure_platform, stop_started
from driftline.cli.demo.report import write_report
from driftline.cli.demo.runner import DemoRun
from driftline.cli.infra_commands import OpsOption
from driftline.cli.ops_views import trace_html
from driftline.devtools.demo_env import demo_models_dir, demo_service_env
from driftline.devtools.infra import InfraError

__all__ = ["demo"]


def _describe_start(env: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{k.removeprefix('DRIFTLINE_').lower()}={v}" for k, v in env)


def demo(
    ctx: typer.Context,
    events: Annotated[
        int, typer.Option(min=1, help="Loan applications to stream (~2 min at the default rate).")
    ] = 12_000,
    rate: Annotated[
        float, typer.Option(min=1.0, help="Applications sent per second (event time follows).")
    ] = 100.0,
    drift_at: Annotated[
        int,
        typer.Option(
            min=1,
            help="Index of the first application labelled by the new rule (the concept drift: "
            "Agrawal function 2 → 0).",
        ),
    ] = 6_000,
    return_at: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Index at which the old rule (Agrawal function 2) comes back: a recurring "
            "concept, answered by restoring the old champion (e.g. --events 16000 "
            "--return-at 12600). Default: no return.",
        ),
    ] = None,
    label_delay: Annotated[
        int,
        typer.Option(min=0, help="A label is sent after this many further applications."),
    ] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the applications and customers.")] = 42,
    model: Annotated[
        str,
        typer.Option(
            help="Model (spec name) to ask for predictions: loans (River, learns online) or "
            "loans-gbm (scikit-learn gradient boosting, refitted on a window)."
        ),
    ] = "loans",
    concurrency: Annotated[
        int, typer.Option(min=1, help="Most Predict calls in flight at once.")
    ] = 32,
    report: Annotated[
        Path,
        typer.Option(help="Markdown report to write; the plot goes next to it as .png."),
    ] = Path(".driftline/demo/report.md"),
    keep_running: Annotated[
        bool,
        typer.Option(help="Leave what the demo started running (stop it with `driftline down`)."),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            min=10.0, help="Seconds the stream plus the wait for the loop to close may take."
        ),
    ] = 900.0,
    service_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each service's /healthz.")
    ] = 90.0,
    ops: OpsOption = None,
    secure: SecureOption = False,
    ops_wait: Annotated[
        float,
        typer.Option(
            help="Seconds to wait, once the loop closed, for the drift and accuracy alerts "
            "and the loop's trace to reach Alertmanager and Jaeger."
        ),
    ] = 120.0,
) -> None:
    """Run the whole loop on a live loan stream with a known concept drift.

    Streams River's Agrawal loan applications to driftline.events (labels follow
    on driftline.labels after --label-delay applications), asks serving for a
    prediction for each one over gRPC, and follows the loop on driftline.drift,
    driftline.retrain, driftline.models and driftline.predictions: first
    champion, drift detected, retrain requested, candidate registered, promoted,
    new champion serving.  At the end it prints a summary and writes a Markdown
    report with a plot of accuracy over the stream.

    Kafka, Redis, the ops stack (Prometheus, Alertmanager, Jaeger; --no-ops leaves
    it out) and the six services are started if they are not running (and
    stopped again at the end, unless --keep-running); services the demo starts
    get scenario-sized settings (training snapshots, monitor warm-up) unless
    DRIFTLINE_* variables set them.  With --model loans-gbm, training loads only
    that spec (examples/models/batch/): its first champion is fitted on schedule
    and the retrain request refits it on the window after the drift.

    With --return-at the old rule comes back later: the monitor detects the
    concept drift again, and training restores the champion that served before
    the first drift (a "recurring concept" promotion, `driftline models history`)
    once a couple of hundred labels of it are in, long before a retrained
    candidate could be.

    With --secure the whole platform runs in secure mode (mTLS between services,
    Kafka SASL_SSL with per-service ACLs, Redis ACL users over TLS, registry roles,
    API keys); the demo's own clients are the admin identity.

    Exits 1 when the loop did not close: no drift detected, no retraining
    requested, the new champion not the retraining's candidate or not serving,
    failed requests, or (with --return-at) the old champion not restored.
    """
    if drift_at >= events:
        err_console.print("driftline demo: --drift-at must be smaller than --events")
        raise typer.Exit(2)
    if return_at is not None and not drift_at < return_at < events:
        err_console.print("driftline demo: --return-at must lie between --drift-at and --events")
        raise typer.Exit(2)
    cli = state(ctx)
    use_secure_mode(cli, secure)
    settings = cli.settings()
    options = DemoOptions(
        events=events,
        rate=rate,
        drift_at=drift_at,
        return_at=return_at,
        label_delay=label_delay,
        seed=seed,
        model=model,
        concurrency=concurrency,
        report=report,
        keep_running=keep_running,
        timeout_s=timeout,
        service_timeout_s=service_timeout,
    )
    models_dir = demo_models_dir(settings.training.models_dir, model)
    env = demo_service_env(options.drift_at, models_dir=models_dir)

    def say(line: str) -> None:
        console.print(line, highlight=False, markup=False)

    say(f"services the demo starts get: {_describe_start(env.items())}")
    try:
        started = ensure_platform(settings, cli.config, env, service_timeout, say, ops=ops)
    except InfraError as exc:
        err_console.print(f"driftline demo: {exc.message}", style="red", markup=False)
        raise typer.Exit(1) from None
    if models_dir is not None and not any(s.name == "training" for s in started.services):
        say(f"training was already running: the loop closes only if it trains {model} "
            f"(its training.models_dir must hold {models_dir})")  # fmt: skip
    run = DemoRun(settings, options, uuid.uuid4().hex[:8])  # opens nothing
    began = datetime.now(UTC)
    try:
        with Live(
            get_renderable=lambda: live_view(run.obs, events),
            console=console,
            refresh_per_second=4,
            transient=False,
        ) as live:
            run.obs.on_milestone = lambda m: live.console.print(
                f"[{m.wall_s:6.1f}s  event {m.at_event:>6}] {m.name}: {m.detail}",
                highlight=False,
                markup=False,
            )
            asyncio.run(run.run())
    except KeyboardInterrupt:
        err_console.print("interrupted")
    except TimeoutError:
        err_console.print("the stream did not finish within --timeout", style="red")
    except InfraError as exc:
        err_console.print(f"driftline demo: {exc.message}", style="red", markup=False)
    finally:
        outcome = _ask_ops(started, run, began, ops_wait, say)
        if options.keep_running:
            if started.infra or started.services:
                say("left running (--keep-running); `driftline down` stops it")
        else:
            stop_started(started, say)
    obs = run.obs
    report_path, png = write_report(obs, options.report, options)
    summary = dict(obs.summary())
    if outcome is not None:
        summary.update(outcome.summary())
        _add_ops_to_report(report_path, outcome)
    table = Table(title="driftline demo summary", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)
    console.print(f"report: {report_path}  plot: {png}", highlight=False)
    if outcome is not None:
        for problem in outcome.problems:
            err_console.print(f"ops: {problem}", style="yellow", markup=False)
    problems = obs.problems()
    if problems:
        err_console.print("the loop did not close: " + "; ".join(problems), style="red")
        raise typer.Exit(1)
    console.print("the loop closed", style="bold green")


def _ask_ops(
    started: Started, run: DemoRun, began: datetime, wait_s: float, say: Callable[[str], None]
) -> OpsOutcome | None:
    """What the ops stack saw of this run (None without one, or when the loop never
    reached a retraining request and there is nothing for ops to show)."""
    if started.ops is None or run.obs.detection is None:
        return None
    stack = started.ops
    request = run.obs.retrain_request
    return collect_ops(
        alertmanager_url=stack.alertmanager.url,
        jaeger_url=stack.jaeger.url,
        notifications=stack.notifications_file,
        started=began,
        retrain_id=request[0].request_id if request is not None else None,
        detected_at=run.obs.detection[0].detected_at,
        wait_s=wait_s,
        progress=say,
    )


def _add_ops_to_report(report: Path, outcome: OpsOutcome) -> None:
    """Append what ops saw to the report, and write the loop's trace page next to it."""
    section = outcome.markdown()
    if outcome.loop is not None:
        page = report.with_name(f"{report.stem}-trace.html")
        page.write_text(
            trace_html(outcome.loop, "Driftline loop trace", outcome.loop_url), encoding="utf-8"
        )
        section += f"\nThe trace as a page: [{page.name}]({page.name}).\n"
    with report.open("a", encoding="utf-8") as out:
        out.write("\n" + section)
