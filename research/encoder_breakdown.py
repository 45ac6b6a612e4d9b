"""Where the encoder's triplet errors are: nuisance, head pose, triplet kind, seen identities.

    .venv/bin/python research/encoder_breakdown.py [--encoder PATH] [--triplets 2000] [--json]

A DIAGNOSTIC for "why is held-out accuracy where it is". It scores the encoder on the same
comparison triplets as `freeavatar eval encoder` (same seed, identities never seen in
training) and on variants of them that change one thing at a time:

- nuisance off: the same faces, poses and expressions, with frontal white light, a plain
  background and no blur, noise or JPEG;
- frontal: the same faces with head pose (yaw, pitch, roll) zeroed; and both off;
- one person: all three expressions on the first face's identity, frontal, no nuisance: what
  is left is reading the expression itself. Raw pixels are scored there too: with person,
  pose and light fixed, pixel distance is the visible change itself, a rough reference for how
  far the labels' action-unit distance agrees with what the image shows;
- training identities: the same kind of triplets on identities the encoder trained on (a gap
  to the held-out figure is overfitting to identity; none means the model is under-fitting);
- by FEC triplet kind;
- no image at all: the ground-truth action units themselves as the embedding (the labels' own
  distance: only annotator noise is wrong), and the same scaled by how much each unit changes
  the picture (pixel L2 between a frontal, clean face at rest and with that unit at full
  strength, mean over 20 people): what a reader that sees each unit in proportion to its
  visible change would score.

All against the noiseless labels too (true_odd_one), so annotator noise is not counted as the
encoder's error. Ground truth is read only to score.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from freeavatar_server.inference.shipped import MODELS_DIR
from freeavatar_server.synth import triplets as synth_triplets
from freeavatar_server.synth.actors import ACTION_UNITS, N_AU, render_faces
from freeavatar_server.training.encoder import data as D
from freeavatar_server.training.encoder.evaluate import (
    EVAL_IDENTITY_OFFSET,
    EVAL_SEED,
    raw_pixel_features,
    torch_features,
)
from freeavatar_server.training.encoder.train import load_encoder, triplet_correct


def frontal(trips: list[synth_triplets.Triplet]) -> list[synth_triplets.Triplet]:
    """The same triplets, every head facing the camera."""
    return [replace(t, faces=tuple(replace(f, pose=(0.0, 0.0, 0.0)) for f in t.faces)) for t in trips]


def correct(emb: np.ndarray, trips: list[synth_triplets.Triplet]) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3, D) embeddings -> (T,) right against the annotators' label, (T,) against the noiseless one."""
    return (triplet_correct(emb, np.array([t.odd_one for t in trips])),
            triplet_correct(emb, np.array([t.true_odd_one for t in trips])))  # fmt: skip


def score(embed, trips: list[synth_triplets.Triplet], size: int, nuisance: bool) -> tuple[np.ndarray, np.ndarray]:
    faces = synth_triplets.render_triplets(trips, size=size, nuisance=nuisance)
    return correct(embed(faces.reshape(-1, size, size, 3)).reshape(len(trips), 3, -1), trips)


def one_person(trips: list[synth_triplets.Triplet]) -> list[synth_triplets.Triplet]:
    """The same triplets with all three expressions on the first face's identity."""
    return [replace(t, faces=tuple(replace(f, identity_id=t.faces[0].identity_id) for f in t.faces)) for t in trips]


def au_visibility(size: int, people: int = 20) -> np.ndarray:
    """(N_AU,) pixel L2 change of a frontal clean face when one unit goes from 0 to 1."""
    ids = 2_000_000 + np.arange(people, dtype=np.int64)

    def draw(expr: np.ndarray) -> np.ndarray:
        return render_faces(expr, ids, size=size, poses=np.zeros((people, 3), np.float32), nuisance=False,
                            sample_seeds=np.arange(people)).images.astype(np.float32)  # fmt: skip

    rest = draw(np.zeros((people, N_AU), np.float32))
    change = []
    for unit in range(N_AU):
        expr = np.zeros((people, N_AU), np.float32)
        expr[:, unit] = 1.0
        change.append(float(np.sqrt(((draw(expr) - rest) ** 2).sum((1, 2, 3))).mean()))
    return np.array(change)


def au_score(trips: list[synth_triplets.Triplet], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return correct(np.stack([t.expressions for t in trips]) * weights, trips)


def summary(ok: tuple[np.ndarray, np.ndarray], ambiguous: np.ndarray, rows: np.ndarray | None = None) -> dict:
    rows = np.ones(len(ambiguous), bool) if rows is None else rows
    labelled, true = ok
    clear = rows & ~ambiguous
    return {
        "n": int(rows.sum()),
        "unambiguous": round(float(labelled[clear].mean()), 4),
        "all": round(float(labelled[rows].mean()), 4),
        "unambiguous_vs_true": round(float(true[clear].mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", type=Path, default=MODELS_DIR / "expression_encoder.pt")
    parser.add_argument("--triplets", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    encoder = load_encoder(args.encoder)
    size = encoder.cfg.img_size
    embed = torch_features(encoder)
    n = args.triplets
    held_out = D.eval_triplets(n, seed=EVAL_SEED, identity_offset=EVAL_IDENTITY_OFFSET)  # `eval encoder`'s own
    seen = D.eval_triplets(n, seed=EVAL_SEED + 1, identity_offset=0)
    facing, alone = frontal(held_out), one_person(frontal(held_out))
    ambiguous = np.array([t.ambiguous for t in held_out])
    with_nuisance = score(embed, held_out, size, nuisance=True)
    report: dict = {
        "encoder": str(args.encoder),
        "held_out": summary(with_nuisance, ambiguous),
        "held_out_nuisance_off": summary(score(embed, held_out, size, nuisance=False), ambiguous),
        "held_out_frontal": summary(score(embed, facing, size, nuisance=True), ambiguous),
        "held_out_frontal_nuisance_off": summary(score(embed, facing, size, nuisance=False), ambiguous),
        "held_out_one_person_frontal_nuisance_off": summary(score(embed, alone, size, nuisance=False), ambiguous),
        "raw_pixels_one_person_frontal_nuisance_off": summary(score(raw_pixel_features, alone, size, nuisance=False), ambiguous),
        "training_identities": summary(score(embed, seen, size, nuisance=True), np.array([t.ambiguous for t in seen])),
    }
    visibility = au_visibility(size)
    report["action_units_as_embedding"] = summary(au_score(held_out, np.ones_like(visibility)), ambiguous)
    report["action_units_scaled_by_visibility"] = summary(au_score(held_out, visibility / visibility.mean()), ambiguous)
    report["au_visibility"] = {name: round(float(v), 1) for name, v in zip(ACTION_UNITS, visibility, strict=True)}
    kinds = np.array([t.kind for t in held_out])
    report["held_out_by_kind"] = {kind: summary(with_nuisance, ambiguous, kinds == kind) for kind in synth_triplets.TRIPLET_KINDS}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    for name, value in report.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
