"""`python -m services.deployer.model_server --model-uri URI --name NAME --version V --host H --port P`."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import TextIO

import mlflow.pyfunc
import uvicorn

from services.deployer.model_server.app import create_app

# Exit code for "the model could not be loaded", so the process manager can tell it from a crash.
EXIT_MODEL_LOAD_FAILED = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.deployer.model_server", description=__doc__)
    parser.add_argument("--model-uri", required=True, help="path or URI mlflow.pyfunc.load_model understands")
    parser.add_argument("--name", required=True, help="model name, as served under /v2/models/{name}")
    parser.add_argument("--version", required=True, help="model version reported in V2 metadata")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--request-timeout", type=float, default=60.0, help="seconds before a prediction gets 504")
    parser.add_argument(
        "--owner", help="the folder of the platform that started this server; it stops the servers it owns on exit"
    )
    return parser.parse_args(argv)


def show_each_warning_site_once() -> None:
    """Write each warning to the log once per code site.

    Python's own once/default de-duplication is wiped whenever any library enters `catch_warnings` (sklearn
    does on every predict), so a per-request warning such as sklearn's feature-name check would otherwise
    be written on every request: CPU per request, and a log that grows without bound.
    """
    seen: set[tuple[type[Warning], str, int]] = set()
    show = warnings.showwarning

    def show_once(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if (category, filename, lineno) not in seen:
            seen.add((category, filename, lineno))
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = show_once


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    show_each_warning_site_once()
    log = logging.getLogger("tessera.model_server")
    log.info("loading model %s v%s from %s", args.name, args.version, args.model_uri)
    try:
        model = mlflow.pyfunc.load_model(args.model_uri)
    except Exception as exc:  # whatever the flavour raises, the operator needs one clear last line
        print(
            f"model server: failed to load model from {args.model_uri!r}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_MODEL_LOAD_FAILED
    app = create_app(model, args.name, args.version, request_timeout_s=args.request_timeout)
    # No access log: it costs more per request than the rest of the server's own overhead.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
