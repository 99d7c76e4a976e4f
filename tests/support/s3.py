"""A local S3-compatible server for the tests: moto's server mode, started in this process.

``s3_server()`` starts it on a free port and returns the environment that points botocore (and so s3fs)
at it: ``AWS_ENDPOINT_URL`` and dummy credentials. The same environment is given to processes the tests
start (padprep's CLI, the Ray nodes), so everything reads and writes the one server.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from contextlib import contextmanager
from typing import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """A running moto S3 server; yields the environment variables that reach it (also set in os.environ)."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed (the test extra has it)")
    pytest.importorskip("s3fs", reason="s3fs is not installed (the cloud extra has it)")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    # fsspec keeps one S3FileSystem per set of arguments, made with the endpoint of its day: another server's
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield env
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def make_bucket(name: str | None = None) -> str:
    """A new bucket on the server the environment points at; returns ``s3://NAME``."""
    import s3fs

    name = name or f"padprep-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(name)
    return f"s3://{name}"
