"""docker-compose.yml, the Dockerfile and deploy/prometheus.yml checked against the code: there is
no Docker engine to run them here, so what they ask of labelloop (settings, CLI commands, the order
of start-up) is checked statically. Nothing is started."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from service import cli
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
PREFIX = "LABELLOOP_"
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def load_compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return compose


COMPOSE_DATA = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE_DATA["services"]


def environment(service: dict[str, Any]) -> dict[str, Any]:
    """A service's environment, in either compose form (mapping or KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def labelloop_env(service: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in environment(service).items() if k.startswith(PREFIX)}


# -- the Dockerfile -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_argv(instruction: str) -> list[str] | None:
    """The last CMD or ENTRYPOINT as argv (exec or shell form), None if there is none."""
    found = [rest for keyword, rest in dockerfile_instructions() if keyword == instruction]
    if not found:
        return None
    rest = found[-1]
    if rest.startswith("["):
        argv: list[str] = json.loads(rest)
        return argv
    return shlex.split(rest)


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def image_command() -> list[str]:
    entrypoint = dockerfile_argv("ENTRYPOINT") or []
    return entrypoint + (dockerfile_argv("CMD") or [])


def builds_our_image(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if build is None:
        return False
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    return (ROOT / context / dockerfile).resolve() == DOCKERFILE


def command_of(service: dict[str, Any]) -> list[str]:
    """What the container runs: its command, or the image's CMD for a service built here."""
    command = service.get("command")
    if command is None:
        return image_command() if builds_our_image(service) else []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable", False) and bool(check.get("test"))
    return builds_our_image(service) and any(k == "HEALTHCHECK" for k, _ in dockerfile_instructions())


# -- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def clean_labelloop_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No LABELLOOP_* variable or .env file of this machine leaks into the settings."""
    for key in list(os.environ):
        if key.startswith(PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def run_cli_dispatch(monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, Any]) -> tuple[str, Settings]:
    """Run service.cli.main(argv) for real (argument parsing, settings from env, policies) with the
    commands themselves replaced: which one ran, with what settings. No server starts."""
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    ran: list[tuple[str, Settings]] = []

    def recorder(name: str) -> Callable[..., int]:
        def command(settings: Settings, *_: Any) -> int:
            ran.append((name, settings))
            return 0

        return command

    for name in ("serve", "migrate", "consume", "keys"):
        monkeypatch.setattr(cli, f"_{name}", recorder(name))
    assert cli.main(argv) == 0, f"labelloop {' '.join(argv)} failed"
    assert len(ran) == 1
    return ran[0]


def assert_real_subcommand(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert argv, "no labelloop subcommand"
    with pytest.raises(SystemExit) as exit_info:
        cli.main([argv[0], "--help"])
    capsys.readouterr()
    assert exit_info.value.code == 0, f"`labelloop {argv[0]}` is not a command of the CLI"


# -- the tests ----------------------------------------------------------------------------------


def labelloop_services() -> list[str]:
    return [name for name, s in SERVICES.items() if command_of(s)[:1] == ["labelloop"]]


def test_the_app_services_run_labelloop() -> None:
    assert sorted(labelloop_services()) == ["api", "joiner", "migrate", "scrape-key"]
    assert command_of(SERVICES["migrate"])[1:] == ["migrate"]
    assert command_of(SERVICES["scrape-key"])[1:3] == ["keys", "create"]
    assert command_of(SERVICES["api"])[1:2] == ["serve"]
    assert command_of(SERVICES["joiner"])[1:] == ["consume"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_labelloop_variable_is_a_setting(name: str) -> None:
    fields = set(Settings.model_fields)
    for key in labelloop_env(SERVICES[name]):
        assert key.removeprefix(PREFIX).lower() in fields, f"{name}: {key} is not a field of service.config.Settings"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_environment_values_are_strings(name: str) -> None:
    """Compose turns YAML booleans into errors or into True/False: quote every value."""
    for key, value in environment(SERVICES[name]).items():
        assert isinstance(value, str), f"{name}: {key}={value!r} should be a quoted string"


@pytest.mark.parametrize("name", labelloop_services())
def test_services_run_a_cli_command_with_valid_settings(
    name: str, clean_labelloop_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    service = SERVICES[name]
    argv = command_of(service)[1:]
    assert_real_subcommand(argv, capsys)
    env = {**dockerfile_env(), **environment(service)} if builds_our_image(service) else environment(service)
    ran, settings = run_cli_dispatch(clean_labelloop_env, argv, {k: v for k, v in env.items() if k.startswith(PREFIX)})
    assert ran == argv[0]
    assert settings.kafka_mode
    assert not settings.is_sqlite


def service_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    env = {**dockerfile_env(), **environment(SERVICES[name])}
    for key, value in env.items():
        if key.startswith(PREFIX):
            monkeypatch.setenv(key, str(value))
    return Settings(_env_file=None)


def test_api_and_joiner_do_not_migrate_on_start(clean_labelloop_env: pytest.MonkeyPatch) -> None:
    for name in ("api", "joiner"):
        assert labelloop_env(SERVICES[name]).get("LABELLOOP_MIGRATE_ON_START") == "false"
        assert not service_settings(name, clean_labelloop_env).should_migrate_on_start


def test_every_process_shares_database_and_topics(clean_labelloop_env: pytest.MonkeyPatch) -> None:
    shared = (
        "database_url",
        "kafka_bootstrap_servers",
        "kafka_predictions_topic",
        "kafka_events_topic",
        "kafka_dlq_topic",
        "kafka_partitions",
    )
    seen = {}
    for name in ("migrate", "api", "joiner"):
        with pytest.MonkeyPatch.context() as mp:  # one service's variables at a time
            settings = service_settings(name, mp)
        seen[name] = {field: getattr(settings, field) for field in shared}
    assert seen["api"] == seen["joiner"] == seen["migrate"]
    assert seen["api"]["kafka_bootstrap_servers"].split(":")[0] in SERVICES
    assert seen["api"]["database_url"].split("@")[1].split(":")[0] in SERVICES


def test_every_depends_on_has_a_condition_that_can_be_met() -> None:
    for name, service in SERVICES.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs the long form, with a condition"
        for target, spec in depends.items():
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            condition = (spec or {}).get("condition")
            assert condition in CONDITIONS, f"{name} -> {target}: condition {condition!r}"
            if condition == "service_healthy":
                assert has_healthcheck(SERVICES[target]), f"{name} waits for {target} healthy: it has no healthcheck"
            if condition == "service_completed_successfully":
                assert SERVICES[target].get("restart", "no") == "no", f"{target} is one-shot: restart must be 'no'"


def test_start_up_order() -> None:
    migrate = SERVICES["migrate"]["depends_on"]
    assert migrate["postgres"]["condition"] == "service_healthy"
    for name in ("api", "joiner"):
        depends = SERVICES[name]["depends_on"]
        assert depends["kafka"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_brokers_and_database_images_and_health() -> None:
    kafka, postgres = SERVICES["kafka"], SERVICES["postgres"]
    assert kafka["image"].split(":")[0] == "apache/kafka"
    env = environment(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@")
    listeners = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(advertised) <= listeners
    # the app reaches the broker through an advertised listener on the compose network
    assert labelloop_env(SERVICES["api"])["LABELLOOP_KAFKA_BOOTSTRAP_SERVERS"] in advertised.values()
    assert "kafka-topics.sh" in " ".join(kafka["healthcheck"]["test"])
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in postgres["healthcheck"]["test"]


def test_two_joiners() -> None:
    assert SERVICES["joiner"]["deploy"]["replicas"] == 2
    assert "ports" not in SERVICES["joiner"], "replicas cannot share a host port"
    assert "container_name" not in SERVICES["joiner"]


def test_dockerfile_runs_a_real_command(
    clean_labelloop_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = image_command()
    assert argv[:1] == ["labelloop"], f"the image runs {argv}"
    assert_real_subcommand(argv[1:], capsys)
    ran, settings = run_cli_dispatch(clean_labelloop_env, argv[1:], dockerfile_env())
    assert ran == "serve"
    assert settings.host == "0.0.0.0"


def test_dockerfile_basics() -> None:
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [rest for k, rest in instructions if k == "USER"]
    assert users, "the image must switch to a user"
    assert users[-1] not in ("root", "0"), "the image must not run as root"
    assert ("EXPOSE", "8000") in instructions
    assert "HEALTHCHECK" in keywords
    healthcheck = next(rest for k, rest in instructions if k == "HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "urllib" in healthcheck
    assert any(k == "RUN" and "pip install ." in rest for k, rest in instructions)
    fields = set(Settings.model_fields)
    for key in dockerfile_env():
        if key.startswith(PREFIX):
            assert key.removeprefix(PREFIX).lower() in fields, f"Dockerfile: {key} is not a setting"


def test_wheel_ships_the_migrations(tmp_path: Path) -> None:
    """`pip install .` (the image does exactly that) must carry the migrations: `labelloop migrate`
    and `labelloop serve` on SQLite run them from the installed package."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("labelloop-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if n.startswith("migrations/")}
    expected = {f"migrations/{p.relative_to(ROOT / 'migrations')}" for p in (ROOT / "migrations").rglob("*.py")}
    assert expected <= shipped
    assert "migrations/script.py.mako" in shipped
    assert "service/policies/default.yaml" in names
    # The dashboard's page, script and stylesheet (package data, no build step).
    assert {f"service/api/static/dashboard.{ext}" for ext in ("html", "js", "css")} <= names
    runs = " ".join(rest for k, rest in dockerfile_instructions() if k == "RUN")
    assert "pip install ." in runs
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("service", "consumers", "migrations", "pyproject.toml", "README.md"):
        assert needed not in ignored


def test_prometheus_scrapes_the_api_and_the_joiners() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api_port = labelloop_env(SERVICES["api"]).get("LABELLOOP_PORT", "8000")
    static = [t for job in jobs.values() for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert f"api:{api_port}" in static
    assert f"127.0.0.1:{api_port}:{api_port}" in SERVICES["api"]["ports"]
    joiner_port = int(labelloop_env(SERVICES["joiner"])["LABELLOOP_CONSUMER_METRICS_PORT"])
    dns = [d for job in jobs.values() for d in job.get("dns_sd_configs", [])]
    assert any("joiner" in d["names"] and d["port"] == joiner_port for d in dns)
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") == "/metrics"
    prometheus = SERVICES["prometheus"]
    assert prometheus["image"].split(":")[0] == "prom/prometheus"
    assert any(v.startswith("./deploy/prometheus.yml:/etc/prometheus/prometheus.yml") for v in prometheus["volumes"])


def test_published_ports_listen_on_loopback_and_kafka_is_not_published() -> None:
    published = {name: s["ports"] for name, s in SERVICES.items() if s.get("ports")}
    assert "kafka" not in published
    assert published, "the API is published"
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_every_labelloop_process_requires_keys(clean_labelloop_env: pytest.MonkeyPatch) -> None:
    for name in labelloop_services():
        assert service_settings(name, clean_labelloop_env).auth == "required", name


def test_prometheus_scrapes_the_api_with_the_key_the_compose_file_provisions() -> None:
    """scrape-key writes an ops key into a volume; Prometheus reads it from the same volume."""
    command = command_of(SERVICES["scrape-key"])
    assert command[command.index("--scope") + 1] == "ops"
    written = Path(command[command.index("--output") + 1])
    volume_of = {
        service: {v.split(":")[0]: v.split(":")[1] for v in SERVICES[service]["volumes"]}
        for service in ("scrape-key", "prometheus")
    }
    [(volume, mounted)] = [(v, m) for v, m in volume_of["scrape-key"].items() if written.is_relative_to(m)]
    assert volume in COMPOSE_DATA["volumes"]
    seen_by_prometheus = Path(volume_of["prometheus"][volume]) / written.relative_to(mounted)
    config = yaml.safe_load(PROMETHEUS.read_text())
    [api_job] = [job for job in config["scrape_configs"] if job["job_name"] == "labelloop-api"]
    assert api_job["authorization"] == {"type": "Bearer", "credentials_file": str(seen_by_prometheus)}
    assert SERVICES["prometheus"]["depends_on"]["scrape-key"]["condition"] == "service_completed_successfully"
    assert "install -d -o labelloop -g 65534" in DOCKERFILE.read_text()  # the volume's directory
