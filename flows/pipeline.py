"""The `retro-pipeline` Prefect flow: one task per DVC stage, each running `dvc repro -s <stage>`."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections import deque
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run

from components.core.environment import apply_offline_env
from components.core.params import PipelineParams, load_params, parse_params
from components.core.paths import Paths
from components.core.workspace_lock import workspace_lock
from components.registry.naming import check_project_lineage

IO_ERROR_EXIT = 74  # what a stage exits with on an I/O error (components.stages.entry.EX_IOERR)


def pipeline_stages(root: Path | str = ".") -> list[str]:
    """The stages of the project's dvc.yaml, in pipeline order (dvc.yaml is the one stage list)."""
    return list((yaml.safe_load((Path(root) / "dvc.yaml").read_text()) or {}).get("stages", {}))


def project_params(root: Path | str = ".") -> PipelineParams:
    """The params of the project at `root` (its params.yaml, or the defaults when it has none)."""
    file = Path(root) / "params.yaml"
    return load_params(file) if file.exists() else parse_params({})


def project_paths(root: Path | str = ".") -> Paths:
    """The data layout of the project at `root` (the `paths` section of its params.yaml, or the
    default layout when it has none)."""
    return project_params(root).layout(root)


class StageFailed(RuntimeError):
    """A stage exited with an error; `transient` marks I/O errors worth a retry."""

    def __init__(self, stage: str, message: str, transient: bool) -> None:
        super().__init__(f"stage {stage} failed: {message}")
        self.transient = transient


def _retry_on_io_error(task, task_run, state) -> bool:  # noqa: ANN001
    try:
        state.result()
    except StageFailed as exc:
        return exc.transient
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - anything else is not transient
        return False
    return False


def stage_env() -> dict[str, str]:
    """The stage subprocess sees this interpreter's bin first, telemetry off, and the flow run id."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    apply_offline_env(env)
    env.setdefault("TQDM_MININTERVAL", "10")  # progress lines go to the flow log: one every 10 s
    run_id = flow_run.get_id()
    if run_id:
        env["RETRO_FLOW_RUN_ID"] = str(run_id)
        env["RETRO_ROOT_FLOW_RUN_ID"] = str(flow_run.root_flow_run_id or run_id)  # the deployment's run
        env["RETRO_DEPLOYMENT_ID"] = str(deployment.id or flow_run.get_parent_deployment_id() or "")
    return env


@task(
    name="stage",
    task_run_name="{stage}",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_retry_on_io_error,
)
def run_stage(stage: str, root: str = ".") -> dict:
    """Run one DVC stage (skipped by DVC when nothing it depends on changed); return its metrics."""
    logger = get_run_logger()
    tail: deque[str] = deque(maxlen=12)
    with subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
        cwd=root,
        env=stage_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,  # universal newlines: each progress-bar refresh arrives as a line
    ) as proc:
        for line in proc.stdout:
            if line.strip():
                tail.append(line.rstrip())
                logger.info("%s | %s", stage, line.rstrip())
    if proc.returncode != 0:
        text = "\n".join(tail)
        transient = bool(re.search(rf"exited with {IO_ERROR_EXIT}\b|exit code:? {IO_ERROR_EXIT}\b", text))
        raise StageFailed(stage, text, transient)
    path = project_paths(root).metrics_of(stage)
    metrics = json.loads(path.read_text()) if path.exists() else {}
    logger.info("%s metrics: %s", stage, json.dumps(metrics, default=str)[:2000])
    return metrics


def restore_last_good(stage: str, root: str = ".") -> str:
    """Put the failed stage's outputs back as dvc.lock records them (DVC removes them before a run)."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "checkout", "--force", stage],
        cwd=root,
        env=stage_env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return f"`dvc checkout {stage}` could not restore its outputs: {proc.stderr.strip()[-500:]}"
    return f"the outputs of {stage} are back at their last good version (`dvc checkout {stage}`)"


def release_half_registered(root: str = ".") -> list[str]:
    """After register died (a kill leaves no chance to clean up): delete the index version it
    registered without its adapter version; one sentence per version deleted."""
    from components.registry.half_pairs import release_half_pairs, workspace_id
    from components.registry.mlflow_registry import configure
    from components.registry.naming import registry_name

    params = project_params(root)
    names = registry_name(params.registration.model_name, params.ingest.source, root)
    try:
        return release_half_pairs(configure(params.registration.tracking_uri), names, workspace_id(root))
    except Exception as exc:  # noqa: BLE001 - the stage's own failure is the one to report
        said = f"the registry could not be checked for a half pair ({exc}); the next register checks it"
        get_run_logger().warning(said)
        return [said]


def plots_markdown(folder: Path) -> str:
    """The evaluation's plots as markdown images, inlined as data URIs (the UI has no file access)."""
    from components.evaluation.plots import PLOT_FILES  # not at flow start-up: it imports pandas

    pngs = [Path(folder) / name for name in PLOT_FILES if (Path(folder) / name).exists()]
    images = [
        f"![{png.stem}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})" for png in pngs
    ]
    return "\n\n## Plots\n\n" + "\n\n".join(images) + "\n" if images else ""


def _failure_report(stage: str, exc: StageFailed, restored: str, released: list[str]) -> str:
    registry = (
        "Registration is all or nothing: " + ("; ".join(released) if released else "no half pair was left")
        if stage == "register"
        else "Nothing was registered and no alias moved: registration is the last stage"
    )
    return (
        f"# {stage} failed\n\n```\n{str(exc)[-3000:]}\n```\n\n"
        f"- {registry}.\n"
        f"- {restored.capitalize()}; stages that finished before it keep their new outputs in dvc.lock.\n"
        f"- Fix the cause and run again: DVC skips every stage whose inputs did not change.\n"
    )


def _registration_note(registered: dict) -> str:
    name = registered.get("model_name", "retro")
    gate = "".join(f"\n- {k}: {v:.3f}" for k, v in sorted(registered.get("gate", {}).items()))
    if registered.get("registered", True):
        return (
            f"Registered {name}-adapter v{registered.get('adapter_version')} linked to "
            f"{name}-index v{registered.get('index_version')}: {registered.get('reason')}{gate}"
        )
    return f"Evaluation gate refused the candidate, nothing registered: {registered.get('reason')}{gate}"


def check_registry(root: str = ".") -> str:
    """The registered model name of the project's corpus; LineageConflict (before any stage runs)
    when that name holds another corpus."""
    params = project_params(root)
    return check_project_lineage(params.registration, params.ingest.source, root).name


@flow(name="retro-pipeline", log_prints=True)
def retro_pipeline(root: str = ".", stages: list[str] | None = None) -> dict:
    """The stages below, holding the workspace's run lock (a second run waits for this one)."""
    with workspace_lock(root, say=get_run_logger().warning):
        return run_pipeline(root, stages)


def run_pipeline(root: str = ".", stages: list[str] | None = None) -> dict:
    """Ingest → chunk → embed → index → synthesize → adapter-train → continual-update → evaluate → register.

    A stage that fails (after retries of transient I/O errors) stops the flow before `register`,
    so registered versions and aliases stay as they were; its outputs are restored from the DVC
    cache and a `retro-failure` artifact says what happened.
    """
    logger = get_run_logger()
    selected = stages or pipeline_stages(root)
    if "register" in selected:
        logger.info("registered models: %s-adapter and %s-index", *[check_registry(root)] * 2)
    results = {}
    for stage in selected:
        try:
            results[stage] = run_stage(stage, root)
        except StageFailed as exc:
            restored = restore_last_good(stage, root)
            logger.error("%s failed; %s", stage, restored)
            released = release_half_registered(root) if stage == "register" else []  # logged there
            create_markdown_artifact(
                key="retro-failure",
                markdown=_failure_report(stage, exc, restored, released),
                description=f"Why the run stopped at {stage}",
            )
            raise
    registered = results.get("register", {})
    if registered:
        note = _registration_note(registered)
        (logger.info if registered.get("registered", True) else logger.warning)(note)
    layout = project_paths(root)
    if layout.evaluation_table.exists():
        note = f"\n\n{_registration_note(registered)}\n" if registered else ""
        create_markdown_artifact(
            key="retro-evaluation",
            markdown=layout.evaluation_table.read_text() + note + plots_markdown(layout.evaluation_plots),
            description="Three systems side by side on the held-out questions",
        )
    return results
