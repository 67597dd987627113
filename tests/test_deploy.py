"""deploy/: the images, the compose files and the systemd unit agree with the advisor's own
settings (advisor/config.py, `advisor serve`'s options) and with the vLLM the Makefile pins.
What needs a container engine (building, running) is not checked here: no Docker daemon
answers on these machines (test_docker_is_used_where_a_daemon_answers says so)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from advisor import manifests
from advisor.cli import serve
from advisor.config import hf_cache_dir, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = {"gpu": DEPLOY / "compose.yaml", "cpu": DEPLOY / "compose.cpu.yaml"}
UNIT = DEPLOY / "slm-advisor.service"


def pinned_vllm() -> str:
    found = re.search(r"^VLLM_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert found
    return found[1]


def compose(kind: str) -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE[kind].read_text())
    assert isinstance(data, dict)
    return data


def dockerfile(name: str) -> dict[str, list[str]]:
    """Each instruction's arguments, lines joined, of the final stage."""
    text = re.sub(r"\\\n", " ", (DEPLOY / name).read_text())
    stages: list[dict[str, list[str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            stages.append({})
        stages[-1].setdefault(word.upper(), []).append(rest.strip())
    return stages[-1]


def env_of(instructions: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in instructions:
        env.update(dict(pair.split("=", 1) for pair in line.split()))
    return env


def serve_default(option: str) -> Any:
    return next(p.default for p in serve.params if p.name == option)


# ----------------------------------------------------------------- compose


@pytest.mark.parametrize("kind", COMPOSE)
def test_compose_publishes_the_service_port_on_loopback_only(kind: str) -> None:
    advisor = compose(kind)["services"]["advisor"]
    (port,) = advisor["ports"]
    host, host_port, container_port = port.split(":")
    assert host == "127.0.0.1" and int(container_port) == serve_default("port") == 8000
    for name in ("Dockerfile" if kind == "gpu" else "Dockerfile.cpu",):
        cmd = dockerfile(name)["CMD"][0]
        assert f'"--port", "{container_port}"' in cmd and '"--host", "0.0.0.0"' in cmd


@pytest.mark.parametrize("kind", COMPOSE)
def test_compose_volumes_hold_what_the_advisor_settings_point_at(kind: str) -> None:
    data = compose(kind)
    advisor = data["services"]["advisor"]
    env = {k: str(v) for k, v in advisor["environment"].items()}
    settings = load_settings(env)
    mounts = dict(v.split(":")[::-1] for v in advisor["volumes"])  # target -> volume
    assert str(settings.home) in mounts, "ADVISOR_HOME is on a volume"
    cache = settings.hf_cache
    assert any(cache.is_relative_to(target) for target in mounts), "the model cache is on a volume"
    assert set(mounts.values()) <= set(data["volumes"])
    # the image says the same as compose
    image_env = env_of(dockerfile("Dockerfile" if kind == "gpu" else "Dockerfile.cpu")["ENV"])
    assert image_env["ADVISOR_HOME"] == env["ADVISOR_HOME"] and image_env["HF_HOME"] == env["HF_HOME"]
    if kind == "cpu":
        assert env["ADVISOR_VLLM_PYTHON"] == image_env["ADVISOR_VLLM_PYTHON"] == "/opt/advisor/bin/python"


def test_the_gpu_compose_runs_the_pinned_vllm_image_with_the_gpu_passed_through() -> None:
    data = compose("gpu")
    vllm = data["services"]["vllm"]
    assert vllm["image"] == f"vllm/vllm-openai:v{pinned_vllm()}"
    pin = pinned_vllm()
    assert (pin, f"v{pin}") == (manifests.VLLM_VERSION, manifests.VLLM_TAG)
    (device,) = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert all(p.startswith("127.0.0.1:") for p in vllm["ports"])
    assert "--api-key" in vllm["command"], "the engine's /v1 is guarded"
    # the advisor and the engine share one Hugging Face cache: the same volume, the hub inside
    advisor = data["services"]["advisor"]
    adv_target = next(v.split(":")[1] for v in advisor["volumes"] if v.startswith("hf-cache:"))
    vllm_target = next(v.split(":")[1] for v in vllm["volumes"] if v.startswith("hf-cache:"))
    adv_hub = hf_cache_dir({k: str(v) for k, v in advisor["environment"].items()})
    vllm_hub = hf_cache_dir({"HOME": "/root"} | {k: str(v) for k, v in vllm.get("environment", {}).items()})
    assert adv_hub.relative_to(adv_target) == vllm_hub.relative_to(vllm_target)


def test_the_cpu_compose_reserves_no_gpu() -> None:
    assert "deploy" not in compose("cpu")["services"]["advisor"]


# ----------------------------------------------------------------- the images


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_the_images_run_as_a_user_with_the_data_folder_on_a_volume(name: str) -> None:
    final = dockerfile(name)
    assert final["USER"] == ["advisor"]
    assert "useradd --system --uid 10001" in " ".join(final["RUN"])
    assert '"/data"' in final["VOLUME"][0]
    assert final["FROM"][0].startswith("python:3.11-slim")
    assert "COPY" in final and all("--from=build" in c for c in final["COPY"])  # nothing else comes in


def test_the_cpu_image_pins_the_engine_the_makefile_pins() -> None:
    text = (DEPLOY / "Dockerfile.cpu").read_text()
    assert f"ARG VLLM_VERSION={pinned_vllm()}" in text
    assert "pip uninstall -y torchvision torchaudio torchcodec" in text


def test_each_build_context_leaves_the_venv_and_git_out() -> None:
    for name in ("Dockerfile", "Dockerfile.cpu"):
        ignored = (DEPLOY / f"{name}.dockerignore").read_text().split()
        assert {".git", ".venv"} <= set(ignored)


def test_docker_is_used_where_a_daemon_answers() -> None:
    if not shutil.which("docker"):
        pytest.skip("no docker client here")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        pytest.skip("no Docker daemon answers here (docker info: "
                    f"{(info.stderr.strip().splitlines() or ['?'])[-1]})")
    for kind in COMPOSE:  # pragma: no cover - only where a daemon runs
        subprocess.run(["docker", "compose", "-f", str(COMPOSE[kind]), "config", "--quiet"],
                       check=True, env={"VLLM_API_KEY": "x", "PATH": "/usr/bin:/usr/local/bin"})


# ----------------------------------------------------------------- systemd


def unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = ""
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            sections[current].setdefault(key, []).append(value)
    return sections


def test_the_unit_serves_on_loopback_with_its_data_in_the_state_directory() -> None:
    u = unit()["Service"]
    (start,) = u["ExecStart"]
    assert start.split()[1:] == ["serve", "--host", "127.0.0.1", "--port", str(serve_default("port"))]
    env = dict(e.split("=", 1) for e in u["Environment"])
    assert load_settings(env).home == Path("/var/lib") / u["StateDirectory"][0]
    assert u["ReadWritePaths"] == [env["ADVISOR_HOME"]]
    assert u["User"] != ["root"] and u["NoNewPrivileges"] == ["yes"]


def _verify(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "slm-advisor.service"
    path.write_text(text)
    return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed here")
    # verify checks that ExecStart's program exists: the advisor of this environment stands in
    # for /opt/slm-advisor/.venv/bin/advisor, the path a host installs it at
    here = Path(shutil.which("advisor") or Path(__import__("sys").executable).parent / "advisor")
    if not here.exists():
        pytest.skip("no advisor console script in this environment to stand in for ExecStart")
    text = UNIT.read_text().replace("/opt/slm-advisor/.venv/bin/advisor", str(here))
    ok = _verify(text, tmp_path)
    assert ok.returncode == 0, ok.stderr
    # and the verifier can fail: a relative ExecStart is an error it reports
    bad = _verify(text.replace(f"ExecStart={here}", "ExecStart=advisor-nowhere/advisor"), tmp_path)
    assert bad.returncode != 0 and "ExecStart" not in bad.stdout and "advisor-nowhere" in bad.stderr
