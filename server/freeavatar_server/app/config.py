"""The server's configuration: one typed place; `freeavatar serve` is the CLI on top of it."""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_PORT = 50051
# NATS user and password, when the cluster's NATS wants them: from the environment (or use
# --cluster-credentials FILE), never on the command line, which every user of the machine sees.
NATS_USER_VARIABLE = "FREEAVATAR_NATS_USER"
NATS_PASSWORD_VARIABLE = "FREEAVATAR_NATS_PASSWORD"


class ConfigError(ValueError):
    """A configuration the server refuses to start with; the message says why and what to do."""


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0 picks a free port
    api_key_file: Path | None = None  # one key per line; '#' starts a comment
    tls_cert: Path | None = None
    tls_key: Path | None = None
    shutdown_grace_s: float = 5.0  # in-flight calls get this long to finish on SIGINT/SIGTERM
    max_running_jobs: int = 1  # training jobs run at once, each in its own process
    job_threads: int = 0  # torch threads per job process; 0: torch's default (all cores)
    encoder_path: Path | None = None  # expression encoder (ONNX); None: the shipped default
    pipeline_workers: int = 2  # analysis worker processes (decode .. animate), one per core
    face_rate_hz: float = 15.0  # face mesh runs per second per actor at most; 0: every frame
    # what a worker too busy to keep up slows the mesh down to: between runs optical flow
    # follows the face and the encoder carries the blendshapes (research/mesh_rate_sweep.py)
    face_rate_floor_hz: float = 3.0
    # once the meshes are at that floor, the least share of each actor's frames whose
    # expression is still read (the others reuse the last reading; head pose reads every frame)
    expression_floor: float = 0.5
    # a real-face emotion classifier guards the ARKit smile and lowered brows
    # (inference.face.emotion): MediaPipe reads a crying mouth as a smile and lowers a laughing
    # face's brows; off, the smile and brows are MediaPipe's own
    emotion_guard: bool = True
    # MediaPipe's blinks read as how far the lids are shut (inference.face.blink): real open
    # eyes read 0.1-0.4 there; off, its own
    blink_curve: bool = True
    # MediaPipe's jawOpen raised to what its mesh shows of the lips as far as it reads no smile
    # (inference.face.jaw): it reads a plainly open mouth as nearly shut; off, its own
    jaw_lift: bool = True
    builtin_avatars: tuple[str, ...] = ()  # registered at start with the shipped animator
    builtin_animator: Path | None = None  # the animator they get; None: the shipped one
    metrics_port: int | None = None  # Prometheus /metrics on host:port (0 picks a port)
    http_port: int | None = None  # WHIP/WHEP and the try-it page on host:port (0 picks a port)
    peer_timeout_s: float = 10.0  # a WebRTC peer heard nothing from for this long is ended
    # What one caller (an API key; a client address on a server without keys) may hold open at
    # once; past a cap calls get RESOURCE_EXHAUSTED, WHIP/WHEP 429. 0: no cap.
    max_sessions_per_key: int = 64  # sessions from CreateSession
    max_streams_per_key: int = 64  # Animate and Subscribe calls
    max_peers_per_key: int = 16  # WebRTC peers, WHIP and WHEP together
    # Cluster mode (docs/cluster.md), both or neither: rig frames between servers over NATS, the
    # registry, sessions and jobs in PostgreSQL; the data dir (model files) shared by every server.
    cluster_url: str | None = None  # nats://HOST:4222
    store_url: str | None = None  # postgresql://USER@HOST:5432/DB; password: PGPASSWORD or PGPASSFILE
    cluster_credentials: Path | None = None  # a NATS .creds file (JWT and NKey seed)

    def validate(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
        for path in (self.api_key_file, self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ConfigError(f"{path} is not a readable file")
        if self.tls_cert is not None and self.tls_key is not None:
            check_tls_pair(self.tls_cert, self.tls_key)
        if self.api_key_file is None and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to listen on {self.host} without --api-key-file: anyone who can reach "
                "this machine could register, delete and stream avatars. Give --api-key-file "
                "(and --tls-cert/--tls-key so keys do not travel in clear text), or keep the "
                "default host 127.0.0.1."
            )
        if self.api_key_file is not None and not self.read_api_keys():
            raise ConfigError(f"{self.api_key_file} holds no API keys")
        if self.max_running_jobs < 1:
            raise ConfigError("--max-running-jobs must be at least 1")
        for name, port in (("--port", self.port), ("--metrics-port", self.metrics_port), ("--http-port", self.http_port)):
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(f"{name} {port} is not in 0..65535")
        if self.face_rate_hz < 0:
            raise ConfigError("--face-rate must be 0 (every frame) or positive")
        if self.face_rate_floor_hz < 0:
            raise ConfigError("--face-rate-floor must be 0 (never slow down) or positive")
        if not 0 < self.expression_floor <= 1:
            raise ConfigError(f"--expression-floor must be in (0, 1] (1: read every frame's expression), got {self.expression_floor}")
        if self.peer_timeout_s <= 0:
            raise ConfigError("--peer-timeout must be positive")
        for flag, cap in (
            ("--max-sessions-per-key", self.max_sessions_per_key),
            ("--max-streams-per-key", self.max_streams_per_key),
            ("--max-peers-per-key", self.max_peers_per_key),
        ):
            if cap < 0:
                raise ConfigError(f"{flag} must be 0 (no cap) or positive")
        self._validate_cluster()

    def _validate_cluster(self) -> None:
        if (self.cluster_url is None) != (self.store_url is None):
            raise ConfigError(
                "--cluster and --store go together: the servers of a cluster share sessions and jobs "
                "through PostgreSQL and rig frames through NATS (give both, or neither for one server)"
            )
        if self.cluster_url is None or self.store_url is None:
            return
        nats = urlsplit(self.cluster_url)
        if nats.scheme not in ("nats", "tls") or not nats.hostname:
            raise ConfigError(f"--cluster {self.cluster_url!r} is not a NATS URL such as nats://HOST:4222")
        if nats.username or nats.password:
            raise ConfigError(
                f"--cluster carries credentials: give them in --cluster-credentials FILE or "
                f"{NATS_USER_VARIABLE} and {NATS_PASSWORD_VARIABLE}, not in the URL (command lines and logs show it)"
            )
        store = urlsplit(self.store_url)
        if store.scheme not in ("postgresql", "postgres") or not store.path.strip("/"):
            raise ConfigError(f"--store {self.store_url!r} is not a PostgreSQL URL such as postgresql://USER@HOST:5432/DB")
        if store.password:
            raise ConfigError(
                "--store carries a password: give it in PGPASSWORD or a password file (PGPASSFILE, "
                "~/.pgpass) instead of the URL (command lines and logs show it)"
            )
        if self.cluster_credentials is not None and not self.cluster_credentials.is_file():
            raise ConfigError(f"--cluster-credentials {self.cluster_credentials} is not a readable file")

    @property
    def nats_user_password(self) -> tuple[str | None, str | None]:
        return os.environ.get(NATS_USER_VARIABLE) or None, os.environ.get(NATS_PASSWORD_VARIABLE) or None

    def read_api_keys(self) -> frozenset[str]:
        if self.api_key_file is None:
            return frozenset()
        lines = self.api_key_file.read_text().splitlines()
        return frozenset(k for line in lines if (k := line.split("#", 1)[0].strip()))

    @property
    def ice_hosts(self) -> tuple[str, ...] | None:
        """Where WebRTC media is offered: the host the server binds (loopback serves this
        machine only), or every interface but loopback for a wildcard host (None)."""
        if self.host in ("", "0.0.0.0", "::", "[::]"):
            return None
        if self.host == "localhost":
            return ("127.0.0.1",)
        try:
            return (str(ipaddress.ip_address(self.host.strip("[]"))),)
        except ValueError:
            return None  # a host name: let ICE find the interfaces

    @property
    def store_path(self) -> Path:
        return self.data_dir / "freeavatar.sqlite3"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_tls_pair(cert: Path, key: Path) -> None:
    """ConfigError unless `cert` and `key` load as a matching certificate chain and private key.

    gRPC only says "failed to bind" for a pair it cannot use (swapped files, a key of another
    certificate); the ssl module names the problem, so it is asked first.
    """
    try:
        # an empty password: an encrypted key fails here (gRPC cannot use one) instead of
        # OpenSSL prompting on the terminal
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(
            f"--tls-cert {cert} and --tls-key {key} are not a certificate and its private key "
            f"(swapped, or from different pairs?): {getattr(error, 'reason', None) or error}"
        ) from None
