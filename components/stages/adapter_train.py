"""adapter-train: a PEFT adapter trained to answer from retrieved passages (first corpus version),
and with `per_domain`, one more adapter per document domain on that domain's questions
(components/training/first_version.py).

Its outputs persist (DVC `persist: true`): when a later corpus version arrives, the first
version's examples are unchanged, the fingerprint matches and training is skipped, so only
continual-update does work.
"""

from __future__ import annotations

from typing import Any

from components.core.artifacts import read_table
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.chunking import read_chunks
from components.stages.entry import stage_main
from components.training.distributed import in_launched_process
from components.training.first_version import train_domains, train_first_version


def run(params: PipelineParams, paths: Paths) -> dict[str, Any] | None:
    """Run the adapter-train stage: train the first adapter version on the synthesized questions."""
    qa, chunks = read_table(paths.questions, "synthesize"), read_chunks(paths.chunks)
    metrics = train_first_version(params, paths, qa, chunks)
    if in_launched_process():
        return metrics  # a data-parallel process: the launching one trains the domains
    return {**metrics, "domains": train_domains(params, paths, qa, chunks)}


def main() -> None:
    """Command-line entry of the adapter-train stage (`python -m components.stages.adapter_train`)."""
    stage_main("adapter-train", run)


if __name__ == "__main__":
    main()
