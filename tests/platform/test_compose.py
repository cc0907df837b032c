"""The production-shaped deployment: docker-compose.yml is valid Compose, names real commands and
services, and its reverse proxy sends every route of every service to that service."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from tessera.cli import app as cli_app
from tessera.platform import SERVICES, create_service_app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
NGINX = (ROOT / "deploy" / "nginx.conf").read_text()
SCHEMA_CACHE = ROOT / ".cache" / "compose_spec.json"
ENV = {"TESSERA_JWT_SECRET": "x" * 32, "TESSERA_ENCRYPTION_KEYS": "[]"}


def _compose_plugin() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


def _compose_spec_schema() -> dict:
    """The Compose Specification's JSON schema, as shipped inside the docker-compose wheel on PyPI."""
    if not SCHEMA_CACHE.exists():
        SCHEMA_CACHE.parent.mkdir(exist_ok=True)
        download = SCHEMA_CACHE.parent / "wheels"
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "docker-compose==1.29.2", "-d", str(download)],
            check=True,
        )
        wheel = next(download.glob("docker_compose-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            SCHEMA_CACHE.write_bytes(archive.read("compose/config/compose_spec.json"))
    return json.loads(SCHEMA_CACHE.read_text())


def test_compose_file_is_valid():
    if _compose_plugin():
        result = subprocess.run(
            ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
            capture_output=True,
            text=True,
            env={**ENV, "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stderr
    schema = _compose_spec_schema()
    jsonschema.validate(COMPOSE, schema)


def test_compose_rejects_a_typo_so_the_schema_check_is_real():
    redis = {**COMPOSE["services"]["redis"], "helthcheck": {}}
    broken = {**COMPOSE, "services": {**COMPOSE["services"], "redis": redis}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _compose_spec_schema())


def test_compose_runs_every_service_and_the_workers_from_real_commands():
    services = COMPOSE["services"]
    assert {"postgres", "redis", "migrate", "worker", "beat", "gateway", "console", *SERVICES} <= set(services)
    commands = {c.name or c.callback.__name__ for c in cli_app.registered_commands}
    for name, spec in services.items():
        command = spec.get("command")
        if command and command[0] == "tessera":
            assert command[1] in commands, f"{name} runs unknown command {command[1]}"
            if command[1] == "serve":
                assert command[2] in (*SERVICES, "all"), f"{name} serves unknown service {command[2]}"
    served = {spec["command"][2] for spec in services.values() if spec.get("command", [""])[:2] == ["tessera", "serve"]}
    assert served == {*SERVICES, "all"}
    assert services["console"]["command"][2] == "all", "the console calls every service's API in-process"
    for name in SERVICES:
        assert services[name]["healthcheck"]["test"], f"{name} has no health check"


def _proxy_routes() -> list[tuple[re.Pattern, str]]:
    routes = []
    for regex, upstream in re.findall(r"location ~ (\S+)\s*\{\s*proxy_pass http://(\w+);", NGINX):
        routes.append((re.compile(regex), upstream))
    return routes


@pytest.mark.parametrize("service", SERVICES)
def test_reverse_proxy_routes_every_path_of_a_service_to_it(service, settings):
    routes = _proxy_routes()
    paths = [p for p in create_service_app(service, settings).openapi()["paths"] if p not in ("/healthz", "/metrics")]
    for path in paths:
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        upstream = next((up for regex, up in routes if regex.search(concrete)), None)
        assert upstream == service, f"{path} of {service} is routed to {upstream}"


def test_reverse_proxy_routes_the_console_to_the_all_in_one_app():
    routes = _proxy_routes()
    for path in ("/console/", "/console/deployments/x", "/console/static/console.css"):
        assert next((up for regex, up in routes if regex.search(path)), None) == "console", path


def test_reverse_proxy_serves_the_api_docs_of_every_service(settings):
    """/docs, /redoc and their assets go to the all-in-one app, whose one document lists what each service
    serves behind this proxy."""
    routes = _proxy_routes()
    for path in ("/docs", "/docs/oauth2-redirect", "/redoc", "/docs-assets/swagger-ui.css", "/openapi.json"):
        assert next((up for regex, up in routes if regex.search(path)), None) == "console", path
    documented = set(create_service_app("all", settings).openapi()["paths"])
    for service in SERVICES:
        assert set(create_service_app(service, settings).openapi()["paths"]) <= documented, service
