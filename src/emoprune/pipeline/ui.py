"""``emoprune ui`` (``make ui``): the MLflow UI over the project's own store.

``mlflow ui`` on a port another server holds logs "Address already in use" and exits 0, after
the link to that other server was printed. So the port is checked first, and a taken one is a
one-line error.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

from emoprune.errors import UserError


def check_port_free(host: str, port: int) -> None:
    """Raise UserError unless a server could listen on ``host:port`` now."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UserError(f"{host}: unknown host (HOST=127.0.0.1 serves this machine only)") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn does, so a port that only lingers in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"{host}:{port} is already in use (another MLflow UI? stop it, or pick "
                    f"another port: `make ui PORT={port + 1}`)"
                ) from None
            raise UserError(f"{host}:{port}: cannot listen there ({exc.strerror})") from None


def link_base(host: str, port: int) -> str:
    """The URL a browser on this machine opens for a server on ``host:port``: a wildcard address
    (all interfaces) is reached through loopback, since browsers refuse to open 0.0.0.0."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"  # IPv6 in []


def mlflow_ui_command(root: Path, host: str, port: int) -> list[str]:
    """The ``mlflow ui`` command line over ``root``'s sqlite store and artifacts."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root",
        str(root / "mlartifacts"),
        "--host",
        host,
        "--port",
        str(port),
    ]


def serve(host: str, port: int, root: Path | None = None) -> None:
    """Check the port, point a copied or moved project's store here, print the experiment's
    link, then become ``mlflow ui`` (exec: Ctrl-C stops the server itself)."""
    from emoprune.pipeline.tracking import prepare_ui, project_root

    root = root or project_root()
    if not (root / "dvc.yaml").is_file():  # else mlflow would start an empty store right here
        raise UserError(f"{root}: no emoprune project here or above (run it from the project root)")
    check_port_free(host, port)
    print("MLflow UI, the training runs:", prepare_ui(link_base(host, port), root), flush=True)
    command = mlflow_ui_command(root, host, port)
    print(" ".join(command[2:]), flush=True)
    # MLflow's job runner serves its GenAI jobs, which this project never queues: seven worker
    # processes of ~200 MB each and 6 s more start-up on 2 cores. Set the variable to keep it.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(command[0], command)
