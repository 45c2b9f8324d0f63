"""The `retro` command line: make-corpus, pipeline, update, ask, serve, services, watch, lineage,
prune-index, export-merged, export-gguf."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from components.cli.ops import register_ops
from components.core.environment import apply_offline_env

MODEL_HELP = "registered model: <model>-adapter, <model>-index (default: the corpus's, register.model_name)"

app = typer.Typer(
    help="Retro-PEFT: retrieval-augmented PEFT adapters that stay current.",
    no_args_is_help=True,
    add_completion=False,
)

apply_offline_env()


@app.command("make-corpus")
def make_corpus_cmd(
    out: Annotated[Path, typer.Argument(help="folder to create")],
    seed: int = 0,
    entities_per_domain: int = typer.Option(8, help="entities of each of the five domains"),
    versions: int = typer.Option(1, help="corpus versions v1..vN (facts change between them)"),
    change_share: float = typer.Option(0.15, help="share of facts revised in each new version"),
    add_per_version: int = 4,
    remove_per_version: int = 2,
    tasks: int = typer.Option(0, help="write a task sequence t001..tN instead of versions"),
    entities_per_task: int = 3,
    revisions_per_task: int = 2,
    test_share: float = typer.Option(0.3, help="share of questions in the test split"),
) -> None:
    """Write a synthetic knowledge base of fictional entities (docs/ + qa.jsonl)."""
    from components.data.synthetic import make_corpus

    summary = make_corpus(
        out,
        seed,
        entities_per_domain,
        versions,
        change_share,
        add_per_version,
        remove_per_version,
        tasks,
        entities_per_task,
        revisions_per_task,
        test_share,
    )
    typer.echo(json.dumps({"out": str(out), **summary}))


@app.command()
def pipeline(
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-S",
            help="section.key=value written into params.yaml first, like dvc exp run -S",
        ),
    ] = None,
    stage: Annotated[list[str] | None, typer.Option(help="run only these stages (in pipeline order)")] = None,
    params: Path = Path("params.yaml"),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="refuse at once if another run holds the workspace"
    ),
) -> None:
    """Run the retro-pipeline Prefect flow locally (no Prefect server needed)."""
    with _one_run(no_wait):
        from components.core.config import ParamsError, apply_overrides, load_params_file
        from components.core.params import parse_params
        from components.registry.naming import LineageConflict, check_project_lineage

        def check(raw: dict) -> None:  # valid values, and a registered model name of this corpus
            parsed = parse_params(raw)
            if not stage or "register" in stage:
                check_project_lineage(parsed.registration, parsed.ingest.source, ".")

        try:  # the whole file is validated, with the overrides, before anything is written or run
            if set_:
                apply_overrides(params, set_, check=check)
            else:
                check(load_params_file(params))
        except (ParamsError, LineageConflict) as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
        _prefect_local_defaults()
        from flows.pipeline import StageFailed, pipeline_stages, retro_pipeline

        stages = pipeline_stages(".")
        unknown = [s for s in stage or [] if s not in stages]
        if unknown:
            typer.echo(f"unknown stage(s) {unknown}; stages: {', '.join(stages)}", err=True)
            raise typer.Exit(2)
        chosen = [s for s in stages if s in stage] if stage else None
        try:
            results = retro_pipeline(root=".", stages=chosen)
        except LineageConflict as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
        except StageFailed as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
        _report(results)


@app.command()
def reindex(
    finetune: Annotated[
        bool, typer.Option("--finetune", help="fine-tune the embedder again (retrieval.finetune)")
    ] = False,
    params: Path = Path("params.yaml"),
) -> None:
    """Fine-tune the embedder again and build a new index version in full with it: --finetune
    removes this corpus's fine-tuned embedder, so the embed stage fine-tunes it on the current
    questions, and every later stage runs on the new index (as `retro pipeline` does)."""
    from components.core.params import load_params
    from components.embed.choice import FINETUNED

    if not finetune:
        typer.echo("nothing to do: `retro reindex --finetune` fine-tunes the embedder again", err=True)
        raise typer.Exit(2)
    parsed = load_params(params)
    if parsed.retrieval.finetune == "off":
        typer.echo("retrieval.finetune is off in params.yaml: set it to auto or on first", err=True)
        raise typer.Exit(2)
    folder = parsed.layout(".").embeddings / FINETUNED
    if folder.exists():
        shutil.rmtree(folder)
        typer.echo(f"removed the fine-tuned embedder {folder}; the embed stage fine-tunes it again")
    pipeline(set_=None, stage=None, params=params)


def _report(results: dict) -> None:
    """The evaluation table and the registration line of a finished flow."""
    from components.core.params import load_params

    table = load_params().layout(".").evaluation_table
    if table.exists() and "evaluate" in results:
        typer.echo("\n" + table.read_text())
    if "register" in results:
        r = results["register"]
        if not r.get("registered", True):
            typer.echo(f"evaluation gate refused the candidate, nothing registered: {r['reason']}")
            return
        name = r.get("model_name", "retro")
        typer.echo(
            f"registered {name}-index v{r['index_version']} and {name}-adapter v{r['adapter_version']}"
            f" ({'alias ' + r['alias'] if r['promoted'] else 'not promoted'}): {r['reason']}"
        )


def _prefect_local_defaults() -> None:
    """Run flows against a temporary local Prefect server unless PREFECT_API_URL is set."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")


@app.command()
def update(
    corpus: Annotated[
        Path | None, typer.Option(help="a full snapshot of the next version (docs/, optionally qa.jsonl)")
    ] = None,
    delta: Annotated[
        Path | None,
        typer.Option(help="only the added or changed documents (docs/) and questions (qa.jsonl)"),
    ] = None,
    remove: Annotated[
        Path | None, typer.Option(help="a file of document ids to remove, one a line (with --delta or alone)")
    ] = None,
    name: str = typer.Option("", help="version name (default: the next v<N> or t<NNN>)"),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="refuse at once if another run holds the workspace"
    ),
) -> None:
    """Add the next corpus version and run the knowledge-update flow (the incremental path).

    With --delta the next snapshot is the newest one with the delta applied: unchanged documents
    and questions are carried forward. A flat corpus (docs/ at the top) becomes v1 first.
    """
    with _one_run(no_wait):
        if (corpus is None) == (delta is None and remove is None):
            typer.echo("give --corpus DIR (a full snapshot) or --delta DIR and/or --remove FILE", err=True)
            raise typer.Exit(2)
        _prefect_local_defaults()
        from components.data.corpus import read_ids
        from flows.knowledge_update import add_delta, add_version, knowledge_update, versioned_source
        from flows.pipeline import StageFailed

        try:
            source, _, converted = versioned_source(".")
            if converted:
                typer.echo(f"{source} was a flat corpus: its docs/ and qa.jsonl are now {source}/v1")
            if corpus is not None:
                added = add_version(".", corpus, name or None)
                if added is None:
                    typer.echo(f"{corpus} holds the newest corpus version's content: nothing to add")
                    return
                typer.echo(f"corpus version {added} added from {corpus}")
            else:
                added, summary = add_delta(".", delta, read_ids(remove), name or None)
                typer.echo(f"corpus version {added} built from the delta: {json.dumps(summary.as_dict())}")
        except (FileNotFoundError, ValueError) as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
        try:
            results = knowledge_update(root=".")
        except StageFailed as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
        _report(results)


@contextmanager
def _one_run(no_wait: bool) -> Iterator[None]:
    """Hold the workspace's run lock (components/core/workspace_lock.py); a busy workspace with
    --no-wait exits with code 75 (try again later)."""
    from components.core.workspace_lock import WorkspaceBusy, workspace_lock

    try:
        with workspace_lock(".", wait=not no_wait, say=lambda message: typer.echo(message, err=True)):
            yield
    except WorkspaceBusy as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(75) from None


def _serve_settings(params: dict, engine: str):  # noqa: ANN202
    """The serve section of params, with `--engine` over serve.engine when given; ParamsError names
    the bad key."""
    from components.core.config import parse_section
    from components.core.serve_params import ServeSettings

    section = {**(params.get("serve") or {}), **({"engine": engine} if engine else {})}
    return parse_section(ServeSettings, {"serve": section}, "serve")


@app.command()
def ask(
    question: str,
    alias: str = typer.Option("champion", help="registry alias of the <model>-adapter version"),
    k: int = typer.Option(0, help="passages to retrieve (0 = the adapter's own setting)"),
    tracking_uri: str = typer.Option("", help="MLflow store (default: register.tracking_uri)"),
    model: str = typer.Option("", help=MODEL_HELP),
    max_new_tokens: int = 24,
    engine: str = typer.Option("", help="torch or llamacpp (default: serve.engine)"),
) -> None:
    """Answer from a registered adapter and its linked index; print sources and versions."""
    from components.adapters.kv_index import KVFolder
    from components.core.config import ParamsError, load_params_file
    from components.registry.naming import project_model_name
    from components.serving.answerer import Answerer
    from components.stores.base import format_citation

    params = load_params_file() if Path("params.yaml").exists() else {}
    if not tracking_uri:
        from components.registry.mlflow_registry import DEFAULT_TRACKING_URI

        tracking_uri = params.get("register", {}).get("tracking_uri", DEFAULT_TRACKING_URI)
    model = model or project_model_name(params)
    try:
        serve = _serve_settings(params, engine)
    except ParamsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    kv_folder = KVFolder(Path(serve.chunk_kv_folder), serve.chunk_kv_budget_gb)
    try:
        answerer = Answerer.from_registry(
            tracking_uri,
            alias,
            model_name=model,
            kv_folder=kv_folder,
            engine=serve.engine,
            llamacpp=serve.llamacpp,
            torch_engine=serve.torch,
        )
    except (LookupError, RuntimeError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    result = answerer.answer(question, k=k or None, max_new_tokens=max_new_tokens)
    typer.echo(f"answer: {result['answer']}")
    typer.echo("sources:")
    for s in result["sources"]:
        typer.echo(f"  {s['score']:.4f}  {format_citation(s)}  (chunk {s['chunk_id']})")
    adapter, index = result["adapter_version"], result["index_version"]
    typer.echo(f"versions: {model}-adapter v{adapter}, {model}-index v{index}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 in a container)"),
    port: int = 8000,
    workers: int = typer.Option(1, min=1, help="server processes (each loads the model once)"),
    alias: str = typer.Option("", help="registry alias to serve (default: serve.alias)"),
    tracking_uri: str = typer.Option(
        "", help="MLflow store (default: serve.tracking_uri, register.tracking_uri)"
    ),
    redis_url: str = typer.Option("", help="shared L2 cache (default: serve.cache.redis_url)"),
    model: str = typer.Option("", help=MODEL_HELP),
    params_file: Annotated[Path, typer.Option("--params", help="read the serve section here")] = Path(
        "params.yaml"
    ),
    log_level: str = "info",
    engine: str = typer.Option("", help="torch or llamacpp (default: serve.engine)"),
) -> None:
    """Serve the promoted adapter/index pair over HTTP and follow promotions without a restart."""
    import json

    import uvicorn

    from components.core.config import ParamsError, load_params_file
    from components.registry.mlflow_registry import DEFAULT_TRACKING_URI
    from components.serving.app import SETTINGS_ENV

    try:
        params = load_params_file(params_file) if params_file.exists() else {}
        settings = _serve_settings(params, engine)
    except ParamsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    settings.alias = alias or settings.alias
    settings.cache.redis_url = redis_url or settings.cache.redis_url
    uri = tracking_uri or settings.tracking_uri
    uri = uri or params.get("register", {}).get("tracking_uri", DEFAULT_TRACKING_URI)
    from components.registry.naming import project_model_name

    name = model or project_model_name(params)
    served = {"serve": settings.model_dump(), "tracking_uri": uri, "model_name": name}
    os.environ[SETTINGS_ENV] = json.dumps(served)
    uvicorn.run(
        "components.serving.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
    )


@app.command("export-merged")
def export_merged_cmd(
    artifact: Annotated[Path, typer.Argument(help="adapter artifact folder (e.g. data/models/current)")],
    out: Annotated[Path, typer.Argument(help="folder for the merged transformers model")],
) -> None:
    """Fold an in-context LoRA/IA3 adapter into the base weights (a plain transformers model)."""
    from components.adapters.builder import export_merged

    try:
        typer.echo(f"merged model written to {export_merged(artifact, out)}")
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


register_ops(app)


@app.command("export-gguf")
def export_gguf_cmd(
    artifact: Annotated[Path, typer.Argument(help="adapter artifact folder (e.g. data/models/current)")],
    out: Annotated[Path, typer.Argument(help="folder for the GGUF files")],
    weights: str = typer.Option(
        "q8_0", help="f32, f16, q8_0, q4_1 or q4_0: the GGUF models written (base, IA3)"
    ),
) -> None:
    """Write an in_context adapter for llama.cpp: a GGUF LoRA adapter and its base model's GGUF
    (LoRA, AdaLoRA), or one GGUF model with the adapter folded in (IA3)."""
    import shutil

    from components.adapters.builder import load_retro_model
    from components.core.serve_params import LlamaCppSettings
    from components.serving.llamacpp_engine import engine_files

    try:
        model_file, lora_file = engine_files(
            load_retro_model(artifact), artifact, LlamaCppSettings(weights=weights)
        )
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    out.mkdir(parents=True, exist_ok=True)
    written = [shutil.copy2(f, out / f.name) for f in (model_file, lora_file) if f is not None]
    typer.echo("written: " + ", ".join(str(w) for w in written))
    lora = f" --lora {out / lora_file.name}" if lora_file else ""
    typer.echo(f"run it with llama.cpp: llama-server -m {out / model_file.name}{lora}")


def main() -> None:  # pragma: no cover
    """Entry point of the `retro` command."""
    app(prog_name="retro")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
