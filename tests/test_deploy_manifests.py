"""deploy/: the kustomize base and dev overlay rendered by a real kustomize (`kubectl kustomize`)
and checked structurally, plus the image recipe. No cluster or Docker daemon is involved.

kubectl comes with the machine image here; scripts/system-deps.sh installs it where it is
missing.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from lwdock.settings import DEFAULT_PORTS, Settings
from lwdock.suite import SERVICES

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
OVERLAYS = {"base": DEPLOY / "k8s" / "base", "dev": DEPLOY / "k8s" / "overlays" / "dev"}

# Peers outside what the manifests create, by design (deploy/README.md).
EXTERNAL_PEERS = [
    {"lwdock.io/client": "true"},  # users: SDK jobs, a gateway, an ingress controller
    {"k8s-app": "kube-dns"},  # cluster DNS
    {"app.kubernetes.io/name": "prometheus"},  # metrics scraper
    {"app.kubernetes.io/name": "cloudnative-pg"},  # the CloudNativePG operator
]
# Secrets that the CloudNativePG operator writes for a Cluster named N: N-app.
OPERATOR_SECRET_SUFFIX = "-app"
# Only this Deployment may relax its container's confinement, for bubblewrap.
SANDBOXED = "lwdock-reuse"


@cache
def render(which: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: run scripts/system-deps.sh (as root)")
    result = subprocess.run(
        [kubectl, "kustomize", str(OVERLAYS[which])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@pytest.fixture(params=sorted(OVERLAYS), scope="module")
def docs(request: pytest.FixtureRequest) -> tuple[dict[str, Any], ...]:
    return render(request.param)


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def component(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_label_sets(docs: tuple[dict[str, Any], ...]) -> list[dict[str, str]]:
    """Labels of every pod the rendered resources produce: Deployments' templates, and the
    CloudNativePG instances (labelled cnpg.io/cluster=<name> by the operator)."""
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in of_kind(docs, "Deployment")]
    pods += [{"cnpg.io/cluster": c["metadata"]["name"]} for c in of_kind(docs, "Cluster")]
    return pods


_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti)?$")
_FACTORS = {None: 1.0, "m": 1e-3, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}


def quantity(value: object) -> float:
    match = _QUANTITY.match(str(value))
    assert match, f"not a quantity: {value!r}"
    return float(match.group(1)) * _FACTORS[match.group(2)]


def test_renders_the_four_services_and_their_companions(docs: tuple[dict[str, Any], ...]) -> None:
    deployments = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    assert deployments == {f"lwdock-{name}" for name in SERVICES}
    assert {d["metadata"]["name"] for d in of_kind(docs, "PodDisruptionBudget")} == deployments
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in of_kind(docs, "HorizontalPodAutoscaler")}
    assert hpas == {"lwdock-search", "lwdock-reuse"}
    # PostgreSQL through the operator, never a hand-made StatefulSet.
    assert not of_kind(docs, "StatefulSet")
    (cluster,) = of_kind(docs, "Cluster")
    assert cluster["apiVersion"].startswith("postgresql.cnpg.io/")


def test_each_deployment_runs_its_service_with_grpc_probes(
    docs: tuple[dict[str, Any], ...],
) -> None:
    for deployment in of_kind(docs, "Deployment"):
        name = component(deployment)
        module, health_names = SERVICES[name]
        (container,) = containers(deployment)
        # One image; the service chosen by the command (ENTRYPOINT python -m).
        assert container["args"] == [module]
        assert importlib.util.find_spec(module) is not None
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["grpc"] == DEFAULT_PORTS[name]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc_probe = container[probe]["grpc"]
            assert grpc_probe["port"] == ports["grpc"], (name, probe)
        # Ready = the service's own health entry, registered by the server at start.
        assert container["readinessProbe"]["grpc"]["service"] in health_names
        assert container["livenessProbe"]["grpc"].get("service", "") == ""


def test_each_container_has_requests_within_limits(docs: tuple[dict[str, Any], ...]) -> None:
    for deployment in of_kind(docs, "Deployment"):
        for container in containers(deployment):
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                request = quantity(resources["requests"][kind])
                limit = quantity(resources["limits"][kind])
                assert 0 < request <= limit, (deployment["metadata"]["name"], kind)


def test_services_are_headless_and_match_the_pods(docs: tuple[dict[str, Any], ...]) -> None:
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        service = named(docs, "Service", name)
        spec = service["spec"]
        assert spec["clusterIP"] == "None", "headless, for client-side gRPC balancing"
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert matches(spec["selector"], pod_labels)
        assert matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
        (container,) = containers(deployment)
        by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
        for port in spec["ports"]:
            target = port["targetPort"]
            assert (by_name[target] if isinstance(target, str) else target) in by_name.values()
        grpc_port = next(p for p in spec["ports"] if p["name"] == "grpc")
        assert grpc_port["port"] == by_name["grpc"] and grpc_port["appProtocol"] == "grpc"
        pdb = named(docs, "PodDisruptionBudget", name)
        assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)


def test_the_config_names_real_settings_and_addresses(docs: tuple[dict[str, Any], ...]) -> None:
    (config,) = of_kind(docs, "ConfigMap")
    data = config["data"]
    for key in data:
        assert key.startswith("LWDOCK_") and key[7:].lower() in Settings.model_fields, key
    # The whole config is a valid Settings (types, literals).
    settings = Settings(**{k[7:].lower(): v for k, v in data.items()})
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    for name, port in DEFAULT_PORTS.items():
        address = getattr(settings, f"{name}_address")
        assert address == f"dns:///lwdock-{name}:{port}"
        assert any(p["port"] == port for p in services[f"lwdock-{name}"]["spec"]["ports"])
    assert settings.blob_url and settings.blob_url.startswith("s3://")
    assert settings.s3_endpoint_url and settings.host == "0.0.0.0"
    for deployment in of_kind(docs, "Deployment"):
        (container,) = containers(deployment)
        metrics = next(p for p in container["ports"] if p["name"] == "metrics")
        assert metrics["containerPort"] == settings.metrics_port


def _referenced(deployment: dict[str, Any]) -> Iterator[tuple[str, str]]:
    pod = deployment["spec"]["template"]["spec"]
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            yield "Secret", volume["secret"]["secretName"]
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"]["name"]
    for container in pod["containers"]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"]["name"]
            if "secretRef" in source:
                yield "Secret", source["secretRef"]["name"]
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            if "secretKeyRef" in ref:
                yield "Secret", ref["secretKeyRef"]["name"]
            if "configMapKeyRef" in ref:
                yield "ConfigMap", ref["configMapKeyRef"]["name"]


def test_config_and_secret_references_resolve() -> None:
    # Only the dev overlay provides the Secrets (the base leaves them to an overlay).
    docs = render("dev")
    present = {(d["kind"], d["metadata"]["name"]) for d in docs}
    operator_made = {
        ("Secret", c["metadata"]["name"] + OPERATOR_SECRET_SUFFIX) for c in of_kind(docs, "Cluster")
    }
    registry = named(docs, "Deployment", "lwdock-registry")
    dsn = next(e for e in containers(registry)[0]["env"] if e["name"] == "LWDOCK_DATABASE_URL")
    assert ("Secret", dsn["valueFrom"]["secretKeyRef"]["name"]) in operator_made
    assert dsn["valueFrom"]["secretKeyRef"]["key"] == "uri"
    for deployment in of_kind(docs, "Deployment"):
        for ref in _referenced(deployment):
            assert ref in present | operator_made, (deployment["metadata"]["name"], ref)
    s3 = next(d for d in of_kind(docs, "Secret") if d["metadata"]["name"].startswith("lwdock-s3"))
    assert set(s3["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_no_privileged_containers_and_only_reuse_relaxed_for_its_sandbox(
    docs: tuple[dict[str, Any], ...],
) -> None:
    for deployment in of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context.get("privileged", False) is False, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["readOnlyRootFilesystem"] is True, name
            relaxed = {
                "procMount": context.get("procMount", "Default") != "Default",
                "seccomp": context.get("seccompProfile", {}).get("type") == "Unconfined",
                "apparmor": context.get("appArmorProfile", {}).get("type") == "Unconfined",
                "host_users": pod.get("hostUsers", True) is False,
            }
            if name == SANDBOXED:
                # bubblewrap: user namespaces inside a pod user namespace, its own /proc.
                assert all(relaxed.values()), relaxed
            else:
                assert not any(relaxed.values()), (name, relaxed)
                assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"


# -- NetworkPolicies ------------------------------------------------------------------------


def _peers_selectors(policy: dict[str, Any]) -> Iterator[dict[str, str]]:
    for rule in policy["spec"].get("ingress", []):
        for peer in rule.get("from", []):
            if "podSelector" in peer:
                yield peer["podSelector"].get("matchLabels", {})
    for rule in policy["spec"].get("egress", []):
        for peer in rule.get("to", []):
            if "podSelector" in peer:
                yield peer["podSelector"].get("matchLabels", {})


def test_network_policies_select_real_labels(docs: tuple[dict[str, Any], ...]) -> None:
    pods = pod_label_sets(docs)
    policies = of_kind(docs, "NetworkPolicy")
    assert policies
    for policy in policies:
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert any(matches(selector, labels) for labels in pods), policy["metadata"]["name"]
        for peer in _peers_selectors(policy):
            assert peer, "an empty peer podSelector would allow every pod"
            real = any(matches(peer, labels) for labels in pods)
            assert real or peer in EXTERNAL_PEERS, (policy["metadata"]["name"], peer)
    # Every learnware-dock pod is under the default deny, both directions.
    deny = named(docs, "NetworkPolicy", "lwdock-default-deny")["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny.get("ingress") and not deny.get("egress")
    for deployment in of_kind(docs, "Deployment"):
        assert matches(
            deny["podSelector"]["matchLabels"],
            deployment["spec"]["template"]["metadata"]["labels"],
        )


def _rules_allow(
    policies: list[dict[str, Any]],
    labels: dict[str, str],
    direction: str,
    peer: dict[str, str],
    port: int,
) -> bool:
    """Do the policies selecting a pod with `labels` allow `direction` traffic with a pod
    labelled `peer` (in the same namespace) on `port`? Not selected = allowed."""
    key = "ingress" if direction == "Ingress" else "egress"
    peers_key = "from" if direction == "Ingress" else "to"
    selecting = [
        p
        for p in policies
        if matches(p["spec"]["podSelector"]["matchLabels"], labels)
        and direction in p["spec"]["policyTypes"]
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            for candidate in rule.get(peers_key, []):
                selector = candidate.get("podSelector", {}).get("matchLabels")
                if selector and matches(selector, peer):
                    if candidate.get("namespaceSelector"):
                        continue  # another namespace only
                    return True
    return False


def reaches(
    docs: tuple[dict[str, Any], ...], src: dict[str, str], dst: dict[str, str], port: int
) -> bool:
    policies = of_kind(docs, "NetworkPolicy")
    return _rules_allow(policies, src, "Egress", dst, port) and _rules_allow(
        policies, dst, "Ingress", src, port
    )


def test_network_policies_allow_exactly_the_intended_paths(
    docs: tuple[dict[str, Any], ...],
) -> None:
    pods = {
        d["metadata"]["name"].removeprefix("lwdock-"): d["spec"]["template"]["metadata"]["labels"]
        for d in of_kind(docs, "Deployment")
    }
    (cluster,) = of_kind(docs, "Cluster")
    pods["postgres"] = {"cnpg.io/cluster": cluster["metadata"]["name"]}
    user = {"lwdock.io/client": "true"}
    ports = {**DEFAULT_PORTS, "postgres": 5432}
    allowed = {
        ("registry", "postgres"),
        ("registry", "reuse"),
        ("search", "registry"),
        ("search", "spec"),
        ("reuse", "registry"),
    }
    policies = of_kind(docs, "NetworkPolicy")
    for src in pods:
        for dst in pods:
            if src == dst or src == "postgres":
                continue
            expected = (src, dst) in allowed
            assert reaches(docs, pods[src], pods[dst], ports[dst]) == expected, (src, dst)
            # Each side on its own too: the target's ingress does not rely on the caller's
            # egress policy, nor the other way round.
            ingress = _rules_allow(policies, pods[dst], "Ingress", pods[src], ports[dst])
            egress = _rules_allow(policies, pods[src], "Egress", pods[dst], ports[dst])
            assert ingress == expected and egress == expected, (src, dst, ingress, egress)
    # Users reach the four services (from their own namespace or another), never PostgreSQL.
    for name in DEFAULT_PORTS:
        assert _any_namespace_allows(policies, pods[name], user, DEFAULT_PORTS[name])
    assert not _any_namespace_allows(policies, pods["postgres"], user, 5432)


def _any_namespace_allows(
    policies: list[dict[str, Any]], labels: dict[str, str], peer: dict[str, str], port: int
) -> bool:
    for policy in policies:
        if not matches(policy["spec"]["podSelector"]["matchLabels"], labels):
            continue
        for rule in policy["spec"].get("ingress") or []:
            if port not in [p["port"] for p in rule.get("ports", [])]:
                continue
            for candidate in rule.get("from", []):
                if matches(candidate.get("podSelector", {}).get("matchLabels", {"-": "-"}), peer):
                    return True
    return False


def test_dev_overlay_is_one_small_namespace() -> None:
    docs = render("dev")
    namespaced = [d for d in docs if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"lwdock-dev"}
    assert [d["metadata"]["name"] for d in of_kind(docs, "Namespace")] == ["lwdock-dev"]
    for deployment in of_kind(docs, "Deployment"):
        assert deployment["spec"]["replicas"] == 1
        assert containers(deployment)[0]["image"] == "learnware-dock:dev"
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["minReplicas"] == 1 <= hpa["spec"]["maxReplicas"]
    (cluster,) = of_kind(docs, "Cluster")
    assert cluster["spec"]["instances"] == 1
    (config,) = of_kind(docs, "ConfigMap")
    assert config["data"]["LWDOCK_OTEL_EXPORTER"] == "console"
    # merged into the base's config, not replacing it
    assert config["data"]["LWDOCK_HOST"] == "0.0.0.0"


def test_the_image_recipe() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    text = "\n".join(lines)
    # CPU torch explicitly, before the project (whose torch==2.13.0 pin it then satisfies).
    torch_at = next(i for i, line in enumerate(lines) if "torch==2.13.0" in line)
    project_at = next(i for i, line in enumerate(lines) if re.search(r"pip install '\.", line))
    assert torch_at < project_at
    assert "download.pytorch.org/whl/cpu" in lines[torch_at]
    assert "bubblewrap" in text
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert re.search(r'^ENTRYPOINT \[.*"python", "-m"\]$', text, re.M)
    # The uid the manifests run as is the image's user.
    for deployment in render("base"):
        if deployment["kind"] == "Deployment":
            uid = deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
            assert str(uid) == user[-1].split(":")[0]
    # Everything the image installs is in the build context the ignore file lets through.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in copied.split():
            assert f"!{path}" in ignore or f"!{path}/**" in ignore, path
            assert (ROOT / path).exists(), path
