"""The Helm chart (helm/forgetmenot), verified without a Kubernetes API server, which cannot run here.

Helm's own Go library renders and lints the chart (helm-python-sdk, offline): for each values file
in helm/forgetmenot/ci, the strict lint passes, every core object is valid against the Kubernetes
API schema (kubernetes-validate, strict), the custom resources have the shape their operators
read, the KubeRay RayCluster validates against KubeRay's own CRD schema (vendored in
tests/contracts) and passes the operator's checks, the pods carry the security defaults, the
PrometheusRule is exactly alerts/forgetmenot.rules.yml and passes promtool, the policy the chart
writes is one the monitor's own loader accepts, and the whole render matches its golden copy in
tests/golden (FORGETMENOT_UPDATE_GOLDEN=1 rewrites them).
Wrong values are refused, each with a message that names the key.

`render(values_files)` is public: other tests import it (the retention gate's test evaluates the
AnalysisTemplate's conditions against the gate's real answers, see `analysis_metric`).
"""

from __future__ import annotations

import base64
import copy
import functools
import gzip
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from monitor.policy.loading import load_config

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "forgetmenot"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
GOLDEN = REPO / "tests" / "golden"
# The values file that switches on the gate, the NetworkPolicy, the ServiceMonitor and the rules.
EVERYTHING_ON = CHART / "ci" / "openai-only.yaml"
RELEASE, NAMESPACE = "forgetmenot", "monitoring"
KUBERNETES = kubernetes_validate.latest_version()
UPDATE_GOLDEN = os.environ.get("FORGETMENOT_UPDATE_GOLDEN") == "1"

# Objects of these API groups are custom resources: kubernetes-validate has no schema for them.
CUSTOM = {"monitoring.coreos.com/v1", "argoproj.io/v1alpha1", "ray.io/v1", "gateway.networking.k8s.io/v1"}
# Environment variables whose values the chart writes itself; every other one comes from a Secret.
PLAIN_ENV = {"FORGETMENOT_HOME", "HF_HOME", "MPLCONFIGDIR", "TMPDIR", "PYTHONDONTWRITEBYTECODE",
             "FORGETMENOT_TOKEN_FILE", "FORGETMENOT_WEB_CONFIG", "RAY_ADDRESS", "RAY_USAGE_STATS_ENABLED"}
# The values file with the chart's own RayCluster (and the NetworkPolicies) on.
RAY_ON = CHART / "ci" / "ray.yaml"
# KubeRay's RayCluster CRD schema (ray.io/v1), from ray-project/kuberay v1.7.0; the file names the commit.
RAYCLUSTER_CRD = REPO / "tests" / "contracts" / "kuberay-raycluster-v1.schema.json.gz"


# --- rendering: the helpers other tests import --------------------------------------------------

def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Values layered as `helm -f a.yaml -f b.yaml` layers them: maps merge, the rest is replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


Values = dict[str, Any]


def load_values(values_files: Sequence[str | Path], overrides: Values | None = None) -> Values:
    values: dict[str, Any] = {}
    for path in values_files:
        values = merge(values, yaml.safe_load(Path(path).read_text()) or {})
    return merge(values, overrides or {})


def render_templates(values_files: Sequence[str | Path], overrides: Values | None = None,
                     release: str = RELEASE) -> dict[str, str]:
    """Template path -> rendered text, as `helm template forgetmenot helm/forgetmenot -n monitoring
    -f FILE...` (`release` for another release name). Values the schema or a template refuses raise
    helm_python.HelmError with Helm's message."""
    with helm_python.Chart.load(CHART) as chart:
        return chart.render(load_values(values_files, overrides), name=release, namespace=NAMESPACE)


def render(values_files: Sequence[str | Path], overrides: Values | None = None,
           release: str = RELEASE) -> list[dict[str, Any]]:
    """Every object the chart renders for these values files (in order, then `overrides`), parsed."""
    objects = []
    for path, text in sorted(render_templates(values_files, overrides, release).items()):
        if path.endswith(".yaml"):
            objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def find(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = find(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def policy_file(objects: list[dict[str, Any]]) -> str:
    """The forgetmenot.yaml the chart wrote."""
    maps = [m for m in find(objects, "ConfigMap") if "forgetmenot.yaml" in m.get("data", {})]
    assert len(maps) == 1, f"expected one policy ConfigMap, found {len(maps)}"
    text: str = maps[0]["data"]["forgetmenot.yaml"]
    return text


def analysis_template(values_files: Sequence[str | Path] = (EVERYTHING_ON,)) -> dict[str, Any]:
    """The rendered Argo Rollouts (Cluster)AnalysisTemplate that asks the retention gate."""
    objects = render(values_files)
    templates = [o for o in objects if o["kind"] in ("AnalysisTemplate", "ClusterAnalysisTemplate")]
    assert len(templates) == 1, "the values do not enable gate.argo"
    return templates[0]


def analysis_metric(values_files: Sequence[str | Path] = (EVERYTHING_ON,)) -> dict[str, Any]:
    """The gate's metric in that template: its `successCondition` / `failureCondition`
    (expressions over `result`, the gate's JSON body) and its web provider (url, headers,
    jsonPath, timeoutSeconds)."""
    metrics: list[dict[str, Any]] = analysis_template(values_files)["spec"]["metrics"]
    return metrics[0]


# What the chart copies from files/ is checked byte for byte by its own tests; the goldens leave it
# out, so a regenerated dashboard or rule does not make every golden drift.
ELIDED = [
    (re.compile(r"(?m)^(  [\w.-]+\.json: \|-\n)(?:    .*\n)*"),
     r"\1    <files/dashboards: test_one_dashboard_config_map_per_file>\n"),
    (re.compile(r"(?m)^(  groups:\n)(?:    .*\n)*"),
     r"\1    <files/forgetmenot.rules.yml: test_prometheus_rule_is_the_alerts_file>\n"),
    # A new random token at every render that asks no cluster.
    (re.compile(r'(?m)^(  api-tokens: )"[A-Za-z0-9+/=]+"$'),
     r"\1<random: test_the_chart_makes_an_api_token_when_none_is_named>"),
]


def golden_text(values_file: Path) -> str:
    """The render as `helm template` prints it, each template's output under its source path, with
    the dashboards' and rules' bodies elided."""
    parts = []
    for path, text in sorted(render_templates([values_file]).items()):
        if path.endswith(".yaml") and text.strip():
            parts.append(f"---\n# Source: {path}\n{text.strip()}\n")
    golden = "".join(parts)
    for pattern, replacement in ELIDED:
        golden = pattern.sub(replacement, golden)
    return golden


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj["spec"]["template"]["spec"]


def ray_pod_specs(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The pod templates of every RayCluster: its head's, then each worker group's."""
    for cluster in find(objects, "RayCluster"):
        yield cluster["spec"]["headGroupSpec"]["template"]["spec"]
        for group in cluster["spec"]["workerGroupSpecs"]:
            yield group["template"]["spec"]


def ci_id(path: Path) -> str:
    return path.stem


# --- KubeRay's RayCluster, checked as its API server and operator would ------------------------------

def strict(schema: Any) -> Any:
    """The CRD schema as the API server applies it under strict field validation (kubectl's default):
    a field the schema does not name is an error instead of being pruned."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {key: strict(value) for key, value in schema.items()}
    if "properties" in tightened and "additionalProperties" not in tightened:
        tightened["additionalProperties"] = False
    return tightened


@functools.cache
def raycluster_crd() -> dict[str, Any]:
    crd: dict[str, Any] = json.loads(gzip.decompress(RAYCLUSTER_CRD.read_bytes()))
    return crd


@functools.cache
def raycluster_validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(strict(raycluster_crd()["openAPIV3Schema"]))


def list_map_duplicates(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """The API server's check that JSON Schema has no keyword for: the items of an
    `x-kubernetes-list-type: map` list (containers, env, ports, volumes) are unique by their keys."""
    problems = []
    if isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                problems += list_map_duplicates(sub, item, f"{path}/{key}")
    elif isinstance(value, list):
        if schema.get("x-kubernetes-list-type") == "map":
            keys = [tuple(item.get(k) for k in schema["x-kubernetes-list-map-keys"]) for item in value]
            problems += [f"{path}: {key} twice" for key in set(keys) if keys.count(key) > 1]
        for index, item in enumerate(value):
            problems += list_map_duplicates(schema.get("items", {}), item, f"{path}/{index}")
    return problems


def cel_paths(schema: dict[str, Any], path: str = "") -> list[str]:
    """Where the CRD has CEL rules (x-kubernetes-validations), which no Python library evaluates."""
    found = [path] if "x-kubernetes-validations" in schema else []
    for key, sub in schema.get("properties", {}).items():
        found += cel_paths(sub, f"{path}/{key}")
    return found


def kuberay_refusals(cluster: dict[str, Any]) -> list[str]:
    """What the KubeRay operator refuses before it creates a pod (ray-operator/controllers/ray/utils/
    validation.go: ValidateRayClusterMetadata, ValidateRayClusterSpec), for the fields the chart sets."""
    problems = []
    name = cluster["metadata"]["name"]
    if len(name) > 53 or not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
        problems.append(f"name {name!r}: at most 53 characters, a DNS-1035 label")
    spec = cluster["spec"]
    for group in [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]:
        if not group["template"]["spec"].get("containers"):
            problems.append("a group without containers")
        if "labels" in group.get("rayStartParams", {}):
            problems.append("rayStartParams['labels'] is not supported")
    for group in spec.get("workerGroupSpecs", []):
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if not spec.get("enableInTreeAutoscaling") and (low is None or high is None):
            problems.append(f"worker group {group['groupName']}: no minReplicas or maxReplicas")
        if low is not None and high is not None and not 0 <= low <= high:
            problems.append(f"worker group {group['groupName']}: 0 <= minReplicas <= maxReplicas")
    return problems


def raycluster_problems(cluster: dict[str, Any]) -> list[str]:
    """Every reason the API server (CRD schema, list-map keys) or the KubeRay operator would refuse it."""
    schema = raycluster_crd()["openAPIV3Schema"]
    problems = [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in raycluster_validator().iter_errors(cluster)]
    problems += list_map_duplicates(schema, cluster)
    set_paths = {f"/{'/'.join(p)}" for p in leaf_paths(cluster)}
    problems += [f"{path}: a CEL rule this test cannot evaluate" for path in cel_paths(schema)
                 if any(p == path or p.startswith(f"{path}/") for p in set_paths)]
    return problems + kuberay_refusals(cluster)


def leaf_paths(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaf_paths(item, (*path, key))
    else:
        yield path


# --- the chart's files are the repository's -------------------------------------------------------

def test_app_version_is_the_package_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]
    assert chart["kubeVersion"].startswith(">=1.27")


def test_rules_copy_is_byte_identical_to_alerts() -> None:
    copy_ = CHART / "files" / "forgetmenot.rules.yml"
    assert copy_.read_bytes() == (REPO / "alerts" / "forgetmenot.rules.yml").read_bytes(), (
        "cp alerts/forgetmenot.rules.yml helm/forgetmenot/files/")


def test_dashboard_copies_are_byte_identical_to_dashboards() -> None:
    originals = {p.name: p.read_bytes() for p in (REPO / "dashboards").glob("*.json")}
    copies = {p.name: p.read_bytes() for p in (CHART / "files" / "dashboards").glob("*.json")}
    assert originals, "dashboards/ has no JSON"
    assert copies == originals, "cp dashboards/*.json helm/forgetmenot/files/dashboards/"


# --- every ci values file -----------------------------------------------------------------------

def test_ci_values_cover_the_deployments() -> None:
    assert {p.stem for p in CI_VALUES} >= {"sqlite-single", "postgres-ha", "gpu", "openai-only"}


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_strict_lint_passes(values_file: Path) -> None:
    report = helm_python.lint(CHART, load_values([values_file]), strict=True, namespace=NAMESPACE,
                              kube_version=f"v{KUBERNETES}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert not problems and not report["errors"], json.dumps(report, indent=1)


def test_strict_lint_reports_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "forgetmenot"
    shutil.copytree(CHART, broken)
    service = broken / "templates" / "service.yaml"
    service.write_text(service.read_text().replace("{{ .Values.service.type }}", "{{ .Values.service.type"))
    report = helm_python.lint(broken, load_values([EVERYTHING_ON]), strict=True)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"])


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_core_objects_are_valid_kubernetes(values_file: Path) -> None:
    objects = render([values_file])
    core = [o for o in objects if o["apiVersion"] not in CUSTOM]
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount"} <= {o["kind"] for o in core}
    for obj in core:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_kubernetes_validate_catches_a_wrong_field() -> None:
    deployment = one(render([EVERYTHING_ON]), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFs"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_custom_resources_have_the_shape_their_operators_read(values_file: Path) -> None:
    """No CRD schemas here: check what Prometheus Operator and Argo Rollouts read from each."""
    for obj in render([values_file]):
        if obj["apiVersion"] not in CUSTOM:
            continue
        assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])
        spec = obj["spec"]
        if obj["kind"] == "ServiceMonitor":
            assert spec["selector"]["matchLabels"] and spec["endpoints"]
            assert all(e["port"] == "http-metrics" for e in spec["endpoints"])
        elif obj["kind"] == "PrometheusRule":
            assert all(g["name"] and g["rules"] for g in spec["groups"])
        elif obj["kind"] in ("AnalysisTemplate", "ClusterAnalysisTemplate"):
            assert all(m["name"] and m["provider"]["web"]["url"] for m in spec["metrics"])
        elif obj["kind"] == "RayCluster":
            assert not raycluster_problems(obj), raycluster_problems(obj)
        elif obj["kind"] == "HTTPRoute":  # what a Gateway reads (gateway-api's standard channel)
            assert spec["parentRefs"] and all(p["name"] for p in spec["parentRefs"]) and spec["hostnames"]
            assert all(b["name"] and b["port"] for r in spec["rules"] for b in r["backendRefs"])
        else:
            pytest.fail(f"no shape check for {obj['kind']}")


def assert_security_defaults(pod: dict[str, Any]) -> None:
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["fsGroup"] == 10001 and security["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        assert {"/var/lib/forgetmenot", "/tmp"} <= writable


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_pods_run_with_the_security_defaults(values_file: Path) -> None:
    objects = render([values_file])
    deployer = bool(find(objects, "Role"))
    for pod in pod_specs(objects):
        assert_security_defaults(pod)
        assert pod["automountServiceAccountToken"] is deployer
    for pod in ray_pod_specs(objects):  # Ray writes only /tmp (its session) and the shared volume
        assert_security_defaults(pod)
        assert pod["automountServiceAccountToken"] is False, "only the autoscaler needs the API"


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_no_secret_value_is_rendered(values_file: Path) -> None:
    objects = render([values_file])
    # The one Secret the chart may render holds its own random API token, never a value given to it.
    for secret in find(objects, "Secret"):
        assert secret["metadata"]["name"] == "forgetmenot-api-tokens"
        assert set(secret["data"]) == {"api-tokens"}
    for pod in [*pod_specs(objects), *ray_pod_specs(objects)]:
        for env in pod["containers"][0]["env"]:
            assert env["name"] in PLAIN_ENV or "secretKeyRef" in env.get("valueFrom", {}), env


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_the_serve_command_and_its_probes(values_file: Path) -> None:
    objects = render([values_file])
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:7] == ["serve", "--config", "/etc/forgetmenot/forgetmenot.yaml",
                                     "--host", "0.0.0.0", "--port", "9464"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = one(objects, "Service")
    assert service["spec"]["ports"][0]["port"] == 9464
    assert service["spec"]["ports"][0]["name"] == "http-metrics"


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_the_rendered_policy_is_one_the_monitor_accepts(values_file: Path, tmp_path: Path) -> None:
    """The ConfigMap's forgetmenot.yaml through the monitor's own loader. The image's suites
    (/app/probes) are the repository's probes/, and the ConfigMap suites are mounted under probes/."""
    text = policy_file(render([values_file]))
    policy = yaml.safe_load(text)
    assert policy["spool"].startswith("/var/lib/forgetmenot/")
    policy["suites"] = [s.replace("/app/probes", str(REPO / "probes")) for s in policy["suites"]]
    (tmp_path / "probes").symlink_to(REPO / "probes")
    (tmp_path / "forgetmenot.yaml").write_text(yaml.safe_dump(policy))
    config = load_config(tmp_path / "forgetmenot.yaml", check_paths=False)
    assert config.database.startswith(("sqlite:////var/lib/forgetmenot/", "postgresql+psycopg://"))


@pytest.mark.parametrize("values_file", CI_VALUES, ids=ci_id)
def test_render_matches_golden(values_file: Path) -> None:
    golden = GOLDEN / f"chart-{values_file.stem}.yaml"
    text = golden_text(values_file)
    if UPDATE_GOLDEN:
        golden.write_text(text)
    regenerate = "FORGETMENOT_UPDATE_GOLDEN=1 pytest tests/test_chart.py"
    assert golden.exists(), f"no {golden.name}: run {regenerate}"
    assert text == golden.read_text(), f"the render drifted from {golden.name}; if intended, run {regenerate}"


# --- alert rules, scraping, dashboards ------------------------------------------------------------

def test_prometheus_rule_is_the_alerts_file() -> None:
    """With no defaultRules given, the shipped rules as they are, linking the release's address
    (tests/test_chart_rules.py tunes them)."""
    rule = one(render([EVERYTHING_ON], {"ingress": {"enabled": False}}), "PrometheusRule")
    alerts = yaml.safe_load((REPO / "alerts" / "forgetmenot.rules.yml").read_text())
    here = f"http://{RELEASE}.{NAMESPACE}.svc:9464"
    for shipped in alerts["groups"][0]["rules"]:
        link = shipped["annotations"]["monitor_url"]
        shipped["annotations"]["monitor_url"] = link.replace("http://forgetmenot:9464", here)
    assert rule["spec"]["groups"] == alerts["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    annotations = json.dumps(rule["spec"]["groups"])
    assert "{{ $labels.model }}" in annotations, "Helm must leave Prometheus' templates alone"


def test_promtool_accepts_the_rendered_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):  # `make test` runs `make tools` first: missing there is a broken set-up
            pytest.fail("promtool is not installed although `make tools` ran before the tests")
        pytest.skip("promtool is not installed: run `make tools` (Debian package prometheus)")
    rule = one(render([EVERYTHING_ON]), "PrometheusRule")
    rules = tmp_path / "rendered.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    count = sum(len(g["rules"]) for g in rule["spec"]["groups"])
    assert f"SUCCESS: {count} rules found" in done.stdout


def test_service_monitor_scrapes_as_the_rules_expect() -> None:
    objects = render([EVERYTHING_ON])
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["interval"] == "15s"
    assert endpoint["authorization"]["credentials"] == {"name": "forgetmenot-scrape-token", "key": "token"}
    jobs = set(re.findall(r'job="([^"]+)"', (REPO / "alerts" / "forgetmenot.rules.yml").read_text()))
    relabelled = {r["replacement"] for r in endpoint["relabelings"] if r.get("targetLabel") == "job"}
    assert jobs and relabelled == jobs, "ForgetmenotMonitorDown would fire for a job that never exists"
    service = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_service_monitor_uses_basic_auth_and_tls_when_given() -> None:
    endpoint = one(render([CHART / "ci" / "postgres-ha.yaml"]), "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https"
    assert endpoint["basicAuth"]["password"] == {"name": "forgetmenot-scrape", "key": "password"}
    assert endpoint["tlsConfig"]["ca"] == {"secret": {"name": "forgetmenot-tls", "key": "ca.crt"}}
    assert "authorization" not in endpoint


def test_open_metrics_scrapes_without_credentials() -> None:
    objects = render([EVERYTHING_ON], {"web": {"openMetrics": True}})
    endpoint = one(objects, "ServiceMonitor")["spec"]["endpoints"][0]
    assert "authorization" not in endpoint and "basicAuth" not in endpoint
    assert "--open-metrics" in one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]


def test_one_dashboard_config_map_per_file() -> None:
    """Each file as it is, but for the monitor_url variable's default: the release's address."""
    objects = render([EVERYTHING_ON])
    maps = [m for m in find(objects, "ConfigMap") if "grafana_dashboard" in m["metadata"].get("labels", {})]
    files = sorted((CHART / "files" / "dashboards").glob("*.json"))
    assert len(maps) == len(files)
    for config_map, path in zip(sorted(maps, key=lambda m: m["metadata"]["name"]), files, strict=True):
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"]["grafana_folder"] == "LLM retention"
        assert list(config_map["data"]) == [path.name]
        rendered, shipped = json.loads(config_map["data"][path.name]), json.loads(path.read_text())
        address = _monitor_url_variable(rendered)["query"]
        assert resolve(address, objects, "") == f"Ingress {RELEASE}"
        _monitor_url_variable(shipped)["query"] = address
        assert rendered == shipped


def _monitor_url_variable(dashboard: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(v for v in dashboard["templating"]["list"] if v["name"] == "monitor_url")
    return found


# --- the retention gate ---------------------------------------------------------------------------

def test_argo_analysis_template_asks_the_gate() -> None:
    metric = analysis_metric()
    assert metric["successCondition"] == 'result.decision == "pass"'
    assert metric["failureCondition"] == 'result.decision == "fail"'
    web = metric["provider"]["web"]
    assert web["url"] == ("http://forgetmenot.monitoring.svc:9464/api/v1/gate?model={{args.model}}"
                          "&version={{args.version}}&wait={{args.wait}}&mode=metric")
    assert web["jsonPath"] == "{$}"
    assert web["headers"] == [{"key": "Authorization", "value": "Bearer {{args.token}}"}]
    template = analysis_template()
    assert template["kind"] == "ClusterAnalysisTemplate"
    args = {a["name"]: a for a in template["spec"]["args"]}
    assert {"model", "version"} <= args.keys() and "value" not in args["model"]
    assert args["token"]["valueFrom"]["secretKeyRef"] == {"name": "forgetmenot-gate-token", "key": "token"}
    assert 0 < int(args["wait"]["value"]) <= 300, "the gate holds a request at most 300 s"
    assert web["timeoutSeconds"] > int(args["wait"]["value"])


def test_the_gate_is_off_unless_asked() -> None:
    kinds = {o["kind"] for o in render([CHART / "ci" / "sqlite-single.yaml"])}
    assert not kinds & {"AnalysisTemplate", "ClusterAnalysisTemplate", "ServiceMonitor", "PrometheusRule",
                        "NetworkPolicy"}


def test_flagger_webhook_is_printed_in_the_notes() -> None:
    notes = render_templates([EVERYTHING_ON])["forgetmenot/templates/NOTES.txt"]
    assert "type: pre-rollout" in notes
    assert "/api/v1/gate?model=MODEL&version=VERSION&wait=120&mode=flagger" in notes


# --- replicas, RBAC, network ----------------------------------------------------------------------

def test_high_availability_with_postgresql() -> None:
    objects = render([CHART / "ci" / "postgres-ha.yaml"])
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3 and "strategy" not in deployment["spec"]
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert not find(objects, "PersistentVolumeClaim")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    password = env["FORGETMENOT_DB_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": "forgetmenot-db", "key": "password"}
    policy = yaml.safe_load(policy_file(objects))
    assert policy["database_password"] == {"env": "FORGETMENOT_DB_PASSWORD"}


def test_single_sqlite_replica_recreates_on_its_claim() -> None:
    objects = render([CHART / "ci" / "sqlite-single.yaml"])
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not find(objects, "PodDisruptionBudget")
    claim = one(objects, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["home"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/forgetmenot/probes/sentiment-json"]["readOnly"] is True


def test_deployer_role_is_get_and_patch_on_named_deployments_only() -> None:
    objects = render([CHART / "ci" / "postgres-ha.yaml"])
    role, binding = one(objects, "Role"), one(objects, "RoleBinding")
    assert role["metadata"]["namespace"] == "models"
    assert role["rules"] == [{"apiGroups": ["apps"], "resources": ["deployments"],
                              "resourceNames": ["vllm-support-bot"], "verbs": ["get", "patch"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "forgetmenot", "namespace": NAMESPACE}]
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is True


def test_gpu_scheduling() -> None:
    pod = one(render([CHART / "ci" / "gpu.yaml"]), "Deployment")["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"name": "shm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]


def test_network_policy_admits_prometheus_and_named_namespaces_and_egress_to_dns() -> None:
    policy = one(render([EVERYTHING_ON]), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    sources = [peer for rule in policy["ingress"] for peer in rule["from"]]
    assert any(p.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "prometheus"}
               for p in sources)
    assert any(e.get("values") == ["argo-rollouts", "test"]
               for p in sources for e in p.get("namespaceSelector", {}).get("matchExpressions", []))
    ports = [p for rule in policy["egress"] for p in rule.get("ports", [])]
    assert {"port": 53, "protocol": "UDP"} in ports and {"port": 8000, "protocol": "TCP"} in ports


def test_extra_objects_are_templated() -> None:
    names = [o["metadata"]["name"] for o in find(render([EVERYTHING_ON]), "ConfigMap")]
    assert names.count("forgetmenot-extra") == 1


# --- scale-out on Ray (KubeRay) --------------------------------------------------------------------

def monitor_env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def ray_container(cluster: dict[str, Any], group: str) -> dict[str, Any]:
    """The Ray container of the head ("head") or of the worker group named `group`."""
    if group == "head":
        template = cluster["spec"]["headGroupSpec"]["template"]
    else:
        template = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == group)["template"]
    container: dict[str, Any] = template["spec"]["containers"][0]
    return container


# A policy that asks for the Ray executor, on a ReadWriteMany volume: what ray.* needs.
RAY_READY: Values = {"policy": {"executor": {"kind": "ray"}},
                     "persistence": {"accessModes": ["ReadWriteMany"]}}


def test_ray_is_off_by_default() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["ray"]
    assert defaults["enabled"] is False and defaults["address"] == ""
    for values_file in set(CI_VALUES) - {RAY_ON}:
        objects = render([values_file])
        assert not find(objects, "RayCluster")
        assert "RAY_ADDRESS" not in monitor_env(objects)
        assert all(o["metadata"]["name"] != "forgetmenot-ray" for o in objects)


def test_ray_cluster_passes_kuberays_crd_schema_and_operator_checks() -> None:
    cluster = one(render([RAY_ON]), "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["metadata"]["namespace"] == NAMESPACE
    assert raycluster_problems(cluster) == []
    assert raycluster_crd()["commit"] == "59d663aeec13760646da3db9c1cf8cfe883e30b7"


@pytest.mark.parametrize(("path", "value", "problem"), [
    (("spec", "workerGroupSpecs", 0, "replica"), 2, "'replica' was unexpected"),
    (("spec", "headGroupSpec", "rayStartParams", "num-cpus"), 0, "0 is not of type 'string'"),
    (("spec", "workerGroupSpecs", 0, "minReplicas"), 9, "0 <= minReplicas <= maxReplicas"),
    (("metadata", "name"), "r" * 54, "at most 53 characters"),
    (("spec", "managedBy"), "kueue.x-k8s.io/multikueue", "a CEL rule"),
], ids=["unknown-field", "non-string-param", "replicas-order", "long-name", "cel-field"])
def test_ray_cluster_check_catches_what_kuberay_refuses(path: tuple[Any, ...], value: Any,
                                                        problem: str) -> None:
    cluster = one(render([RAY_ON]), "RayCluster")
    parent = cluster
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    assert any(problem in p for p in raycluster_problems(cluster)), raycluster_problems(cluster)


def test_ray_cluster_check_catches_a_duplicate_list_map_key() -> None:
    cluster = one(render([RAY_ON]), "RayCluster")
    ray_container(cluster, "gpu")["env"].append({"name": "TMPDIR", "value": "/scratch"})
    env = "/spec/workerGroupSpecs/0/template/spec/containers/0/env"
    assert raycluster_problems(cluster) == [f"{env}: ('TMPDIR',) twice"]


def test_ray_head_takes_no_work_and_sends_no_usage_stats() -> None:
    cluster = one(render([RAY_ON]), "RayCluster")
    params = cluster["spec"]["headGroupSpec"]["rayStartParams"]
    assert params == {"num-cpus": "0", "include-dashboard": "false", "object-store-memory": "2000000000"}
    for group in ("head", "gpu"):
        assert {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"} in ray_container(cluster, group)["env"]
    ports = {p["name"]: p["containerPort"] for p in ray_container(cluster, "head")["ports"]}
    assert ports == {"gcs-server": 6379, "client": 10001, "metrics": 8080}
    dashboard = one(render([RAY_ON], {"ray": {"head": {"dashboard": True}}}), "RayCluster")
    assert dashboard["spec"]["headGroupSpec"]["rayStartParams"]["include-dashboard"] == "true"
    port = {"name": "dashboard", "containerPort": 8265, "protocol": "TCP"}
    assert port in ray_container(dashboard, "head")["ports"]


@pytest.mark.parametrize("gpus", [0, 1, 4])
def test_ray_workers_ask_for_the_gpus_given(gpus: int) -> None:
    cluster = one(render([RAY_ON], {"ray": {"worker": {"gpus": gpus}}}), "RayCluster")
    assert raycluster_problems(cluster) == []
    group = cluster["spec"]["workerGroupSpecs"][0]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (2, 1, 4)
    assert group["rayStartParams"] == {"resources": "'{\"a100\":1}'"}
    resources = ray_container(cluster, "gpu")["resources"]
    for side in ("requests", "limits"):
        assert resources[side].get("nvidia.com/gpu", 0) == gpus
        assert resources[side]["cpu"] == "8" and resources[side]["memory"] == "48Gi"
    head = ray_container(cluster, "head")["resources"]
    assert "nvidia.com/gpu" not in head["requests"] and "nvidia.com/gpu" not in head["limits"]


def test_monitor_connects_to_the_rendered_head_service() -> None:
    objects = render([RAY_ON])
    name = one(objects, "RayCluster")["metadata"]["name"]
    assert name == "forgetmenot-ray"
    # KubeRay names the head Service <RayCluster name>-head-svc; Ray Client listens on 10001.
    assert monitor_env(objects)["RAY_ADDRESS"] == f"ray://{name}-head-svc.{NAMESPACE}.svc:10001"


def test_a_long_release_name_keeps_the_cluster_name_within_kuberays_limit() -> None:
    objects = render([RAY_ON], {"fullnameOverride": "f" * 63})
    cluster = one(objects, "RayCluster")
    name = cluster["metadata"]["name"]
    assert len(name) <= 53 and len(f"{name}-head-svc") <= 63 and raycluster_problems(cluster) == []
    assert monitor_env(objects)["RAY_ADDRESS"] == f"ray://{name}-head-svc.{NAMESPACE}.svc:10001"


def test_ray_pods_share_the_monitors_image_volume_and_security() -> None:
    objects = render([RAY_ON])
    monitor = one(objects, "Deployment")["spec"]["template"]["spec"]
    home = next(v for v in monitor["volumes"] if v["name"] == "home")
    cluster = one(objects, "RayCluster")
    for pod, group in zip(ray_pod_specs(objects), ("head", "gpu"), strict=True):
        container = ray_container(cluster, group)
        pushed = "registry.example.com/ml/forgetmenot:0.1.0-model"
        assert container["image"] == monitor["containers"][0]["image"] == pushed
        assert home in pod["volumes"]
        assert {"name": "home", "mountPath": "/var/lib/forgetmenot"} in container["volumeMounts"]
        assert pod["securityContext"] == monitor["securityContext"]
        assert container["securityContext"] == monitor["containers"][0]["securityContext"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/api/local_raylet_healthz", "port": 52365}
    assert one(objects, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    image = {"registry": "registry.example", "repository": "fmn", "tag": "0.1.0-ray"}
    pinned = one(render([RAY_ON], {"ray": {"image": image}}), "RayCluster")
    assert ray_container(pinned, "head")["image"] == "registry.example/fmn:0.1.0-ray"


def test_ray_pods_are_not_selected_as_the_monitor() -> None:
    objects = render([RAY_ON])
    selector = one(objects, "Service")["spec"]["selector"]
    for cluster in find(objects, "RayCluster"):
        templates = [cluster["spec"]["headGroupSpec"]["template"],
                     *(g["template"] for g in cluster["spec"]["workerGroupSpecs"])]
        for template in templates:
            assert not selector.items() <= template["metadata"]["labels"].items()


def test_ray_autoscaling_gives_only_the_head_the_api() -> None:
    api = [{"cidr": "10.96.0.1/32", "ports": [{"port": 443}]}]
    values = {"ray": {"autoscaling": {"enabled": True}}, "networkPolicy": {"egress": {"kubernetesApi": api}}}
    objects = render([RAY_ON], values)
    cluster = one(objects, "RayCluster")
    assert raycluster_problems(cluster) == []
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    assert cluster["spec"]["autoscalerOptions"]["securityContext"]["readOnlyRootFilesystem"] is True
    head, worker = ray_pod_specs(objects)
    assert head["automountServiceAccountToken"] is True and worker["automountServiceAccountToken"] is False
    ray_policy = next(o for o in find(objects, "NetworkPolicy") if o["metadata"]["name"] == "forgetmenot-ray")
    assert {"ipBlock": {"cidr": "10.96.0.1/32"}} in [peer for rule in ray_policy["spec"]["egress"]
                                                     for peer in rule.get("to", [])]


def test_network_policies_admit_the_monitor_to_the_ray_head_only() -> None:
    objects = render([RAY_ON])
    policies = {o["metadata"]["name"]: o["spec"] for o in find(objects, "NetworkPolicy")}
    head = {"podSelector": {"matchLabels": {"ray.io/cluster": "forgetmenot-ray", "ray.io/node-type": "head"}}}
    ray_ports = [{"port": 10001, "protocol": "TCP"}, {"port": 6379, "protocol": "TCP"}]
    assert {"to": [head], "ports": ray_ports} in policies["forgetmenot"]["egress"]
    ray = policies["forgetmenot-ray"]
    cluster = {"podSelector": {"matchLabels": {"ray.io/cluster": "forgetmenot-ray"}}}
    assert ray["podSelector"] == cluster["podSelector"] and ray["policyTypes"] == ["Ingress", "Egress"]
    monitor = {"podSelector": {"matchLabels": one(objects, "Service")["spec"]["selector"]}}
    assert ray["ingress"] == [{"from": [cluster]}, {"from": [monitor], "ports": ray_ports}]
    assert {"to": [cluster]} in ray["egress"]
    assert {"port": 53, "protocol": "UDP"} in [p for rule in ray["egress"] for p in rule.get("ports", [])]


def test_an_existing_ray_cluster_is_used_by_its_address() -> None:
    address = "ray://ray-head.ray.svc:10001"
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ray"}},
            "ports": [{"port": 10001, "protocol": "TCP"}]}
    values = {**RAY_READY, "ray": {"address": address},
              "networkPolicy": {"enabled": True, "egress": {"ray": [peer]}}}
    objects = render([CHART / "ci" / "sqlite-single.yaml"], values)
    assert not find(objects, "RayCluster")
    assert monitor_env(objects)["RAY_ADDRESS"] == address
    assert [o["metadata"]["name"] for o in find(objects, "NetworkPolicy")] == ["forgetmenot"]
    egress = one(objects, "NetworkPolicy")["spec"]["egress"]
    assert {"to": [{"namespaceSelector": peer["namespaceSelector"]}], "ports": peer["ports"]} in egress
    assert yaml.safe_load(policy_file(objects))["executor"] == {"kind": "ray"}


# --- refusals: wrong values fail the install, naming the key ---------------------------------------

REFUSED = [
    ({"bogus": 1}, "additional properties 'bogus' not allowed"),
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"replicaCount": 2}, "/database/kind"),
    ({"image": {"tag": "latest"}}, "/image/tag"),
    ({"image": {"tag": "1.0 beta"}}, "/image/tag"),
    ({"image": {"flavor": "huge"}}, "/image/flavor"),
    ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
    ({"database": {"kind": "postgresql", "postgresql": {"url": "postgresql://fm:hunter2@db/fm"}}},
     "/database/postgresql/url"),
    ({"database": {"kind": "mysql"}}, "/database/kind"),
    ({"extraEnv": [{"name": "VLLM_API_KEY", "value": "sk-live"}]}, "/extraEnv/0/value"),
    ({"secretEnv": [{"name": "VLLM_API_KEY", "value": "sk-live"}]}, "/secretEnv/0"),
    ({"serviceMonitor": {"interval": 30}}, "/serviceMonitor/interval"),
    ({"web": {"scheme": "http"}}, "/web/scheme"),
    ({"persistence": {"size": "lots"}}, "/persistence/size"),
    ({"gate": {"argo": {"kind": "Rollout"}}}, "/gate/argo/kind"),
    ({"gate": {"argo": {"wait": 900}}}, "/gate/argo/wait"),
    # Refusals across several values, from the templates.
    ({"replicaCount": 2, "database": {"kind": "postgresql", "postgresql": {"url": "postgresql+psycopg://fm@db/fm"}}},
     "persistence.accessModes [ReadWriteMany]"),
    ({"database": {"kind": "postgresql"}}, "/database/postgresql/url"),
    ({"policy": {"database": "sqlite:///x.db"}}, "policy.database is set by the chart"),
    ({"image": {"flavor": "slim"}}, "image.flavor=slim has no torch, but policy.models.support-bot"),
    ({"gate": {"argo": {"enabled": True, "wait": 120, "timeoutSeconds": 60}}},
     "gate.argo.timeoutSeconds (60)"),
    ({"web": {"config": {"existingSecret": {"name": "forgetmenot-web"}}},
      "serviceMonitor": {"enabled": True}}, "every scrape gets 401"),
    ({"networkPolicy": {"enabled": True}, "rbac": {"deployments": [{"name": "vllm"}]}},
     "networkPolicy.egress.kubernetesApi"),
    # Ray: the schema.
    ({"ray": {"worker": {"gpus": -1}}}, "/ray/worker/gpus"),
    ({"ray": {"worker": {"replicas": -1}}}, "/ray/worker/replicas"),
    ({"ray": {"enabled": True, "address": "ray://ray-head.ray.svc:10001"}},
     "at '/ray/address': value must be ''"),
    ({"ray": {"address": "http://ray-head.ray.svc:8265"}}, "/ray/address"),
    ({"ray": {"head": {"rayStartParams": {"num-gpus": 1}}}}, "/ray/head/rayStartParams/num-gpus"),
    ({"ray": {"worker": {"objectStoreMemory": "2Gi"}}}, "/ray/worker/objectStoreMemory"),
    ({"ray": {"extraEnv": [{"name": "HF_TOKEN", "value": "hf_live"}]}}, "/ray/extraEnv/0/value"),
    ({"ray": {"workers": {}}}, "additional properties 'workers' not allowed"),
    # Ray: the templates.
    ({"ray": {"enabled": True}, "policy": {"executor": {"kind": "ray"}}},
     "ray.enabled needs persistence.accessModes [ReadWriteMany]"),
    ({**RAY_READY, "ray": {"enabled": True}, "persistence": {"enabled": False}},
     "ray.enabled needs persistence.enabled"),
    ({**RAY_READY, "ray": {"enabled": True, "worker": {"replicas": 3, "maxReplicas": 2}}},
     "ray.worker needs minReplicas (1) <= replicas (3) <= maxReplicas (2)"),
    ({**RAY_READY, "ray": {"enabled": True}, "image": {"flavor": "slim"},
      "policy": {"executor": {"kind": "ray"}, "models": {"support-bot": {"backend": {"kind": "openai"}}}}},
     "ray.enabled with image.flavor=slim"),
    ({"ray": {"enabled": True}, "persistence": {"accessModes": ["ReadWriteMany"]}},
     "policy.executor.kind is not ray"),
    ({"policy": {"executor": {"kind": "ray"}}}, "policy.executor.kind=ray needs a Ray cluster"),
    ({"ray": {"address": "ray://ray-head.ray.svc:10001"},
      "policy": {"executor": {"kind": "ray", "address": "ray://elsewhere:10001"}}},
     "policy.executor.address is set by the chart"),
    ({**RAY_READY, "ray": {"address": "ray://ray-head.ray.svc:10001"}, "networkPolicy": {"enabled": True}},
     "networkPolicy.egress.ray"),
    ({**RAY_READY, "ray": {"enabled": True, "autoscaling": {"enabled": True}},
      "networkPolicy": {"enabled": True}},
     "with ray.autoscaling.enabled: list the Kubernetes API"),
]


@pytest.mark.parametrize(("overrides", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_wrong_values_are_refused_naming_the_key(overrides: Values, message: str) -> None:
    with pytest.raises(helm_python.HelmError) as refused:
        render([CHART / "ci" / "sqlite-single.yaml"], overrides)
    assert message in str(refused.value)


def test_an_empty_policy_is_refused_with_what_to_do() -> None:
    with pytest.raises(helm_python.HelmError, match="policy is empty"):
        render([])


def test_an_existing_config_map_replaces_the_policy() -> None:
    objects = render([], {"existingConfigMap": "my-policy", "image": {"registry": "registry.example.com"}})
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "policy", "configMap": {"name": "my-policy"}} in volumes
    assert not [m for m in find(objects, "ConfigMap") if m["metadata"]["name"].endswith("-policy")]


# --- links on-call follows, the image, the memory, the credentials --------------------------------

# A release not named after the chart, so a link that assumes the chart's name points nowhere.
OTHER_RELEASE = "fm"
# Alerts pushed to Alertmanager carry links from the policy's alertmanager.link_base.
ALERTMANAGER = {"policy": {"policy": {"alertmanager": {"url": "http://alertmanager.monitoring.svc:9093"}}}}
URL = re.compile(r"https?://[^\s\"'<>`\\]+")
GATEWAY = {"name": "public", "namespace": "gateway-system"}
EXPOSED: dict[str, Values] = {
    "ingress": {},  # EVERYTHING_ON has an HTTPS ingress
    "route": {"ingress": {"enabled": False},
              "httpRoute": {"enabled": True, "parentRefs": [GATEWAY], "hostnames": ["fm.example.com"]}},
    "service": {"ingress": {"enabled": False}},
}
SQLITE = CHART / "ci" / "sqlite-single.yaml"


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def given_origins(values: Values) -> set[str]:
    """scheme://host[:port] of every URL the values name themselves (model endpoints, Alertmanager,
    webhooks): those point where the user said, not at the monitor."""
    chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return {origin(url) for text in strings(merge(chart_defaults, values)) for url in URL.findall(text)}


def ingress_target(url: str, objects: list[dict[str, Any]], services: set[str]) -> str | None:
    """The Ingress whose host serves `url` with the scheme its tls implies, routing / to a Service."""
    parts = urlsplit(url)
    for ingress in find(objects, "Ingress"):
        tls = {host for entry in ingress["spec"].get("tls", []) for host in entry.get("hosts", [])}
        for rule in ingress["spec"]["rules"]:
            scheme = "https" if rule["host"] in tls else "http"
            backends = [p["backend"]["service"]["name"] for p in rule["http"]["paths"] if p["path"] == "/"]
            if (rule["host"], parts.port, parts.scheme) == (parts.hostname, None, scheme) and backends \
                    and backends[0] in services:
                return f"Ingress {ingress['metadata']['name']}"
    return None


def route_target(url: str, objects: list[dict[str, Any]], services: set[str]) -> str | None:
    """The HTTPRoute whose hostname serves `url`, sending it to a Service."""
    parts = urlsplit(url)
    for route in find(objects, "HTTPRoute"):
        backends = [b["name"] for rule in route["spec"]["rules"] for b in rule["backendRefs"]]
        if parts.hostname in route["spec"]["hostnames"] and parts.port is None and backends \
                and backends[0] in services:
            return f"HTTPRoute {route['metadata']['name']}"
    return None


def service_target(url: str, objects: list[dict[str, Any]], notes: str) -> str | None:
    """The Service `url` names by its cluster DNS name and one of its ports (with that port's
    protocol), or, in NOTES only after their `kubectl port-forward svc/NAME PORT`, the loopback."""
    parts = urlsplit(url)
    for service in find(objects, "Service"):
        name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
        protocols = {p["port"]: p.get("appProtocol", "http") for p in service["spec"]["ports"]}
        if protocols.get(parts.port) != parts.scheme:
            continue
        if parts.hostname in (f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"):
            return f"Service {name}"
        forwarded = f"port-forward svc/{name} {parts.port}" in notes and url in notes
        if parts.hostname == "127.0.0.1" and forwarded:
            return f"Service {name} (port-forward)"
    return None


def resolve(url: str, objects: list[dict[str, Any]], notes: str) -> str | None:
    """What a link reaches among the rendered objects; None: it points nowhere."""
    services = {s["metadata"]["name"] for s in find(objects, "Service")}
    return (ingress_target(url, objects, services) or route_target(url, objects, services)
            or service_target(url, objects, notes))


Links = list[tuple[str, str, str]]


def link_source(obj: dict[str, Any]) -> str:
    """Which part of the chart a rendered object's links come from: the alert rules, the Grafana
    dashboards, or the chart's own templates (the policy, the gate, the ingress, the route)."""
    if obj["kind"] == "PrometheusRule":
        return "rules"
    if "grafana_dashboard" in obj["metadata"].get("labels", {}):
        return "dashboards"
    return "chart"


def monitor_links(values: Values) -> tuple[Links, list[dict[str, Any]], str]:
    """Release `fm` of EVERYTHING_ON with `values`: every (source, where, url) in the render that the
    values did not give (NOTES are the chart's), the objects, and NOTES."""
    templates = render_templates([EVERYTHING_ON], values, OTHER_RELEASE)
    objects = [doc for path, text in sorted(templates.items()) if path.endswith(".yaml")
               for doc in yaml.safe_load_all(text) if doc]
    notes = templates["forgetmenot/templates/NOTES.txt"]
    found = [(link_source(o), f"{o['kind']}/{o['metadata']['name']}", url) for o in objects
             for text in strings(o) for url in URL.findall(text)]
    found += [("chart", "NOTES", url) for url in URL.findall(notes)]
    given = given_origins(load_values([EVERYTHING_ON], values))
    return [link for link in found if origin(link[2]) not in given], objects, notes


@pytest.mark.parametrize("source", ["chart", "rules", "dashboards"])
@pytest.mark.parametrize("exposed", EXPOSED, ids=list(EXPOSED))
def test_every_link_resolves_to_a_rendered_service_ingress_or_route(exposed: str, source: str) -> None:
    """Release `fm`: each link in the alert rules, the dashboards, the policy's pushed-alert links,
    the gate and NOTES reaches a rendered object, whatever the release is called."""
    links, objects, notes = monitor_links(merge(ALERTMANAGER, EXPOSED[exposed]))
    mine = [(where, url) for found, where, url in links if found == source]
    assert mine, f"no link from the {source}"
    nowhere = sorted({(where, url) for where, url in mine if resolve(url, objects, notes) is None})
    assert not nowhere, "links that reach nothing rendered:\n" + "\n".join(f"  {w}: {u}" for w, u in nowhere)


def test_link_resolution_catches_a_link_to_the_charts_name() -> None:
    """The check itself: the default Service name under release `fm`, an ingress host without its
    tls scheme, a port the Service does not have."""
    _, objects, notes = monitor_links(ALERTMANAGER)
    assert resolve("https://forgetmenot.example.com/models/x", objects, notes) == "Ingress fm-forgetmenot"
    assert resolve("http://fm-forgetmenot.monitoring.svc:9464/", objects, notes) == "Service fm-forgetmenot"
    for wrong in ("http://forgetmenot:9464/models/x", "http://forgetmenot.monitoring.svc:9464/",
                  "http://forgetmenot.example.com/", "http://fm-forgetmenot.monitoring.svc:8080/"):
        assert resolve(wrong, objects, notes) is None, wrong


def link_base(objects: list[dict[str, Any]]) -> str:
    base: str = yaml.safe_load(policy_file(objects))["policy"]["alertmanager"]["link_base"]
    return base


@pytest.mark.parametrize(("exposed", "expected"), [
    ("ingress", "https://forgetmenot.example.com"),
    ("route", "https://fm.example.com"),
    ("service", f"http://fm-forgetmenot.{NAMESPACE}.svc:9464"),
], ids=["ingress", "route", "service"])
def test_pushed_alerts_link_to_where_the_browser_reaches_the_monitor(exposed: str, expected: str) -> None:
    exposing = merge(ALERTMANAGER, EXPOSED[exposed])
    assert link_base(render([EVERYTHING_ON], exposing, OTHER_RELEASE)) == expected
    own = merge(ALERTMANAGER, {"policy": {"policy": {"alertmanager": {"link_base": "https://fm.corp/"}}}})
    assert link_base(render([EVERYTHING_ON], own, OTHER_RELEASE)) == "https://fm.corp/", "the user's is kept"


def test_external_url_wins_and_the_ingress_follows_tls() -> None:
    external = merge(ALERTMANAGER, {"externalUrl": "https://cdn.example.com/"})
    assert link_base(render([EVERYTHING_ON], external)) == "https://cdn.example.com"
    plain = merge(ALERTMANAGER, {"ingress": {"tls": []}})
    assert link_base(render([EVERYTHING_ON], plain)) == "http://forgetmenot.example.com"


def serve_args(objects: list[dict[str, Any]]) -> list[str]:
    args: list[str] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_serve_gets_the_rules_runbook_base_when_there_is_one() -> None:
    """The pages and the pushed alerts link the runbooks the rules link (defaultRules.runbookUrl,
    where the chart has that value)."""
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    if "runbookUrl" not in schema.get("defaultRules", {}).get("properties", {}):
        assert "--runbook-base" not in serve_args(render([EVERYTHING_ON]))
        return
    base = "https://runbooks.example.com/forgetmenot"
    args = serve_args(render([EVERYTHING_ON], {"defaultRules": {"runbookUrl": base}}))
    assert args[args.index("--runbook-base") + 1] == base


def test_ingress_and_route_are_off_by_default_and_send_everything_to_the_service() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert defaults["ingress"]["enabled"] is False and defaults["httpRoute"]["enabled"] is False
    objects = render([EVERYTHING_ON], EXPOSED["route"])
    route, service = one(objects, "HTTPRoute"), one(objects, "Service")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    backend = {"name": service["metadata"]["name"], "port": 9464}
    assert route["spec"]["rules"] == [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                       "backendRefs": [backend]}]
    objects = render([EVERYTHING_ON])
    ingress = one(objects, "Ingress")["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"secretName": "forgetmenot-ingress-tls", "hosts": ["forgetmenot.example.com"]}]
    controller = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}}
    port = [{"port": "http-metrics", "protocol": "TCP"}]
    assert {"from": [controller], "ports": port} in one(objects, "NetworkPolicy")["spec"]["ingress"]


def monitor_image(objects: list[dict[str, Any]]) -> str:
    image: str = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


def test_the_image_comes_from_the_registry_given() -> None:
    assert monitor_image(render([SQLITE])) == "registry.example.com/ml/forgetmenot:0.1.0-model"
    both = {"global": {"imageRegistry": "mirror.example.com:5000"},
            "image": {"registry": "registry.example.com"}}
    assert monitor_image(render([SQLITE], both)) == "mirror.example.com:5000/forgetmenot:0.1.0-model"


def test_no_registry_is_refused_saying_how_to_build_and_push() -> None:
    with pytest.raises(helm_python.HelmError) as refused:
        render([SQLITE], {"image": {"registry": ""}})
    message = str(refused.value)
    assert "image.registry is empty: no forgetmenot image is published" in message
    assert "IMAGE=<registry>/forgetmenot container/build.sh model" in message
    assert "docs/container.md" in message
    assert "### Pushing to your registry" in (REPO / "docs" / "container.md").read_text()


def quantity_bytes(quantity: str) -> float:
    units = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    found = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", quantity)
    assert found, quantity
    return float(found.group(1)) * units[found.group(2)]


@pytest.mark.parametrize("flavor", ["model", "slim"])
def test_memory_is_sized_per_flavor_from_the_measured_peak(flavor: str) -> None:
    """The default limit leaves 25% over the peak RSS `benchmarks/serve_memory.py` measured for the
    flavour (docs/benchmarks.md): the 135M demo model in process, or served models only."""
    results = json.loads((REPO / "benchmarks" / "results" / "serve_memory.json").read_text())
    peak = {r["flavour"]: r["peak_rss_bytes"] for r in results}["model" if flavor == "model" else "served"]
    values: Values = {"image": {"flavor": flavor}}
    if flavor == "slim":
        values["policy"] = {"models": {"support-bot": {"backend": {"kind": "openai"}}}}
    pod = one(render([SQLITE], values), "Deployment")["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert quantity_bytes(resources["limits"]["memory"]) >= 1.25 * peak
    assert quantity_bytes(resources["requests"]["memory"]) >= peak
    given = {"limits": {"memory": "64Gi"}}
    pod = one(render([SQLITE], {**values, "resources": given}), "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == given, "resources replaces the flavour's sizing whole"


def api_token(objects: list[dict[str, Any]]) -> str:
    return base64.b64decode(one(objects, "Secret")["data"]["api-tokens"]).decode()


def test_the_chart_makes_an_api_token_when_none_is_named() -> None:
    """Release `fm`, no Secret named: the pod mounts the chart's own, so the defaults run. Offline,
    `lookup` finds nothing and each render makes a new token; in a cluster it reads the old one."""
    first, second = (render([SQLITE], release=OTHER_RELEASE) for _ in range(2))
    secret = one(first, "Secret")
    assert secret["metadata"]["name"] == "fm-forgetmenot-api-tokens"
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert re.fullmatch(r"[A-Za-z0-9]{64}", api_token(first))
    assert api_token(first) != api_token(second)
    volumes = {v["name"]: v for v in one(first, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-tokens"]["secret"]["secretName"] == "fm-forgetmenot-api-tokens"
    template = (CHART / "templates" / "api-tokens-secret.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in template


def test_without_generation_the_missing_secret_is_named_at_render_time() -> None:
    with pytest.raises(helm_python.HelmError) as refused:
        render([SQLITE], {"web": {"apiTokens": {"generate": False}}}, OTHER_RELEASE)
    create = "create secret generic fm-forgetmenot-api-tokens --from-literal=api-tokens="
    assert f"kubectl -n {NAMESPACE} {create}" in str(refused.value)


def existing_secrets(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every `existingSecret` key under `value`."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}".lstrip(".")
            if key == "existingSecret":
                yield here, item
            else:
                yield from existing_secrets(item, here)


def test_every_credential_is_named_the_same_way() -> None:
    """Every credential in values.yaml is `existingSecret: {name, key}` (a TLS Secret's keys are
    fixed), and the list entries' examples use it too."""
    text = (CHART / "values.yaml").read_text()
    found = dict(existing_secrets(yaml.safe_load(text)))
    assert set(found) == {
        "database.postgresql.existingSecret", "web.apiTokens.existingSecret", "web.config.existingSecret",
        "web.tls.existingSecret", "serviceMonitor.authorization.existingSecret",
        "serviceMonitor.basicAuth.existingSecret", "gate.argo.token.existingSecret"}
    for path, shape in found.items():
        assert set(shape) == ({"name"} if path == "web.tls.existingSecret" else {"name", "key"}), path
    assert not re.search(r"(?m)^\s*(\w*Secret|secretName|passwordKey):", text.replace("existingSecret:", ""))
    assert "existingSecret: {name: vllm-api-key, key: api-key}" in text
    assert "existingSecret: {name: deployer-hmac, key: secret}" in text


RENAMED = [
    ({"web": {"tokenSecret": {"name": "t", "key": "k"}}},
     "web.tokenSecret was renamed: use web.apiTokens.existingSecret"),
    ({"web": {"configSecret": {"name": "w"}}}, "web.configSecret was renamed: use web.config.existingSecret"),
    ({"web": {"tlsSecret": {"name": "w"}}}, "web.tlsSecret was renamed: use web.tls.existingSecret"),
    ({"database": {"postgresql": {"passwordSecret": {"name": "db", "key": "password"}}}},
     "database.postgresql.passwordSecret was renamed: use database.postgresql.existingSecret"),
    ({"serviceMonitor": {"authorization": {"secretName": "s"}}},
     "serviceMonitor.authorization.secretName was renamed: use "
     "serviceMonitor.authorization.existingSecret.name"),
    ({"serviceMonitor": {"basicAuth": {"secretName": "s"}}},
     "serviceMonitor.basicAuth.secretName was renamed: use serviceMonitor.basicAuth.existingSecret.name"),
    ({"serviceMonitor": {"basicAuth": {"passwordKey": "p"}}},
     "serviceMonitor.basicAuth.passwordKey was renamed: use serviceMonitor.basicAuth.existingSecret.key"),
    ({"gate": {"argo": {"tokenSecret": {"name": "g"}}}},
     "gate.argo.tokenSecret was renamed: use gate.argo.token.existingSecret"),
    ({"secretEnv": [{"name": "VLLM_API_KEY", "secretName": "vllm", "key": "api-key"}]},
     "secretEnv[0].secretName and .key were renamed: use secretEnv[0].existingSecret: {name, key}"),
    ({"secretFiles": [{"secretName": "hmac", "key": "secret", "mountPath": "/run/secrets/hmac"}]},
     "secretFiles[0].secretName and .key were renamed: use secretFiles[0].existingSecret: {name, key}"),
    ({"secretEnv": [{"name": "VLLM_API_KEY"}]}, "secretEnv[0] needs existingSecret: {name, key}"),
    ({"ingress": {"enabled": True}}, "ingress.enabled needs ingress.hosts"),
    ({"ingress": {"enabled": True, "hosts": ["*.example.com"]}}, "/ingress/hosts/0"),
    ({"httpRoute": {"enabled": True, "hostnames": ["fm.example.com"]}},
     "httpRoute.enabled needs httpRoute.parentRefs"),
    ({"externalUrl": "https://fm.example.com/monitor"}, "/externalUrl"),
    ({"ingress": {"enabled": True, "hosts": ["fm.example.com"]}, "networkPolicy": {"enabled": True}},
     "list the ingress controller's (or the Gateway's) pods in networkPolicy.ingress.controller"),
    ({"image": {"registry": "https://registry.example.com"}}, "/image/registry"),
]


@pytest.mark.parametrize(("overrides", "message"), RENAMED, ids=[m for _, m in RENAMED])
def test_renamed_and_incomplete_values_are_refused_naming_the_new_key(overrides: Values,
                                                                      message: str) -> None:
    with pytest.raises(helm_python.HelmError) as refused:
        render([SQLITE], overrides)
    assert message in str(refused.value)
