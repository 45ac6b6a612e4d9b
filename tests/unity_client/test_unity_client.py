"""The Unity package (unity_client/) outside Unity: its engine-independent C# core compiled by
Debian's mcs and run under mono, against frames from a real server; its Unity-facing scripts
compiled against stand-ins for UnityEngine and gRPC (tests/unity_client/stand_ins)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest

from freeavatar import RigSpec
from freeavatar._proto import rig_pb2, stream_pb2
from freeavatar.arkit import ARKIT_BLENDSHAPES, canonical_arkit_name
from freeavatar.stream import ActorFrame
from tests.conftest import paced

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "unity_client"
HERE = Path(__file__).parent
SUBSCRIBE = "/freeavatar.v1.StreamService/Subscribe"

pytestmark = pytest.mark.skipif(
    not (shutil.which("mcs") and shutil.which("mono")),
    reason="needs Debian's mono-mcs (mcs and mono): apt-get install mono-mcs (.ci/run does)",
)


def mcs(out: Path, sources: list[Path], *references: Path, target: str = "library") -> None:
    """Compile as Unity's C# would be, within what mcs takes (C# 7.2); warnings are errors."""
    command = ["mcs", "-langversion:7.2", f"-target:{target}", "-warnaserror+", f"-out:{out}"]
    command += [f"-r:{r}" for r in references] + [str(s) for s in sources]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def core_tests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CoreTests.exe. The core is compiled on its own first, referencing nothing but the .NET
    base library: it cannot lean on UnityEngine."""
    out = tmp_path_factory.mktemp("csharp")
    mcs(out / "FreeAvatar.Core.dll", sorted((PACKAGE / "Runtime" / "Core").glob("*.cs")))
    tests = [HERE / "CoreTests.cs", HERE / "RelayTransport.cs"]
    mcs(out / "CoreTests.exe", tests, out / "FreeAvatar.Core.dll", target="exe")
    return out / "CoreTests.exe"


def mono(exe: Path, *args: str, stdin: bytes = b"") -> str:
    result = subprocess.run(["mono", str(exe), *args], input=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    return result.stdout.decode()


def test_core_self_tests(core_tests: Path) -> None:
    out = mono(core_tests, "selftest")
    assert re.fullmatch(r"ok \d+ checks, 0 failures\n", out), out


def test_unity_scripts_compile_against_stand_ins(core_tests: Path, tmp_path: Path) -> None:
    core = core_tests.parent / "FreeAvatar.Core.dll"
    stand_ins = HERE / "stand_ins"
    mcs(tmp_path / "UnityEngine.dll", [stand_ins / "UnityEngine.cs"])
    mcs(tmp_path / "Grpc.dll", [stand_ins / "Grpc.cs"])
    scripts = sorted((PACKAGE / "Runtime" / "Unity").glob("*.cs"))
    mcs(
        tmp_path / "FreeAvatar.Unity.dll",
        scripts,
        core,
        tmp_path / "UnityEngine.dll",
        tmp_path / "Grpc.dll",
    )
    samples = sorted((PACKAGE / "Samples~").rglob("*.cs"))
    assert samples
    mcs(
        tmp_path / "Samples.dll",
        samples,
        core,
        tmp_path / "UnityEngine.dll",
        tmp_path / "FreeAvatar.Unity.dll",
    )


# Frames as the server encodes them, decoded by the C# core


def framed(messages: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(m)) + m for m in messages)


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def field(number: int, wire: int, payload: bytes = b"") -> bytes:
    if wire == 2:
        payload = varint(len(payload)) + payload
    return varint(number << 3 | wire) + payload


def python_view(raw: bytes) -> dict:
    """What Python's protobuf reads from `raw`, shaped as CoreTests.exe prints it."""
    message = rig_pb2.RigStreamMessage.FromString(raw)
    if message.HasField("controls"):
        c = message.controls
        return {"controls": {"avatar_id": c.avatar_id, "avatar_name": c.avatar_name,
                             "control_names": list(c.control_names), "arkit_aliases": list(c.arkit_aliases)}}  # fmt: skip
    f = message.frame
    return {"frame": frame_view(f)}


def bits(values) -> list[int]:
    return np.asarray(values, np.float32).view(np.int32).tolist()


def frame_view(f) -> dict:
    pose = f.head_pose
    head = (pose.yaw, pose.pitch, pose.roll) if hasattr(pose, "yaw") else pose
    return {
        "avatar_id": f.avatar_id, "session_id": f.session_id, "actor_id": f.actor_id,
        "sequence": f.sequence, "capture_time_us": f.capture_time_us, "emit_time_us": f.emit_time_us,
        "values": bits(f.values), "face_present": f.face_present, "confidence": bits([f.confidence])[0],
        "head_pose": bits(head),
    }  # fmt: skip


def variants(raw_frame: bytes, raw_controls: bytes) -> list[bytes]:
    """The same content written the other ways a proto3 encoder may write it, and some bytes no
    decoder may accept: what a decoder must get right beyond what our server happens to emit."""
    frame = rig_pb2.RigStreamMessage.FromString(raw_frame).frame
    unknown = (
        field(99, 0, varint(7))
        + field(100, 1, b"\1" * 8)
        + field(101, 2, b"xyz")
        + field(102, 5, b"\2" * 4)
    )
    group = field(103, 3) + field(1, 0, varint(1)) + field(104, 3) + field(104, 4) + field(103, 4)
    inner = frame.SerializeToString()
    without_values = rig_pb2.RigFrame()
    without_values.CopyFrom(frame)
    del without_values.values[:]
    unpacked = without_values.SerializeToString() + b"".join(
        field(7, 5, struct.pack("<f", v)) for v in frame.values
    )
    per_field = [rig_pb2.RigFrame(**{name: getattr(frame, name)}).SerializeToString()
                 for name in ("avatar_id", "session_id", "actor_id", "sequence", "capture_time_us", "emit_time_us", "face_present", "confidence")]  # fmt: skip
    negative = rig_pb2.RigFrame()
    negative.CopyFrom(frame)
    negative.capture_time_us, negative.head_pose.yaw, negative.head_pose.roll = -5, -12.5, 3.25
    return [
        field(2, 2, inner + unknown + group) + unknown,  # unknown fields, groups among them
        field(2, 2, unpacked),  # repeated floats not packed
        field(2, 2, b"".join(reversed(per_field))),  # fields in another order
        field(2, 2, negative.SerializeToString()),  # a 10-byte varint; a head pose
        raw_frame + raw_frame,  # a message field twice: merged (values concatenate)
        raw_controls + raw_frame,  # a oneof set twice: the last wins
        raw_frame[:-1],  # truncated
        field(2, 2, inner)[:3] + b"\xff",  # a length running past the end
        field(2, 2, field(5, 4)),  # an end of group with no start
    ]


async def test_frames_from_the_server_decode_identically(live, clip, core_tests: Path) -> None:
    server, client, ids = live
    session = await client.create_session()
    actor = await client.join_session(
        session.id, [ids["human_arkit"], ids["robot"]], "ada", session.token
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        request = stream_pb2.SubscribeRequest(session_id=session.id, session_token=session.token)
        call = channel.unary_stream(SUBSCRIBE)(request.SerializeToString())  # raw bytes out
        await call.initial_metadata()
        frames = client.animate(
            paced(clip[:10]), session_id=session.id, actor_id=actor.id, token=session.token
        )
        sent = [f async for f in frames]
        raw: list[bytes] = []
        while len(raw) < len(sent) + 2:  # two announcements, then the frames
            raw.append(await asyncio.wait_for(call.read(), 5))
        call.cancel()
    controls = [m for m in raw if rig_pb2.RigStreamMessage.FromString(m).HasField("controls")]
    assert len(controls) == 2
    frame = next(m for m in raw if m not in controls)
    inputs = raw + variants(frame, controls[0])

    decoded = [
        json.loads(line) for line in mono(core_tests, "decode", stdin=framed(inputs)).splitlines()
    ]
    assert len(decoded) == len(inputs)
    for message, ours in zip(inputs, decoded, strict=True):
        try:
            expected = python_view(message)
        except Exception:  # protobuf's DecodeError: C# must refuse it as well
            assert "error" in ours, ours
            continue
        assert ours == expected
    assert sum("error" in d for d in decoded) == 3


def test_arkit_names_are_read_alike_in_python_and_csharp(core_tests: Path) -> None:
    names = [
        "",
        "smile",
        "tail",
        "mouthRollUpper",
        "MouthShrugLower",
        "jawOpen_",
        "İyeBlinkLeft",
        "eye.",
        ":",
    ]
    for shape in ARKIT_BLENDSHAPES:
        pascal = shape[0].upper() + shape[1:]
        snake = re.sub(r"([A-Z])", r"_\1", shape).lower()
        short = re.sub(r"(Left|Right)$", lambda m: "_" + m.group(1)[0], shape)
        names += [
            shape,
            pascal,
            snake,
            short,
            short.replace("_", ""),
            f"blendShape1.{shape}",
            f"ns:{pascal}",
            shape.upper(),
        ]
    out = mono(core_tests, "names", stdin="\n".join(names).encode() + b"\n")
    csharp = [json.loads(line) for line in out.splitlines()]
    assert csharp == [canonical_arkit_name(n) for n in names]
    assert set(csharp) == set(ARKIT_BLENDSHAPES) | {""}


# The whole client: a real server, a relay standing in for HTTP/2, reconnects


class Relay:
    """TCP on loopback to real gRPC Subscribe calls, framed as RelayTransport.cs describes."""

    def __init__(self, grpc_address: str) -> None:
        self._channel = grpc.aio.insecure_channel(grpc_address)
        self.requests: list[stream_pb2.SubscribeRequest] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop(self) -> None:
        """The network fails: every connection is cut without a status."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def close(self) -> None:
        self.drop()
        assert self._server is not None
        self._server.close()
        await self._channel.close()

    @staticmethod
    def _frame(flag: int, payload: bytes) -> bytes:
        return struct.pack(">BI", flag, len(payload)) + payload

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        call = None
        try:
            flag, length = struct.unpack(">BI", await reader.readexactly(5))
            request = await reader.readexactly(length)
            self.requests.append(stream_pb2.SubscribeRequest.FromString(request))
            call = self._channel.unary_stream(SUBSCRIBE)(request)
            watch = asyncio.create_task(reader.read())  # EOF: the client hung up
            watch.add_done_callback(lambda _: call.cancel())
            await call.initial_metadata()
            if not (
                call.done() and await call.code() != grpc.StatusCode.OK
            ):  # not refused outright
                writer.write(self._frame(0x40, b""))
            try:
                async for message in call:
                    writer.write(self._frame(0, message))
                    await writer.drain()
            except grpc.aio.AioRpcError:
                pass
            code, details = await call.code(), await call.details()
            trailers = f"grpc-status: {code.value[0]}\r\ngrpc-message: {details}\r\n"
            writer.write(self._frame(0x80, trailers.encode()))
            await writer.drain()
            writer.close()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            if call is not None:
                call.cancel()
        finally:
            self._writers.discard(writer)


class CSharpClient:
    """CoreTests.exe in client mode: its JSON events as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict] = []

    @classmethod
    async def start(cls, exe: Path, port: int, *subscription: str) -> CSharpClient:
        process = await asyncio.create_subprocess_exec(
            "mono", str(exe), "client", str(port), *subscription,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(process)

    async def until(self, predicate, timeout: float = 10.0) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                line = await self.process.stdout.readline()
                assert line, f"the client exited; it said {self.events}"
                self.events.append(json.loads(line))
                if predicate(self.events[-1]):
                    return self.events[-1]

    async def stop(self) -> dict:
        self.process.stdin.write(b"stop\n")
        await self.process.stdin.drain()
        summary = await self.until(lambda e: "summary" in e)
        assert await asyncio.wait_for(self.process.wait(), 10) == 0
        return summary["summary"]

    def states(self) -> list[str]:
        return [e["state"] for e in self.events if "state" in e]


async def test_the_whole_client_against_a_real_server(live, clip, core_tests: Path) -> None:
    server, client, ids = live
    session = await client.create_session()
    actor = await client.join_session(
        session.id, [ids["robot"], ids["cartoon"]], "ada", session.token
    )
    relay = await Relay(f"127.0.0.1:{server.port}").start()
    engine = await CSharpClient.start(
        core_tests, relay.port, session.id, session.token, ids["robot"]
    )
    streaming = lambda e: e.get("state") == "Streaming"  # noqa: E731

    half = len(clip) // 2

    async def camera():
        for index, frame in enumerate(clip):
            if index == half:  # the network fails mid-session...
                await engine.until(lambda e: "taken" in e and e["taken"]["sequence"] >= half - 2)
                relay.drop()
                await engine.until(lambda e: e.get("state") == "Waiting")
                await engine.until(streaming)  # ...and the client is back by itself
            yield ActorFrame(frame)
            await asyncio.sleep(1 / 30)

    try:
        await engine.until(streaming)
        sent = [f async for f in client.animate(camera(), session_id=session.id, actor_id=actor.id)]
        last = max(f.sequence for f in sent if f.avatar_id == ids["robot"])
        await engine.until(lambda e: "taken" in e and e["taken"]["sequence"] == last)
        summary = await engine.stop()
    finally:
        await relay.close()

    assert engine.states()[:4] == ["Connecting", "Streaming", "Waiting", "Connecting"]
    assert engine.states()[-1] == "Stopped" and summary["accepted"] == 2
    expected = request = relay.requests[0]  # subscribed again with the very same request
    assert relay.requests == [request, request]
    assert (expected.session_id, expected.session_token, list(expected.avatar_ids)) == (
        session.id,
        session.token,
        [ids["robot"]],
    )
    taken = [e for e in engine.events if "taken" in e]
    by_sequence = {f.sequence: f for f in sent if f.avatar_id == ids["robot"]}
    assert {e["avatar_name"] for e in taken} == {"robot"}  # the server kept to the avatar asked for
    assert len({e["taken"]["sequence"] for e in taken}) == len(taken)  # never the same frame twice
    for event in taken:
        assert event["taken"] == frame_view(by_sequence[event["taken"]["sequence"]])
    before = sum(1 for e in taken if e["taken"]["sequence"] <= half)
    assert before >= half // 2 and len(taken) - before >= half // 2  # both sides of the reconnect
    assert summary["received"] >= len(taken)
    assert summary["samples"] > len(taken)  # and it played them out between frames


async def test_a_refused_subscription_fails_without_retrying(
    client, server, core_tests: Path
) -> None:
    await client.register_avatar(RigSpec.arkit52("head"))
    relay = await Relay(f"127.0.0.1:{server.port}").start()
    engine = await CSharpClient.start(core_tests, relay.port, "no-such-session", "")
    try:
        failed = await engine.until(lambda e: e.get("state") == "Failed")
        await asyncio.sleep(0.3)  # time for retries, were there any
        summary = await engine.stop()
    finally:
        await relay.close()
    assert failed["error"] == "NOT_FOUND: no session with id 'no-such-session'"
    assert len(relay.requests) == 1 and summary["accepted"] == 0


# The package as Unity reads it


def test_package_layout() -> None:
    manifest = json.loads((PACKAGE / "package.json").read_text())
    assert re.fullmatch(r"com\.[a-z0-9-]+\.[a-z0-9.-]+", manifest["name"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"]) and re.fullmatch(
        r"\d{4}\.\d", manifest["unity"]
    )
    for sample in manifest["samples"]:
        assert (PACKAGE / sample["path"]).is_dir()
    core = json.loads((PACKAGE / "Runtime" / "Core" / "FreeAvatar.Core.asmdef").read_text())
    unity = json.loads((PACKAGE / "Runtime" / "Unity" / "FreeAvatar.Unity.asmdef").read_text())
    assert core["noEngineReferences"] is True and core["references"] == []
    assert unity["references"][0] == core["name"]
    # Unity ignores files without a .meta in a package installed from git (it cannot write
    # there); folders ending in ~ are not imported at all.
    assets = [
        p
        for p in PACKAGE.rglob("*")
        if not any(part.endswith("~") for part in p.relative_to(PACKAGE).parts)
    ]
    metas = {p for p in assets if p.suffix == ".meta"}
    for path in set(assets) - metas:
        assert path.with_name(path.name + ".meta") in metas, f"{path} has no .meta"
    for meta in metas:
        assert meta.with_suffix("") in assets, f"{meta} belongs to nothing"
    guids = [re.search(r"^guid: ([0-9a-f]{32})$", m.read_text(), re.M).group(1) for m in metas]
    assert len(set(guids)) == len(guids)
