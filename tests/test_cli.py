"""The `freeavatar` command: its tree (each group once, each command at one path), avatars
subcommands against a real server, `stream --json` and its live view, and `serve` itself."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from typer.testing import CliRunner

from freeavatar import RigControl, RigSpec
from freeavatar.cli import app, build_app
from freeavatar.stream import AvatarControls, RigFrame
from freeavatar_server.tools.bench import free_port
from freeavatar_server.tools.stream_file import StreamView
from tests.conftest import BUILTIN, ServerThread, loopback_config

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


# The command tree


def walk(command: typer.core.TyperGroup, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object, bool]]:
    """(path, click command, hidden along the way) for every command under `command`."""
    for name, sub in command.commands.items():
        hidden = bool(getattr(sub, "hidden", False))
        yield (*path, name), sub, hidden
        for subpath, leaf, leaf_hidden in walk(sub, (*path, name)) if hasattr(sub, "commands") else ():
            yield subpath, leaf, hidden or leaf_hidden


def visible_tree(tree: typer.Typer) -> dict[tuple[str, ...], object]:
    return {path: command for path, command, hidden in walk(typer.main.get_command(tree)) if not hidden}


EXPECTED_TREE = {
    "serve": None, "demo": None, "stream": None,
    "avatars": {"list", "register", "show", "delete", "render-samples", "suggest-keyframes"},
    "sessions": {"create", "list", "close"},
    "outputs": {"add", "list", "remove"},
    "jobs": {"list", "show", "watch", "cancel"},
    "train": {"renderer", "animator", "encoder", "face"},
    "eval": {"encoder", "renderer", "animator", "realface"},
    "bench": {"stream", "cluster"},
    "synth": {"video", "sheet", "triplets"},
    "encoder": {"export", "ship", "curves"},
}  # fmt: skip


def test_command_tree_has_each_group_once_and_each_command_at_one_path() -> None:
    tree = visible_tree(app)
    top = [path[0] for path in tree if len(path) == 1]
    assert top == list(EXPECTED_TREE)  # each group once, in the help's order
    for group, commands in EXPECTED_TREE.items():
        assert commands is None or {p[1] for p in tree if len(p) == 2 and p[0] == group} == commands, group
    leaves = [inspect.unwrap(c.callback) for c in tree.values() if not hasattr(c, "commands")]
    twice = {f.__name__ for f in leaves if leaves.count(f) > 1}
    assert not twice, f"commands at more than one visible path: {twice}"
    # building again mounts nothing twice: the tree is assembled in one place, from scratch
    assert list(visible_tree(build_app())) == list(tree) == list(visible_tree(build_app()))


def test_hidden_aliases_still_work_and_stay_hidden() -> None:
    for old, new in ((("encoder", "train"), ("train", "encoder")), (("encoder", "eval"), ("eval", "encoder"))):
        code, out = invoke(*old, "--help")
        assert code == 0 and "--help" in out, out
        code, new_help = invoke(*new, "--help")
        assert code == 0 and new_help.split("Usage:")[1].split("\n", 1)[1] == out.split("Usage:")[1].split("\n", 1)[1]
    code, out = invoke("encoder", "--help")
    assert code == 0 and "export" in out and " train " not in out and " eval " not in out


def test_connection_and_json_options_are_one_definition() -> None:
    """Every --server, --api-key, --tls-ca and --json in the tree is the same option."""
    seen: dict[str, set[tuple]] = {}
    for path, command, _ in walk(typer.main.get_command(app)):
        for param in getattr(command, "params", []):
            if param.name in ("server", "api_key", "tls_ca", "as_json"):
                seen.setdefault(param.name, set()).add((tuple(param.opts), param.envvar, param.help, param.default))
        assert not getattr(command, "context_settings", {}).get("allow_extra_args"), path  # no raw args
    assert {name: len(kinds) for name, kinds in seen.items()} == {"server": 1, "api_key": 1, "tls_ca": 1, "as_json": 1}
    envvars = {name: next(iter(kinds))[1] for name, kinds in seen.items()}
    assert envvars == {"server": "FREEAVATAR_SERVER", "api_key": "FREEAVATAR_API_KEY", "tls_ca": "FREEAVATAR_TLS_CA", "as_json": None}


def test_train_face_is_a_typer_command() -> None:
    code, out = invoke("train", "face", "--help")
    assert code == 0 and "generate" in out and "--n-full" in out and "--ship" in out
    code, out = invoke("train", "face", "polish")
    assert code == 2 and "polish" in out


def test_help_has_no_broken_lines() -> None:
    """Help text paragraphs are one line each in the source: rich wraps them, so a hard newline
    inside a sentence would break it mid-line at any terminal width."""
    for path, command, _ in walk(typer.main.get_command(app)):
        for paragraph in inspect.cleandoc(command.help or "").split("\n\n"):
            assert "\n" not in paragraph.strip(), (path, paragraph)


# `freeavatar stream`


def rig_frame(values: list[float], controls: AvatarControls | None) -> RigFrame:
    return RigFrame("a1", "", "", 1, 0, 0, np.array(values, np.float32), True, 0.9, (1.0, 2.0, 3.0), controls)


def test_stream_view_shows_the_most_active_controls() -> None:
    spec = RigSpec("bot", (RigControl("jaw"), RigControl("brow"), RigControl("yaw", -1, 1, 0), RigControl("eye")))
    view = StreamView(30.0, {"a1": spec})
    record = view.received_frame(rig_frame([0.1, 0.0, -0.8, 0.5], None))
    assert record["avatar"] == "bot" and record["controls"] == {"jaw": 0.1, "brow": 0.0, "yaw": -0.8, "eye": 0.5}
    assert [name for name, _, _ in view.most_active(view.latest["a1"], 3)] == ["eye", "yaw", "jaw"]
    console = Console(width=80, record=True)
    console.print(view)
    text = console.export_text()
    assert "rig frames bot" in text and "+0.50" in text and "-0.80" in text
    assert text.index("eye") < text.index("yaw") < text.index("jaw") < text.index("brow")  # most active first


def test_stream_json_prints_one_line_per_rig_frame(untrained_models, tmp_path: Path) -> None:
    from freeavatar_server.media import VideoWriter
    from freeavatar_server.synth.avatars import BUILTIN_AVATARS
    from freeavatar_server.tools.demo import DemoConfig, render_clip

    encoder, animator = untrained_models
    config = loopback_config(tmp_path / "data", builtin_avatars=BUILTIN, builtin_animator=animator, encoder_path=encoder)
    server = ServerThread(config)
    try:
        video = tmp_path / "clip.mp4"
        frames = render_clip(DemoConfig(seconds=0.5, fps=24, seed=5), lambda stage, done: None)
        with VideoWriter(video, 24, frames.shape[2], frames.shape[1]) as writer:
            for frame in frames:
                writer.write(frame)
        args = ["stream", "--video", str(video), "--avatar", "robot", "--avatar", "cat", "--json"]
        result = runner.invoke(app, [*args, "--server", server.address])
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert records and {r["avatar"] for r in records} == {"robot", "cat"}
        for name in ("robot", "cat"):
            ours = [r for r in records if r["avatar"] == name]
            assert 1 <= len(ours) <= len(frames)
            assert [r["sequence"] for r in ours] == sorted(r["sequence"] for r in ours)
            assert list(ours[-1]["controls"]) == [c.name for c in BUILTIN_AVATARS[name].spec.controls]
        assert {"avatar_id", "capture_time_us", "latency_ms", "face_present", "head_pose"} <= set(records[0])

        # into a session with an output: the "sending" line goes to stderr, stdout stays JSON
        result = runner.invoke(app, [*args[:3], "--avatar", "robot", "--json", "--livelink", "127.0.0.1:9", "--server", server.address])
        assert result.exit_code == 0, result.output
        assert "sending Live Link Face" in result.stderr
        assert all(json.loads(line)["avatar"] == "robot" for line in result.stdout.splitlines())
    finally:
        server.stop()
