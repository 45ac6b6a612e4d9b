"""Engine outputs against real components: a real server streaming a synthetic actor, real UDP
sockets on 127.0.0.1, an independent Live Link Face decoder (pylivelinkface) and a python-osc
server standing in for a VMC app."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
from pylivelinkface import FaceBlendShape, PyLiveLinkFace
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_packet import OscPacket
from pythonosc.osc_server import AsyncIOOSCUDPServer
from scipy.spatial.transform import Rotation

from freeavatar import (
    AsyncClient,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutputProtocol,
    RigControl,
    RigSpec,
    VmcNames,
)
from freeavatar._proto import rig_pb2, stream_pb2, stream_pb2_grpc
from freeavatar.arkit import ARKIT_BLENDSHAPES, canonical_arkit_name, perfect_sync_name
from freeavatar.errors import ResourceExhausted
from freeavatar.outputs import parse_target
from freeavatar.stream import RigFrame
from freeavatar_server.live.pipeline import PipelineStats
from freeavatar_server.live.sessions import Binding, SessionRegistry
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.transport.engines import livelink, manager, vmc
from tests.conftest import paced

LIVE_LINK, VMC = OutputProtocol.LIVE_LINK_FACE, OutputProtocol.VMC
DAY_US = 86_400 * 1_000_000


class Datagrams(asyncio.DatagramProtocol):
    """A UDP port on loopback that keeps what arrives, with arrival times."""

    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((time.monotonic(), data))


async def udp_receiver() -> tuple[asyncio.DatagramTransport, Datagrams, int]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Datagrams, local_addr=("127.0.0.1", 0)
    )
    return transport, protocol, transport.get_extra_info("sockname")[1]


def dead_port() -> int:
    """A loopback UDP port nothing listens on: the kernel answers with ICMP port unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class VmcApp:
    """A python-osc server on loopback, as a VMC receiver (VSeeFace, Warudo) would be: every
    message in arrival order, grouped into frames (from /VMC/Ext/T to /VMC/Ext/OK)."""

    messages: list[tuple[str, tuple]] = field(default_factory=list)
    transport: asyncio.BaseTransport | None = None
    port: int = 0

    async def start(self) -> VmcApp:
        dispatcher = Dispatcher()
        dispatcher.set_default_handler(lambda address, *args: self.messages.append((address, args)))
        server = AsyncIOOSCUDPServer(("127.0.0.1", 0), dispatcher, asyncio.get_running_loop())
        self.transport, _ = await server.create_serve_endpoint()
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def frames(self) -> list[list[tuple[str, tuple]]]:
        frames: list[list[tuple[str, tuple]]] = []
        for address, args in self.messages:
            if address == "/VMC/Ext/T":
                frames.append([])
            frames[-1].append((address, args))
        return frames

    def close(self) -> None:
        assert self.transport is not None
        self.transport.close()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def joined(client: AsyncClient, avatar_ids: list[str]):
    session = await client.create_session("engines")
    actor = await client.join_session(session.id, avatar_ids, "ada", session.token)
    return session, actor


async def perform(client: AsyncClient, session, actor, clip: list[bytes]) -> list[RigFrame]:
    """Stream the clip at 30 fps as the actor; the rig frames the animate call returned."""
    stream = client.animate(
        paced(clip), session_id=session.id, actor_id=actor.id, token=session.token
    )
    return [frame async for frame in stream]


# Live Link Face


def decode_live_link(packet: bytes) -> PyLiveLinkFace:
    found, face = PyLiveLinkFace.decode(packet)
    assert found
    return face


def arkit_values(frame: RigFrame) -> np.ndarray:
    """The frame's 52 ARKit values in pylivelinkface's order, from the stream's own aliases."""
    by_alias = dict(zip(frame.controls.arkit_aliases, frame.values.tolist(), strict=True))
    names = [shape.name[0].lower() + shape.name[1:] for shape in FaceBlendShape][:52]
    return np.array([by_alias.get(name, 0.0) for name in names], np.float32)


async def test_live_link_face_packets_decode_as_the_rig_frames(live, clip) -> None:
    _, client, ids = live
    session, actor = await joined(client, [ids["human_arkit"]])
    transport, unreal, port = await udp_receiver()
    output = await client.add_output(
        session.id, ids["human_arkit"], LIVE_LINK, f"127.0.0.1:{port}", token=session.token
    )
    assert (output.port, output.subject_name) == (port, "human_arkit")
    frames = await perform(client, session, actor, clip)
    await eventually(lambda: len(unreal.received) >= len(frames) // 2)
    await asyncio.sleep(0.2)  # the last ones
    transport.close()

    packets = [decode_live_link(data) for _, data in unreal.received]
    assert len(clip) >= len(packets) >= len(frames) // 2  # one per source frame at most
    heads = []
    for packet in packets:
        assert packet._version == 6 and packet.name == "human_arkit"
        assert uuid.UUID(packet.uuid[1:])  # a 36-character device id ('$' is its length, 36)
        assert 20 <= packet.fps <= 31 and packet._denominator == 1  # the clip plays at 30 fps
        # The packet's timecode is its source frame's: frames since midnight at its rate.
        timecode = packet._frames + packet._sub_frame
        (frame,) = [
            f
            for f in frames
            if abs((f.capture_time_us % DAY_US) * packet.fps / 1e6 - timecode) < 1e-3
        ]
        values = np.array(packet._blend_shapes, np.float32)
        np.testing.assert_array_equal(values[:52], arkit_values(frame))
        pose = frame.head_pose  # degrees in the frame, radians on the wire; eyes not tracked
        np.testing.assert_allclose(values[52:55], np.radians(pose).astype(np.float32), atol=1e-6)
        np.testing.assert_array_equal(values[55:], 0.0)
        heads.append(values[52:55])
    assert np.abs(np.degrees(heads)).max() > 1.0  # the pipeline estimates the head pose
    outputs = (await client.get_session(session.id)).outputs
    assert outputs[0].packets_sent == len(packets) and outputs[0].send_errors == 0


def test_live_link_packet_layout_and_head_pose() -> None:
    shapes = np.linspace(0, 1, 52, dtype=np.float32)
    time_code = livelink.FrameTime.at(((13 * 60 + 7) * 60 + 2) * 1_000_000 + 500_000, 60)
    assert (time_code.frame, time_code.sub_frame) == (((13 * 60 + 7) * 60 + 2) * 60 + 30, 0.0)
    packet = livelink.encode_packet(
        str(uuid.UUID(int=7)), "Ada", time_code, shapes, (0.1, -0.2, 0.3)
    )
    face = decode_live_link(packet)
    assert (face.name, face.fps, face._frames) == ("Ada", 60, time_code.frame)
    assert face.get_blendshape(FaceBlendShape.JawOpen) == pytest.approx(shapes[17])
    assert face.get_blendshape(FaceBlendShape.HeadYaw) == pytest.approx(0.1)
    assert face.get_blendshape(FaceBlendShape.HeadRoll) == pytest.approx(0.3)
    # Read straight from the published layout too: length-prefixed strings, then the rest.
    assert packet[0] == 6 and int.from_bytes(packet[1:5], "big") == 36
    assert len(packet) == 1 + 4 + 36 + 4 + 3 + 16 + 1 + 61 * 4
    assert [shape.name for shape in FaceBlendShape][:52] == [
        perfect_sync_name(n) for n in ARKIT_BLENDSHAPES
    ]


# VMC


async def test_vmc_frames_reach_a_python_osc_server(live, clip) -> None:
    _, client, ids = live
    session, actor = await joined(client, [ids["human_arkit"], ids["cartoon"], ids["robot"]])
    apps = {name: await VmcApp().start() for name in ("human_arkit", "cartoon", "robot")}
    tables = {"human_arkit": VmcNames.AUTO, "cartoon": VmcNames.VRM0, "robot": VmcNames.RIG}
    for name, app in apps.items():
        added = await client.add_output(
            session.id,
            ids[name],
            VMC,
            f"127.0.0.1:{app.port}",
            vmc_names=tables[name],
            token=session.token,
        )
        assert added.vmc_names == (VmcNames.PERFECT_SYNC if name == "human_arkit" else tables[name])
    frames = await perform(client, session, actor, clip)
    await eventually(lambda: all(len(app.frames()) >= len(frames) // 6 for app in apps.values()))
    await asyncio.sleep(0.2)
    for app in apps.values():
        app.close()
    by_avatar = {name: [f for f in frames if f.avatar_id == ids[name]] for name in apps}

    for name, app in apps.items():
        received = app.frames()
        assert len(clip) >= len(received) >= len(by_avatar[name]) // 2
        for messages in received:
            addresses = [address for address, _ in messages]
            assert addresses[:2] == ["/VMC/Ext/T", "/VMC/Ext/Bone/Pos"]
            assert set(addresses[2:-2]) == {"/VMC/Ext/Blend/Val"}
            assert addresses[-2:] == ["/VMC/Ext/Blend/Apply", "/VMC/Ext/OK"]
            head = messages[1][1]
            assert head[0] == "Head" and head[1:4] == pytest.approx((0, 0, 0))
            # the rotation is one of the sent frames' head poses (the actor's, for every avatar)
            assert any(
                head[4:] == pytest.approx(vmc.head_quaternion(*f.head_pose), abs=1e-6)
                for f in by_avatar[name]
            )
            assert messages[-1][1][:3] == (1, 3, 0) and messages[-1][1][3] in (0, 1)
        times = [messages[0][1][0] for messages in received]
        assert times == sorted(times)
        # the head turns: some rotation is more than a degree away from the identity
        assert min(abs(messages[1][1][7]) for messages in received) < math.cos(math.radians(0.5))

    def blends(messages) -> dict[str, float]:
        return {args[0]: args[1] for address, args in messages if address == "/VMC/Ext/Blend/Val"}

    # Perfect sync: ARKit's 52 names as VRM clips, each frame's values as they were.
    shapes = [blends(m) for m in apps["human_arkit"].frames()]
    assert set(shapes[0]) == {perfect_sync_name(n) for n in ARKIT_BLENDSHAPES}
    sent = [
        dict(zip(f.controls.arkit_aliases, f.values.tolist(), strict=True))
        for f in by_avatar["human_arkit"]
    ]
    as_sent = [{perfect_sync_name(k): v for k, v in s.items()} for s in sent]
    assert all(received in as_sent for received in shapes)
    # The rig's own names, raw values.
    rig = [blends(m) for m in apps["robot"].frames()]
    assert all(r in [f.as_dict() for f in by_avatar["robot"]] for r in rig)
    # VRM 0 presets: only those the cartoon's ARKit aliases can drive; blinks split apart.
    presets = [blends(m) for m in apps["cartoon"].frames()]
    assert set(presets[0]) == {"A", "U", "Blink", "Blink_L", "Blink_R"}
    cartoon = {
        tuple(round(v, 5) for v in (f.as_dict()["mouth_open"], f.as_dict()["blink_L"]))
        for f in by_avatar["cartoon"]
    }
    for p in presets:
        assert min(p["Blink_L"], p["Blink_R"]) == pytest.approx(0, abs=1e-6)
        assert (round(p["A"], 5), round(p["Blink"] + p["Blink_L"], 5)) in cartoon


def test_vmc_datagrams_fit_one_packet_and_keep_their_order() -> None:
    table = vmc.BlendTable.of(RigSpec.arkit52("head"), stream_pb2.VMC_BLEND_NAMES_PERFECT_SYNC)
    frame = rig_pb2.RigFrame(values=np.linspace(0, 1, 52).tolist(), face_present=True)
    frame.head_pose.yaw = 30
    datagrams = vmc.VmcEncoder(table).encode(frame, 30.0)
    assert len(datagrams) > 1 and all(len(d) <= vmc.MAX_DATAGRAM for d in datagrams)
    messages = [m.message for d in datagrams for m in OscPacket(d).messages]
    assert [m.address for m in messages][:2] == ["/VMC/Ext/T", "/VMC/Ext/Bone/Pos"]
    assert [m.params[0] for m in messages[2:-2]] == [
        perfect_sync_name(n) for n in ARKIT_BLENDSHAPES
    ]
    assert messages[2 + 17].params[1] == pytest.approx(17 / 51)  # JawOpen
    assert sum(map(len, datagrams)) > 2400  # a perfect-sync frame, split up
    # Unity's Quaternion.Euler(x, y, z) turns about z, then x, then y (fixed axes), as SciPy's
    # "zxy" does; the avatar mirrors nothing: yaw and pitch change sign in Unity's frame.
    for yaw, pitch, roll in ((30, 0, 0), (0, 20, 0), (0, 0, 15), (25, -10, 40)):
        expected = Rotation.from_euler("zxy", [roll, -pitch, -yaw], degrees=True).as_quat()
        assert vmc.head_quaternion(yaw, pitch, roll) == pytest.approx(expected)
    # 30 degrees to the actor's left: the avatar's head turns to its left, a -y turn in Unity.
    assert messages[1].params[4:] == pytest.approx(
        (0, -math.sin(math.radians(15)), 0, math.cos(math.radians(15)))
    )


def test_vrm_tables() -> None:
    spec = RigSpec.arkit52("head")
    values = np.zeros(52, np.float32)
    values[ARKIT_BLENDSHAPES.index("eyeBlinkLeft")] = 0.9
    values[ARKIT_BLENDSHAPES.index("eyeBlinkRight")] = 0.6
    values[ARKIT_BLENDSHAPES.index("mouthSmileLeft")] = 0.5
    values[ARKIT_BLENDSHAPES.index("eyeLookOutLeft")] = 0.8  # both eyes to the avatar's left
    values[ARKIT_BLENDSHAPES.index("eyeLookInRight")] = 0.8
    vrm1 = dict(vmc.BlendTable.of(spec, stream_pb2.VMC_BLEND_NAMES_VRM1).values(values))
    assert (vrm1["blink"], vrm1["blinkLeft"], vrm1["blinkRight"]) == pytest.approx((0.6, 0.3, 0))
    assert (vrm1["happy"], vrm1["lookLeft"], vrm1["lookRight"]) == pytest.approx((0.25, 0.8, 0))
    vrm0 = dict(vmc.BlendTable.of(spec, stream_pb2.VMC_BLEND_NAMES_VRM0).values(values))
    assert set(vrm0) == set(vmc.VRM0_PRESETS) | set(vmc.VRM0_BLINKS) and vrm0[
        "Joy"
    ] == pytest.approx(0.25)
    # A rig spelling ARKit names its own way, with no aliases, and a range of its own.
    odd = RigSpec(
        "odd",
        (RigControl("EyeBlink_L", min=0, max=100), RigControl("jaw_open"), RigControl("tail")),
    )
    shapes = dict(
        vmc.BlendTable.of(odd, stream_pb2.VMC_BLEND_NAMES_UNSPECIFIED).values(
            np.array([50, 1, 3], np.float32)
        )
    )
    assert shapes == {"EyeBlinkLeft": 0.5, "JawOpen": 1.0}  # not "tail"


def test_ways_of_writing_arkit_names() -> None:
    for written in (
        "eyeBlinkLeft",
        "EyeBlinkLeft",
        "eyeBlink_L",
        "EyeBlink_L",
        "eye_blink_left",
        "eyeBlinkL",
        "Face.eyeBlinkLeft",
        "ns:EYEBLINKLEFT",
    ):
        assert canonical_arkit_name(written) == "eyeBlinkLeft", written
    # Names ending in r or l are not mistaken for a side suffix.
    assert canonical_arkit_name("mouthRollUpper") == "mouthRollUpper"
    assert canonical_arkit_name("MouthShrugLower") == "mouthShrugLower"
    assert canonical_arkit_name("smile") == canonical_arkit_name("") == ""


# Refusals, lifecycle


async def test_refusals_are_clear_statuses(client: AsyncClient, server) -> None:
    session = await client.create_session()
    head = await client.register_avatar(RigSpec.arkit52("head"))
    gizmo = await client.register_avatar(RigSpec("gizmo", (RigControl("spin"), RigControl("glow"))))
    with pytest.raises(NotFound, match="no session"):
        await client.add_output("nope", head.id, LIVE_LINK, "127.0.0.1:9")
    with pytest.raises(NotFound, match="no avatar"):
        await client.add_output(session.id, "ghost", LIVE_LINK, "127.0.0.1:9")
    with pytest.raises(NotFound, match="no actor"):
        await client.add_output(session.id, head.id, LIVE_LINK, "127.0.0.1:9", actor_id="nobody")
    with pytest.raises(
        FailedPrecondition, match="avatar 'gizmo' has no controls with ARKit aliases: Live Link"
    ):
        await client.add_output(session.id, gizmo.id, LIVE_LINK, "127.0.0.1:9")
    with pytest.raises(FailedPrecondition, match="VMC_BLEND_NAMES_VRM1 is made from"):
        await client.add_output(session.id, gizmo.id, VMC, "127.0.0.1:9", vmc_names=VmcNames.VRM1)
    with pytest.raises(InvalidArgument, match="cannot resolve host 'no-such-host.invalid'"):
        await client.add_output(session.id, head.id, VMC, "no-such-host.invalid:9")
    with pytest.raises(InvalidArgument, match="port '70000' is not in 1..65535"):
        await client.add_output(session.id, head.id, VMC, "127.0.0.1:70000")
    with pytest.raises(NotFound, match="no output 'x'"):
        await client.remove_output(session.id, "x")
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{server.port}"
    ) as channel:  # past the SDK's checks
        stub = stream_pb2_grpc.StreamServiceStub(channel)
        for output, message in (
            (
                stream_pb2.EngineOutput(protocol=1, host="127.0.0.1", port=70000),
                "port 70000 is not in 1..65535",
            ),
            (stream_pb2.EngineOutput(protocol=1, host=" "), "host is empty"),
            (stream_pb2.EngineOutput(protocol=0, host="127.0.0.1"), "protocol must be"),
            (
                stream_pb2.EngineOutput(protocol=2, host="127.0.0.1", vmc_blend_names=9),
                "vmc_blend_names = 9 is not a value of VmcBlendNames",  # the request bounds' enum check
            ),
        ):
            output.session_id, output.avatar_id = session.id, head.id
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.AddOutput(stream_pb2.AddOutputRequest(output=output))
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, output
            assert message in raised.value.details()
    # None of that hurt the server: a good output goes in.
    added = await client.add_output(session.id, gizmo.id, VMC, "127.0.0.1")
    assert (added.port, added.vmc_names) == (39539, VmcNames.RIG)
    assert parse_target("[::1]:11111") == ("::1", 11111) and parse_target("unreal") == ("unreal", 0)


async def test_keyed_servers_want_the_session_token(tmp_path) -> None:
    from freeavatar import PermissionDenied
    from freeavatar_server.app.server import FreeAvatarServer
    from tests.conftest import loopback_config

    keys = tmp_path / "keys"
    keys.write_text("k\n")
    server = FreeAvatarServer(loopback_config(tmp_path / "data", api_key_file=keys))
    await server.start()
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}", api_key="k") as client:
            session = await client.create_session()
            head = await client.register_avatar(RigSpec.arkit52("head"))
            with pytest.raises(PermissionDenied, match="session token"):
                await client.add_output(
                    session.id, head.id, LIVE_LINK, "127.0.0.1:9", token="wrong"
                )
            added = await client.add_output(
                session.id, head.id, LIVE_LINK, "127.0.0.1:9", token=session.token
            )
            assert [o.id for o in await client.list_outputs(session.id)] == [added.id]
    finally:
        await server.stop(grace=0)


async def test_outputs_are_listed_and_end_with_their_session_or_avatar(
    client: AsyncClient, server
) -> None:
    session = await client.create_session()
    head = await client.register_avatar(RigSpec.arkit52("head"))
    first = await client.add_output(session.id, head.id, LIVE_LINK, "127.0.0.1", subject_name="Ada")
    second = await client.add_output(session.id, head.id, VMC, f"127.0.0.1:{dead_port()}")
    assert (first.port, first.subject_name) == (11111, "Ada")
    assert [o.id for o in await client.list_outputs(session.id)] == [first.id, second.id]
    await client.remove_output(session.id, first.id)
    assert [o.id for o in await client.list_outputs(session.id)] == [second.id]
    await client.delete_avatar(head.id)
    assert await client.list_outputs(session.id) == []

    robot = await client.register_avatar(BUILTIN_AVATARS["robot"].spec)
    for _ in range(manager.MAX_OUTPUTS_PER_SESSION):
        await client.add_output(session.id, robot.id, VMC, "127.0.0.1:9")
    with pytest.raises(ResourceExhausted, match="already has 16 outputs"):
        await client.add_output(session.id, robot.id, VMC, "127.0.0.1:9")
    outputs = server._outputs  # the tasks themselves: they must all end
    tasks = [o.task for o in outputs.of_session(session.id)]
    await client.close_session(session.id)
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert outputs.of_session(session.id) == []


# The pipeline's side: a dead target costs it nothing, and sends follow the source's rate


def session_with(spec: RigSpec) -> tuple[SessionRegistry, object, Binding]:
    sessions = SessionRegistry(require_tokens=False)
    session = sessions.create("direct")
    binding = Binding.resolve(stream_pb2.AvatarBinding(avatar_id="a1"), spec)
    return sessions, session, binding


def frame_at(
    index: int, capture_us: int, values: list[float], actor: str = "ada"
) -> rig_pb2.RigFrame:
    return rig_pb2.RigFrame(
        avatar_id="a1",
        actor_id=actor,
        sequence=index,
        capture_time_us=capture_us,
        values=values,
        face_present=True,
    )


async def test_a_dead_target_never_slows_the_publisher() -> None:
    spec = RigSpec.arkit52("head")
    sessions, session, binding = session_with(spec)
    outputs = manager.OutputManager(sessions, PipelineStats())
    dead = [
        await outputs.add(stream_pb2.EngineOutput(session_id=session.id, avatar_id="a1", protocol=p, host="127.0.0.1", port=dead_port()), "", spec)
        for p in (stream_pb2.OUTPUT_PROTOCOL_LIVE_LINK_FACE, stream_pb2.OUTPUT_PROTOCOL_VMC)
    ]  # fmt: skip
    transport, alive, port = await udp_receiver()
    await outputs.add(
        stream_pb2.EngineOutput(
            session_id=session.id, avatar_id="a1", protocol=1, host="127.0.0.1", port=port
        ),
        "",
        spec,
    )
    values = [0.5] * 52
    publish_s = []
    start_us = time.time_ns() // 1000
    for index in range(60):  # two seconds of a 30 fps source
        started = time.perf_counter()
        session.publish([(binding, frame_at(index, start_us + index * 33_333, values))])
        publish_s.append(time.perf_counter() - started)
        await asyncio.sleep(1 / 30)
    await eventually(lambda: len(alive.received) >= 30)
    for output in dead:
        assert output.send_errors > 10 and "refused" in output.last_error.lower()
        assert output.packets_sent >= 30  # it kept going, frame after frame
    # Publishing is an offer to a one-frame slot, whatever the target: microseconds (the bound
    # on the slowest leaves room for a loaded machine's scheduling, not for any waiting).
    assert np.median(publish_s) < 0.0005 and max(publish_s) < 0.05
    assert len(alive.received) <= 60
    transport.close()
    await outputs.stop()


async def test_sends_follow_the_source_frame_rate_and_one_actor(monkeypatch) -> None:
    spec = RigSpec.arkit52("head")
    sessions, session, binding = session_with(spec)
    outputs = manager.OutputManager(sessions, PipelineStats())
    transport, unreal, port = await udp_receiver()
    output = await outputs.add(
        stream_pb2.EngineOutput(
            session_id=session.id, avatar_id="a1", protocol=1, host="127.0.0.1", port=port
        ),
        "",
        spec,
    )
    start_us = time.time_ns() // 1000

    # A 30 fps source whose frames reach the output three times too fast (a burst after a stall).
    started = time.monotonic()
    for index in range(30):
        session.publish([(binding, frame_at(index, start_us + index * 33_333, [index / 100] * 52))])
        await asyncio.sleep(0.011)
    elapsed = time.monotonic() - started
    await eventually(lambda: output.frames_skipped + len(unreal.received) == 30)  # the last one out
    sent = len(unreal.received)
    assert sent <= elapsed / (manager.REST_SHARE / 30) + 1  # never faster than the source
    assert sent < 25  # so most of the burst merged into newer frames (~ten of thirty sent)
    assert decode_live_link(unreal.received[-1][1]).get_blendshape(
        FaceBlendShape.JawOpen
    ) == pytest.approx(0.29)

    # Two actors on one avatar: the output keeps to the first until it falls silent.
    monkeypatch.setattr(manager, "ACTOR_SILENCE_S", 0.3)
    unreal.received.clear()
    for index in range(30, 40):
        session.publish([(binding, frame_at(index, start_us + index * 33_333, [0.1] * 52))])
        session.publish([(binding, frame_at(index, start_us + index * 33_333, [0.9] * 52, actor="bo"))])
        await asyncio.sleep(1 / 30)
    heard = {
        round(decode_live_link(d).get_blendshape(FaceBlendShape.JawOpen), 2)
        for _, d in unreal.received
    }
    assert heard == {0.1}
    await asyncio.sleep(0.3)
    for index in range(41, 100):  # bo alone, until the output has moved on to bo
        session.publish([(binding, frame_at(index, start_us + index * 33_333, [0.9] * 52, actor="bo"))])
        await asyncio.sleep(1 / 30)
        if (
            unreal.received
            and decode_live_link(unreal.received[-1][1]).get_blendshape(FaceBlendShape.JawOpen)
            > 0.5
        ):
            break
    assert index < 99, "the output never moved on to the other actor"
    transport.close()
    await outputs.stop()
    assert output.task.done()


def test_source_rate_is_measured_from_capture_times() -> None:
    rate = manager.SourceRate()
    for index in range(200):
        rate.observe(rig_pb2.RigFrame(capture_time_us=index * 16_667))
    assert rate.fps == pytest.approx(60, rel=0.01)
    rate.observe(rig_pb2.RigFrame(capture_time_us=200 * 16_667 + 5_000_000))  # a pause: ignored
    assert rate.fps == pytest.approx(60, rel=0.01)


# The command line


def read_all(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(65536))
        except BlockingIOError:
            return datagrams


def test_command_line(untrained_models, tmp_path) -> None:
    from freeavatar.client import Client
    from freeavatar_server.media import VideoWriter
    from freeavatar_server.tools.demo import DemoConfig, render_clip
    from tests.conftest import BUILTIN, ServerThread, loopback_config
    from tests.test_cli import invoke

    encoder, animator = untrained_models
    config = loopback_config(
        tmp_path / "data", builtin_avatars=BUILTIN, builtin_animator=animator, encoder_path=encoder
    )
    server = ServerThread(config)
    unreal, vtuber = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    try:
        address = ("--server", server.address)
        for sock in (unreal, vtuber):
            sock.bind(("127.0.0.1", 0))
        video = tmp_path / "clip.mp4"
        frames = render_clip(DemoConfig(seconds=0.5, fps=24, seed=5), lambda stage, done: None)
        with VideoWriter(video, 24, frames.shape[2], frames.shape[1]) as writer:
            for frame in frames:
                writer.write(frame)

        code, out = invoke(
            "stream", "--video", str(video), "--avatar", "human_arkit", *address,
            "--livelink", f"127.0.0.1:{unreal.getsockname()[1]}", "--vmc", f"127.0.0.1:{vtuber.getsockname()[1]}",
        )  # fmt: skip
        assert code == 0, out
        assert (
            f"Live Link Face to 127.0.0.1:{unreal.getsockname()[1]} (subject 'human_arkit')" in out
        )
        assert "perfect_sync" in out
        packets = read_all(unreal)
        assert 1 <= len(packets) <= len(frames)
        assert all(decode_live_link(p).name == "human_arkit" for p in packets)
        addresses = {m.message.address for d in read_all(vtuber) for m in OscPacket(d).messages}
        assert {"/VMC/Ext/Blend/Val", "/VMC/Ext/Blend/Apply", "/VMC/Ext/OK"} <= addresses
        code, out = invoke(
            "stream",
            "--video",
            str(video),
            "--avatar",
            "robot",
            "--avatar",
            "cartoon",
            "--vmc",
            "127.0.0.1",
            *address,
        )
        assert code == 2 and "--vmc drives one avatar" in out

        code, out = invoke("sessions", "create", "cli", "--json", *address)
        session = json.loads(out)
        code, out = invoke("sessions", "list", *address)
        assert code == 0 and session["id"] in out
        # Into a session that outlives the run: its outputs and actor go with the run.
        code, out = invoke(
            "stream", "--video", str(video), "--avatar", "robot", "--session", session["id"], *address,
            "--livelink", f"127.0.0.1:{unreal.getsockname()[1]}", "--subject", "Robo",
        )  # fmt: skip
        assert code == 0, out
        assert {decode_live_link(p).name for p in read_all(unreal)} == {"Robo"}
        with Client(server.address) as client:
            left = client.get_session(session["id"])
            assert left.actors == () and left.outputs == ()
        code, out = invoke(
            "outputs",
            "add",
            session["id"],
            "--avatar",
            "robot",
            "--vmc",
            "127.0.0.1:9",
            "--vmc-names",
            "rig",
            "--json",
            *address,
        )
        assert code == 0, out
        (added,) = json.loads(out)
        assert (added["protocol"], added["vmc_names"], added["port"]) == ("VMC", "RIG", 9)
        code, out = invoke("outputs", "list", session["id"], "--json", *address)
        assert [o["id"] for o in json.loads(out)] == [added["id"]]
        code, out = invoke("outputs", "remove", session["id"], added["id"], *address)
        assert code == 0
        code, out = invoke("outputs", "list", session["id"], "--json", *address)
        assert json.loads(out) == []
        code, out = invoke("outputs", "add", session["id"], "--avatar", "robot", *address)
        assert code == 2 and "give --livelink HOST:PORT or --vmc HOST:PORT" in out
        code, out = invoke(
            "outputs", "add", "nope", "--avatar", "robot", "--livelink", "127.0.0.1", *address
        )
        assert code == 1 and "NOT_FOUND: no session with id 'nope'" in out
    finally:
        unreal.close()
        vtuber.close()
        server.stop()
