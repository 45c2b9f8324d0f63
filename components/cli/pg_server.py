"""`python -m components.cli.pg_server FOLDER`: a PostgreSQL with pgvector in the foreground, for
`retro services up postgres`.

The server is the one the `pgserver` package bundles (PostgreSQL 16 with pgvector; it runs as
its own system user when started by root), with its data in FOLDER and a Unix socket there. Its
URL is written to FOLDER/url once it answers; the server stops when this process is terminated.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

URL_FILE = "url"


def main(folder: str) -> None:
    """Run a PostgreSQL with pgvector from `folder` until interrupted (pgserver, no root needed)."""
    try:
        import pgserver
    except ImportError:
        sys.exit(
            "the postgres service needs the pgserver package: pip install pgserver "
            "(or the project's dev extra)"
        )
    data = Path(folder).resolve()
    data.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data, cleanup_mode="stop")  # stopped at exit
    (data / URL_FILE).write_text(server.get_uri())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            signal.pause()
    finally:
        (data / URL_FILE).unlink(missing_ok=True)


if __name__ == "__main__":
    main(sys.argv[1])
