"""The deployment files in deploy/ parse, and say what the README promises: three replicas
behind a Service, readiness on /readyz and liveness on /healthz, secrets from a Secret, and
a stop timeout longer than the gateway's drain (shutdown_timeout, 30 s)."""

from __future__ import annotations

import configparser
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SHUTDOWN_TIMEOUT_S = 30


def test_kubernetes_manifest():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "Service"}
    deployment, service = kinds["Deployment"], kinds["Service"]
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_TIMEOUT_S
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in container["env"]}
    for secret in ["AIBRIDGE_ANTHROPIC_KEYS", "AIBRIDGE_DATABASE_URL", "AIBRIDGE_KEY_STATE_URL"]:
        assert "secretKeyRef" in env[secret]["valueFrom"], f"{secret} must come from a Secret"
        assert "value" not in env[secret]
    assert env["AIBRIDGE_LISTEN"]["value"] == "0.0.0.0:8080"
    port = container["ports"][0]
    assert port["containerPort"] == 8080
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"] == labels
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_systemd_unit():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string((DEPLOY / "aibridge.service").read_text())
    service = unit["Service"]
    assert service["ExecStart"].startswith("/usr/local/bin/aibridge serve")
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > SHUTDOWN_TIMEOUT_S
    assert service["EnvironmentFile"] == "/etc/aibridge/env"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
