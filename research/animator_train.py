"""Train and compare the animators behind docs/models.md ("Animator"): the shipped shared animator, the per-avatar decoders and the geometry baseline.

    .venv/bin/python research/animator_prepare.py --out runs/animator      # renderers, actors
    .venv/bin/python research/animator_train.py --work runs/animator --part shared
    .venv/bin/python research/animator_train.py --work runs/animator --part per_avatar
    .venv/bin/python research/animator_train.py --work runs/animator --part geometry
    .venv/bin/python research/animator_train.py --work runs/animator --part keyframes

`shared`: the shared animator learns human_arkit, cartoon and robot together (shared weights,
codes and control queries), then cat is ADDED with the shared weights frozen (only its code and
control queries train); the old avatars' held-out error is measured before and after.
`joint`: all four built-ins trained together (the shipped model).
`per_avatar`: one decoder per avatar; `geometry`: the same decoder reading hand-made face
measurements instead of the embedding; both trained the same way (same loss, same number of
steps per avatar). `keyframes`: cat added with 0, 5, 20 artist keyframes. `--keyframes K`
gives every avatar of the other parts K artist keyframes (on the same actor images).

Training reads unlabeled actor images only. The one exception is the keyframe experiment: an
artist's keyframe is an actor image with the rig an artist posed for it; the synthetic world
has no artist, so it is simulated by the ground-truth mapping plus artist noise (5% of range)
on a handful of TRAINING images. Evaluation uses held-out actors only.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from freeavatar_server.avatars.sampling import propose_rig_vectors
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.animator.encoding import (
    ENCODER_FILE,
    embed_images,
    encoder_checkpoint,
    load_frozen_encoder,
    save_encoder_copy,
)
from freeavatar_server.training.animator.evaluate import (
    SHARED_FILE,
    build_heldout,
    geometry_inputs,
    per_avatar_file,
    retarget_error,
    save_decoder,
    score,
)
from freeavatar_server.training.animator.model import (
    AnimatorConfig,
    AvatarRig,
    PerAvatarDecoder,
    SharedAnimator,
    count_parameters,
    load_animator,
    save_animator,
)
from freeavatar_server.training.animator.train import (
    ActorData,
    AnimatorTrainConfig,
    AvatarTarget,
    RigPairs,
    fit_animator,
    render_sample_pairs,
)
from freeavatar_server.training.renderer.model import load_renderer

FIRST = ("human_arkit", "cartoon", "robot")
ADDED = "cat"
VAL = 300


def actor_data(work: Path, encoder: torch.nn.Module, geometry: bool = False) -> ActorData:
    d = np.load(work / "actors.npz")
    images = d["train_images"]
    targets = embed_images(encoder, images)
    clips = d["clip_images"]
    c, t = clips.shape[:2]
    if geometry:
        inputs = geometry_inputs(images)
        clip_inputs = geometry_inputs(clips.reshape(c * t, *clips.shape[2:])).view(c, t, -1)
    else:
        inputs = targets
        clip_inputs = embed_images(encoder, clips.reshape(c * t, *clips.shape[2:])).view(c, t, -1)
    return ActorData(inputs[VAL:], targets[VAL:], inputs[:VAL], targets[:VAL], clip_inputs)


def target(work: Path, name: str, keyframes: RigPairs | None = None, samples: Samples | None = None) -> AvatarTarget:
    rig = AvatarRig.from_spec(BUILTIN_AVATARS[name].spec)
    t = AvatarTarget(name, rig, load_renderer(work / f"renderer_{name}.pt"), keyframes)
    if samples is not None:
        t.samples = samples(t)
    return t


Samples = Callable[[AvatarTarget], RigPairs]


def render_samples(args: argparse.Namespace, encoder: torch.nn.Module, actors: ActorData, geometry: bool = False) -> Samples | None:
    """The avatar's (rig, image) samples as the studio hands them over: the same rig vectors its
    renderer was trained on (animator_prepare.py), drawn by the reference renderer."""
    if args.samples_weight <= 0:
        return None
    size = encoder.cfg.img_size

    def pairs(t: AvatarTarget) -> RigPairs:
        avatar = BUILTIN_AVATARS[t.avatar_id]
        rigs = propose_rig_vectors(avatar.spec, args.samples, seed=0)
        images = np.concatenate([avatar.render(rigs[i : i + 256], size) for i in range(0, len(rigs), 256)])
        if geometry:  # z-scored over the samples, as the actors' measurements are over theirs
            return RigPairs(geometry_inputs(images), torch.from_numpy(rigs))
        return render_sample_pairs(t, embed_images(encoder, images), torch.from_numpy(rigs), actors.targets,
                                   encoder, size, args.centering)

    return pairs


def heldout_scores(predict, names, heldout, encoder) -> dict[str, dict[str, float]]:
    with torch.no_grad():
        return {n: score(BUILTIN_AVATARS[n], predict(n), heldout, encoder) for n in names}


def validation_errors(predict, names, work: Path, actors: ActorData) -> dict[str, float]:
    """Error against the ground-truth mapping on the VAL images held back from training (the
    training actors' identities, not the held-out ones): for choosing training settings
    without looking at the held-out set."""
    aus = np.load(work / "actors.npz")["train_aus"][:VAL]
    with torch.no_grad():
        return {n: retarget_error(predict(n, actors.val_inputs), BUILTIN_AVATARS[n].expected_rig(aus),
                                  AvatarRig.from_spec(BUILTIN_AVATARS[n].spec)) for n in names}


def simulated_keyframes(work: Path, actors: ActorData, name: str, k: int, seed: int = 0) -> RigPairs:
    """k artist keyframes on TRAINING images (see the module docstring: a simulated artist)."""
    aus = np.load(work / "actors.npz")["train_aus"][VAL:]  # one row per actors.inputs row
    idx, rigs = artist_keyframes(name, aus, k, np.random.default_rng(seed))
    return RigPairs(actors.inputs[idx], torch.from_numpy(rigs))


def artist_keyframes(name: str, aus: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The simulated artist: k of the TRAINING actors (rows of `aus`, their action units) posed
    by the ground-truth mapping plus 5% of each control's range of noise. (indices, rigs)."""
    idx = rng.choice(len(aus), k, replace=False)
    return idx, artist_poses(name, aus[idx], rng)


def artist_poses(name: str, aus: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The simulated artist's rigs for these actors (rows of their action units): the
    ground-truth mapping plus 5% of each control's range of noise."""
    avatar = BUILTIN_AVATARS[name]
    rigs = avatar.expected_rig(aus)
    span = np.array([c.max - c.min for c in avatar.spec.controls], np.float32)
    return avatar.clip(rigs + rng.normal(0, 0.05, rigs.shape).astype(np.float32) * span)


def added_parameters(model: SharedAnimator, args: argparse.Namespace) -> list[torch.nn.Parameter]:
    """What the added avatar tunes with the shared network frozen."""
    own = model.avatar_parameters(ADDED)
    if args.frozen_modulation:
        own = [p for p in own if all(p is not m for m in model.modulations.values())]
    return own


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="models dir (default: <work>/models)")
    p.add_argument("--part", choices=("shared", "joint", "per_avatar", "geometry", "keyframes"), required=True,
                   help="shared: three avatars, then the fourth added; joint: all four trained together")
    p.add_argument("--encoder", type=Path, default=None)
    p.add_argument("--steps", type=int, default=500, help="steps per avatar for the first avatars")
    p.add_argument("--add-steps", type=int, default=400, help="steps for the added avatar")
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--jitter", action="store_true", help="consistency through the encoder's augmentation")
    p.add_argument("--centering", choices=("none", "renders", "neutral"), default=AnimatorTrainConfig.centering)
    p.add_argument("--sparsity", type=float, default=AnimatorTrainConfig.sparsity_weight,
                   help="weight of the L1 pull towards the default pose")
    p.add_argument("--keyframe-weight", type=float, default=AnimatorTrainConfig.keyframe_weight)
    p.add_argument("--samples-weight", type=float, default=AnimatorTrainConfig.samples_weight,
                   help="weight of the supervised term on the avatar's own render samples")
    p.add_argument("--samples", type=int, default=3000, help="render samples per avatar")
    p.add_argument("--frozen-modulation", action="store_true",
                   help="ablation: an added avatar tunes only its code and queries, not its own modulation")
    p.add_argument("--keyframes", type=int, default=0,
                   help="artist keyframes for every avatar of the shared/joint/per_avatar/geometry parts")
    p.add_argument("--avatars", default=",".join((*FIRST, ADDED)),
                   help="per_avatar and geometry: whose decoders to train (each is seeded alike, so one alone is as in a full run)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed the network's initialisation and the training draws (default: the draws at seed 0, the initialisation unseeded)")
    p.add_argument("--tag", default="", help="suffix of the report file (report_<part><tag>.json)")
    args = p.parse_args()
    unknown = sorted(set(args.avatars.split(",")) - set(BUILTIN_AVATARS))
    if unknown:
        p.error(f"unknown avatar(s) {', '.join(unknown)}: the built-ins are {', '.join(BUILTIN_AVATARS)}")
    torch.set_num_threads(1)
    out = args.out or args.work / "models"
    out.mkdir(parents=True, exist_ok=True)
    # Every part uses one frozen snapshot of the encoder, kept beside the models: an animator
    # only understands the embedding space it was trained in.
    enc_path = out / ENCODER_FILE
    if not enc_path.exists():
        source = encoder_checkpoint(args.encoder)
        save_encoder_copy(source, enc_path)
        print(f"encoder snapshot of {source}", flush=True)
    encoder = load_frozen_encoder(enc_path)
    size = encoder.cfg.img_size
    heldout = build_heldout(encoder)
    base = AnimatorTrainConfig(batch_size=args.batch, time_budget_s=3600, centering=args.centering, jitter=args.jitter,
                               sparsity_weight=args.sparsity, keyframe_weight=args.keyframe_weight,
                               samples_weight=args.samples_weight, seed=args.seed or 0)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    report: dict[str, object] = {"encoder": str(enc_path), "train_config": asdict(base), "keyframes": args.keyframes}

    def artist(actors: ActorData, name: str) -> RigPairs | None:
        return simulated_keyframes(args.work, actors, name, args.keyframes) if args.keyframes else None

    def log(fraction: float, metrics: dict[str, float]) -> None:
        if "val_consistency" in metrics:
            print(f"  {fraction:.2f} {json.dumps({k: round(v, 4) for k, v in metrics.items()})}", flush=True)

    if args.part in ("shared", "joint"):
        actors = actor_data(args.work, encoder)
        together = FIRST if args.part == "shared" else (*FIRST, ADDED)
        model = SharedAnimator(AnimatorConfig())
        for i, name in enumerate(together):
            model.add_avatar(name, AvatarRig.from_spec(BUILTIN_AVATARS[name].spec), seed=i)
        samples = render_samples(args, encoder, actors)
        fit = fit_animator(model, [target(args.work, n, artist(actors, n), samples) for n in together], actors, encoder, size,
                           replace(base, steps=args.steps), list(model.parameters()), log)
        scores = heldout_scores(lambda n: model(heldout.embeddings, n).numpy(), together, heldout, encoder)
        validation = validation_errors(lambda n, x: model(x, n).numpy(), together, args.work, actors)
        print("joint", together, fit.metrics, scores, "validation", validation, flush=True)
        first_file = "animator_first.pt" if args.part == "shared" else "animator_joint.pt"
        save_animator(model, out / first_file, {"fit": fit.metrics, "encoder": ENCODER_FILE})
        report |= {"joint_fit": fit.metrics, "heldout": scores, "validation": validation,
                   "parameters": count_parameters(model)}
    if args.part == "shared":  # then the third avatar joins, the shared weights frozen
        started = time.monotonic()
        model.add_avatar(ADDED, AvatarRig.from_spec(BUILTIN_AVATARS[ADDED].spec), seed=7)
        add = fit_animator(model, [target(args.work, ADDED, artist(actors, ADDED), samples)], actors, encoder, size,
                           replace(base, steps=args.add_steps), added_parameters(model, args), log)
        add_seconds = time.monotonic() - started
        after = heldout_scores(lambda n: model(heldout.embeddings, n).numpy(), (*FIRST, ADDED), heldout, encoder)
        print("add", add.metrics, after, flush=True)
        save_animator(model, out / SHARED_FILE, {"joint_fit": fit.metrics, "add_fit": add.metrics, "encoder": ENCODER_FILE})
        report |= {"add_fit": add.metrics, "add_seconds": add_seconds, "before_add": scores,
                   "after_add": after, "parameters": count_parameters(model)}
    if args.part in ("per_avatar", "geometry"):
        for kind in (args.part,):
            actors = actor_data(args.work, encoder, geometry=kind == "geometry")
            samples = render_samples(args, encoder, actors, geometry=kind == "geometry")
            for name in args.avatars.split(","):
                rig = AvatarRig.from_spec(BUILTIN_AVATARS[name].spec)
                torch.manual_seed(0)
                model = PerAvatarDecoder(AnimatorConfig(), rig, in_dim=actors.inputs.shape[1])
                steps = args.add_steps if name == ADDED else args.steps
                fit = fit_animator(model, [target(args.work, name, artist(actors, name), samples)], actors, encoder, size,
                                   replace(base, steps=steps), list(model.parameters()), log)
                inputs = heldout.geometry if kind == "geometry" else heldout.embeddings
                s = heldout_scores(lambda n, m=model, x=inputs: m(x).numpy(), (name,), heldout, encoder)
                print(kind, name, fit.metrics, s, flush=True)
                save_decoder(model, out / per_avatar_file(kind, name), {"fit": fit.metrics})
                report[f"{kind}/{name}"] = {"fit": fit.metrics, "heldout": s[name], "parameters": count_parameters(model)}
    if args.part == "keyframes":
        actors = actor_data(args.work, encoder)
        samples = render_samples(args, encoder, actors)
        for k in (0, 5, 20):
            model = load_animator(out / "animator_first.pt")
            model.add_avatar(ADDED, AvatarRig.from_spec(BUILTIN_AVATARS[ADDED].spec), seed=7)
            kf = simulated_keyframes(args.work, actors, ADDED, k) if k else None
            fit = fit_animator(model, [target(args.work, ADDED, kf, samples)], actors, encoder, size,
                               replace(base, steps=args.add_steps), added_parameters(model, args), log)
            s = heldout_scores(lambda n, m=model: m(heldout.embeddings, n).numpy(), (ADDED,), heldout, encoder)
            validation = validation_errors(lambda n, x, m=model: m(x, n).numpy(), (ADDED,), args.work, actors)
            print("keyframes", k, fit.metrics, s, "validation", validation, flush=True)
            report[f"keyframes_{k}"] = {"fit": fit.metrics, "heldout": s[ADDED], "validation": validation[ADDED]}
    (out / f"report_{args.part}{args.tag}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
