"""The server's commands in the `freeavatar` CLI, and the group each joins (`COMMANDS`;
`freeavatar.cli.build_app` assembles the tree). Heavy imports (torch, the server) stay inside
the commands, each marked `# lazy:`, so that `freeavatar --help` is instant."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.json import JSON

from freeavatar.cli_common import Printer, Remote, console, fail, with_json, with_server
from freeavatar.cli_outputs import (
    LiveLinkOption,
    SubjectOption,
    VmcNamesChoice,
    VmcNamesOption,
    VmcOption,
    output_targets,
)
from freeavatar_server.app.config import DEFAULT_PORT, ConfigError, ServerConfig
from freeavatar_server.media import VideoError
from freeavatar_server.synth.cli import synth_app
from freeavatar_server.tools.cluster_services import ServiceUnavailable
from freeavatar_server.training.animator.cli import eval_animator
from freeavatar_server.training.encoder.cli import encoder_app, eval_encoder, train_encoder
from freeavatar_server.training.face.cli import train_face
from freeavatar_server.training.realface.cli import eval_realface

# The names of synth.avatars.BUILTIN_AVATARS, without importing torch (a test keeps them equal).
BUILTIN_NAMES = ("human_arkit", "cartoon", "robot", "cat")
top_commands = typer.Typer()  # freeavatar serve | demo | stream
avatar_commands = typer.Typer()  # freeavatar avatars render-samples
train_commands = typer.Typer(  # freeavatar train encoder | face, beside the SDK's renderer | animator
    help="Train models: avatar renderers and the animator as server jobs; the encoder and the face localiser here."
)
bench_app = typer.Typer(help="Speed measurements; results belong in docs/performance.md.", no_args_is_help=True)
eval_app = typer.Typer(help="Measure model quality; results belong in docs/models.md and docs/realface.md.", no_args_is_help=True)


@top_commands.command()
def serve(
    data_dir: Annotated[
        Path,
        typer.Option(envvar="FREEAVATAR_DATA_DIR", help="Where avatars, jobs and models are kept."),
    ] = Path("data"),
    host: Annotated[
        str, typer.Option(help="Address to bind. Anything but loopback needs --api-key-file.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = DEFAULT_PORT,
    api_key_file: Annotated[
        Path | None,
        typer.Option(help="File with one API key per line; every call must then send one."),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain: serve TLS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for --tls-cert.")] = None,
    max_running_jobs: Annotated[
        int, typer.Option(help="Training jobs run at once, each in its own process.")
    ] = 1,
    job_threads: Annotated[
        int, typer.Option(help="Torch threads per training job; 0 uses every core.")
    ] = 0,
    builtin_avatars: Annotated[
        bool, typer.Option(help="Register the built-in avatars, ready to stream (shipped animator).")
    ] = False,
    pipeline_workers: Annotated[
        int, typer.Option(help="Analysis worker processes for the live pipelines (one per core).")
    ] = 2,
    face_rate: Annotated[
        float, typer.Option(help="Face mesh runs per second per actor at most (frames between follow the face by optical flow); 0: every frame.")
    ] = 15.0,
    face_rate_floor: Annotated[
        float, typer.Option(help="Under load the mesh slows down to this rate rather than frames being dropped; at --face-rate or 0: never.")
    ] = 3.0,
    expression_floor: Annotated[
        float, typer.Option(help="Once the mesh is at its floor, the least share of each actor's frames whose expression is read before whole frames are dropped (the others reuse the last frame's reading; head pose reads every frame); 1: every frame's. No effect with --face-rate 0 (every frame has its own mesh).")
    ] = 0.5,
    emotion_guard: Annotated[
        bool, typer.Option(help="Scale the smile blendshapes down when a real-face emotion classifier reads the face as more negative than happy (MediaPipe reads crying as smiling), and the lowered brows when it reads it as happier than negative (MediaPipe lowers a laughing face's brows); the units the animators read are guarded alike.")
    ] = True,
    blink_curve: Annotated[
        bool, typer.Option(help="Serve blinks as how far the lids are shut: MediaPipe's eyeBlink reads 0.1-0.4 on real open eyes; its 0.15-0.85 becomes 0-1.")
    ] = True,
    jaw_lift: Annotated[
        bool, typer.Option(help="Raise jawOpen to what the face mesh shows of the lips where MediaPipe's blendshapes read less (they read a plainly open mouth as nearly shut), as far as MediaPipe reads no smile (a grin parts the lips over closed teeth).")
    ] = True,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics at http://HOST:PORT/metrics.")
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option(help="Serve WebRTC (WHIP in, WHEP-like out) and the try-it page at http://HOST:PORT/."),
    ] = None,
    peer_timeout: Annotated[
        float, typer.Option(help="End a WebRTC peer nothing has been heard from for this many seconds.")
    ] = 10.0,
    max_sessions_per_key: Annotated[
        int, typer.Option(help="Sessions one API key (or client address, without keys) may keep open; 0: no cap.")
    ] = ServerConfig.max_sessions_per_key,
    max_streams_per_key: Annotated[
        int, typer.Option(help="Animate and subscribe calls one API key (or address) may have open; 0: no cap.")
    ] = ServerConfig.max_streams_per_key,
    max_peers_per_key: Annotated[
        int, typer.Option(help="WebRTC peers (WHIP and WHEP) one API key (or address) may have open; 0: no cap.")
    ] = ServerConfig.max_peers_per_key,
    encoder: Annotated[
        Path | None, typer.Option(help="Expression encoder ONNX file; default: the shipped one.")
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            envvar="FREEAVATAR_CLUSTER",
            help="Join a cluster: its NATS, nats://HOST:4222 (with --store; docs/cluster.md).",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            envvar="FREEAVATAR_STORE",
            help="The cluster's PostgreSQL, postgresql://USER@HOST:5432/DB; the password from PGPASSWORD or PGPASSFILE.",
        ),
    ] = None,
    cluster_credentials: Annotated[
        Path | None,
        typer.Option(
            envvar="FREEAVATAR_CLUSTER_CREDENTIALS",
            help="NATS credentials file (.creds); or FREEAVATAR_NATS_USER and FREEAVATAR_NATS_PASSWORD.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run the FreeAvatar server until Ctrl-C or SIGTERM."""
    from rich.logging import RichHandler

    from freeavatar_server.app.server import serve as run_server  # lazy: the server, only to serve

    logging.basicConfig(
        level=log_level.upper(), format="%(message)s", handlers=[RichHandler(show_path=False)]
    )
    config = ServerConfig(
        data_dir=data_dir,
        host=host,
        port=port,
        api_key_file=api_key_file,
        tls_cert=tls_cert,
        tls_key=tls_key,
        max_running_jobs=max_running_jobs,
        job_threads=job_threads,
        encoder_path=encoder,
        pipeline_workers=pipeline_workers,
        face_rate_hz=face_rate,
        face_rate_floor_hz=face_rate_floor,
        expression_floor=expression_floor,
        emotion_guard=emotion_guard,
        blink_curve=blink_curve,
        jaw_lift=jaw_lift,
        metrics_port=metrics_port,
        http_port=http_port,
        peer_timeout_s=peer_timeout,
        max_sessions_per_key=max_sessions_per_key,
        max_streams_per_key=max_streams_per_key,
        max_peers_per_key=max_peers_per_key,
        builtin_avatars=BUILTIN_NAMES if builtin_avatars else (),
        cluster_url=cluster,
        store_url=store,
        cluster_credentials=cluster_credentials,
    )
    try:
        asyncio.run(run_server(config))
    except ConfigError as error:
        fail(str(error), code=2)


@avatar_commands.command("suggest-keyframes")
def suggest_keyframes(
    video: Annotated[Path, typer.Argument(help="The actor's video (a minute of their range of expressions).")],
    count: Annotated[int, typer.Option(help="How many frames to pose.")] = 20,
    out: Annotated[Path, typer.Option(help="Where the frames (PNG) and keyframes.json go.")] = Path("keyframes"),
) -> None:
    """Pick the frames of an actor's video an artist should pose on an avatar.

    The frames that teach the animator most, spread over the expressions the actor shows. Pose each on the avatar and upload the pairs (`AsyncClient.upload_keyframes`); an animator job fits the avatar to them."""
    from rich.progress import Progress

    from freeavatar_server.tools.keyframes import suggest_from_video  # lazy: the models

    if not video.is_file():
        fail(f"{video} is not a file", code=2)
    if count < 1:
        fail("--count must be at least 1", code=2)
    with Progress(console=console) as progress:
        task = progress.add_task(f"reading the faces in {video.name}", total=None)  # frames, as they come
        try:
            picked = suggest_from_video(video, count, out, progress=lambda frames: progress.update(task, completed=frames))
        except (VideoError, ValueError) as error:
            fail(str(error), code=2)
    console.print(f"wrote {len(picked)} frames to pose and {out / 'keyframes.json'}: frames "
                  + ", ".join(str(p.frame) for p in picked))


@avatar_commands.command("render-samples")
@with_server
def render_samples(
    remote: Remote,
    name: Annotated[str, typer.Argument(help="A built-in: human_arkit, cartoon, robot, cat.")],
    count: Annotated[int, typer.Option(help="How many (rig, image) samples to render and upload.")] = 3000,
    size: Annotated[int, typer.Option(help="Image size in pixels.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed for the proposed rig vectors.")] = 0,
) -> None:
    """Render a built-in avatar's samples with its reference renderer and upload them."""
    from rich.progress import track

    from freeavatar_server.images import encode_png  # lazy: cv2, for this command
    from freeavatar_server.synth.avatars import BUILTIN_AVATARS  # lazy: torch, for this command

    if name not in BUILTIN_AVATARS:
        fail(f"unknown built-in avatar {name!r}; known: {', '.join(BUILTIN_AVATARS)}", code=2)
    builtin = BUILTIN_AVATARS[name]
    with remote.connect() as client:
        avatar = next((a for a in client.list_avatars() if a.name == name), None)
        if avatar is None:
            avatar = client.register_avatar(builtin.spec)
            console.print(f"registered {name} as {avatar.id}")
        elif avatar.spec != builtin.spec:
            fail(f"the server's avatar {name!r} has a different rig from the built-in one")
        rigs = client.sample_rig_vectors(avatar.id, count, seed)

        def samples():  # rendered in batches as the upload streams
            for start in track(range(0, count, 64), description=f"rendering {name}", console=console):
                batch = rigs[start : start + 64]
                for rig, image in zip(batch, builtin.render(batch, size), strict=True):
                    yield rig.tolist(), encode_png(image)

        summary = client.upload_render_samples(avatar.id, samples())
    console.print(f"uploaded {summary.accepted} samples; {name} now has {summary.total}")
    for index, reason in summary.rejected:
        console.print(f"[red]sample {index} rejected: {reason}")


@with_json
def eval_renderer(
    printer: Printer,
    avatars: Annotated[
        str, typer.Option(help="Comma-separated built-in avatars.")
    ] = "human_arkit,cartoon,robot,cat",
    samples: Annotated[int, typer.Option(help="Training samples per avatar.")] = 4000,
    image_size: Annotated[int, typer.Option(help="Training resolution.")] = 64,
    time_budget_s: Annotated[float, typer.Option(help="Training time per avatar.")] = 540.0,
    grid: Annotated[
        Path | None, typer.Option(help="PNG of reference (top) over neural (bottom) renders.")
    ] = Path("docs/renderer_grid.png"),
    seed: Annotated[int, typer.Option(help="Seed for samples and training.")] = 0,
    threads: Annotated[int, typer.Option(help="Torch threads; 0: torch's default.")] = 0,
) -> None:
    """Train a renderer per built-in avatar from reference renders; report held-out PSNR and SSIM."""
    import torch
    from rich.progress import Progress

    if threads:
        torch.set_num_threads(threads)

    from freeavatar_server.training.renderer.evaluate import evaluate_builtin  # lazy: torch
    from freeavatar_server.training.renderer.train import RendererTrainConfig  # lazy: torch

    names = [n.strip() for n in avatars.split(",") if n.strip()]
    config = RendererTrainConfig(
        image_size=image_size, time_budget_s=time_budget_s, steps=10**9, seed=seed
    )
    with Progress(console=console, transient=printer.as_json) as progress:
        tasks = {n: progress.add_task(f"renderer {n}", total=1.0) for n in names}
        results = evaluate_builtin(
            names, samples, config, grid, lambda n, f: progress.update(tasks[n], completed=f)
        )
    lines = [
        f"{name}: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, {m['train_seconds']:.0f} s"
        for name, m in results.items()
    ]
    printer.show({"avatars": results}, "\n".join(lines))


@top_commands.command()
def demo(
    out_dir: Annotated[Path, typer.Option(help="Where demo.mp4 and demo.json go.")] = Path("demo"),
    seconds: Annotated[float, typer.Option(help="Length of the actor clip.")] = 10.0,
    fps: Annotated[float, typer.Option(help="Frame rate the clip is streamed at.")] = 30.0,
    seed: Annotated[int, typer.Option(help="Which synthetic actor and performance.")] = 3,
    video: Annotated[
        Path | None, typer.Option(help="Your own clip as the actor (its first --seconds, at its own frame rate).")
    ] = None,
) -> None:
    """Stream an actor (synthetic, or your own --video) through an in-process server to the built-in avatars.

    Writes a side-by-side video (actor | its face close up, for the synthetic actor | each avatar), six moments of it as a picture, and the latency it measured."""
    from rich.progress import Progress

    from freeavatar_server.tools.demo import DemoConfig, run_demo  # lazy: the server

    if video is not None and not video.is_file():
        raise typer.BadParameter(f"{video} is not a file", param_hint="--video")
    config = DemoConfig(out_dir=out_dir, seconds=seconds, fps=fps, seed=seed, video=video)
    with Progress(console=console) as progress:
        tasks: dict[str, int] = {}

        def report(stage: str, done: float) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=1.0)
            progress.update(tasks[stage], completed=done)

        try:
            result = asyncio.run(run_demo(config, report))
        except VideoError as error:
            fail(str(error), code=2)
    latency = result.latency_ms
    console.print(f"wrote [bold]{result.video}[/] ({result.frames_sent} frames) and {out_dir / 'demo.json'}")
    console.print(
        f"rig frames per avatar: {result.frames_received}; face found in {result.faces_found:.0%}"
    )
    if latency:
        console.print(
            f"frame-in to rig-out latency: p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms "
            f"(the first frame, with call set-up: {result.first_frame_ms:.0f} ms)"
        )


@top_commands.command()
@with_json
@with_server
def stream(
    remote: Remote,
    printer: Printer,
    video: Annotated[Path, typer.Option(help="A video file to play as the actor's camera.")],
    avatar: Annotated[list[str], typer.Option(help="Avatar id or name to drive (repeatable).")],
    fps: Annotated[float | None, typer.Option(help="Send rate; default: the video's own.")] = None,
    livelink: LiveLinkOption = None,
    vmc: VmcOption = None,
    vmc_names: VmcNamesOption = VmcNamesChoice.auto,
    subject: SubjectOption = "",
    session: Annotated[
        str, typer.Option(help="Play as an actor in this session (engines subscribed to it see it).")
    ] = "",
    token: Annotated[str, typer.Option(help="The session's token, on servers with API keys.")] = "",
) -> None:
    """Play a video file as the actor's camera through a running server.

    Shows live rates, latency and each avatar's most active controls; --json prints one JSON line per rig frame instead. With --livelink or --vmc the server also sends the avatars' frames on to Unreal or a VMC app."""
    from freeavatar_server.tools.stream_file import OutputOptions, stream_video  # lazy: av

    outputs = OutputOptions(output_targets(livelink, vmc), vmc_names.names, subject)
    stream_video(video, avatar, fps, remote, outputs, session, token, as_json=printer.as_json)


@bench_app.command("stream")
@with_json
def bench_stream(
    printer: Printer,
    seconds: Annotated[float, typer.Option(help="Length of each load step.")] = 10.0,
    max_actors: Annotated[int, typer.Option(help="Stop the capacity ladder here.")] = 16,
    face_rate: Annotated[
        float | None, typer.Option(help="The server's --face-rate (default: the server's own).")
    ] = None,
    face_rate_floor: Annotated[
        float | None, typer.Option(help="The server's --face-rate-floor (default: the server's own).")
    ] = None,
    expression_floor: Annotated[
        float | None, typer.Option(help="The server's --expression-floor (default: the server's own).")
    ] = None,
    picture: Annotated[
        Path | None, typer.Option(help="Also draw where each rung's milliseconds go (stacked bars) as this PNG.")
    ] = None,
) -> None:
    """Measure latency and capacity against a server process on loopback.

    Latency: one actor at 30 fps, over gRPC and over WebRTC. Capacity: how many actors x avatars are held at 30 fps, over gRPC."""
    from freeavatar_server.tools.bench import bench_stream as run  # lazy: the server

    serve_args = ("--face-rate", str(face_rate)) if face_rate is not None else ()
    if face_rate_floor is not None:
        serve_args += ("--face-rate-floor", str(face_rate_floor))
    if expression_floor is not None:
        serve_args += ("--expression-floor", str(expression_floor))
    result = asyncio.run(run(seconds=seconds, max_actors=max_actors, serve_args=serve_args))
    if picture is not None:
        from freeavatar_server.tools.bench_picture import draw_ladder  # lazy: Pillow

        draw_ladder(result, picture)
    printer.show(result, JSON.from_data(result), indent=None)


@bench_app.command("cluster")
@with_json
def bench_cluster(
    printer: Printer,
    seconds: Annotated[float, typer.Option(help="Length of each measurement.")] = 5.0,
    actors: Annotated[int, typer.Option(help="Actors at 30 fps crossing the hop, for its latency.")] = 20,
    avatars: Annotated[int, typer.Option(help="Rig frames per source frame (avatars bound to an actor).")] = 4,
    nats_url: Annotated[
        str | None, typer.Option("--nats", help="A running NATS, nats://HOST:4222; default: start nats-server on loopback.")
    ] = None,
) -> None:
    """Measure what the hop between two cluster servers adds (p50, p99) and how many rig frames one NATS connection carries (docs/cluster.md)."""
    # lazy: nats-py, of the [cluster] extra, for this command only
    from freeavatar_server.tools import bench_cluster as cluster_bench

    settings = cluster_bench.BenchSettings(seconds=seconds, actors=actors, avatars=avatars, nats_url=nats_url)
    try:
        result = asyncio.run(cluster_bench.bench_cluster(settings))
    except ServiceUnavailable as error:
        fail(str(error), code=2)
    printer.show(result, JSON.from_data(result), indent=None)


train_commands.command("encoder")(train_encoder)
train_commands.command("face")(train_face)
eval_app.command("encoder")(eval_encoder)
eval_app.command("renderer")(eval_renderer)
eval_app.command("animator")(eval_animator)
eval_app.command("realface")(eval_realface)

# Where the server's commands go in `freeavatar`'s tree: group name ("" is the top level) ->
# the commands it gains. `freeavatar.cli.build_app` mounts each group once.
COMMANDS: dict[str, typer.Typer] = {
    "": top_commands,
    "avatars": avatar_commands,
    "train": train_commands,
    "eval": eval_app,
    "bench": bench_app,
    "synth": synth_app,
    "encoder": encoder_app,
}
