"""`musetalk-operator`: run the Kopf operator with its metrics and liveness endpoints."""

from __future__ import annotations

import argparse
import logging

import kopf
from prometheus_client import start_http_server

from .config import OperatorConfig

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="musetalk-operator", description=__doc__)
    parser.add_argument("--health-port", type=int, default=8081, help="Kopf liveness endpoint port")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = OperatorConfig.from_env()  # fail on a bad setting before touching the cluster
    start_http_server(cfg.metrics_port)
    from . import handlers  # noqa: F401  (registers the handlers with Kopf)

    # Standalone: one replica (the chart runs one, Recreate), so no peering CRDs are needed.
    kopf.run(
        standalone=True,
        clusterwide=cfg.namespace is None,
        namespaces=[cfg.namespace] if cfg.namespace else (),
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
