"""The chart's WebRTC block: ICE servers and the TURN Secret into the server's env, host networking."""

from __future__ import annotations

import helm_python as helm
import kubernetes_validate
import pytest
from chart_helpers import CHART, KUBE_VERSION, container, env_of, find, render

WEBRTC = {"webrtc": {"iceServers": ["stun:stun.example.com:3478", "turn:turn.example.com:3478?transport=udp"],
                     "turnSecret": {"name": "coturn-auth"}, "maxViewers": 4, "hostNetwork": True}}


def test_defaults_set_only_the_viewer_cap() -> None:
    server = find(render(), "Deployment", "musetalk-server")
    env = env_of(container(server))
    assert env["MUSETALK_WEBRTC_MAX_VIEWERS"] == "10"
    assert not {"MUSETALK_WEBRTC_ICE_SERVERS", "MUSETALK_WEBRTC_TURN_USERNAME"} & set(env)
    assert "hostNetwork" not in server["spec"]["template"]["spec"]


def test_ice_servers_turn_secret_and_host_network_render_valid_kubernetes() -> None:
    docs = render(WEBRTC)
    server = find(docs, "Deployment", "musetalk-server")
    kubernetes_validate.validate(server, KUBE_VERSION, strict=True)
    env = env_of(container(server))
    assert env["MUSETALK_WEBRTC_ICE_SERVERS"] == ("stun:stun.example.com:3478,"
                                                  "turn:turn.example.com:3478?transport=udp")
    assert env["MUSETALK_WEBRTC_MAX_VIEWERS"] == "4"
    assert env["MUSETALK_WEBRTC_TURN_USERNAME"] == {"secretKeyRef": {"name": "coturn-auth", "key": "username"}}
    assert env["MUSETALK_WEBRTC_TURN_CREDENTIAL"] == {"secretKeyRef": {"name": "coturn-auth", "key": "credential"}}
    pod = server["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"


@pytest.mark.parametrize("values, complaint", [
    ({"webrtc": {"iceServers": ["turn.example.com:3478"]}}, "iceServers"),
    ({"webrtc": {"maxViewers": -1}}, "maxViewers"),
    ({"webrtc": {"turnSecret": {"user": "x"}}}, "turnSecret"),
])
def test_values_schema_rejects_webrtc_mistakes(values: dict, complaint: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError, match=complaint):
        chart.validate_schema(values)
