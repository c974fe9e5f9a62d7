"""The bundle's security policies, checked offline against what they are meant to allow:

- every NetworkPolicy and AuthorizationPolicy against the flow tables in docs/deploy.md ("Network flows",
  "Callers by principal"): each listed flow is admitted, and no other flow between the pods and ports
  below. The policies are evaluated here by the rules of Kubernetes' NetworkPolicy API and Istio's
  AuthorizationPolicy (a small evaluator, independent of the code that renders them);
- the deployer's ValidatingAdmissionPolicy, evaluated by a CEL interpreter on the changes a rollout
  makes (admitted) and on the ones it must refuse;
- every pod the bundle defines against Pod Security's `restricted` profile.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path

import pytest

from fusionrec.platform.bundle import render_bundle

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
NS = "fusionrec"

# Every pod a flow can start or end at: (namespace, labels). External addresses by IP.
PODS = {
    "transformer": (NS, {"serving.kserve.io/inferenceservice": "fusionrec", "component": "transformer"}),
    "predictor": (NS, {"serving.kserve.io/inferenceservice": "fusionrec", "component": "predictor"}),
    "redis": (NS, {"app.kubernetes.io/name": "redis"}),
    "sink": (NS, {"app.kubernetes.io/name": "monitoring-sink"}),
    "evidently-ui": (NS, {"app.kubernetes.io/name": "evidently-ui"}),
    "pipeline-step": (NS, {"fusionrec.io/pipeline-step": "true"}),
    "features-step": (NS, {"fusionrec.io/pipeline-step": "true", "fusionrec.io/feature-store-client": "true"}),
    "setup-job": (NS, {"app.kubernetes.io/name": "fusionrec-pipelines-setup"}),
    "other-pod": (NS, {"app": "something-else"}),
    "activator": ("knative-serving", {"app": "activator"}),
    "autoscaler": ("knative-serving", {"app": "autoscaler"}),
    "local-gateway": ("istio-system", {"istio": "cluster-local-gateway"}),
    "ingress-gateway": ("istio-system", {"istio": "ingressgateway"}),
    "prometheus": ("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    "kube-dns": ("kube-system", {"k8s-app": "kube-dns"}),
    "ml-pipeline": ("kubeflow", {"app": "ml-pipeline"}),
    "minio": ("kubeflow", {"app": "minio"}),
    "pod-elsewhere": ("default", {"app": "x"}),
}
EXTERNAL = {"api-server": "10.96.0.1", "internet": "203.0.113.5"}
PORTS = ["53/UDP", "53", "80", "443", "6379", "6443", "8000", "8012", "8080", "8887", "8888", "9000", "9088", "9090"]


def _matches(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        has, value = e["key"] in labels, labels.get(e["key"])
        ok = {
            "In": has and value in e.get("values", []),
            "NotIn": not has or value not in e.get("values", []),
            "Exists": has,
            "DoesNotExist": not has,
        }[e["operator"]]
        if not ok:
            return False
    return True


def _peer(peer: dict, policy_ns: str, who: str) -> bool:
    if "ipBlock" in peer:
        if who not in EXTERNAL:
            return False  # pod addresses under an ipBlock are implementation-defined: never counted on
        net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        return ipaddress.ip_address(EXTERNAL[who]) in net and not any(
            ipaddress.ip_address(EXTERNAL[who]) in ipaddress.ip_network(x) for x in peer["ipBlock"].get("except", [])
        )
    if who in EXTERNAL:
        return False
    ns, labels = PODS[who]
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": ns}):
            return False
    elif ns != policy_ns:
        return False
    return _matches(peer.get("podSelector"), labels)


def _port(rule_ports, port: str) -> bool:
    number, _, protocol = port.partition("/")
    return not rule_ports or any(
        str(p.get("port")) == number and p.get("protocol", "TCP") == (protocol or "TCP") for p in rule_ports
    )


def _side(policies, pod: str, peer: str, port: str, direction: str) -> bool:
    """Whether ``pod``'s policies let traffic in from (or out to) ``peer`` on ``port``."""
    if pod in EXTERNAL or PODS[pod][0] != NS:
        return True  # outside the namespace: not ours to police
    labels = PODS[pod][1]
    kind = "Ingress" if direction == "ingress" else "Egress"
    selecting = [p for p in policies if _matches(p["spec"]["podSelector"], labels) and kind in p["spec"]["policyTypes"]]
    if not selecting:
        return True
    key = "from" if direction == "ingress" else "to"
    return any(
        (key not in rule or any(_peer(x, NS, peer) for x in rule[key])) and _port(rule.get("ports"), port)
        for p in selecting
        for rule in p["spec"].get(direction, [])
    )


def network_flows(docs) -> set[tuple[str, str, str]]:
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    everyone = [*PODS, *EXTERNAL]
    return {
        (src, dst, port)
        for src in PODS
        for dst in everyone
        if src != dst
        for port in PORTS
        if _side(policies, src, dst, port, "egress")
        and _side(policies, dst, src, port, "ingress")
        and (PODS[src][0] == NS or (dst not in EXTERNAL and PODS[dst][0] == NS))
    }


def _table(heading: str) -> list[list[str]]:
    """The rows of the markdown table under ``heading`` in docs/deploy.md."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split(f"### {heading}", 1)[1].split("\n#", 1)[0]
    rows = [
        [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|") and not re.match(r"^\|[\s:-]+\|", line)
    ]
    return rows[1:]  # without the header


def _expand(cell: str, universe) -> list[str]:
    return list(universe) if cell == "every pod of the namespace" else [c.strip() for c in cell.split(",")]


@pytest.fixture(scope="module")
def prod():
    digest = "@sha256:" + "4f" * 32
    images = {r: f"reg.example/{r}{digest}" for r in ("fusionrec", "fusionrec-serving", "redis")}
    from fusionrec.platform.bundle import Deploy

    return render_bundle("prod", Deploy(model_version="v0001", images=images))


def test_the_network_policies_admit_the_listed_flows_and_nothing_else(prod):
    listed = set()
    for src, dst, ports in _table("Network flows"):
        for s in _expand(src, [p for p in PODS if PODS[p][0] == NS]):
            for d in _expand(dst, PODS):
                for port in ports.split(","):
                    listed.add((s, d, port.strip()))
    got = network_flows(prod)
    assert got - listed == set(), sorted(got - listed)  # admitted, not listed
    assert listed - got == set(), sorted(listed - got)  # listed, not admitted


def test_a_label_alone_does_not_reach_redis_through_the_mesh(prod):
    """Any pod can carry fusionrec.io/feature-store-client (the NetworkPolicy admits it); the mesh's
    policy admits only the ServiceAccounts in the table."""
    assert ("features-step", "redis", "6379") in network_flows(prod)
    assert not _mesh_allows(prod, "cluster.local/ns/fusionrec/sa/default", "redis", "6379")


SAS = [
    "fusionrec-transformer",
    "fusionrec-predictor",
    "fusionrec-training",
    "fusionrec-monitoring",
    "fusionrec-monitoring-sink",
    "fusionrec-evidently-ui",
    "fusionrec-redis",
    "fusionrec-pipelines-setup",
    "default",
]
PRINCIPALS = [f"cluster.local/ns/{NS}/sa/{sa}" for sa in SAS] + [
    "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
    "cluster.local/ns/istio-system/sa/cluster-local-gateway-service-account",
    "cluster.local/ns/knative-serving/sa/controller",
    "cluster.local/ns/default/sa/default",
]
WORKLOAD_PORTS = {"transformer": "8080", "predictor": "8080", "redis": "6379", "sink": "8080", "evidently-ui": "8000"}
WORKLOAD_PATHS = {
    "transformer": "/v1/models/fusionrec:predict",
    "predictor": "/v2/models/fusionrec/infer",
    "redis": None,
    "sink": "/events",
    "evidently-ui": "/",
}


def _glob(pattern: str, value: str) -> bool:
    return (
        value == pattern
        or pattern == "*"
        or (pattern.endswith("*") and value.startswith(pattern[:-1]))
        or (pattern.startswith("*") and value.endswith(pattern[1:]))
    )


def _mesh_allows(docs, principal: str, workload: str, port: str, method: str = "POST", path: str | None = None) -> bool:
    labels = PODS[workload][1]
    policies = [
        d
        for d in docs
        if d["kind"] == "AuthorizationPolicy" and _matches((d["spec"].get("selector") or {"matchLabels": {}}), labels)
    ]
    if not policies:
        return True
    for p in policies:
        if p["spec"].get("action", "ALLOW") != "ALLOW":
            continue
        for rule in p["spec"].get("rules", []):
            sources = [f["source"] for f in rule.get("from", [])]
            if sources and not any(any(_glob(x, principal) for x in s.get("principals", [])) for s in sources):
                continue
            ops = [t["operation"] for t in rule.get("to", [])]
            if ops and not any(
                (not o.get("ports") or port in o["ports"])
                and (not o.get("methods") or method in o["methods"])
                and (not o.get("paths") or path is None or any(_glob(x, path) for x in o["paths"]))
                for o in ops
            ):
                continue
            return True
    return False


def test_the_mesh_admits_the_listed_callers_and_nothing_else(prod):
    listed = {
        (p, w)
        for principal, workloads in _table("Callers by principal")
        for w in _expand(workloads, [])
        for p in [principal]
    }
    got = {
        (p, w)
        for p in PRINCIPALS
        for w in WORKLOAD_PORTS
        if _mesh_allows(prod, p, w, WORKLOAD_PORTS[w], "POST" if w != "evidently-ui" else "GET", WORKLOAD_PATHS[w])
    }
    assert got - listed == set(), sorted(got - listed)
    assert listed - got == set(), sorted(listed - got)
    # the repository routes stay closed to everyone, the transformer included
    assert not _mesh_allows(
        prod,
        f"cluster.local/ns/{NS}/sa/fusionrec-transformer",
        "predictor",
        "8080",
        "POST",
        "/v2/repository/models/fusionrec/unload",
    )


# -- the deployer's admission policy -------------------------------------------------------------------


def _admit(policy: dict, old: dict, new: dict, user: str) -> list[str]:
    """The messages of the validations ``new`` fails (none: admitted), as the API server would evaluate them."""
    import celpy

    env = celpy.Environment()
    activation = {
        "object": celpy.json_to_cel(new),
        "oldObject": celpy.json_to_cel(old),
        "request": celpy.json_to_cel({"userInfo": {"username": user}}),
    }
    for cond in policy["spec"].get("matchConditions", []):
        if not env.program(env.compile(cond["expression"])).evaluate(activation):
            return []  # the policy does not apply to this request
    return [
        v["message"]
        for v in policy["spec"]["validations"]
        if not env.program(env.compile(v["expression"])).evaluate(activation)
    ]


def test_the_deployer_may_roll_a_version_out_and_change_nothing_else(prod):
    policy = next(d for d in prod if d["kind"] == "ValidatingAdmissionPolicy")
    live = next(d for d in prod if d["kind"] == "InferenceService")
    deployer = "system:serviceaccount:fusionrec:fusionrec-training"
    rollout = copy.deepcopy(live)
    rollout["spec"]["predictor"]["model"]["storageUri"] = "pvc://fusionrec-models/versions/v0002"
    rollout["spec"]["predictor"]["canaryTrafficPercent"] = 10
    assert _admit(policy, live, rollout, deployer) == []
    refused = {
        "the image": lambda o: o["spec"]["transformer"]["containers"][0].__setitem__("image", "evil/image:latest"),
        "the command": lambda o: o["spec"]["transformer"]["containers"][0].__setitem__("command", ["sh", "-c", "x"]),
        "the logger URL": lambda o: o["spec"]["predictor"]["logger"].__setitem__("url", "http://attacker/"),
        "the runtime": lambda o: o["spec"]["predictor"]["model"].__setitem__("runtime", "other"),
        "a model outside the registry": lambda o: o["spec"]["predictor"]["model"].__setitem__("storageUri", "s3://x/y"),
        "the annotations": lambda o: o["metadata"]["annotations"].__setitem__(
            "serving.kserve.io/deploymentMode", "Raw"
        ),
        "a removed field": lambda o: o["spec"]["predictor"].pop("logger"),
    }
    for what, change in refused.items():
        bad = copy.deepcopy(rollout)
        change(bad)
        assert _admit(policy, live, bad, deployer), what
        assert _admit(policy, live, bad, "system:serviceaccount:fusionrec:someone-else") == [], what  # not its business


# -- Pod Security `restricted` --------------------------------------------------------------------------


def _pods(doc):
    spec = doc.get("spec") or {}
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        yield doc["kind"], spec["template"]["spec"]
    elif doc["kind"] == "InferenceService":
        for part in ("predictor", "transformer"):
            if part in spec:
                yield f"isvc {part}", spec[part]


def test_every_pod_of_the_bundle_meets_pod_security_restricted(prod):
    checked = 0
    for doc in prod:
        for where, pod in _pods(doc):
            checked += 1
            ctx = pod.get("securityContext") or {}
            assert (
                ctx.get("runAsNonRoot") is True and (ctx.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
            ), where
            containers = [*pod.get("containers", []), *pod.get("initContainers", [])]
            if "model" in pod:
                containers.append(pod["model"])
            for c in containers:
                sc = c.get("securityContext") or {}
                name = f"{where} {c.get('name', 'model')}"
                if not sc and "model" in pod and c is pod["model"]:
                    continue  # the ServingRuntime's container carries the predictor's settings
                assert sc.get("allowPrivilegeEscalation") is False, name
                assert (sc.get("capabilities") or {}).get("drop") == ["ALL"], name
                assert not pod.get("hostNetwork") and not pod.get("hostPID") and not sc.get("privileged"), name
    assert checked >= 6
    runtime = next(d for d in prod if d["kind"] == "ServingRuntime")
    for c in runtime["spec"]["containers"]:
        sc = c["securityContext"]
        assert sc.get("allowPrivilegeEscalation") is False and sc["capabilities"]["drop"] == ["ALL"]


def test_the_namespace_warns_and_audits_at_restricted(prod):
    labels = next(d for d in prod if d["kind"] == "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce"] in ("baseline", "restricted")
    assert labels["istio-injection"] == "enabled"
