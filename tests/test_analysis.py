"""The analysis workers: the heavy half of the live pipeline in processes of their own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from freeavatar._proto import stream_pb2
from freeavatar_server.app.config import ConfigError, ServerConfig
from freeavatar_server.inference.animator import AnimatorRuntime
from freeavatar_server.inference.face.crop import crop_face
from freeavatar_server.live.analysis import (
    Analyser,
    AnalysisFailed,
    AnalysisOptions,
    AnalysisRequest,
    AnimatorRef,
    BadFrame,
    EncodedFrame,
    LoadPace,
    WorkerLost,
    decode_frame,
)
from freeavatar_server.live.workers import AnalysisPool, AnalysisWorker
from freeavatar_server.synth.avatars import BUILTIN_AVATARS

JPEG = stream_pb2.IMAGE_FORMAT_JPEG


def request(stream: str, pixels, animators: dict[str, AnimatorRef] | None = None) -> AnalysisRequest:
    return AnalysisRequest(stream, pixels, capture_time_us=1_000_000, animators=animators or {})


def alive(pid: int) -> bool:
    """Running (a killed child stays in /proc as a zombie until it is reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


@pytest.fixture
async def one_worker(untrained_models) -> AsyncIterator[AnalysisWorker]:
    """A pool of one started worker, stopped after the test."""
    pool = AnalysisPool(1, AnalysisOptions(untrained_models[0]))
    try:
        await pool.start()
        yield pool.workers[0]
    finally:
        await pool.stop()


def test_analyser_finds_the_face_and_runs_every_bound_animator(untrained_models, clip) -> None:
    encoder, animator = untrained_models
    analyser = Analyser(AnalysisOptions(encoder))
    refs = {"a1": AnimatorRef(str(animator), "robot"), "a2": AnimatorRef(str(animator), "cartoon")}
    result = analyser.analyse(request("actor", EncodedFrame(JPEG, clip[0]), refs))
    assert result.face is not None and result.head_pose.shape == (3,)
    assert result.raw["a1"].shape == (8,) and result.raw["a2"].shape == (14,)
    assert set(result.timings_ms) == {"decode", "mesh", "pose", "encode", "animate"}  # a new track: the mesh runs
    assert list(analyser.trackers) == ["actor"]  # the stream's face tracker lives here now
    analyser.forget("actor")
    assert not analyser.trackers


@pytest.fixture(scope="module")
def unit_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An encoder graph with its action-unit read-out, and a robot animator that reads the
    units beside the embedding (its stem scaled up, so that its rig follows what it reads)."""
    import torch

    from freeavatar_server.training.animator.export import export_runtime
    from freeavatar_server.training.animator.model import (
        AnimatorConfig,
        AvatarRig,
        SharedAnimator,
        save_animator,
    )
    from freeavatar_server.training.encoder.export import export_onnx
    from freeavatar_server.training.encoder.model import ExpressionEncoder, ModelConfig

    root = tmp_path_factory.mktemp("unit_models")
    torch.manual_seed(0)
    encoder = export_onnx(ExpressionEncoder(ModelConfig(au_units=25)).eval(), root / "encoder.onnx")
    animator = SharedAnimator(AnimatorConfig(unit_dim=25))
    animator.add_avatar("robot", AvatarRig.from_spec(BUILTIN_AVATARS["robot"].spec))
    with torch.no_grad():
        animator.stem.weight.normal_(std=0.5)
        animator.readout[-1].weight.mul_(20)
    (root / "animator").mkdir()
    save_animator(animator, root / "animator" / "animator.pt")
    export_runtime(root / "animator")
    return encoder, root / "animator"


def test_analyser_gives_the_encoders_action_units_to_an_animator_that_reads_them(unit_models, untrained_models, clip) -> None:
    encoder, animator = unit_models
    analyser = Analyser(AnalysisOptions(encoder))
    frame = EncodedFrame(JPEG, clip[0])
    refs = {"a1": AnimatorRef(str(animator), "robot")}
    result = analyser.analyse(request("actor", frame, refs))
    # the same crop through the same graphs, by hand
    crop = crop_face(decode_frame(frame), result.face.box, analyser.encoder.size)
    embedding, units = analyser.encoder.read_batch(crop[None])
    runtime = AnimatorRuntime.load(animator)
    np.testing.assert_allclose(result.raw["a1"], runtime.predict(embedding, "robot", units=units)[0], atol=1e-6)
    without = runtime.predict(embedding, "robot", units=np.zeros_like(units))[0]
    assert not np.allclose(result.raw["a1"], without, atol=1e-4)  # the units moved the rig
    # an encoder exported without a read-out cannot drive it: the frame fails, saying why
    plain = Analyser(AnalysisOptions(untrained_models[0]))
    with pytest.raises(AnalysisFailed, match="action units"):
        plain.analyse(request("actor", frame, refs))


def test_analyser_names_what_is_wrong_with_a_frame(untrained_models) -> None:
    analyser = Analyser(AnalysisOptions(untrained_models[0]))
    with pytest.raises(BadFrame, match="does not decode"):
        analyser.analyse(request("actor", EncodedFrame(JPEG, b"\xff\xd8 not really a jpeg")))
    with pytest.raises(BadFrame, match="needs 921600 bytes"):
        analyser.analyse(request("actor", EncodedFrame(stream_pb2.IMAGE_FORMAT_RGB24, b"\0" * 10, 640, 480)))
    empty_room = np.full((240, 320, 3), 90, np.uint8)  # already decoded, as WebRTC hands it over
    assert analyser.analyse(request("actor", empty_room)).face is None


def test_a_batch_reads_each_actor_as_one_frame_would_and_keeps_a_bad_frame_to_itself(untrained_models, clip) -> None:
    encoder, animator = untrained_models
    refs = {"a1": AnimatorRef(str(animator), "robot"), "a2": AnimatorRef(str(animator), "cartoon")}
    frames = [request(f"actor{i}", EncodedFrame(JPEG, clip[i * 5]), refs) for i in range(3)]
    bad = request("broken", EncodedFrame(JPEG, b"garbage"), refs)
    batched = Analyser(AnalysisOptions(encoder)).analyse_batch([frames[0], bad, frames[1], frames[2]])
    alone = Analyser(AnalysisOptions(encoder))
    singles = [alone.analyse(frame) for frame in frames]
    assert isinstance(batched[1], BadFrame)
    for got, want in zip([batched[0], *batched[2:]], singles, strict=True):
        assert got.face == want.face
        np.testing.assert_allclose(got.head_pose, want.head_pose, atol=1e-4)
        for avatar in ("a1", "a2"):
            np.testing.assert_allclose(got.raw[avatar], want.raw[avatar], atol=1e-4)
        assert {"decode", "mesh", "pose", "encode", "animate"} <= set(got.timings_ms)


def test_a_due_mesh_runs_after_its_frame_is_answered_for_the_frames_after_it(untrained_models, clip) -> None:
    analyser = Analyser(AnalysisOptions(untrained_models[0], face_rate_hz=15))  # every other frame at 30 fps

    def frame(i: int) -> AnalysisRequest:
        return AnalysisRequest("actor", EncodedFrame(JPEG, clip[i]), 1_000_000 + i * 33_333, {})

    first = analyser.analyse_batch([frame(0)])[0]
    assert "mesh" in first.timings_ms  # a new track: the mesh runs on its own frame
    answers = []
    due_after = []  # ticks after whose answers meshes waited (the worker then waits for the server)
    for i in range(1, 7):
        answers.append(analyser.analyse_batch([frame(i)])[0])
        due_after.append(analyser.meshes_due)
        analyser.refresh_meshes()  # what the worker runs after each tick's answers
        assert not analyser.meshes_due
    assert not any("mesh" in a.timings_ms for a in answers)  # no frame waited for a mesh
    meshed_after = [i for i, a in enumerate(answers) if "mesh" in a.after_ms]
    assert meshed_after == [2, 4]  # the runs on frames 2 and 4, told with frames 3 and 5
    assert [i for i, due in enumerate(due_after) if due] == [1, 3, 5]  # frames 2, 4 and 6
    # a frame the mesh came due on is read with the last mesh (its blendshapes: these untrained
    # models have no carry); the next with the mesh of it
    due = meshed_after[0] - 1
    assert np.array_equal(answers[due].blendshapes, answers[due - 1].blendshapes)
    assert not np.array_equal(answers[due + 1].blendshapes, answers[due].blendshapes)


async def test_frames_that_wait_together_go_to_the_worker_as_one_tick(one_worker, clip) -> None:
    worker = one_worker
    frames = [request(f"s{i}", EncodedFrame(JPEG, clip[i])) for i in range(5)]
    frames.append(request("s5", EncodedFrame(JPEG, b"garbage")))
    results = await asyncio.gather(*(worker.analyse(f) for f in frames), return_exceptions=True)
    assert worker.ticks == 1  # six actors' frames, one call across the process boundary
    assert all(r.face is not None for r in results[:5])
    assert isinstance(results[5], BadFrame)  # the bad frame fails alone
    again = await worker.analyse(request("s0", EncodedFrame(JPEG, clip[6])))
    assert again.face is not None and worker.ticks == 2


async def test_closing_the_pool_fails_what_waits_instead_of_leaving_it_hanging(untrained_models, clip) -> None:
    pool = AnalysisPool(1, AnalysisOptions(untrained_models[0]))
    await pool.start()
    (worker,) = pool.workers
    waiting = [asyncio.ensure_future(worker.analyse(request(f"s{i}", EncodedFrame(JPEG, clip[i])))) for i in range(3)]
    await asyncio.sleep(0)
    await asyncio.wait_for(pool.stop(), 10)  # cancels its tick task and waits for it
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 10)
    assert all(isinstance(r, WorkerLost) for r in results)
    with pytest.raises(WorkerLost, match="shutting down"):
        await worker.analyse(request("late", EncodedFrame(JPEG, clip[0])))
    pool.close()  # again: nothing left to close, and no error


async def test_pool_spreads_actors_and_a_bad_frame_comes_back_as_its_error(untrained_models, clip) -> None:
    pool = AnalysisPool(2, AnalysisOptions(untrained_models[0]))
    try:
        await pool.start()
        first, second = pool.assign("a"), pool.assign("b")
        assert first is not second and first.pid != second.pid
        found = await first.analyse(request("a", EncodedFrame(JPEG, clip[0])))
        assert found.face is not None
        with pytest.raises(BadFrame, match="does not decode"):  # raised in the worker, re-raised here
            await second.analyse(request("b", EncodedFrame(JPEG, b"garbage")))
        first.release("a")
        assert pool.assign("c") is first  # the least busy worker takes the next stream
    finally:
        pool.close()


async def test_a_worker_killed_mid_tick_is_replaced_and_the_tick_sent_again(one_worker, clip) -> None:
    worker = one_worker
    dead = worker.pid
    frames = [asyncio.ensure_future(worker.analyse(request(f"s{i}", EncodedFrame(JPEG, clip[i])))) for i in range(3)]
    while worker.ticks == 0:  # until the tick is on its way
        await asyncio.sleep(0)
    os.kill(dead, signal.SIGKILL)
    results = await asyncio.wait_for(asyncio.gather(*frames), 60)  # nothing lost, nothing hangs
    assert all(r.face is not None for r in results)
    assert worker.restarts == 1 and worker.pid not in (None, dead) and worker.ticks == 1


async def test_a_worker_that_died_idle_is_replaced_by_the_next_call(one_worker, clip) -> None:
    worker = one_worker
    dead = worker.pid
    os.kill(dead, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(dead) and time.monotonic() < deadline:
        time.sleep(0.05)
    found = await worker.analyse(request("a", EncodedFrame(JPEG, clip[0])))  # loses nothing
    assert found.face is not None and worker.pid not in (None, dead) and worker.restarts == 1


async def test_models_that_do_not_load_are_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "encoder.onnx"
    broken.write_bytes(b"not an ONNX graph")
    pool = AnalysisPool(1, AnalysisOptions(broken))
    try:
        with pytest.raises(AnalysisFailed, match="could not load its models"):
            await pool.start()
    finally:
        pool.close()


def test_workers_exit_when_their_server_is_killed(untrained_models, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, time
        from pathlib import Path
        from freeavatar_server.live.analysis import AnalysisOptions
        from freeavatar_server.live.workers import AnalysisPool

        async def main():
            pool = AnalysisPool(1, AnalysisOptions(Path({str(untrained_models[0])!r})))
            await pool.start()
            print(pool.workers[0].pid, flush=True)
            time.sleep(60)

        asyncio.run(main())
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        worker = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)  # no clean-up of any kind
        parent.wait(10)
        deadline = time.monotonic() + 10
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(worker), "the analysis worker outlived its server"
    finally:
        parent.kill()


def test_a_busy_worker_slows_its_meshes_down_to_the_floor_and_back() -> None:
    pace = LoadPace(most=5.0)  # 15 runs a second at most, 3 at the floor
    t = 0.0
    for _ in range(36):  # 1.2 s of 30 fps frames that each take the whole frame time: overloaded
        pace.record(t, t + 1 / 30)
        t += 1 / 30
    assert pace.busy > 0.95 and pace.slowdown == 5.0  # at the floor after two periods
    for _ in range(300):  # then 5 ms of work per frame: it keeps up again
        pace.record(t, t + 0.005)
        t += 1 / 30
    assert pace.busy < 0.2 and pace.slowdown == 1.0


def test_the_mesh_pace_settles_with_whole_mesh_runs() -> None:
    """6 actors at 30 fps, 2 ms of work a frame each (0.36 of the time), and 9 ms meshes due
    every other frame per actor at the full rate (0.81 more): the meshes must slow down until
    the worker is at its 0.7 target (about 2x, as meshes fall on whole frames). The pace should
    settle there, not swing."""
    pace = LoadPace(most=5.0)
    t, due = 0.0, [0.0] * 6
    slowdowns = []
    for frame in range(30 * 20):
        for actor in range(6):
            pace.record(t, t + 0.002)
            t += 0.002
            if t >= due[actor]:  # this actor's mesh is due: run it after the answer
                pace.record(t, t + 0.009, 0.009)
                t += 0.009
                due[actor] = t + pace.slowdown / 15
        t = max(t, (frame + 1) / 30)
        slowdowns.append(pace.slowdown)
    settled = np.array(slowdowns[-300:])  # the last 10 s
    assert 1.6 < settled.mean() < 2.4 and settled.max() - settled.min() < 0.5, (settled.min(), settled.max())
    assert abs(pace.busy - pace.target) < 0.05
    steady = LoadPace(most=1.0)  # no floor below the rate: never slows down
    for i in range(100):
        steady.record(i / 30, (i + 1) / 30)
    assert steady.slowdown == 1.0


def test_expressions_give_way_after_the_meshes_and_come_back_before_them() -> None:
    pace = LoadPace(most=5.0, expression_most=2.0)
    t, slowdowns = 0.0, []
    for _ in range(90):  # 3 s of frames that each take the whole frame time, half of it reading expressions
        pace.record(t, t + 1 / 30, 0.0, 0.5 / 30)
        t += 1 / 30
        slowdowns.append((pace.slowdown, pace.expression_slowdown))
    assert slowdowns[-1] == (5.0, 2.0)  # overloaded: the mesh at its floor, every other expression read
    for _ in range(300):  # then 5 ms of work per frame: it keeps up again
        pace.record(t, t + 0.005, 0.0, 0.002)
        t += 1 / 30
        slowdowns.append((pace.slowdown, pace.expression_slowdown))
    assert slowdowns[-1] == (1.0, 1.0)
    # the expressions slowed only with the meshes at their floor, and the meshes sped up again
    # only once every expression was read
    assert all(mesh == 5.0 for mesh, expression in slowdowns if expression > 1.0)
    for floor in (0.0, 1.5):  # a share of frames: none at all, or more than all, is a mistake
        with pytest.raises(ConfigError, match="--expression-floor must be in"):
            ServerConfig(data_dir=Path("x"), expression_floor=floor).validate()


def test_a_frame_the_pace_leaves_unread_reuses_its_streams_last_expression(untrained_models, clip) -> None:
    """At an expression slowdown of 2 every other frame reuses the last frame's reading: its
    avatars' controls are the last frame's, its head pose its own; a frame with a mesh of its
    own is always read."""
    encoder, animator = untrained_models
    refs = {"robot": AnimatorRef(str(animator), "robot")}
    analyser = Analyser(AnalysisOptions(encoder, face_rate_hz=1))  # one mesh: the first frame's

    def read(frames: range) -> list:
        answers = []
        for i in frames:
            answers.append(analyser.analyse_batch([AnalysisRequest("actor", EncodedFrame(JPEG, clip[i]), 1_000_000 + i * 33_333, refs)])[0])
            analyser.refresh_meshes()
        return answers

    analyser.pace = LoadPace(expression_most=2.0, expression_slowdown=2.0, every_s=1e9)  # held there
    answers = read(range(6))
    assert "mesh" in answers[0].timings_ms and not any("mesh" in a.timings_ms or a.after_ms for a in answers[1:])
    reused = [i for i in range(1, 6) if np.array_equal(answers[i].raw["robot"], answers[i - 1].raw["robot"])]
    assert reused == [1, 3, 5]
    for i in reused:
        assert not np.array_equal(answers[i].head_pose, answers[i - 1].head_pose)
    # at full rate, every frame is read
    analyser.forget("actor")
    analyser.pace = LoadPace()
    again = read(range(6))
    assert not any(np.array_equal(again[i].raw["robot"], again[i - 1].raw["robot"]) for i in range(1, 6))
    # whatever the pace, a frame whose mesh comes due is read (the carry starts from its units),
    # and so is the first frame after that mesh (its blendshapes are that mesh's): at 7.5
    # meshes a second of 30 fps frames (one in four), both fall on frames the pace alone would
    # leave unread
    analyser = Analyser(AnalysisOptions(encoder, face_rate_hz=7.5))
    analyser.pace = LoadPace(expression_most=2.0, expression_slowdown=2.0, every_s=1e9)
    answers = read(range(16))
    after = [i for i in range(2, 16) if "mesh" in answers[i].after_ms]  # each told the mesh run after the frame before
    read_anew = [i for i in range(1, 16) if not np.array_equal(answers[i].raw["robot"], answers[i - 1].raw["robot"])]
    assert len(after) >= 2 and {i - 1 for i in after} | set(after) <= set(read_anew), (after, read_anew)
    assert len(read_anew) < 15  # and the pace still leaves frames unread


def test_each_stream_carries_its_own_blendshapes_until_it_is_forgotten(clip) -> None:
    """Two actors in one worker, the shipped encoder and its blendshape carry: a frame read
    between meshes carries its own stream's last mesh, a mesh that fails starts that stream
    afresh, and a forgotten stream leaves no carry behind."""
    from freeavatar_server.inference.shipped import ENCODER_INT8_ONNX

    analyser = Analyser(AnalysisOptions(ENCODER_INT8_ONNX, face_rate_hz=15))
    assert analyser.carry is not None  # fitted through the shipped encoder

    def frame(stream: str, i: int) -> AnalysisRequest:
        return AnalysisRequest(stream, EncodedFrame(JPEG, clip[i % len(clip)]), 1_000_000 + i * 33_333, {})

    meshed: dict[str, np.ndarray] = {}
    carried = {"A": 0, "B": 0}
    for i in range(1, 9):
        for stream, result in zip("AB", analyser.analyse_batch([frame("A", i), frame("B", i + 12)]), strict=True):
            assert result.face is not None
            if "mesh" in result.timings_ms:  # a new track meshed its own frame
                meshed[stream] = result.blendshapes
            elif not np.array_equal(result.blendshapes, meshed[stream]):
                carried[stream] += 1  # moved off its last mesh by the encoder's change
                other = meshed["B" if stream == "A" else "A"]
                mine = np.abs(result.blendshapes - meshed[stream]).sum()
                assert mine < np.abs(result.blendshapes - other).sum()  # its own mesh's, not the other's
        due = set(analyser._mesh_due)
        analyser.refresh_meshes()
        for stream in due:
            meshed[stream] = analyser._carried_from[stream][0]
    assert carried["A"] >= 2 and carried["B"] >= 2, carried

    def failing_mesh(*args, **kwargs):
        raise RuntimeError("mesh failed")

    analyser.analyse_batch([frame("A", 9)])
    analyser.trackers["A"].refresh = failing_mesh
    analyser._mesh_due.setdefault("A", (np.zeros((8, 8, 3), np.uint8), None))
    analyser.refresh_meshes()  # fails: the track and its carry go
    assert "A" not in analyser.trackers and "A" not in analyser._carried_from
    again = analyser.analyse_batch([frame("A", 10)])[0]
    assert again.face is not None and "mesh" in again.timings_ms  # a new track meshes its frame
    analyser.forget("B")
    left = (analyser.trackers, analyser._carried_from, analyser._units_due, analyser._mesh_due)
    assert not any("B" in state for state in left)
