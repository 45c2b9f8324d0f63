"""Operations commands of `retro`: services, watch, lineage."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

services_app = typer.Typer(help="Start, stop and check the real servers (Prefect, MLflow, Redis, a worker).")

NAMES_HELP = "services to act on (default: prefect, mlflow, redis, worker; postgres only when named)"


def _services(home: Path, prefect_port: int, mlflow_port: int, redis_port: int):  # noqa: ANN202
    from components.cli.services import Ports, Services

    return Services(Path("."), home, Ports(prefect_port, mlflow_port, redis_port))


def _chosen(names: list[str] | None) -> list[str]:
    from components.cli.services import OPTIONAL_SERVICES, SERVICE_ORDER

    known = SERVICE_ORDER + OPTIONAL_SERVICES
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        typer.echo(f"unknown service(s) {unknown}; services: {', '.join(known)}", err=True)
        raise typer.Exit(2)
    return [n for n in SERVICE_ORDER if not names] + [n for n in known if names and n in names]


HomeOption = Annotated[Path, typer.Option(help="pid files, logs and the Prefect database")]
PrefectPort = Annotated[int, typer.Option(help="Prefect API and UI")]
MlflowPort = Annotated[int, typer.Option(help="MLflow tracking server and UI")]
RedisPort = Annotated[int, typer.Option(help="Redis (the serving L2 cache)")]


@services_app.command("up")
def services_up(
    names: Annotated[list[str] | None, typer.Argument(help=NAMES_HELP)] = None,
    home: HomeOption = Path(".services"),
    prefect_port: PrefectPort = 4200,
    mlflow_port: MlflowPort = 5000,
    redis_port: RedisPort = 6379,
) -> None:
    """Start the services in the background and wait until each answers; print how to use them."""
    services = _services(home, prefect_port, mlflow_port, redis_port)
    for name in _chosen(names):
        try:
            typer.echo(services.start(name))
        except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
            typer.echo(f"{name}: {exc}", err=True)
            raise typer.Exit(1) from None
    typer.echo(
        f"\nexport PREFECT_API_URL={services.prefect_api_url}\n"
        f"Prefect UI  {services.prefect_api_url.removesuffix('/api')}\n"
        f"MLflow UI   {services.mlflow_url}   (pipeline: -S register.tracking_uri={services.mlflow_url})\n"
        f"Redis       {services.redis_url}   (serving: serve.cache.redis_url)"
        + (
            f"\nexport RETRO_PG_URL='{services.postgres_url}'   (index.store: pgvector)"
            if services.postgres_url
            else ""
        )
    )


@services_app.command("down")
def services_down(
    names: Annotated[list[str] | None, typer.Argument(help=NAMES_HELP)] = None,
    home: HomeOption = Path(".services"),
) -> None:
    """Stop the services started by `up` (the worker first)."""
    services = _services(home, 4200, 5000, 6379)
    for name in reversed(_chosen(names)):
        typer.echo(services.stop(name))


@services_app.command("status")
def services_status(
    home: HomeOption = Path(".services"),
    prefect_port: PrefectPort = 4200,
    mlflow_port: MlflowPort = 5000,
    redis_port: RedisPort = 6379,
) -> None:
    """Whether each service is healthy; exits 1 when one is not."""
    report = _services(home, prefect_port, mlflow_port, redis_port).status()
    for name, state in report.items():
        typer.echo(f"{name:8s} {state}")
    if any(state != "healthy" for state in report.values()):
        raise typer.Exit(1)


def watch(
    once: bool = typer.Option(False, help="check once (no debounce wait), announce if changed, exit"),
    params_file: Annotated[Path, typer.Option("--params", help="read the watch section here")] = Path(
        "params.yaml"
    ),
) -> None:
    """Announce settled changes of watch.folder as retro.corpus.changed events (needs PREFECT_API_URL)."""
    from components.core.config import ParamsError
    from flows.watch import watch_forever, watcher_from_params

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        watcher, p = watcher_from_params(params_file)
    except (ParamsError, RuntimeError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if once:
        announced = watcher.check()
        typer.echo(json.dumps(announced) if announced else f"{watcher.folder}: nothing new to announce")
        return
    typer.echo(f"watching {watcher.folder} (debounce {p.debounce_seconds:g} s); Ctrl-C stops")
    watch_forever(watcher, p)


def lineage(
    version: Annotated[str, typer.Argument(help="<model>-adapter version number")] = "",
    alias: str = typer.Option("", help="or the version holding this alias (champion, challenger)"),
    tracking_uri: str = typer.Option("", help="MLflow store (default: register.tracking_uri)"),
    model: str = typer.Option("", help="registered model name (default: the corpus's, register.model_name)"),
    domain: str = typer.Option("", help="a domain adapter's lineage (<model>-adapter-<domain>)"),
) -> None:
    """Print where a registered adapter came from: flow run, git commit, dvc.lock hashes, index, corpus."""
    from components.core.config import load_params_file
    from components.registry import mlflow_registry as reg
    from components.registry.lineage import lineage as lineage_of
    from components.registry.naming import project_model_name

    if not version and not alias:
        typer.echo("give a version number or --alias", err=True)
        raise typer.Exit(2)
    params = load_params_file("params.yaml") if Path("params.yaml").exists() else {}
    uri = tracking_uri or params.get("register", {}).get("tracking_uri", reg.DEFAULT_TRACKING_URI)
    try:
        names = reg.ModelNames(model or project_model_name(params), domain or None)
        record = lineage_of(reg.configure(uri), version or None, alias or None, names)
    except LookupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(record, indent=2))


def alert_on_failure(
    url: Annotated[str, typer.Argument(help="webhook URL that receives a JSON POST {subject, text}")],
    slack: bool = typer.Option(False, help="the URL is a Slack incoming webhook"),
    name: str = typer.Option("retro-failure-alert", help="name of the automation and its block"),
) -> None:
    """Notify a webhook when a run of a Retro-PEFT deployment fails (a Prefect automation)."""
    from flows.alerts import create_failure_alert

    automation = create_failure_alert(url, "slack" if slack else "webhook", name)
    typer.echo(f"automation {automation.name!r} ({automation.id}) notifies {url} on Failed or Crashed runs")


def forget(
    doc_ids: Annotated[
        list[str], typer.Argument(help="document ids (paths under docs/ without the extension)")
    ],
) -> None:
    """Take documents out of the corpus lineage: the registry records them (services stop citing
    them at their next poll), the next version and index go without them, the replay reservoir
    drops their questions; then the closed-book figures on their questions, before and after, and
    after retraining without them when the adapter still answers them (forget.retrain)."""
    import os

    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from flows.forget import forget as forget_flow
    from flows.pipeline import StageFailed

    try:
        result = forget_flow(doc_ids=doc_ids, root=".")
    except (ValueError, FileNotFoundError, StageFailed) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    keys = ("documents", "version", "marked", "still_answers", "retrained")
    typer.echo(json.dumps({k: result[k] for k in keys}))
    for when in ("before", "after", "after_retraining"):
        figures = result.get(f"closed_book_{when}", {"questions": 0})
        if figures["questions"]:
            adapter, base = figures["adapter"]["f1"], figures["base"]["f1"]
            typer.echo(
                f"closed book {when.replace('_', ' ')}: adapter F1 {adapter:.3f}, base F1 {base:.3f} "
                f"({figures['questions']} q)"
            )
    typer.echo(result["verdict"])


def prune_index(
    dry_run: bool = typer.Option(False, "--dry-run", help="list the tables, drop nothing"),
    tracking_uri: str = typer.Option("", help="MLflow store (default: register.tracking_uri)"),
    model: str = typer.Option("", help="registered model name (default: the corpus's, register.model_name)"),
) -> None:
    """Drop the pgvector tables of index versions that are neither current nor registered."""
    from components.core.config import load_params_file
    from components.core.params import PipelineParams
    from components.core.paths import Paths
    from components.registry import mlflow_registry as reg
    from components.registry.naming import project_model_name
    from components.stores.manifest import IndexManifest
    from components.stores.pgvector_store import PgvectorStore, prune_version_tables

    raw = load_params_file("params.yaml")
    params = PipelineParams.model_validate(raw)
    if params.index.store != "pgvector":
        typer.echo(f"index.store is {params.index.store}: only pgvector keeps older versions (as tables)")
        return
    options = params.index.store_params
    url = PgvectorStore.connection_url(options.get("url"), options.get("url_env", "RETRO_PG_URL"))
    uri = tracking_uri or params.registration.tracking_uri
    names = reg.ModelNames(model or project_model_name(raw))
    keep = reg.tag_values(reg.configure(uri), names.index, "content_hash")
    try:
        keep.add(IndexManifest.read(Paths(".", params.paths).index).content_hash)
    except FileNotFoundError:
        pass  # no index built here yet: only registered versions are kept
    except (ValueError, RuntimeError) as exc:
        typer.echo(f"the current index manifest cannot be read ({exc}): nothing dropped", err=True)
        raise typer.Exit(1) from None
    gone = prune_version_tables(url, keep, dry_run)
    verb = "would drop" if dry_run else "dropped"
    typer.echo(f"{verb} {len(gone)} table(s), kept the {len(keep)} registered or current version(s)")
    for table in gone:
        typer.echo(f"  {table}")


def register_ops(app: typer.Typer) -> None:
    """Attach the operations commands to the main `retro` app."""
    app.add_typer(services_app, name="services")
    app.command()(watch)
    app.command()(lineage)
    app.command()(forget)
    app.command("alert-on-failure")(alert_on_failure)
    app.command("prune-index")(prune_index)
