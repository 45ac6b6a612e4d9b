"""Actor data for the animator: unlabeled face crops and short clips from the synthetic world.

Training sees only the images (and, for clips, which frames follow which). The action units
returned beside them are kept for EVALUATION (expected_rig) and never reach training code.
Identity ranges are disjoint from the encoder's (0..~2000, eval at 1_000_000):
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from freeavatar_server.synth.actors import render_faces, sample_expressions
from freeavatar_server.synth.video import make_trajectory

TRAIN_IDENTITY_OFFSET = 3_000_000  # animator training actors
HELDOUT_IDENTITY_OFFSET = 4_000_000  # evaluation actors: never seen by any training


@dataclass
class ActorSet:
    images: np.ndarray  # (N, S, S, 3) uint8 face crops
    action_units: np.ndarray  # (N, N_AU) EVALUATION ONLY
    identity_ids: np.ndarray  # (N,)


@dataclass
class ClipSet:
    images: np.ndarray  # (C, T, S, S, 3) uint8: C clips of T consecutive frames
    action_units: np.ndarray  # (C, T, N_AU) EVALUATION ONLY


def actor_images(n: int, *, identity_offset: int, n_identities: int, seed: int, size: int = 64) -> ActorSet:
    """n face crops of `n_identities` actors, with full nuisance (pose, light, blur, noise)."""
    rng = np.random.default_rng(seed)
    aus = sample_expressions(n, rng)
    ids = identity_offset + rng.integers(0, n_identities, n).astype(np.int64)
    batch = render_faces(aus, ids, size=size, seed=seed)
    return ActorSet(batch.images, batch.expressions, ids)


def actor_clips(
    n_clips: int, frames: int, *, identity_offset: int, seed: int, size: int = 64, fps: float = 30.0
) -> ClipSet:
    """n_clips windows of `frames` consecutive video frames (smooth expression trajectories), as
    crops. The scene (light, background, camera) is fixed within a clip, as in a real video."""
    images, aus = [], []
    for c in range(n_clips):
        traj = make_trajectory(frames / fps + 0.5, fps, seed=seed + c, identity_id=identity_offset + c)
        start = int(np.random.default_rng(seed + c).integers(0, traj.n_frames - frames + 1))
        sl = slice(start, start + frames)
        ids = np.full(frames, traj.identity_id, np.int64)
        scene = np.full(frames, seed * 7919 + c, np.int64)
        batch = render_faces(traj.expressions[sl], ids, size=size, poses=traj.poses[sl], sample_seeds=scene)
        images.append(batch.images)
        aus.append(batch.expressions)
    return ClipSet(np.stack(images), np.stack(aus))
