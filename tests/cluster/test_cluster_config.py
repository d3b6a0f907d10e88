"""cluster.yaml and its local twin against Ray's own cluster-config schema, and their hygiene.

``ray up`` fills in the provider's defaults (``prepare_config``) and then validates the result
against ``ray/autoscaler/ray-schema.json`` (``validate_config``); the autoscaler of a running
head validates the file it was started with the same way. These tests call those two
functions, so a key Ray does not know, a wrong type or a node type without ``node_config``
fails here with Ray's own schema error, not at launch time on a paid cluster.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER, LOCAL = REPO / "cluster.yaml", REPO / "cluster.local.yaml"
TWIN_FIELDS = ("resources", "min_workers", "max_workers")

# Strings that look like credentials: AWS key ids and secrets, private keys, passwords in a
# URI or an assignment, tokens. The config must get all of them from instance profiles, SSM
# Parameter Store or the environment instead.
CREDENTIAL_PATTERNS = {
    "AWS access key id": r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
    "AWS secret key setting": r"(?i)aws_secret_access_key|aws_session_token",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "password in a URI": r"://[^/\s:@'\"]+:[^/\s@'\"]+@",
    "password or token value": r"(?i)\b(password|passwd|secret|token)\b\s*[:=]\s*\S+",
    "GCP service-account key": r"\"private_key(_id)?\"\s*:",
    "SSH key file in auth": r"(?m)^\s*ssh_private_key\s*:",
}
OPEN_HOSTS = ("0.0.0.0", "::", "[::]", "")


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def validate_like_ray_up(config: dict[str, Any]) -> None:
    """What ``ray up`` checks before it provisions anything (no cloud calls)."""
    validate_config(prepare_config(copy.deepcopy(config)))


def validate_like_fake_head(config: dict[str, Any]) -> None:
    """What the autoscaler of ``RAY_FAKE_CLUSTER=1 ray start --autoscaling-config`` checks.

    ``prepare_config`` is not applied: it merges provider defaults from a file the Ray wheel
    does not ship for fake_multinode, and the running autoscaler validates the raw file.
    """
    validate_config(copy.deepcopy(config))


VALIDATORS: dict[str, tuple[Path, Callable[[dict[str, Any]], None]]] = {
    "cluster.yaml": (CLUSTER, validate_like_ray_up),
    "cluster.local.yaml": (LOCAL, validate_like_fake_head),
}


@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_config_validates_against_rays_schema(name: str) -> None:
    path, validate = VALIDATORS[name]
    config = load(path)
    validate(config)
    assert config["head_node_type"] in config["available_node_types"]


def test_provider_of_each_file() -> None:
    assert load(CLUSTER)["provider"]["type"] == "aws"
    assert load(LOCAL)["provider"]["type"] == "fake_multinode"


def _unknown_key(config: dict[str, Any]) -> None:
    config["ray_version"] = "2.0"


def _max_workers_text(config: dict[str, Any]) -> None:
    config["max_workers"] = "eight"


def _worker_without_node_config(config: dict[str, Any]) -> None:
    del config["available_node_types"]["gpu.a10g"]["node_config"]


BREAKAGES = {
    "unknown top-level key": (
        _unknown_key,
        "Additional properties are not allowed ('ray_version' was unexpected)",
    ),
    "max_workers not an integer": (_max_workers_text, "'eight' is not of type 'integer'"),
    "worker type without node_config": (
        _worker_without_node_config,
        "'node_config' is a required property",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_broken_copy_fails_with_the_schema_error(name: str, breakage: str) -> None:
    path, validate = VALIDATORS[name]
    config = load(path)
    damage, message = BREAKAGES[breakage]
    damage(config)
    with pytest.raises(jsonschema.ValidationError) as caught:
        validate(config)
    assert caught.value.message == message


def test_local_twin_has_the_same_node_types() -> None:
    """Same names, resources and worker bounds: the twin exercises the real layout."""
    real, twin = load(CLUSTER), load(LOCAL)
    assert twin["head_node_type"] == real["head_node_type"]
    assert twin["max_workers"] == real["max_workers"]
    assert sorted(twin["available_node_types"]) == sorted(real["available_node_types"])
    for name, node_type in real["available_node_types"].items():
        for field in TWIN_FIELDS:
            assert twin["available_node_types"][name].get(field) == node_type.get(field), (
                f"{name}.{field} differs between cluster.yaml and cluster.local.yaml"
            )


def test_gpu_workers_are_autoscaled_spot_nodes() -> None:
    workers = {
        name: node
        for name, node in load(CLUSTER)["available_node_types"].items()
        if node["resources"].get("GPU", 0) > 0
    }
    assert workers, "cluster.yaml has no GPU worker type"
    for name, node in workers.items():
        assert node["min_workers"] == 0 and node["max_workers"] >= 1, name
        assert node["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot", name


def credential_findings(text: str) -> list[str]:
    """Names of the credential patterns found in ``text`` (with the matched line)."""
    found = []
    for name, pattern in CREDENTIAL_PATTERNS.items():
        for match in re.finditer(pattern, text):
            line = text[: match.start()].count("\n") + 1
            found.append(f"{name} on line {line}")
    return found


@pytest.mark.parametrize("path", [CLUSTER, LOCAL], ids=lambda p: p.name)
def test_no_credentials_in_the_config(path: Path) -> None:
    assert credential_findings(path.read_text()) == []


def test_credential_scan_catches_planted_secrets() -> None:
    planted = "\n".join(
        [
            "aws_access_key_id: AKIAIOSFODNN7EXAMPLE",
            "  - mlflow server --backend-store-uri postgresql://mlflow:hunter2@db:5432/mlflow",
            "password: hunter2",
        ]
    )
    found = credential_findings(planted)
    assert "AWS access key id on line 1" in found
    assert "password in a URI on line 2" in found
    assert "password or token value on line 3" in found


def command_options(commands: list[str], program: str) -> list[dict[str, str]]:
    """``--option value`` pairs of each invocation of ``program`` (e.g. "mlflow server").

    Commands are tokenised as a shell would (quotes, ``$(...)`` inside quotes kept whole) and
    cut at ``;``, ``&&``, ``|``, ``&`` and redirections into simple commands.
    """
    words = program.split()
    found = []
    for command in commands:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        segment: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|<>()"):
                found.extend(_options_after(segment, words))
                segment = []
            else:
                segment.append(token)
    return found


def _options_after(segment: list[str], words: list[str]) -> list[dict[str, str]]:
    for start in range(len(segment) - len(words) + 1):
        if segment[start : start + len(words)] == words:
            rest = segment[start + len(words) :]
            options = {}
            for word, following in zip(rest, [*rest[1:], ""], strict=True):
                key, eq, value = word.partition("=")
                if key.startswith("--") and " " not in word:
                    # A flag followed by another option has no value; a quoted value with
                    # spaces ("--bind 127.0.0.1:5000") is a value, not an option.
                    is_option = following.startswith("--") and " " not in following
                    options[key] = value if eq else ("" if is_option else following)
            return [options]
    return []


def mlflow_server_problems(config: dict[str, Any]) -> list[str]:
    """What is wrong with the head's MLflow server command; empty when it is private,
    backed by a database and stores artifacts in object storage."""
    commands = config["head_start_ray_commands"]
    servers = command_options(commands, "mlflow server")
    if len(servers) != 1:
        return [f"the head starts {len(servers)} MLflow servers, not one"]
    options, problems = servers[0], []
    host = options.get("--host")
    if host is None or host in OPEN_HOSTS:
        problems.append(f"mlflow server binds {host!r}: name the head's private address")
    if any(open_host in options.get("--gunicorn-opts", "") for open_host in OPEN_HOSTS[:2]):
        problems.append("mlflow server's extra --bind listens on every interface")
    if not options.get("--default-artifact-root", "").startswith("$ABLATE_S3"):
        problems.append("artifacts must go to the object store ($ABLATE_S3)")
    if "--backend-store-uri" not in options:
        problems.append("no --backend-store-uri: MLflow would use a file store")
    return problems


def test_mlflow_server_is_private_with_database_and_object_store() -> None:
    config = load(CLUSTER)
    assert mlflow_server_problems(config) == []
    assert "sqlite:////home/ray/mlflow" in " ".join(config["head_start_ray_commands"])


def test_mlflow_check_catches_a_public_bind() -> None:
    config = load(CLUSTER)
    commands = config["head_start_ray_commands"]
    config["head_start_ray_commands"] = [
        cmd.replace('--host "$HEAD_IP"', "--host 0.0.0.0") for cmd in commands
    ]
    assert mlflow_server_problems(config) == [
        "mlflow server binds '0.0.0.0': name the head's private address"
    ]
    config["head_start_ray_commands"] = [
        cmd.replace("--bind 127.0.0.1:5000", "--bind 0.0.0.0:5000") for cmd in commands
    ]
    assert mlflow_server_problems(config) == [
        "mlflow server's extra --bind listens on every interface"
    ]


def test_ray_dashboard_stays_on_loopback() -> None:
    for options in command_options(load(CLUSTER)["head_start_ray_commands"], "ray start"):
        assert options.get("--dashboard-host") == "127.0.0.1"


def test_no_security_group_rule_opens_ports_to_the_internet() -> None:
    rules = load(CLUSTER)["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        cidrs = [r.get("CidrIp") for r in rule.get("IpRanges", [])]
        assert "0.0.0.0/0" not in cidrs, f"rule {rule} opens ports to the internet"


def test_images_pin_one_ray_version() -> None:
    docker = load(CLUSTER)["docker"]
    tags = {docker[key].split(":")[1].split("-")[0] for key in docker if key.endswith("image")}
    assert len(tags) == 1, f"head and worker images pin different Ray versions: {tags}"


def test_file_mounts_sync_this_checkout() -> None:
    """``ray up`` runs from the repo root, so the "." mount is the project to install."""
    mounts = load(CLUSTER)["file_mounts"]
    assert list(mounts.values()) == ["."]
    assert (REPO / "pyproject.toml").is_file()
    installed = [cmd for cmd in load(CLUSTER)["worker_setup_commands"] if "pip install" in cmd]
    assert any(f"-e {next(iter(mounts))}" in cmd for cmd in installed)
