"""`freeavatar eval animator`: retargeting quality on held-out synthetic actors.

For every built-in avatar, on actors whose identities no training ever saw:

* retargeting error: mean absolute difference between the predicted controls and the synthetic
  ground-truth mapping (expected_rig of the actor's action units), in units of each control's
  range (0 = perfect, 1 = the whole range off);
* retargeting correlation: per control, how well the predicted values follow the expected ones
  across actors (Pearson r, averaged over controls): the error rewards sitting still on sparse
  rigs (most controls rest in any one expression), the correlation does not;
* expression consistency through the REFERENCE renderer (the engine stand-in, not the neural
  renderer the animator trained through): || E(reference_render(rig)) - E(actor image) ||^2.

Models compared: the shared animator, one decoder per avatar trained the same way, a geometry
baseline (hand-made face measurements in place of the embedding, same training), and two
anchors that need no training: the neutral rig, and the ground-truth rig itself (its
consistency is the best the encoder can tell).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from freeavatar_server.images import encode_png, resize
from freeavatar_server.synth.avatars import BUILTIN_AVATARS, BuiltinAvatar
from freeavatar_server.training.animator.data import HELDOUT_IDENTITY_OFFSET, actor_images
from freeavatar_server.training.animator.encoding import embed_images, read_images
from freeavatar_server.training.animator.model import (
    AvatarRig,
    PerAvatarDecoder,
    SharedAnimator,
    animator_inputs,
    count_parameters,
    load_animator,
    saved_config,
)
from freeavatar_server.training.correlation import column_correlations
from freeavatar_server.training.encoder.evaluate import geometry_features

HELDOUT_SEED = 12
SHARED_FILE = "animator.pt"


def per_avatar_file(kind: str, name: str) -> str:
    return f"{kind}_{name}.pt"


@dataclass
class HeldOut:
    images: np.ndarray  # (N, 64, 64, 3) uint8
    action_units: np.ndarray  # (N, N_AU): ground truth, evaluation only
    embeddings: torch.Tensor  # (N, 16)
    geometry: torch.Tensor  # (N, G) hand-made measurements
    units: torch.Tensor | None = None  # (N, 25) the encoder's action-unit read-out, if it has one

    def inputs(self, model: SharedAnimator | PerAvatarDecoder) -> torch.Tensor:
        """What `model` reads of these actors (its config's input parts)."""
        return animator_inputs(model.config, self.embeddings, self.units)


def geometry_inputs(images: np.ndarray) -> torch.Tensor:
    """The geometry baseline's input: brow/eye/mouth blob measurements (z-scored over the set)."""
    return torch.from_numpy(geometry_features(images).astype(np.float32))


def build_heldout(encoder: torch.nn.Module, n: int = 600, seed: int = HELDOUT_SEED) -> HeldOut:
    size = encoder.cfg.img_size  # actors are seen at the encoder's resolution, as in the pipeline
    actors = actor_images(n, identity_offset=HELDOUT_IDENTITY_OFFSET, n_identities=60, seed=seed, size=size)
    embeddings, units = read_images(encoder, actors.images)
    return HeldOut(actors.images, actors.action_units, embeddings, geometry_inputs(actors.images), units)


def retarget_error(predicted: np.ndarray, truth: np.ndarray, rig: AvatarRig) -> float:
    return float((np.abs(predicted - truth) / rig.span).mean())


def retarget_correlation(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean over controls of the Pearson correlation between predicted and expected values
    across actors: does the rig follow the expression at all, whatever its scale? Controls the
    ground truth never moves (the mapping leaves them at rest) are left out; a control that
    should move but whose prediction never does counts as 0."""
    r = column_correlations(predicted, truth)
    return float(np.nanmean(r)) if not np.isnan(r).all() else 0.0


@torch.no_grad()
def reference_consistency(avatar: BuiltinAvatar, rigs: np.ndarray, encoder: torch.nn.Module, targets: torch.Tensor) -> float:
    size = encoder.cfg.img_size
    rendered = np.concatenate([avatar.render(rigs[i : i + 256], size) for i in range(0, len(rigs), 256)])
    return float((embed_images(encoder, rendered) - targets).pow(2).sum(-1).mean())


def score(avatar: BuiltinAvatar, rigs: np.ndarray, heldout: HeldOut, encoder: torch.nn.Module) -> dict[str, float]:
    truth = avatar.expected_rig(heldout.action_units)
    return {
        "error": retarget_error(rigs, truth, AvatarRig.from_spec(avatar.spec)),
        "correlation": retarget_correlation(rigs, truth),
        "ref_consistency": reference_consistency(avatar, rigs, encoder, heldout.embeddings),
    }


def save_decoder(model: PerAvatarDecoder, path: Path, metrics: dict[str, object] | None = None) -> None:
    torch.save(
        {
            "config": asdict(model.config),
            "rig": asdict(model.rig),
            "in_dim": model.stem.in_features,
            "state_dict": model.state_dict(),
            "metrics": metrics or {},
        },
        path,
    )


def load_decoder(path: Path) -> PerAvatarDecoder:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    rig = AvatarRig(**{k: tuple(v) for k, v in ck["rig"].items()})
    model = PerAvatarDecoder(saved_config(ck["config"]), rig, in_dim=ck["in_dim"])
    model.load_state_dict(ck["state_dict"])
    return model.eval()


@torch.no_grad()
def evaluate_models(
    models_dir: Path, encoder: torch.nn.Module, heldout: HeldOut, baselines_dir: Path | None = None
) -> dict[str, object]:
    """The report `freeavatar eval animator --json` prints, for the models in `models_dir`; the
    per-avatar decoders and geometry baselines (per_avatar_*.pt, geometry_*.pt) are read from
    `baselines_dir` (default: `models_dir`) and left out of the report where absent."""
    baselines_dir = baselines_dir or models_dir
    shared: SharedAnimator = load_animator(models_dir / SHARED_FILE)
    avatars: dict[str, dict[str, object]] = {}
    per_avatar_params = geometry_params = 0
    for name, avatar in BUILTIN_AVATARS.items():
        row: dict[str, object] = {}
        truth = avatar.expected_rig(heldout.action_units)
        candidates: dict[str, np.ndarray] = {
            "neutral": avatar.neutral(len(truth)),
            "ground_truth": truth,
        }
        if name in shared.rigs:
            candidates["shared"] = shared(heldout.inputs(shared), name).numpy()
            r = column_correlations(candidates["shared"], truth)
            row["shared_correlation_by_control"] = {
                c.name: round(float(v), 3) for c, v in zip(avatar.spec.controls, r, strict=True) if not np.isnan(v)}
        decoder_path = baselines_dir / per_avatar_file("per_avatar", name)
        if decoder_path.exists():
            decoder = load_decoder(decoder_path)
            per_avatar_params += count_parameters(decoder)
            candidates["per_avatar"] = decoder(heldout.inputs(decoder)).numpy()
        geometry_path = baselines_dir / per_avatar_file("geometry", name)
        if geometry_path.exists():
            decoder = load_decoder(geometry_path)
            geometry_params += count_parameters(decoder)
            candidates["geometry"] = decoder(heldout.geometry).numpy()
        for kind, rigs in candidates.items():
            s = score(avatar, rigs, heldout, encoder)
            if kind != "ground_truth":
                row[f"{kind}_error"] = s["error"]
                if kind != "neutral":
                    row[f"{kind}_correlation"] = s["correlation"]
            row[f"{kind}_ref_consistency"] = s["ref_consistency"]
        avatars[name] = row
    return {
        "avatars": avatars,
        "parameters": {
            "shared": count_parameters(shared),
            "shared_network": sum(p.numel() for p in shared.shared_parameters()),
            "per_avatar_in_shared": {aid: sum(p.numel() for p in shared.avatar_parameters(aid)) for aid in shared.avatar_ids},
            "per_avatar_total": per_avatar_params,
            "geometry_total": geometry_params,
        },
        "heldout_actors": len(heldout.images),
        "heldout_identity_offset": HELDOUT_IDENTITY_OFFSET,
        "error_units": "mean |predicted - expected_rig| / control range",
        "consistency_units": "mean squared L2 distance between 16-d unit embeddings (0..4)",
    }


def side_by_side(models_dir: Path, heldout: HeldOut, path: Path, columns: int = 8, size: int = 96) -> None:
    """A picture: each column an actor (top row), then each avatar posed by the shared animator
    and drawn by its reference renderer."""
    shared = load_animator(models_dir / SHARED_FILE)
    picks = np.linspace(0, len(heldout.images) - 1, columns).astype(int)
    rows = [np.concatenate([resize(im, size) for im in heldout.images[picks]], axis=1)]
    with torch.no_grad():
        for name, avatar in BUILTIN_AVATARS.items():
            if name in shared.rigs:
                rig = shared(heldout.inputs(shared)[picks], name).numpy()
                rows.append(np.concatenate(list(avatar.render(rig, size)), axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(np.concatenate(rows)))
