"""The `freeavatar` command: avatars subcommands against a real server, and `serve` itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from freeavatar import RigControl, RigSpec
from freeavatar.cli import app
from freeavatar_server.app.cli import add_server_commands
from freeavatar_server.tools.bench import free_port
from tests.conftest import ServerThread

add_server_commands(app)
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_avatars_round_trip(server_thread: ServerThread, tmp_path: Path) -> None:
    server = ("--server", server_thread.address)
    spec = tmp_path / "robot.json"
    spec.write_text(RigSpec("robot", (RigControl("jaw"), RigControl("antenna"))).to_json())

    code, out = invoke("avatars", "register", str(spec), *server, "--json")
    assert code == 0, out
    robot = json.loads(out)
    assert robot["spec"]["name"] == "robot"
    code, out = invoke("avatars", "register", "--arkit", "head", *server)
    assert code == 0 and "registered head as" in out

    code, out = invoke("avatars", "list", *server, "--json")
    assert [a["spec"]["name"] for a in json.loads(out)] == ["robot", "head"]
    code, out = invoke("avatars", "list", *server)
    assert code == 0 and "robot" in out and "52" in out
    code, out = invoke("avatars", "show", robot["id"], *server)
    assert code == 0 and "antenna" in out

    code, out = invoke("avatars", "delete", robot["id"], *server)
    assert code == 0
    code, out = invoke("avatars", "show", robot["id"], *server)
    assert code == 1 and "NOT_FOUND" in out


def test_avatar_errors_are_one_line_messages(server_thread: ServerThread, tmp_path: Path) -> None:
    server = ("--server", server_thread.address)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "controls": [{"name": "a", "min": 1, "max": 0}]}))
    code, out = invoke("avatars", "register", str(bad), *server)
    assert code == 2 and "invalid rig spec: control 'a': min 1 is not below max 0" in out
    code, out = invoke("avatars", "register", *server)
    assert code == 2 and "either a rig spec file or --arkit" in out
    invoke("avatars", "register", "--arkit", "dup", *server)
    code, out = invoke("avatars", "register", "--arkit", "dup", *server)
    assert code == 1 and "ALREADY_EXISTS" in out


def test_unreachable_server_is_named() -> None:
    code, out = invoke("avatars", "list", "--server", f"127.0.0.1:{free_port()}")
    assert code == 1 and "cannot reach a FreeAvatar server" in out


def test_help_lists_the_commands() -> None:
    code, out = invoke("--help")
    assert code == 0
    for command in ("serve", "avatars", "synth"):
        assert command in out


def freeavatar_command() -> list[str]:
    return [sys.executable, "-m", "freeavatar"]


def test_serve_runs_until_sigterm_and_keeps_data(tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    command = [*freeavatar_command(), "serve", "--data-dir", str(tmp_path), "--port", str(port), "--http-port", str(http_port)]
    env = os.environ | {"COLUMNS": "200"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        code, out = invoke("avatars", "register", "--arkit", "kept", "--server", f"127.0.0.1:{port}")
        assert code == 0, out
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=10) as page:  # WebRTC's
            assert page.status == 200
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "loopback only" in output and "stopped" in output and "WebRTC (WHIP, WHEP)" in output
    assert (tmp_path / "freeavatar.sqlite3").exists()


def test_serve_refuses_exposed_host_without_keys(tmp_path: Path) -> None:
    result = subprocess.run(
        [*freeavatar_command(), "serve", "--data-dir", str(tmp_path), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without --api-key-file" in result.stderr


def test_render_samples_train_and_jobs(server_thread: ServerThread) -> None:
    server = ("--server", server_thread.address)
    code, out = invoke("avatars", "render-samples", "robot", "--count", "60", "--size", "32", *server)
    assert code == 0, out
    assert "uploaded 60 samples; robot now has 60" in out

    code, out = invoke("train", "renderer", "robot", "--steps", "20", "--image-size", "16", *server)
    assert code == 0, out
    assert "succeeded: model version 1" in out

    code, out = invoke("jobs", "list", "--avatar", "robot", "--json", *server)
    (job,) = json.loads(out)
    assert job["state"] == "succeeded" and job["kind"] == "renderer_training"
    code, out = invoke("jobs", "cancel", job["id"], *server)
    assert code == 0 and "succeeded" in out
    code, out = invoke("jobs", "watch", "nope", *server)
    assert code == 1 and "NOT_FOUND" in out
    code, out = invoke("train", "renderer", "nobody", *server)
    assert code == 1 and "no avatar with id or name 'nobody'" in out
