"""examples/kubernetes/: valid manifests whose probes and timing agree with trioserve.

kubectl (Debian package ``kubernetes-client``, or an upstream binary) checks them offline:
``kubectl kustomize`` builds them, and ``kubectl apply --dry-run=client`` runs against a
stub that answers only API discovery (a client-side dry run needs discovery to map each
kind to its resource; nothing else is asked of a server). The numbers of the graceful
shutdown are then checked against each other, and the container's own arguments are run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ..supervisor.procs import Server, wait_until

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "examples" / "kubernetes"
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="needs kubectl (Debian package kubernetes-client)"
)

_RESOURCES = {
    "/api/v1": ("v1", [("services", "Service", True)]),
    "/apis/apps/v1": ("apps/v1", [("deployments", "Deployment", True)]),
    "/apis/monitoring.coreos.com/v1": (
        "monitoring.coreos.com/v1",
        [("servicemonitors", "ServiceMonitor", True)],
    ),
}


def _discovery(path: str) -> dict[str, Any] | None:
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        groups = []
        for group in ("apps", "monitoring.coreos.com"):
            version = {"groupVersion": f"{group}/v1", "version": "v1"}
            groups.append({"name": group, "versions": [version], "preferredVersion": version})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    if path in _RESOURCES:
        group_version, resources = _RESOURCES[path]
        return {
            "kind": "APIResourceList",
            "groupVersion": group_version,
            "resources": [
                {"name": n, "singularName": "", "namespaced": ns, "kind": k, "verbs": ["get"]}
                for n, k, ns in resources
            ],
        }
    return None


class _Stub(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = _discovery(self.path.split("?")[0])
        status = 200 if body is not None else 404
        if body is None:  # "not there yet": apply then creates (in a dry run)
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                    "reason": "NotFound", "message": "not found"}  # fmt: skip
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def discovery_stub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def kubectl(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    env = {
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run([KUBECTL, *args], capture_output=True, text=True, timeout=60, env=env)


def documents() -> dict[str, dict[str, Any]]:
    out = {}
    for name in ("deployment.yaml", "service.yaml", "servicemonitor.yaml"):
        doc = yaml.safe_load((MANIFESTS / name).read_text())
        out[doc["kind"]] = doc
    return out


@needs_kubectl
def test_kustomize_builds_them_offline(tmp_path: Path) -> None:
    done = kubectl("kustomize", str(MANIFESTS), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(done.stdout))
    assert kinds == ["Deployment", "Service", "ServiceMonitor"]


@needs_kubectl
def test_client_dry_run_apply(discovery_stub: str, tmp_path: Path) -> None:
    done = kubectl(
        "apply", "--dry-run=client", "--validate=false", "--server", discovery_stub,
        "-k", str(MANIFESTS), tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split("\n")[:-1]) == [
        "deployment.apps/trioserve created (dry run)",
        "service/trioserve created (dry run)",
        "servicemonitor.monitoring.coreos.com/trioserve created (dry run)",
    ]


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_probes_and_shutdown_timing_agree() -> None:
    docs = documents()
    pod = docs["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    args = container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    metrics_port = int(_arg(args, "--metrics-bind").rsplit(":", 1)[1])
    assert ports["metrics"] == metrics_port
    assert ports["http"] == int(_arg(args, "--bind").rsplit(":", 1)[1])
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert (ready["path"], ready["port"]) == ("/readyz", "metrics")
    assert (live["path"], live["port"]) == ("/healthz", "metrics")
    # The grace period runs from the start of preStop: sleep, drain, lifespan shutdown.
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    graceful = float(_arg(args, "--graceful-timeout"))
    env = {e["name"]: e["value"] for e in container["env"]}
    shutdown = float(env["TRIOSERVE_SHUTDOWN_TIMEOUT"])
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + graceful + shutdown + 5
    # preStop outlasts the readiness probe noticing nothing (endpoint removal is separate).
    assert pre_stop > container["readinessProbe"]["periodSeconds"]
    # The Service and the ServiceMonitor find the pods and the metrics port by name.
    labels = pod["metadata"]["labels"]
    service = docs["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    monitor = docs["ServiceMonitor"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_containers_arguments_serve() -> None:
    """The manifest's own command line (loopback, free ports): /readyz and /healthz answer."""
    container = documents()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    args = list(container["args"][1:])  # without the program name
    args[args.index("--bind") + 1] = "127.0.0.1:0"
    args[args.index("--metrics-bind") + 1] = "127.0.0.1:0"
    env = {e["name"]: e["value"] for e in container["env"]}
    server = Server(ROOT, [*args, "--app-dir", str(ROOT), "--log-format", "text"], env=env)
    try:
        server.wait_serving(workers=int(_arg(args, "--workers")))
        admin = server.wait_for(r"Metrics and health on (http://\S+)")[0].group(1)
        assert wait_until(lambda: httpx.get(admin + "/readyz").status_code == 200, 10)
        assert httpx.get(admin + "/healthz").status_code == 200
        assert server.get("/") == (200, "Hello, world!\n")
    finally:
        server.stop()
    assert server.proc.returncode == 0
