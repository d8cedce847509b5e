"""cluster.yaml passes Ray's own cluster-config validation offline, and every command it runs exists in the project.

`ray up` has no dry run. What can be checked without AWS is checked here: Ray's schema and consistency checks, the
keys under ``provider`` and the EC2 parameters of each node type with their block devices (Ray's schema lets any key
through there), every ``python -m pipelines.X`` command (the module exists and its parser accepts the arguments),
every ``ray`` command (Ray's own CLI accepts the options), the files it copies, and what it exposes.
"""

import copy
import difflib
import importlib
import re
import shlex
import socket
from pathlib import Path

import click
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "cluster.yaml"
COMMAND_LISTS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                 "head_start_ray_commands", "worker_start_ray_commands")
SHELL_OPERATORS = set(";&|()<>")
# Top-level parameters of EC2 RunInstances: the AWS provider passes node_config to it as keyword arguments, and Ray's
# schema does not look inside node_config, so a misspelt key would only fail at `ray up`.
RUN_INSTANCES_PARAMETERS = {
    "BlockDeviceMappings", "CapacityReservationSpecification", "CpuOptions", "CreditSpecification",
    "DisableApiStop", "DisableApiTermination", "EbsOptimized", "EnclaveOptions", "HibernationOptions",
    "IamInstanceProfile", "ImageId", "InstanceInitiatedShutdownBehavior", "InstanceMarketOptions", "InstanceType",
    "KeyName", "LaunchTemplate", "MaintenanceOptions", "MetadataOptions", "Monitoring", "NetworkInterfaces",
    "Placement", "PrivateDnsNameOptions", "SecurityGroupIds", "SubnetId", "TagSpecifications", "UserData",
    "SubnetIds",  # Ray's own: one subnet per zone, picked by the provider
}
# EC2's BlockDeviceMapping and its EbsBlockDevice: a misspelt VolumeSize would only fail at `ray up`, or not at all.
BLOCK_DEVICE_MAPPING_KEYS = {"DeviceName", "VirtualName", "NoDevice", "Ebs"}
EBS_KEYS = {"DeleteOnTermination", "Iops", "SnapshotId", "VolumeSize", "VolumeType", "KmsKeyId", "Throughput",
            "OutpostArn", "Encrypted"}
# The provider keys that Ray 2.x reads for AWS (ray/autoscaler/_private/aws/config.py and node_provider.py, the
# autoscaler and updater in ray/autoscaler/_private/). Ray's schema allows any key under provider, so a misspelt one
# is ignored and its default used: cache_stopped_node would leave cache_stopped_nodes at its default, whatever it says.
AWS_PROVIDER_KEYS = {
    "type", "region", "availability_zone", "cache_stopped_nodes", "use_internal_ips", "use_external_head_ip",
    "security_group", "key_pair", "aws_credentials", "cloudwatch",
    "disable_node_updaters", "disable_launch_config_check", "foreground_node_launch", "worker_liveness_check",
}


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def all_commands(config: dict) -> list[str]:
    return [cmd for key in COMMAND_LISTS for cmd in config.get(key, [])]


def simple_commands(command: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ``;``, ``&&``, ``||``, pipes, parentheses and redirections),
    each without its leading ``VAR=value`` assignments."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars="".join(sorted(SHELL_OPERATORS)))
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token and set(token) <= SHELL_OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    stripped = []
    for words in commands:
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if words:
            stripped.append(words)
    return stripped


def project_commands(config: dict) -> list[tuple[str, list[str]]]:
    """``(module, args)`` of every ``python -m pipelines.X args`` the config runs."""
    found = []
    for command in all_commands(config):
        for words in simple_commands(command):
            if Path(words[0]).name.startswith("python") and words[1:2] == ["-m"] and words[2].startswith("pipelines."):
                found.append((words[2], words[3:]))
    return found


def ray_commands(config: dict) -> list[list[str]]:
    """The arguments after ``ray`` of every ``ray ...`` command the config runs."""
    return [words[1:] for command in all_commands(config) for words in simple_commands(command)
            if Path(words[0]).name == "ray"]


def unknown_keys(mapping: dict, known: set[str], where: str) -> list[str]:
    """``<where>.<key>`` for each key of ``mapping`` not in ``known``, with the closest known key if one is close."""
    found = []
    for key in sorted(set(mapping) - known):
        close = difflib.get_close_matches(key, sorted(known), n=1)
        found.append(f"{where}.{key}" + (f" (did you mean {close[0]}?)" if close else ""))
    return found


def misspelt_keys(config: dict) -> list[str]:
    """The keys that pass Ray's schema but that nothing reads: under ``provider``, each node type's ``node_config``,
    its ``BlockDeviceMappings`` and their ``Ebs``."""
    found = unknown_keys(config["provider"], AWS_PROVIDER_KEYS, "provider")
    for name, node_type in config["available_node_types"].items():
        where = f"available_node_types.{name}.node_config"
        found += unknown_keys(node_type["node_config"], RUN_INSTANCES_PARAMETERS, where)
        for i, mapping in enumerate(node_type["node_config"].get("BlockDeviceMappings", [])):
            found += unknown_keys(mapping, BLOCK_DEVICE_MAPPING_KEYS, f"{where}.BlockDeviceMappings[{i}]")
            found += unknown_keys(mapping.get("Ebs", {}), EBS_KEYS, f"{where}.BlockDeviceMappings[{i}].Ebs")
    return found


def rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.fixture
def offline(monkeypatch):
    """Any network connection attempt fails the test."""
    def no_network(*args, **kwargs):
        raise AssertionError("cluster-config validation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)


def test_simple_commands_split_like_the_shell():
    line = "ulimit -n 65536; A=1 ray start --address=$RAY_HEAD_IP:6379 && (mountpoint -q /m || echo x) > f"
    assert simple_commands(line) == [["ulimit", "-n", "65536"], ["ray", "start", "--address=$RAY_HEAD_IP:6379"],
                                     ["mountpoint", "-q", "/m"], ["echo", "x"], ["f"]]


def test_ray_validates_the_config_offline(config, offline):
    # prepare_config merges the AWS defaults.yaml that ships with Ray and fills each node type's worker counts;
    # validate_config checks the result against Ray's JSON schema (unknown keys, types) and for consistency (head
    # type, min/max workers). `ray up` would go on to bootstrap the provider (IAM role, key pair, security group,
    # subnets, AMI), which calls AWS; that part is left out, and any connection attempt here fails the test.
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)

    assert prepared["provider"]["type"] == "aws"
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"]["CPU"] == 0 and head["resources"]["trial_slot"] >= 1  # no training on the head
    assert head["max_workers"] == 0
    workers = {name: t for name, t in types.items() if name != prepared["head_node_type"]}
    assert len(workers) == 1
    (gpu,) = workers.values()
    assert 1 <= gpu["min_workers"] < gpu["max_workers"] <= prepared["max_workers"]  # it autoscales
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))  # a GPU instance family


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda c: c.update(max_workerz=4), "max_workerz"),
        (lambda c: c["available_node_types"]["worker_gpu"].update(min_worker=1), "min_worker"),
        (lambda c: c.update(head_node_type="head"), "head_node_type"),
        (lambda c: c["available_node_types"]["worker_gpu"].update(min_workers=9), "max_workers"),
        (lambda c: c["available_node_types"]["head_cpu"]["resources"].update(CPU="0"), "'0' is not of type"),
    ],
)
def test_ray_refuses_a_broken_config(config, mutate, error):
    broken = copy.deepcopy(config)
    mutate(broken)
    with pytest.raises(Exception, match=error):  # jsonschema.ValidationError or ValueError, by Ray's check
        validate_config(prepare_config(broken))


def test_provider_and_node_configs_use_only_keys_that_ray_or_ec2_read(config):
    assert misspelt_keys(config) == []


HEAD_NODE_CONFIG = ("available_node_types", "head_cpu", "node_config")
HEAD_EBS = (*HEAD_NODE_CONFIG, "BlockDeviceMappings", 0, "Ebs")


def at(config: dict, path: tuple) -> dict:
    for step in path:
        config = config[step]
    return config


@pytest.mark.parametrize(
    ("path", "old", "new", "named"),
    [
        (("provider",), "cache_stopped_nodes", "cache_stopped_node",
         "provider.cache_stopped_node (did you mean cache_stopped_nodes?)"),
        (("provider",), "availability_zone", "availability_zon",
         "provider.availability_zon (did you mean availability_zone?)"),
        (HEAD_EBS, "VolumeSize", "VolumeSiz",
         "available_node_types.head_cpu.node_config.BlockDeviceMappings[0].Ebs.VolumeSiz (did you mean VolumeSize?)"),
        (HEAD_NODE_CONFIG, "InstanceType", "InstanceTyp",
         "available_node_types.head_cpu.node_config.InstanceTyp (did you mean InstanceType?)"),
    ],
)
def test_case55_a_misspelt_aws_key_is_named(config, offline, path, old, new, named):
    broken = copy.deepcopy(config)
    rename(at(broken, path), old, new)
    validate_config(prepare_config(copy.deepcopy(broken)))  # Ray's own checks let every one of these through
    assert misspelt_keys(broken) == [named]


def test_every_pipeline_command_exists_and_its_parser_accepts_the_arguments(config):
    commands = project_commands(config)
    assert {module for module, _ in commands} == {"pipelines.tracking_server"}
    for module, args in commands:
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), f"{module} is not in the project"
        try:
            importlib.import_module(module).parse_args(args)
        except SystemExit:
            pytest.fail(f"`python -m {module} {shlex.join(args)}` in cluster.yaml: its parser refuses the arguments")


def test_the_head_starts_the_tracking_server_after_stopping_the_last_one(config):
    started = [args for module, args in project_commands({"head_start_ray_commands": config["head_start_ray_commands"]})
               if module == "pipelines.tracking_server"]
    assert ["--stop" in args for args in started] == [True, False]
    args = importlib.import_module("pipelines.tracking_server").parse_args(started[1])
    assert args.detach and args.artifacts_destination.startswith("/mnt/shared/")  # artifacts on shared storage
    assert not args.output_dir.startswith("/mnt/shared")  # the database on the head's own disk


def test_every_ray_command_is_accepted_by_rays_cli(config):
    from ray.scripts.scripts import cli

    commands = ray_commands(config)
    assert sorted({args[0] for args in commands}) == ["start", "stop"]
    for args in commands:
        command = cli.commands[args[0]]
        try:
            command.make_context(f"ray {args[0]}", list(args[1:]))
        except click.ClickException as err:
            pytest.fail(f"`ray {shlex.join(args)}` in cluster.yaml: {err.format_message()}")
    head_start = next(a for a in commands if "--head" in a)
    assert "--dashboard-port=8265" in head_start  # fixed: `ray dashboard` and the workers find it there


def test_copied_files_exist_in_the_project(config):
    for remote, local in config["file_mounts"].items():
        if local.startswith("~"):
            continue  # the user's own file (the Ray token), never part of the repository
        assert (REPO / local).exists(), f"file_mounts {remote}: {local} is not in the repository"
    assert config["file_mounts"]["~/toco-ray"] == "."
    installs = [c for c in all_commands(config) if "pip install" in c and "-e ~/toco-ray" in c]
    assert installs and (REPO / "pyproject.toml").is_file()


def test_no_credentials_and_no_port_opened_to_the_internet(config):
    text = CONFIG.read_text()
    for pattern in (r"AKIA[0-9A-Z]{16}", r"(?i)aws_secret_access_key", r"(?i)password", r"PRIVATE KEY",
                    r"RAY_AUTH_TOKEN=", r"(?i)ssh_private_key"):
        assert not re.search(pattern, text), f"cluster.yaml matches {pattern!r}"
    # The launcher's security group admits SSH from outside and the cluster's own nodes; no rule is added to it.
    assert not config["provider"].get("security_group", {}).get("IpPermissions")
    # Services bind loopback or the instance's own interfaces (on EC2 only private addresses; AWS translates the
    # public one outside the instance), never a named address.
    hosts = [word.split("=", 1)[1] if "=" in word else words[i + 1]
             for command in all_commands(config) for words in simple_commands(command)
             for i, word in enumerate(words) if word.split("=", 1)[0] in ("--host", "--dashboard-host")]
    assert hosts and set(hosts) <= {"127.0.0.1", "0.0.0.0"}
    assert "RAY_AUTH_MODE=token" in text  # Ray's token authentication on every node
