"""The shared multi-avatar animator: (16-d expression embedding, avatar) -> that avatar's rig.

One network serves every avatar. What is shared, and what each avatar owns:

* shared trunk: an MLP over the embedding whose residual blocks are FiLM-modulated by the
  avatar's code (the dynamic identity injection: the same expression features are re-weighted
  per avatar, e.g. a robot with no cheeks routes cheek motion elsewhere), ending in a few
  expression tokens;
* shared readout: every control is a query token that cross-attends to the expression tokens,
  then a shared MLP turns the attended features into that control's value;
* per avatar: a code (16 numbers), a modulation of its own (a scale and shift per trunk
  feature, added to what the code makes; zero until tuned), one query embedding per control,
  and the controls' ranges.

So rigs of any size need no decoder of their own, and a new avatar adds only its code,
modulation and control queries: tuning those with the shared weights frozen cannot change the
outputs of avatars already tuned. The code alone steers the trunk only along the 16 directions
the shared FiLM layers learnt; the modulation lets an added avatar bend every trunk feature
(an added cat: held-out error 0.0871 with it, 0.0889 without; CHANGELOG.md).

That is the "attention" read-out (`AnimatorConfig.readout`). The "linear" one is what a handful
of keyframes can fit: each control reads the input row, standardised by the network's shared
mean and scale (from unlabeled actors), through weights and a bias of its own, and then a dead
zone of its own: offsets within it read as rest, and the rest of the range is stretched to
start at its edge, so a control still reaches the end of its range. (The keyframes show how
often each control rests; a linear read-out of a noisy reading never quite does.) From 20
keyframes per avatar it follows held-out actors far better than the attention read-out, which
fits the keyframes and little else (docs/models.md, "Animator"). An avatar then owns its
weights, bias and dead zone only; there is no trunk.

Outputs stay in each control's [min, max]. The network predicts each control's offset from its
default in units of its range, and `output` bounds it:

* "clamp" (the default): clamp(default + offset, 0, 1), with the gradient passed straight
  through the clamp. The animator starts at the avatar's resting pose and a control can sit
  exactly at its default (most do in any one expression) without going numb: most defaults are
  at an end of the range (a blendshape at 0), where a sigmoid must saturate to reach them and
  then passes almost no gradient (that left human_arkit's 52 controls frozen at zero, the
  same for every actor).
* "sigmoid": sigmoid(offset), the first design, kept so that older checkpoints load.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from freeavatar.rig import RigSpec
from freeavatar_server.files import write_atomically

OUTPUTS = ("clamp", "sigmoid")
READOUTS = ("attention", "linear")


@dataclass(frozen=True)
class AnimatorConfig:
    """The network's shape. One input row is, in this order (`input_parts`): the encoder's
    embedding, the front end's blendshapes if it reads them, the encoder's action units if it
    reads them."""

    embed_dim: int = 16  # the expression encoder's embedding; 0: not read (the units alone)
    # ARKit's 52 when the animator also reads the front end's blendshapes (appended to the
    # embedding); 0: the embedding alone (animators trained before the real-face front end)
    blendshape_dim: int = 0
    # The encoder's action-unit read-out (its 25 standardised units), appended last, when the
    # animator reads it; 0: it does not (every animator before the read-out was served)
    unit_dim: int = 0
    code_dim: int = 16  # avatar identity code (the paper's avatar-ID embedding is 16-d too)
    width: int = 128  # trunk width
    blocks: int = 2  # FiLM-modulated residual blocks
    tokens: int = 8  # expression tokens the controls attend to
    token_dim: int = 32
    heads: int = 4
    output: str = "clamp"  # "clamp" or "sigmoid": how outputs are held in range (module docstring)
    # "attention": the trunk and control queries; "linear": each control a linear read-out of the
    # standardised input row (module docstring)
    readout: str = "attention"

    @property
    def input_parts(self) -> tuple[tuple[str, int], ...]:
        """(name, width) of each part of one input row, in the order they are joined; parts
        the animator does not read are left out."""
        parts = (("embedding", self.embed_dim), ("blendshapes", self.blendshape_dim), ("units", self.unit_dim))
        return tuple((name, width) for name, width in parts if width)

    @property
    def in_dim(self) -> int:
        """The width of one input row."""
        return sum(width for _, width in self.input_parts)

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown animator output {self.output!r}: expected one of {OUTPUTS}")
        if self.readout not in READOUTS:
            raise ValueError(f"unknown animator readout {self.readout!r}: expected one of {READOUTS}")
        if self.readout == "linear" and self.output != "clamp":
            raise ValueError("a linear readout's outputs are clamped; it has no sigmoid form")


def animator_inputs(
    config: AnimatorConfig,
    embeddings: torch.Tensor | None,
    units: torch.Tensor | None = None,
    blendshapes: torch.Tensor | None = None,
) -> torch.Tensor:
    """The input rows an animator of `config` reads (`AnimatorConfig.input_parts`), from what
    the encoder and the front end gave; ValueError naming a part it reads and was not given.
    (The ONNX runtime, `inference.animator`, joins the same parts in the same order.)"""
    given = {"embedding": embeddings, "blendshapes": blendshapes, "units": units}
    parts = []
    for name, width in config.input_parts:
        part = given[name]
        if part is None:
            raise ValueError(f"this animator reads {width} {name} and none were given")
        if part.shape[-1] != width:
            raise ValueError(f"this animator reads {width} {name}, got {part.shape[-1]}")
        parts.append(part)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


@dataclass(frozen=True)
class AvatarRig:
    """What the animator needs to know about one avatar's rig."""

    names: tuple[str, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    default: tuple[float, ...]

    @classmethod
    def from_spec(cls, spec: RigSpec) -> AvatarRig:
        return cls(
            tuple(c.name for c in spec.controls),
            tuple(float(c.min) for c in spec.controls),
            tuple(float(c.max) for c in spec.controls),
            tuple(float(v) for v in spec.defaults),
        )

    @property
    def n_controls(self) -> int:
        return len(self.names)

    @property
    def span(self) -> np.ndarray:
        """(n_controls,) each control's range: the unit the retargeting error is measured in."""
        return np.asarray(self.maximum) - np.asarray(self.minimum)


def place(offset: torch.Tensor, default: torch.Tensor, output: str) -> torch.Tensor:
    """The network's per-control output -> unit-space values before `bound`: an offset from
    the default for the clamp; the sigmoid's input as it is."""
    return offset if output == "sigmoid" else default + offset


def bound(z: torch.Tensor, output: str) -> torch.Tensor:
    """Unbounded unit-space values -> [0, 1]."""
    if output == "sigmoid":
        return torch.sigmoid(z)
    return z.clamp(0, 1).detach() + (z - z.detach())  # forward: clamp; backward: straight through


def excess(z: torch.Tensor, output: str) -> torch.Tensor:
    """How far unbounded values sit where the bound hides them: the "plausible" regulariser's
    input (saturated pre-sigmoid values; for the clamp, the distance outside [0, 1])."""
    return z.pow(2) if output == "sigmoid" else (z - z.clamp(0, 1)).pow(2)


def unit_default(rig: AvatarRig) -> torch.Tensor:
    """Each control's default as a position in its range."""
    lo = torch.tensor(rig.minimum, dtype=torch.float32)
    return (torch.tensor(rig.default, dtype=torch.float32) - lo) / (torch.tensor(rig.maximum, dtype=torch.float32) - lo)


MAX_DEAD_ZONE = 0.5  # of a control's range: whatever its keyframes, a control keeps half to move in


def dead_zone(offset: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Offsets within `width` (< 1) of zero read as zero; beyond it, what exceeds the width is
    stretched by 1 / (1 - width), so that an offset of a whole range is still one (a gamepad's
    scaled dead zone). No zone (width 0) is the identity, gradient included: a readout that
    starts at zero must be able to leave it by gradient (sign and relu would pass none there)."""
    moved = offset - torch.sign(offset) * width
    return torch.where(offset.abs() >= width, moved, torch.zeros_like(offset)) / (1 - width)


class FiLMBlock(nn.Module):
    """Pre-norm residual MLP block whose hidden features are scaled and shifted by the code."""

    def __init__(self, width: int, code_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.film = nn.Linear(code_dim, 2 * width)
        nn.init.zeros_(self.film.weight)  # starts as identity modulation
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        h = self.fc1(self.norm(x)) * (1 + gamma) + beta
        return x + self.fc2(F.gelu(h))


class SharedAnimator(nn.Module):
    def __init__(self, config: AnimatorConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        # Per-avatar parameters, keyed by avatar id.
        self.codes = nn.ParameterDict()
        self.modulations = nn.ParameterDict()  # (blocks, 2 * width): added to each block's FiLM
        self.queries = nn.ParameterDict()
        self.weights = nn.ParameterDict()  # linear readout: (n_controls, in_dim) per avatar
        self.biases = nn.ParameterDict()  # linear readout: (n_controls,) per avatar
        self.rigs: dict[str, AvatarRig] = {}
        if c.readout == "linear":
            self.register_buffer("input_mean", torch.zeros(c.in_dim))
            self.register_buffer("input_scale", torch.ones(c.in_dim))
            return
        self.stem = nn.Linear(c.in_dim, c.width)
        self.blocks = nn.ModuleList(FiLMBlock(c.width, c.code_dim) for _ in range(c.blocks))
        self.to_tokens = nn.Linear(c.width, c.tokens * c.token_dim)
        self.token_pos = nn.Parameter(torch.randn(c.tokens, c.token_dim) * 0.02)
        self.query_from_code = nn.Linear(c.code_dim, c.token_dim)
        self.attend = nn.MultiheadAttention(c.token_dim, c.heads, batch_first=True)
        # the attention readout's MLP (config.readout names the kind; the attribute keeps the
        # name older checkpoints' state dicts use)
        self.readout = nn.Sequential(
            nn.Linear(2 * c.token_dim, c.width), nn.GELU(), nn.Linear(c.width, 1)
        )

    # -- avatars ------------------------------------------------------------------------------

    @property
    def avatar_ids(self) -> list[str]:
        return list(self.rigs)

    def add_avatar(self, avatar_id: str, rig: AvatarRig, seed: int = 0) -> None:
        """A new avatar: a fresh code, no modulation of its own yet, one query per control (a
        linear readout: zero weights and bias, so it starts at its resting pose)."""
        if avatar_id in self.rigs:
            raise ValueError(f"avatar {avatar_id!r} is already in the animator")
        g = torch.Generator().manual_seed(seed)
        key = _key(avatar_id)
        if self.config.readout == "linear":
            self.weights[key] = nn.Parameter(torch.zeros(rig.n_controls, self.config.in_dim))
            self.biases[key] = nn.Parameter(torch.zeros(rig.n_controls))
            self.register_buffer(f"dead_zone_{key}", torch.zeros(rig.n_controls))  # set from keyframes
        else:
            self.codes[key] = nn.Parameter(torch.randn(self.config.code_dim, generator=g) * 0.1)
            self.modulations[key] = nn.Parameter(torch.zeros(self.config.blocks, 2 * self.config.width))
            self.queries[key] = nn.Parameter(torch.randn(rig.n_controls, self.config.token_dim, generator=g) * 0.5)
        self.rigs[avatar_id] = rig
        self.register_buffer(f"lo_{key}", torch.tensor(rig.minimum, dtype=torch.float32))
        self.register_buffer(f"span_{key}", torch.tensor(rig.maximum, dtype=torch.float32) - torch.tensor(rig.minimum))
        self.register_buffer(f"default_{key}", unit_default(rig), persistent=False)  # from the rig

    def avatar_parameters(self, avatar_id: str) -> list[nn.Parameter]:
        key = _key(avatar_id)
        if self.config.readout == "linear":
            return [self.weights[key], self.biases[key]]
        return [self.codes[key], self.modulations[key], self.queries[key]]

    def shared_parameters(self) -> list[nn.Parameter]:
        own = {id(p) for d in (self.codes, self.modulations, self.queries, self.weights, self.biases)
               for p in d.parameters()}
        return [p for p in self.parameters() if id(p) not in own]

    def standardise_inputs(self, rows: torch.Tensor) -> None:
        """A linear readout's shared input scale: each input's mean and spread over `rows`
        (unlabeled actors' readings), so that one penalty on the weights treats every input alike."""
        if self.config.readout != "linear":
            raise ValueError("only a linear readout standardises its inputs")
        if len(rows) < 2:
            raise ValueError(f"an input scale needs at least 2 rows, got {len(rows)}")
        with torch.no_grad():
            self.input_mean.copy_(rows.mean(0))
            self.input_scale.copy_(rows.std(0).clamp(min=1e-6))

    def standardised(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) input rows in the linear readout's standard units."""
        return (rows - self.input_mean) / self.input_scale

    def modulation(self, avatar_id: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each trunk block's (scale, shift) for this avatar: its code through the block's FiLM
        layer, plus its own modulation."""
        key = _key(avatar_id)
        code, own = self.codes[key], self.modulations[key]
        return [(block.film(code) + own[i]).chunk(2, dim=-1) for i, block in enumerate(self.blocks)]

    # -- forward ------------------------------------------------------------------------------

    def unbounded(self, embeddings: torch.Tensor, avatar_id: str) -> torch.Tensor:
        """(B, in_dim) -> (B, n_controls) unit-space values before `bound`."""
        default = getattr(self, f"default_{_key(avatar_id)}")
        return place(self.readout_values(embeddings, avatar_id), default, self.config.output)

    def trunk(self, embeddings: torch.Tensor, avatar_id: str) -> torch.Tensor:
        """(B, in_dim) -> (B, width): the expression features, modulated for this avatar."""
        x = self.stem(embeddings)
        for block, (gamma, beta) in zip(self.blocks, self.modulation(avatar_id), strict=True):
            x = block(x, gamma, beta)
        return x

    def control_queries(self, avatar_id: str) -> torch.Tensor:
        """(n_controls, token_dim): one query per control of this avatar."""
        key = _key(avatar_id)
        return self.queries[key] + self.query_from_code(self.codes[key])

    def readout_values(self, embeddings: torch.Tensor, avatar_id: str) -> torch.Tensor:
        """(B, in_dim) -> (B, n_controls): each control's offset from its default (the
        sigmoid's input for sigmoid outputs)."""
        if self.config.readout == "linear":
            key = _key(avatar_id)
            raw = self.standardised(embeddings) @ self.weights[key].T + self.biases[key]
            return dead_zone(raw, getattr(self, f"dead_zone_{key}"))
        return self.control_readout(self.trunk(embeddings, avatar_id), avatar_id)

    def control_readout(self, x: torch.Tensor, avatar_id: str) -> torch.Tensor:
        """(B, width) trunk features -> (B, n_controls): each control's query attends to the
        expression tokens."""
        # -1, not len(x): keeps the batch axis dynamic in the exported ONNX graph
        tokens = self.to_tokens(x).view(-1, self.config.tokens, self.config.token_dim) + self.token_pos
        query = self.control_queries(avatar_id).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        attended, _ = self.attend(query, tokens, tokens, need_weights=False)
        return self.readout(torch.cat([attended, query], dim=-1)).squeeze(-1)

    def normalized(self, embeddings: torch.Tensor, avatar_id: str) -> torch.Tensor:
        """(B, n_controls) in [0, 1]: each control's position within its range."""
        return bound(self.unbounded(embeddings, avatar_id), self.config.output)

    def to_rig(self, unit: torch.Tensor, avatar_id: str) -> torch.Tensor:
        key = _key(avatar_id)
        return getattr(self, f"lo_{key}") + unit * getattr(self, f"span_{key}")

    def forward(self, embeddings: torch.Tensor, avatar_id: str) -> torch.Tensor:
        """(B, in_dim) -> (B, n_controls) rig values in each control's own range."""
        return self.to_rig(self.normalized(embeddings, avatar_id), avatar_id)


class PerAvatarDecoder(nn.Module):
    """Baseline: one plain decoder per avatar (the paper's alternative it improves on): an MLP of
    the same trunk width with residual blocks and the same bounded outputs."""

    def __init__(self, config: AnimatorConfig, rig: AvatarRig, in_dim: int | None = None) -> None:
        super().__init__()
        self.config, self.rig = config, rig
        self.stem = nn.Linear(in_dim or config.in_dim, config.width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(config.width), nn.Linear(config.width, config.width), nn.GELU(),
                          nn.Linear(config.width, config.width))
            for _ in range(config.blocks)
        )
        self.head = nn.Linear(config.width, rig.n_controls)
        self.register_buffer("lo", torch.tensor(rig.minimum, dtype=torch.float32))
        self.register_buffer("span", torch.tensor(rig.maximum, dtype=torch.float32) - self.lo)
        self.register_buffer("default", unit_default(rig), persistent=False)

    def unbounded(self, embeddings: torch.Tensor, avatar_id: str = "") -> torch.Tensor:
        x = self.stem(embeddings)
        for block in self.blocks:
            x = x + block(x)
        return place(self.head(x), self.default, self.config.output)

    def normalized(self, embeddings: torch.Tensor, avatar_id: str = "") -> torch.Tensor:
        return bound(self.unbounded(embeddings), self.config.output)

    def to_rig(self, unit: torch.Tensor, avatar_id: str = "") -> torch.Tensor:
        return self.lo + unit * self.span

    def forward(self, embeddings: torch.Tensor, avatar_id: str = "") -> torch.Tensor:
        return self.to_rig(self.normalized(embeddings))


def _key(avatar_id: str) -> str:
    """ParameterDict keys may not contain dots; avatar ids are uuids or names."""
    return "a_" + avatar_id.replace(".", "_").replace("-", "_")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_animator(model: SharedAnimator, path: Path, metrics: dict[str, object] | None = None) -> None:
    """Config and every avatar's rig travel inside the checkpoint: loading needs nothing else.
    Written whole or not at all (files.py), as save_renderer."""
    buffer = io.BytesIO()
    torch.save(
        {
            "config": asdict(model.config),
            "avatars": {aid: asdict(rig) for aid, rig in model.rigs.items()},
            "state_dict": model.state_dict(),
            "metrics": metrics or {},
        },
        buffer,
    )
    write_atomically(path, buffer.getvalue())


def saved_config(config: dict[str, object]) -> AnimatorConfig:
    """A checkpoint's config; those from before `output` existed used sigmoids."""
    return AnimatorConfig(**{"output": "sigmoid", **config})


def load_animator(path: Path) -> SharedAnimator:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = SharedAnimator(saved_config(checkpoint["config"]))
    for avatar_id, rig in checkpoint["avatars"].items():
        model.add_avatar(avatar_id, AvatarRig(**{k: tuple(v) for k, v in rig.items()}))
    # checkpoints from before per-avatar modulations: theirs are the zeros add_avatar made
    state = {**{k: v for k, v in model.state_dict().items() if k.startswith("modulations.")}, **checkpoint["state_dict"]}
    model.load_state_dict(state)
    return model.eval()


def checkpoint_metrics(path: Path) -> dict[str, object]:
    return torch.load(path, map_location="cpu", weights_only=True).get("metrics", {})

