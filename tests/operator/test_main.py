"""`musetalk-operator` as a process: it logs in from a kubeconfig, serves metrics and a liveness probe,
and handles Avatars."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
from operator_helpers import AVATARS_URL, JOB, ROOT, avatar_body, current, eventually


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_console_entry_point_runs_the_operator(k8s: Any, tmp_path: Path) -> None:
    metrics_port, health_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k.startswith(("MUSETALK_OPERATOR_", "KUBECONFIG"))}
    env |= {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT / 'service'}:{ROOT / 'operator'}",
            "MUSETALK_OPERATOR_METRICS_PORT": str(metrics_port), "MUSETALK_OPERATOR_NAMESPACE": "default"}
    log = (tmp_path / "operator.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from musetalk_operator.__main__ import main; sys.exit(main(sys.argv[1:]))",
        "--health-port", str(health_port), env=env, stdout=log, stderr=log)
    try:
        async def get(port: int, path: str) -> httpx.Response:
            async with httpx.AsyncClient() as client:
                return await client.get(f"http://127.0.0.1:{port}{path}", timeout=2)

        async def answers(port: int, path: str) -> bool:
            try:
                return (await get(port, path)).status_code == 200
            except httpx.TransportError:
                return False

        async def settled(check: Any, timeout: float = 30.0) -> None:
            deadline = asyncio.get_running_loop().time() + timeout
            while not await check():
                assert process.returncode is None, (tmp_path / "operator.log").read_text()
                assert asyncio.get_running_loop().time() < deadline, (tmp_path / "operator.log").read_text()
                await asyncio.sleep(0.1)

        await settled(lambda: answers(health_port, "/healthz"))
        assert (await k8s.post(AVATARS_URL, json=avatar_body("proc"))).status in (200, 201)
        await eventually(lambda: current(k8s, JOB, "avatar-proc-g1"), timeout=30)
        await settled(lambda: answers(metrics_port, "/metrics"))
        text = (await get(metrics_port, "/metrics")).text
        assert "musetalk_operator_jobs_started_total 1.0" in text
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=20)
        log.close()


def test_help_lists_the_settings() -> None:
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT / 'service'}:{ROOT / 'operator'}"}
    done = subprocess.run([sys.executable, "-m", "musetalk_operator", "--help"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    for expected in ("--bind-address", "MUSETALK_OPERATOR_NAMESPACE", "MUSETALK_OPERATOR_BIND_ADDRESS",
                     "MUSETALK_OPERATOR_CLEANUP_WAIT_S", "KUBECONFIG"):
        assert expected in done.stdout


async def test_healthz_fails_while_the_api_server_is_unreachable(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens here
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{dead}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n")
    health_port = free_port()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT / 'service'}:{ROOT / 'operator'}",
           "KUBECONFIG": str(kubeconfig), "MUSETALK_OPERATOR_NAMESPACE": "default",
           "MUSETALK_OPERATOR_METRICS_PORT": str(free_port()), "MUSETALK_OPERATOR_BIND_ADDRESS": "127.0.0.1"}
    log = (tmp_path / "operator.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "musetalk_operator", "--health-port", str(health_port), env=env, stdout=log, stderr=log)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        status = None
        while status is None:
            assert asyncio.get_running_loop().time() < deadline, (tmp_path / "operator.log").read_text()
            try:
                async with httpx.AsyncClient() as client:
                    status = (await client.get(f"http://127.0.0.1:{health_port}/healthz", timeout=10)).status_code
            except httpx.TransportError:
                await asyncio.sleep(0.2)
        assert status == 500, (tmp_path / "operator.log").read_text()
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=20)
        log.close()
