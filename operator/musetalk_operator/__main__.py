"""`musetalk-operator`: run the Kopf operator with its metrics and liveness endpoints."""

from __future__ import annotations

import argparse
import logging

import kopf
from prometheus_client import start_http_server

from .config import OperatorConfig, describe_settings

__all__ = ["main"]

EPILOG = f"""settings (environment variables; the chart sets every one, see docs/kubernetes.md):
{describe_settings()}
  KUBECONFIG                               outside a cluster: the kubeconfig to use (in a pod: its ServiceAccount)"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="musetalk-operator", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--health-port", type=int, default=8081, help="Kopf liveness endpoint (/healthz) port")
    parser.add_argument("--bind-address", help="overrides MUSETALK_OPERATOR_BIND_ADDRESS")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = OperatorConfig.from_env()  # fail on a bad setting before touching the cluster
    host = args.bind_address or cfg.bind_address
    start_http_server(cfg.metrics_port, addr=host)
    from . import handlers  # noqa: F401  (registers the handlers with Kopf)

    # Standalone: one replica (the chart runs one, Recreate), so no peering CRDs are needed.
    kopf.run(
        standalone=True,
        clusterwide=cfg.namespace is None,
        namespaces=[cfg.namespace] if cfg.namespace else (),
        liveness_endpoint=f"http://{_url_host(host)}:{args.health_port}/healthz",
    )
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # an IPv6 address needs brackets in a URL


if __name__ == "__main__":
    raise SystemExit(main())
