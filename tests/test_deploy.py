"""Deploy artifacts, built or rendered and checked offline: the Dockerfile (hadolint), the Helm
chart (helm lint --strict, helm template, kubernetes-validate --strict, the rendered config
through check-config) and the ECS task definition (botocore's ECS model)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import botocore.session
import pytest
import yaml
from botocore.validate import ParamValidator

from worker.dlq.batch import SETTLE_DEADLINE_SECONDS
from worker.notify.notifier import FLUSH_SECONDS

pytestmark = pytest.mark.tools  # helm, promtool, prometheus, tsc (make tools)

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "retry-worker"
ENVIRONMENTS = {
    "default": [],
    "staging": ["values-staging.yaml"],
    "production": ["values-production.yaml"],
}


def helm() -> str:
    local = ROOT / ".tools" / "helm"
    path = str(local) if local.exists() else shutil.which("helm")
    assert path, "helm is missing: `make test` installs it (Makefile target `tools`)"
    return path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False, env=env
    )


def values_args(env: str) -> list[str]:
    return [arg for f in ENVIRONMENTS[env] for arg in ("-f", str(CHART / f))]


def render(env: str, *extra: str) -> list[dict]:
    result = run(helm(), "template", "rw", str(CHART), *values_args(env), *extra)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kinds(docs: list[dict]) -> dict[str, dict]:
    return {
        doc["kind"] + ("/dashboard" if doc["metadata"]["name"].endswith("-dashboard") else ""): doc
        for doc in docs
    }


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "examples/hooks/Dockerfile"])
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = Path(sys.executable).parent / "hadolint"
    result = run(str(hadolint), "--failure-threshold", "warning", str(ROOT / dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_a_non_root_user_and_stops_cleanly():
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE=" in text
    assert "\nUSER 10001:10001\n" in text
    assert "\nSTOPSIGNAL SIGTERM\n" in text
    assert 'CMD ["retry-worker", "healthcheck"]' in text
    assert text.count("\nFROM ") == 2, "multi-stage"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_chart_lints_strictly(env):
    result = run(helm(), "lint", "--strict", str(CHART), *values_args(env))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_rendered_manifests_pass_kubernetes_validate(env, tmp_path):
    docs = render(env)
    path = tmp_path / f"{env}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    validate = Path(sys.executable).parent / "kubernetes-validate"
    result = run(str(validate), "--strict", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    # CRDs (ServiceMonitor, PrometheusRule, ScaledObject) have no built-in schema: only those
    # may be reported as unchecked; they are checked field by field below.
    unchecked = [line for line in result.stdout.splitlines() if "Couldn't find schema" in line]
    assert all("keda.sh" in line or "monitoring.coreos.com" in line for line in unchecked)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_rendered_config_passes_check_config(env, tmp_path):
    [configmap] = [
        d for d in render(env) if d["kind"] == "ConfigMap" and "config.yaml" in d["data"]
    ]
    config = tmp_path / "config.yaml"
    config.write_text(configmap["data"]["config.yaml"])
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RETRY_WORKER_")}
    environ["RETRY_WORKER_CONFIG_DIR"] = str(ROOT / "config")  # base.yaml, as in the image
    result = run(
        sys.executable, "-m", "worker", "check-config", "--config", str(config), env=environ
    )
    assert result.returncode == 0, result.stderr


def test_deployment_probes_grace_and_security():
    docs = kinds(render("production"))
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["args"] == ["run", "--config", "/config/config.yaml"]
    # above shutdown.grace_seconds, with room for a settle cut short and the last digests
    assert pod["terminationGracePeriodSeconds"] == 50 + 30 >= 50 + SETTLE_DEADLINE_SECONDS + 5
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "replicas" not in docs["Deployment"]["spec"], "KEDA owns the replica count"
    annotations = docs["ServiceAccount"]["metadata"]["annotations"]
    assert (
        annotations["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/retry-worker"
    )


def test_the_disruption_budget_never_blocks_a_drain_of_unready_pods():
    """Issue 28, item 4: one broken DLQ makes every pod unready, and a PDB counting them
    would block every node drain."""
    pdb = kinds(render("production"))["PodDisruptionBudget"]["spec"]
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["maxUnavailable"] == 1


def test_a_config_change_rolls_the_pods():
    def checksum(*extra: str) -> str:
        docs = kinds(render("staging", *extra))
        return docs["Deployment"]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum() == checksum()
    assert checksum() != checksum("--set", "config.defaults.concurrency=7")


def refused(env: str, *extra: str) -> str:
    """The error `helm template` stops with (it must stop)."""
    result = run(helm(), "template", "rw", str(CHART), *values_args(env), *extra)
    assert result.returncode != 0, "the chart rendered what it must refuse"
    return result.stderr


@pytest.mark.parametrize(
    "extra",
    [["--set", "replicaCount=2"], ["--set", "keda.enabled=true"]],
    ids=["two-replicas", "keda"],
)
def test_more_than_one_replica_needs_shared_budgets(extra):
    """Issue 28, item 2: the defaults (two replicas, no coordination) gave every target twice
    its rate, a breaker and a loop guard per replica. One replica by default; more only with
    DynamoDB coordination."""
    assert kinds(render("default"))["Deployment"]["spec"]["replicas"] == 1
    assert "config.coordination.backend: dynamodb" in refused("default", *extra)
    coordinated = ["--set", "config.coordination.backend=dynamodb"]
    coordinated += ["--set", "config.coordination.table=t"]
    coordinated += ["--set-json", 'config.queues={"a": {"name": "a-dlq"}}']
    assert kinds(render("default", *extra, *coordinated))["Deployment"]


def test_keda_never_runs_more_replicas_than_a_replica_assumes_without_the_table():
    assert "exceeds config.coordination.members_when_unknown 12" in refused(
        "production", "--set", "keda.maxReplicaCount=13"
    )
    spec = kinds(render("production"))["ScaledObject"]["spec"]
    assert spec["maxReplicaCount"] == 12


def test_keda_has_one_trigger_per_queue_read_with_the_workers_own_role():
    """Issue 28, item 3: `identityOwner` is deprecated, `pod` rendered no authentication and
    `operator` had KEDA's shared role read every team's DLQs; in-flight counting kept
    replicas up for messages waiting out their backoff."""
    docs = kinds(render("production"))
    triggers = docs["ScaledObject"]["spec"]["triggers"]
    queues = yaml.safe_load((ROOT / "config" / "production.yaml").read_text())["queues"]
    assert sorted(t["metadata"]["queueURL"] for t in triggers) == sorted(
        q["url"] for q in queues.values()
    )
    assert {t["type"] for t in triggers} == {"aws-sqs-queue"}
    auth = docs["TriggerAuthentication"]
    assert auth["spec"] == {"podIdentity": {"provider": "aws", "identityOwner": "workload"}}
    assert {t["authenticationRef"]["name"] for t in triggers} == {auth["metadata"]["name"]}
    assert all("identityOwner" not in t["metadata"] for t in triggers)
    assert {t["metadata"]["scaleOnInFlight"] for t in triggers} == {"false"}
    asked = kinds(render("production", "--set", "keda.scaleOnInFlight=true"))
    assert {
        t["metadata"]["scaleOnInFlight"] for t in asked["ScaledObject"]["spec"]["triggers"]
    } == {"true"}
    assert (
        docs["ScaledObject"]["spec"]["scaleTargetRef"]["name"]
        == docs["Deployment"]["metadata"]["name"]
    )


def test_keda_reads_each_queue_in_its_region_and_refuses_a_member_accounts():
    """KEDA reads the DLQs with the deployment's role: a member account's queue (accounts:)
    it cannot read, and is refused by name; a queue in another region is asked there."""
    queues = yaml.safe_load((ROOT / "config" / "production.yaml").read_text())["queues"]
    name = sorted(queues)[0]
    moved = kinds(render("production", "--set", f"config.queues.{name}.region=eu-west-1"))
    regions = {t["metadata"]["awsRegion"] for t in moved["ScaledObject"]["spec"]["triggers"]}
    assert "eu-west-1" in regions
    said = refused("production", "--set-string", f"config.queues.{name}.account=111111111111")
    assert f"queue {name} lives in member account 111111111111" in said


def test_keda_without_a_queue_list_is_refused():
    """Discovery mode lists no queue: a ScaledObject without triggers never scales."""
    assert "config.queues" in refused("production", "--set", "config.queues=null")


def test_rule_and_dashboard_come_from_the_single_sources():
    docs = kinds(render("production"))
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    assert docs["PrometheusRule"]["spec"] == alerts
    dashboard = json.loads(docs["ConfigMap/dashboard"]["data"]["retry-worker.json"])
    assert dashboard == json.loads((ROOT / "deploy" / "grafana" / "retry-worker.json").read_text())
    assert docs["ConfigMap/dashboard"]["metadata"]["labels"]["grafana_dashboard"] == "1"
    endpoint = docs["ServiceMonitor"]["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")


def test_defaults_render_no_optional_resources():
    present = {d["kind"] for d in render("default")}
    assert present == {
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "Pod",  # the `helm test` hook, run only by `helm test`
    }


def test_values_schema_rejects_unknown_keys():
    result = run(helm(), "template", "rw", str(CHART), "--set", "imagee.tag=x")
    assert result.returncode != 0
    assert "imagee" in result.stderr


ECS = ROOT / "deploy" / "ecs" / "task-definition.json"


def _enum_errors(shape, value, path: str) -> list[str]:
    errors = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            errors += _enum_errors(shape.members[key], item, f"{path}.{key}")
    elif shape.type_name == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            errors += _enum_errors(shape.member, item, f"{path}[{index}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            errors += _enum_errors(shape.value, item, f"{path}.{key}")
    elif getattr(shape, "enum", None) and value not in shape.enum:
        errors.append(f"{path}: {value!r} not in {shape.enum}")
    return errors


def test_ecs_task_definition_matches_the_ecs_model():
    task = json.loads(ECS.read_text())
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    report = ParamValidator().validate(task, shape)
    assert not report.has_errors(), report.generate_report()
    assert _enum_errors(shape, task, "task") == []


def test_ecs_container_stops_after_the_grace_period_and_checks_health():
    [container] = json.loads(ECS.read_text())["containerDefinitions"]
    grace = yaml.safe_load((ROOT / "config" / "production.yaml").read_text())["shutdown"][
        "grace_seconds"
    ]
    assert container["command"] == ["run", "--env", "production"]
    # the grace, a settle cut short by it (shielded, 20 s at most), the last digests (5 s)
    assert container["stopTimeout"] >= grace + SETTLE_DEADLINE_SECONDS + FLUSH_SECONDS
    assert container["healthCheck"]["command"] == ["CMD", "retry-worker", "healthcheck"]
    # ...which asks /livez: one unreadable DLQ makes every task unready, and ECS would replace
    # the whole fleet for it (issue 28, item 1)
    from worker.cli import _parser

    assert _parser().parse_args(["healthcheck"]).url == "http://127.0.0.1:8080/livez"
    assert container["logConfiguration"]["logDriver"] == "awslogs"


CONSOLE = ["--set", "console.enabled=true", "--set", "console.tokenSecret.name=rw-console"]


def test_the_console_renders_when_enabled_and_validates(tmp_path):
    role = "arn:aws:iam::123456789012:role/retry-worker-operator"
    docs = render("production", *CONSOLE, "--set", f"console.serviceAccount.roleArn={role}")
    consoles = [d for d in docs if d["metadata"]["name"].endswith("-console")]
    by_kind = {d["kind"]: d for d in consoles}
    assert set(by_kind) == {"Deployment", "Service", "ServiceAccount", "NetworkPolicy"}
    assert by_kind["Service"]["spec"]["type"] == "ClusterIP"
    account = by_kind["ServiceAccount"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == role
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    [container] = pod["containers"]
    args = container["args"]
    assert args[args.index("--auth-token-file") + 1] == "/secrets/tokens"
    assert args[args.index("--listen") + 1] == "0.0.0.0:8090"
    assert "--read-only" not in args
    secret = next(v for v in pod["volumes"] if v["name"] == "tokens")
    assert secret["secret"]["secretName"] == "rw-console"
    # the worker's own selectors never pick a console pod
    console_labels = by_kind["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for doc in docs:
        if doc in consoles:
            continue
        selector = doc.get("spec", {}).get("selector", {})
        selector = selector.get("matchLabels", selector) if isinstance(selector, dict) else {}
        if selector:
            assert not all(console_labels.get(k) == v for k, v in selector.items()), doc["kind"]
    path = tmp_path / "console.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    validate = Path(sys.executable).parent / "kubernetes-validate"
    result = run(str(validate), "--strict", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    lint = run(helm(), "lint", "--strict", str(CHART), *CONSOLE)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    read_only = render("default", *CONSOLE, "--set", "console.readOnly=true")
    [deployment] = [
        d
        for d in read_only
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-console")
    ]
    assert "--read-only" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_consoles_backups_go_to_s3_instead_of_a_volume():
    prefix = "s3://rw-backups/console"
    docs = render("production", *CONSOLE, "--set", f"console.backups.s3={prefix}")
    [deployment] = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-console")
    ]
    pod = deployment["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--backup-dir") + 1] == prefix
    assert "backups" not in {v["name"] for v in pod["volumes"]}  # nothing that dies with it
    assert "backups" not in {m["name"] for m in pod["containers"][0]["volumeMounts"]}


def test_the_console_needs_its_token_secret():
    result = run(helm(), "template", "rw", str(CHART), "--set", "console.enabled=true")
    assert result.returncode != 0
    assert "console.tokenSecret.name" in result.stderr


DIGEST = "sha256:" + "ab" * 32


def test_the_image_is_pulled_by_digest_when_one_is_given():
    """Issue 28, item 9: what was tested is what runs (a tag can move)."""
    docs = kinds(render("production", "--set", f"image.digest={DIGEST}"))
    [container] = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(f"/retry-worker@{DIGEST}")
    assert "image.digest: Does not match pattern" in refused(
        "production", "--set", "image.digest=latest"
    )


def test_pods_spread_over_zones_and_hosts_and_carry_no_api_token():
    pod = kinds(render("production"))["Deployment"]["spec"]["template"]["spec"]
    assert [c["topologyKey"] for c in pod["topologySpreadConstraints"]] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    assert {c["whenUnsatisfiable"] for c in pod["topologySpreadConstraints"]} == {"ScheduleAnyway"}
    assert pod["automountServiceAccountToken"] is False
    assert "priorityClassName" not in pod
    proxy = '[{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]'
    extra = ["--set", "priorityClassName=retry-critical", "--set-json", f"extraEnv={proxy}"]
    pod = kinds(render("production", *extra))["Deployment"]["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "retry-critical"
    assert pod["containers"][0]["env"] == [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]


def test_the_console_takes_traffic_only_from_where_it_is_told():
    policy = kinds(render("default", *CONSOLE))["NetworkPolicy"]["spec"]
    assert policy["ingress"] == []  # nowhere: kubectl port-forward goes through the kubelet
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "console"
    sre = '[{"namespaceSelector": {"matchLabels": {"team": "sre"}}}]'
    allowed = kinds(render("default", *CONSOLE, "--set-json", f"console.networkPolicy.from={sre}"))
    [rule] = allowed["NetworkPolicy"]["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"team": "sre"}}}]
    assert rule["ports"] == [{"port": 8090, "protocol": "TCP"}]


def test_helm_test_asks_readiness_through_the_service():
    docs = render("production")
    [pod] = [d for d in docs if d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service = kinds(docs)["Service"]["metadata"]["name"]
    assert pod["spec"]["containers"][0]["args"] == [
        "healthcheck",
        "--url",
        f"http://{service}:8080/readyz",
    ]


def test_coordination_needs_its_table_named_where_iam_policy_reads_it():
    """A table the chart named by itself never reached `iam-policy` (AccessDenied on
    DynamoDB); one named per deployment in the configuration does."""
    extra = ["--set", "replicaCount=2", "--set", "config.coordination.backend=dynamodb"]
    assert "e.g. rw-coordination" in refused("default", *extra)


def test_the_helm_test_pod_is_never_counted_as_a_worker():
    docs = render("production", "--set-json", 'imagePullSecrets=[{"name": "registry"}]')
    [pod] = [d for d in docs if d["kind"] == "Pod"]
    selector = kinds(docs)["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry"}]


def test_the_coordination_table_outlives_its_stack_and_passes_cfn_lint():
    template = ROOT / "deploy" / "dynamodb" / "table.yaml"
    result = run(str(Path(sys.executable).parent / "cfn-lint"), str(template))
    assert result.returncode == 0, result.stdout + result.stderr
    table = yaml.safe_load(template.read_text())["Resources"]["CoordinationTable"]
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert table["Properties"]["DeletionProtectionEnabled"] is True


@pytest.mark.parametrize("env", ["staging", "production"])
def test_an_environment_has_one_configuration_for_helm_and_ecs(env):
    """Issue 28, item 5: values-production.yaml carried a second copy of the configuration
    that had drifted from config/production.yaml (the ECS one): a FIFO queue, a parking
    queue and an invocation type differed, and staging lacked a queue. The chart now renders
    config/<env>.yaml itself, the file the image and ECS (`run --env <env>`) run with."""
    values = yaml.safe_load((CHART / f"values-{env}.yaml").read_text())
    assert "config" not in values, "a second copy of the configuration"
    assert values["environment"] == env
    [configmap] = [
        d for d in render(env) if d["kind"] == "ConfigMap" and "config.yaml" in d["data"]
    ]
    rendered = yaml.safe_load(configmap["data"]["config.yaml"])
    assert rendered == yaml.safe_load((ROOT / "config" / f"{env}.yaml").read_text())
    if env == "production":
        [container] = json.loads(ECS.read_text())["containerDefinitions"]
        assert container["command"] == ["run", "--env", "production"]


def test_config_overrides_the_environment_file_and_a_missing_one_is_named():
    extra = ["--set", "config.defaults.concurrency=7"]
    [configmap] = [
        d
        for d in render("staging", *extra)
        if d["kind"] == "ConfigMap" and "config.yaml" in d["data"]
    ]
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    assert config["defaults"]["concurrency"] == 7
    assert config["defaults"]["rate_limit"] == {"per_second": 5.0, "burst": 10}  # the file's
    assert "there is no config/qa.yaml" in refused("default", "--set", "environment=qa")


class _Cfn(yaml.SafeLoader):
    """CloudFormation's short forms (`!Ref`, `!Sub`, …) read as `{"Ref": …}`-like maps."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {name: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node)}
    return {name: loader.construct_mapping(node)}


_Cfn.add_multi_constructor("!", _cfn_tag)


def cloudformation(path: Path) -> dict:
    """cfn-lint passes on it; its resources, tags read."""
    result = run(str(Path(sys.executable).parent / "cfn-lint"), str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    return yaml.load(path.read_text(), Loader=_Cfn)["Resources"]  # noqa: S506 - SafeLoader


def test_the_ecs_service_rolls_back_logs_with_a_retention_and_never_blocks_on_logs():
    """Issue 28, item 7: `awslogs-create-group` needs a permission the managed execution
    policy lacks (tasks failed to start) and kept logs forever."""
    resources = cloudformation(ROOT / "deploy" / "ecs" / "service.yaml")
    assert resources["LogGroup"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    deployment = resources["Service"]["Properties"]["DeploymentConfiguration"]
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert resources["Service"]["Properties"]["EnableExecuteCommand"] is False
    [daemon] = resources["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert daemon["HealthCheck"]["Command"] == ["CMD", "retry-worker", "healthcheck"]
    assert daemon["ReadonlyRootFilesystem"] is True
    for container in (daemon, json.loads(ECS.read_text())["containerDefinitions"][0]):
        options = container.get("LogConfiguration", container.get("logConfiguration"))
        options = options.get("Options", options.get("options"))
        assert options["mode"] == "non-blocking"
        assert "awslogs-create-group" not in options
    assert not resources["TaskSecurityGroup"]["Properties"].get("SecurityGroupIngress")


def test_the_ecs_console_is_a_task_of_its_own_with_the_operator_role():
    resources = cloudformation(ROOT / "deploy" / "ecs" / "service.yaml")
    console = resources["ConsoleTaskDefinition"]["Properties"]
    assert console["TaskRoleArn"] == {"Ref": "OperatorRoleArn"}
    daemon = resources["TaskDefinition"]["Properties"]
    assert daemon["TaskRoleArn"] == {"Ref": "TaskRoleArn"}
    [container] = console["ContainerDefinitions"]
    assert container["LinuxParameters"]["InitProcessEnabled"] is True  # ECS Exec needs it
    command = container["Command"]
    assert command[0] == "console"
    assert command[command.index("--listen") + 1] == "127.0.0.1:8090"


def test_the_roles_trust_only_their_own_workloads():
    """Issue 28, item 6: IRSA trusted by one service account (`sub`) for STS (`aud`); ECS
    task roles by this account's tasks only (`aws:SourceAccount`)."""
    resources = cloudformation(ROOT / "deploy" / "iam" / "roles.yaml")
    template, values = resources["IrsaRole"]["Properties"]["AssumeRolePolicyDocument"]["Fn::Sub"]
    assert '"${EksOidcIssuer}:aud": "sts.amazonaws.com"' in template
    assert '"${EksOidcIssuer}:sub": [${Subjects}]' in template
    with_keda, alone = values["Subjects"]["Fn::If"][1:]
    # the chart's service account, and KEDA's operator (it reads the DLQ depths with this
    # role: the TriggerAuthentication's identityOwner workload)
    assert with_keda["Fn::Sub"] == (
        '"system:serviceaccount:${Namespace}:${ServiceAccount}", '
        '"system:serviceaccount:${KedaServiceAccount}"'
    )
    assert alone["Fn::Sub"] == '"system:serviceaccount:${Namespace}:${ServiceAccount}"'
    console = resources["IrsaOperatorRole"]["Properties"]["AssumeRolePolicyDocument"]["Fn::Sub"]
    assert '"${EksOidcIssuer}:aud": "sts.amazonaws.com"' in console
    assert '"system:serviceaccount:${Namespace}:${ConsoleServiceAccount}"' in console
    for name in ("EcsTaskRole", "EcsOperatorRole", "EcsExecutionRole"):
        [statement] = resources[name]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
        assert statement["Condition"]["StringEquals"] == {
            "aws:SourceAccount": {"Ref": "AWS::AccountId"}
        }
    assert resources["EcsTaskRole"]["Properties"]["ManagedPolicyArns"] == [
        {"Ref": "WorkerPolicyArn"}
    ]
    assert resources["EcsOperatorRole"]["Properties"]["ManagedPolicyArns"] == [
        {"Ref": "OperatorPolicyArn"}
    ]


def test_the_notification_webhook_url_comes_from_a_secret(tmp_path):
    sink = "config.notify.sinks[0].webhook.url_file=/secrets/notify/url"
    refused_without = run(
        helm(), "template", "rw", str(CHART), *values_args("production"), "--set", sink
    )
    assert refused_without.returncode != 0
    assert "notifyWebhookSecret.name" in refused_without.stderr
    docs = render("production", "--set", sink, "--set", "notifyWebhookSecret.name=rw-slack")
    pod = _worker_pod(docs)
    [volume] = [v for v in pod["volumes"] if v["name"] == "notify"]
    assert volume["secret"]["secretName"] == "rw-slack"
    assert volume["secret"]["items"] == [{"key": "url", "path": "url"}]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "notify"]
    assert (mount["mountPath"], mount["readOnly"]) == ("/secrets/notify", True)
    path = tmp_path / "notify.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    validate = Path(sys.executable).parent / "kubernetes-validate"
    result = run(str(validate), "--strict", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "notify" not in {v["name"] for v in _worker_pod(render("production"))["volumes"]}


def _worker_pod(docs: list[dict]) -> dict:
    [deployment] = [
        d
        for d in docs
        if d["kind"] == "Deployment" and not d["metadata"]["name"].endswith("-console")
    ]
    return deployment["spec"]["template"]["spec"]


def test_the_ecs_webhook_secret_reaches_the_worker_as_a_file():
    """ECS gives a secret only as an environment variable: the patch's first container writes it
    to a task volume that the worker mounts read-only once that container has succeeded."""
    task = json.loads(ECS.read_text())
    patch = json.loads((ROOT / "deploy" / "ecs" / "notify-webhook.json").read_text())
    [worker] = task["containerDefinitions"]
    worker["dependsOn"] = patch["worker"]["dependsOn"]
    worker["mountPoints"] += patch["worker"]["mountPoints"]
    task["containerDefinitions"].append(patch["container"])
    task["volumes"].append(patch["volume"])
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    report = ParamValidator().validate(task, shape)
    assert not report.has_errors(), report.generate_report()
    assert _enum_errors(shape, task, "task") == []
    writer = patch["container"]
    assert writer["essential"] is False
    assert writer["image"] == worker["image"]  # nothing else to pull
    assert "/secrets/notify/url" in writer["command"][0]
    assert [m["readOnly"] for m in worker["mountPoints"] if m["sourceVolume"] == "notify"] == [True]
    assert "NOTIFY_WEBHOOK_URL" not in json.dumps(worker)  # the worker never sees it as env


def test_the_digest_routes_pass_cfn_lint_and_read_the_digests_fields():
    """docs/notifications.md's worked example: EventBridge to Chatbot and to PagerDuty."""
    resources = cloudformation(ROOT / "deploy" / "notify" / "routes.yaml")
    from worker.core.notices import ParkedNotice
    from worker.notify.digest import Digests
    from worker.notify.sinks import DETAIL_TYPE, SOURCE

    digests = Digests(window_seconds=1, quiet_seconds=0)
    digests.parked(ParkedNotice("orders", "max_attempts", "E", "m-1", "Boom", "boom"), 0)
    [digest] = digests.due(5)
    for name in ("DigestsToChatbot", "ParkedToPagerDuty"):
        rule = resources[name]["Properties"]
        assert rule["EventPattern"]["source"] == [SOURCE]
        assert rule["EventPattern"]["detail-type"] == [DETAIL_TYPE]
        paths = rule["Targets"][0]["InputTransformer"]["InputPathsMap"].values()
        assert {p.removeprefix("$.detail.") for p in paths} <= set(digest)
    # What a target said never reaches Chatbot's Markdown, where a transformer cannot escape
    # it ("[reset your card](https://evil.example)" would be a live link in the channel).
    chatbot = resources["DigestsToChatbot"]["Properties"]["Targets"][0]["InputTransformer"]
    said = {"$.detail.error_message", "$.detail.error_type"}
    assert not said & set(chatbot["InputPathsMap"].values())
    # The routing key is the connection's secret, never the rule's text (ListTargetsByRule).
    pagerduty = resources["ParkedToPagerDuty"]["Properties"]["Targets"][0]["InputTransformer"]
    assert "PagerDutyRoutingKey" not in json.dumps(pagerduty)
    connection = resources["PagerDutyConnection"]["Properties"]["AuthParameters"]
    [key] = connection["InvocationHttpParameters"]["BodyParameters"]
    assert key["Key"] == "routing_key"
    assert key["IsValueSecret"] is True
