"""The FreeAvatar server wired together: the live streams, the engine outputs, the jobs, the gRPC
services (health, reflection, auth, TLS), WebRTC when asked, and clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from freeavatar._proto import (
    avatar_pb2,
    avatar_pb2_grpc,
    job_pb2,
    job_pb2_grpc,
    stream_pb2,
    stream_pb2_grpc,
)
from freeavatar.wire import CHANNEL_OPTIONS
from freeavatar_server.app.config import ConfigError, ServerConfig, is_loopback
from freeavatar_server.app.metrics import serve_metrics
from freeavatar_server.avatars.builtin import install_builtin_avatars
from freeavatar_server.inference.shipped import ENCODER_INT8_ONNX
from freeavatar_server.jobs.manager import JobManager, JobSource
from freeavatar_server.jobs.worker import STORE_URL_VARIABLE
from freeavatar_server.live.caps import Tally
from freeavatar_server.live.models import LiveModels
from freeavatar_server.live.sessions import SessionLink, SessionRegistry
from freeavatar_server.live.streams import LiveStreams
from freeavatar_server.store import SqliteStore, Store, StoreError, StoreUnusable
from freeavatar_server.transport.auth import ApiKeyInterceptor, Callers
from freeavatar_server.transport.engines import OutputManager
from freeavatar_server.transport.grpc.avatars import AvatarService
from freeavatar_server.transport.grpc.jobs import JobService
from freeavatar_server.transport.grpc.requests import RequestBounds
from freeavatar_server.transport.grpc.streams import StreamService

if TYPE_CHECKING:  # the cluster's modules need the [cluster] extra: imported only in cluster mode
    from freeavatar_server.cluster.node import ClusterNode

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    avatar_pb2.DESCRIPTOR.services_by_name["AvatarService"].full_name,
    job_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    stream_pb2.DESCRIPTOR.services_by_name["StreamService"].full_name,
)


class FreeAvatarServer:
    """Owns the gRPC server and the store for its lifetime: `start`, then `stop`."""

    def __init__(self, config: ServerConfig) -> None:
        config.validate()
        self.config = config
        self.port = 0
        self._store: Store | None = None
        self._jobs: JobManager | None = None
        self._live: LiveStreams | None = None
        self._outputs: OutputManager | None = None
        self._metrics: Any = None  # the Prometheus HTTP server, when configured
        self.metrics_port = 0
        self._http: Any = None  # WHIP/WHEP and the page, when configured
        self.http_port = 0
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health_updates: set[asyncio.Task[None]] = set()  # held until done
        self._cluster: ClusterNode | None = None  # with --cluster
        self._cluster_problem: str | None = None  # what its health check last found wrong, if anything
        # how this server is known in a cluster (NATS connections, job claims, logs)
        self.server_id = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"

    async def start(self) -> int:
        """Open the store, bind and start serving; returns the bound port."""
        config = self.config
        self._loop = asyncio.get_running_loop()
        if config.cluster_url is not None:
            await self._join_cluster()  # its store, or ConfigError naming what it cannot reach
        else:
            try:
                self._store = SqliteStore(config.store_path, on_unusable=self._store_unusable)
            except StoreError as error:  # a corrupt, empty or read-only file: named, with the fix
                raise ConfigError(str(error)) from None
        assert self._store is not None
        if config.builtin_avatars:
            try:
                install_builtin_avatars(
                    self._store, config.data_dir, list(config.builtin_avatars), config.builtin_animator
                )
            except BaseException:
                await self._leave_cluster()
                raise
        keys = config.read_api_keys()
        models = LiveModels(self._store, config.data_dir, config.encoder_path or default_encoder_path())
        callers = Callers(keyed=bool(keys))
        cluster = self._cluster
        link: SessionLink | None = cluster.sessions if cluster is not None else None
        sessions = SessionRegistry(
            require_tokens=bool(keys),
            tally=Tally("sessions", config.max_sessions_per_key, "--max-sessions-per-key"),
            link=link,
        )
        self._live = LiveStreams(
            self._store, models, sessions, config.pipeline_workers,
            face_rate_hz=config.face_rate_hz, face_rate_floor_hz=config.face_rate_floor_hz,
            emotion_guard=config.emotion_guard, expression_floor=config.expression_floor,
            blink_curve=config.blink_curve, jaw_lift=config.jaw_lift,
        )  # fmt: skip
        self._outputs = OutputManager(sessions, self._live.stats)
        # In a cluster, a model or an avatar that changes here changes on every server.
        model_changed = cluster.model_changed if cluster is not None else models.refresh
        avatar_deleted = cluster.avatar_deleted if cluster is not None else self._avatar_deleted
        self._jobs = JobManager(
            self._store,
            config.data_dir,
            config.max_running_jobs,
            config.job_threads,
            on_model_published=model_changed,
            job_environment={STORE_URL_VARIABLE: config.store_url} if config.store_url else None,
            watch_poll_s=0.5 if cluster is not None else None,
        )
        if cluster is not None:
            assert cluster.sessions is not None
            cluster.sessions.attach(self._live)
            source: JobSource = cluster.make_job_queue(self._jobs.stop_here)
            self._jobs.use_source(source)
            await cluster.start(models.refresh, self._avatar_deleted, self._cluster_health)
        server = grpc.aio.server(
            # RequestBounds innermost: a call without a valid key is refused unparsed.
            interceptors=[*([ApiKeyInterceptor(keys)] if keys else []), RequestBounds()],
            options=[
                *CHANNEL_OPTIONS,  # the message limit both ends share
                # Otherwise a second server on the same port silently shares its traffic.
                ("grpc.so_reuseport", 0),
            ],
        )
        avatars = AvatarService(self._store, avatar_deleted, model_changed)
        avatar_pb2_grpc.add_AvatarServiceServicer_to_server(avatars, server)
        streams = Tally("streams", config.max_streams_per_key, "--max-streams-per-key")
        stream_service = StreamService(self._live, self._outputs, callers, streams)
        stream_pb2_grpc.add_StreamServiceServicer_to_server(stream_service, server)
        job_pb2_grpc.add_JobServiceServicer_to_server(JobService(self._store, self._jobs), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = f"{config.host}:{config.port}"
        try:
            if config.tls_cert and config.tls_key:
                credentials = grpc.ssl_server_credentials(
                    [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
                )
                self.port = server.add_secure_port(address, credentials)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as error:  # grpc's way of saying the address is taken or invalid
            await self._leave_cluster()
            self._store.close()
            raise ConfigError(f"cannot listen on {address}: {error}") from None
        if config.http_port is not None:
            try:
                self._http, self.http_port = await self._start_http(keys)
            except ConfigError:
                await server.stop(None)  # frees the gRPC port it has bound
                await self._leave_cluster()
                self._store.close()
                raise
        if config.builtin_avatars:  # a server meant to stream at once: its first frame is not slow
            await self._live.warm_up()
        await server.start()
        await self._jobs.start()
        if config.metrics_port is not None:
            self._metrics, self.metrics_port = serve_metrics(
                self._live.snapshot, config.host, config.metrics_port
            )
            log.info("Prometheus metrics on http://%s:%d/metrics", config.host, self.metrics_port)
        self._server = server
        if self._cluster is None or self._cluster_problem is None:
            await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        if self._store.problem is not None:  # broke while starting (between the checks and now)
            self._store_unusable(self._store.problem)
        self._log_listening(bool(keys))
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking calls; in-flight calls get `grace` seconds, then are cancelled."""
        await self._health.enter_graceful_shutdown()
        if self._jobs is not None:  # first, so that job watchers see their jobs end
            await self._jobs.stop()
            self._jobs = None
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics = None
        if self._http is not None:  # ends every WebRTC peer, before the streams they feed
            await self._http.stop()
            self._http = None
        if self._outputs is not None:
            await self._outputs.stop()
            self._outputs = None
        if self._live is not None:  # ends every stream with a clear reason
            await self._live.stop()
            self._live = None
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace_s if grace is None else grace)
            self._server = None
        await self._leave_cluster()
        if self._store is not None:
            self._store.close()
            self._store = None

    def _store_unusable(self, problem: StoreUnusable) -> None:
        """The store found its file unusable (corrupt, read-only, gone): health says NOT_SERVING
        so load balancers and orchestrators take this server out. Called from store threads."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def report() -> None:
            log.error("%s; health is NOT_SERVING until the server restarts with a usable store", problem)
            task = loop.create_task(self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING))
            self._health_updates.add(task)
            task.add_done_callback(self._health_updates.discard)

        loop.call_soon_threadsafe(report)

    async def _join_cluster(self) -> None:
        """Open the cluster's PostgreSQL store and connect to its NATS; ConfigError naming the
        one that cannot be reached."""
        # lazy: nats-py and psycopg (the [cluster] extra), imported only to join a cluster
        from freeavatar_server.cluster.node import ClusterUnreachable, join_cluster

        config = self.config
        assert config.cluster_url is not None and config.store_url is not None
        user, password = config.nats_user_password
        try:
            node = await join_cluster(
                config.cluster_url, config.store_url, self.server_id, config.cluster_credentials, user, password
            )
        except (StoreError, ClusterUnreachable) as error:  # named, with what to check
            raise ConfigError(str(error)) from None
        self._store, self._cluster = node.store, node
        log.info("in a cluster as %s: NATS at %s, %s", self.server_id, config.cluster_url, node.store.where)

    async def _leave_cluster(self) -> None:
        if self._cluster is not None:
            await self._cluster.stop()
            self._cluster = None

    async def _cluster_health(self, problem: str | None) -> None:
        """NATS or PostgreSQL went away (NOT_SERVING, so load balancers send callers to other
        servers) or came back (SERVING)."""
        self._cluster_problem = problem
        if self._server is None:
            return  # not serving yet: start() reports it
        serving = health_pb2.HealthCheckResponse
        await self._set_health(serving.SERVING if problem is None else serving.NOT_SERVING)

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    async def _avatar_deleted(self, avatar_id: str) -> None:
        """Unbind a deleted avatar everywhere; its streams and outputs end, others carry on."""
        assert self._live is not None and self._outputs is not None
        self._live.avatar_deleted(avatar_id)
        self._outputs.avatar_deleted(avatar_id)

    async def _start_http(self, keys: frozenset[str]) -> tuple[Any, int]:
        from freeavatar_server.transport.webrtc.http import HttpServer  # lazy: aiohttp and aiortc
        from freeavatar_server.transport.webrtc.peers import WebRtcService  # load only if served

        config = self.config
        assert self._live is not None
        peers = Tally("WebRTC peers", config.max_peers_per_key, "--max-peers-per-key")
        webrtc = WebRtcService(self._live, config.ice_hosts, config.peer_timeout_s, peers)
        tls = None
        if config.tls_cert and config.tls_key:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(config.tls_cert, config.tls_key)
        http = HttpServer(webrtc, keys, config.host, config.http_port or 0, tls)
        try:
            port = await http.start()
        except OSError as error:
            raise ConfigError(str(error)) from None
        scheme = "https" if tls else "http"
        log.info("WebRTC (WHIP, WHEP) and the page on %s://%s:%d/", scheme, config.host, port)
        return http, port

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    def _log_listening(self, with_keys: bool) -> None:
        config = self.config
        where = f"{config.host}:{self.port}"
        scheme = "TLS" if config.tls_cert else "plaintext"
        auth = "API keys required" if with_keys else "no API keys"
        log.info("FreeAvatar serving on %s (%s, %s), data in %s", where, scheme, auth, config.data_dir)
        if is_loopback(config.host):
            log.info("listening on loopback only; --host with --api-key-file serves other machines")


def default_encoder_path() -> Path:
    return ENCODER_INT8_ONNX


async def serve(config: ServerConfig) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly."""
    server = FreeAvatarServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down: in-flight calls get %.1f s", config.shutdown_grace_s)
    finally:
        await server.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("stopped")
