"""continual-update: update the previous adapter on each newer corpus version, with bounded replay;
with `adapter-train.per_domain`, each domain's adapter too (components/continual/updates.py).

The output folders persist between runs (DVC `persist: true`) and hold the current adapter, the
replay reservoir and the versions already learned (components/continual/chain.py).
"""

from __future__ import annotations

from typing import Any

from components.continual.updates import update_chain, update_domains
from components.core.artifacts import read_table
from components.core.params import PipelineParams
from components.core.paths import Paths
from components.data.chunking import read_chunks
from components.stages.entry import stage_main


def run(params: PipelineParams, paths: Paths) -> dict[str, Any]:
    """Run the continual-update stage: learn each new corpus version into the adapter chain."""
    qa, chunks = read_table(paths.questions, "synthesize"), read_chunks(paths.chunks)
    summary = update_chain(params, paths, qa, chunks)
    domains = update_domains(params, paths, qa, chunks)
    return summary | ({"domains": domains} if domains else {})


def main() -> None:
    """Command-line entry of the continual-update stage (`python -m components.stages.continual_update`)."""
    stage_main("continual-update", run)


if __name__ == "__main__":
    main()
