"""Data-parallel training through `accelerate launch`: one process per GPU (or CPU process).

The stage relaunches itself under `accelerate launch --multi_gpu` when `adapter-train.processes`
> 1; every process builds the same model, draws its own batches, and DDP averages the gradients,
so the adapter is identical on every process and process 0 writes it. Without GPUs the processes
run on the CPU and average through gloo (how the test suite exercises this path).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

WORLD_SIZE_ENV = "WORLD_SIZE"
CHILD_ENV = "RETRO_LAUNCHED"  # set for the launched processes, so they never launch again


def in_launched_process() -> bool:
    """True inside a process started by `launch` (or by torchrun with several processes)."""
    return os.environ.get(CHILD_ENV) == "1" or int(os.environ.get(WORLD_SIZE_ENV, "1")) > 1


def make_accelerator():  # noqa: ANN201
    """An Accelerator for this launched process; DDP tolerates parameters a step does not use."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # several CPU processes: DDP over gloo
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    if accelerator.device.type == "cpu":  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // accelerator.num_processes))
    return accelerator


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(module: str, params: dict[str, Any], root: Path, processes: int, launcher_args: list[str]) -> None:
    """Run `python -m <module>` under `accelerate launch` with these params; raise if it fails."""
    with tempfile.NamedTemporaryFile(
        "w", suffix=".yaml", dir=root, prefix=".launch-params-", delete=False
    ) as fh:
        yaml.safe_dump(params, fh, sort_keys=False)
    try:
        command = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--num_processes", str(processes), "--num_machines", "1",
            "--main_process_port", str(_free_port()),
            "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu",
            *launcher_args,
            "-m", module, "--params", fh.name, "--root", str(root),
        ]  # fmt: skip
        proc = subprocess.run(command, cwd=root, stdout=sys.stderr, env=os.environ | {CHILD_ENV: "1"})
        if proc.returncode != 0:
            raise RuntimeError(
                f"accelerate launch of {module} with {processes} processes exited {proc.returncode}"
            )
    finally:
        Path(fh.name).unlink(missing_ok=True)


def rank_checksums(accelerator, parameters: list[torch.nn.Parameter]) -> list[float]:  # noqa: ANN001
    """Each process's sum over its trainable weights (equal on all processes after DDP training)."""
    local = torch.stack([p.detach().double().sum() for p in parameters]).sum().reshape(1)
    return [round(float(x), 10) for x in accelerator.gather(local.to(accelerator.device)).cpu()]
