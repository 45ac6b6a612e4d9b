"""The animator trained on direct supervision, and what each reading and signal buys it.

    .venv/bin/python research/animator_direct.py --keyframes 20 50 --kinds embedding both --alias-weight 0
    .venv/bin/python research/animator_direct.py --readout linear --suggested --kinds units --keyframes 20 \
        --ridge 30 --renders 3000 --ship server/freeavatar_server/models/animator   # retrain the shipped animator

Actors are rendered at 192 px, large enough for MediaPipe's mesh (read as the tracker reads a
still face); the expression encoder sees the same face downsized to its crop. Both sets are
cached in --work. Training uses what a studio has: unlabeled actor images (their embedding and
blendshapes), K artist keyframes per avatar (simulated, as in research/animator_train.py: the
ground-truth mapping plus 5% artist noise on K TRAINING images, the one place that mapping
reaches training), with --renders the avatar's own (rig, image) samples drawn by its reference
renderer, a light pull of each control towards its rest, and with --alias-weight > 0 the
actor's own blendshapes as targets of the controls with an ARKit alias. Held-out actors
(identities no training saw) are scored against the ground-truth mapping, as
`freeavatar eval animator` does (per-control r, error as a multiple of the neutral pose's).

Kinds (the animator's input): `embedding`, `both` (embedding + the 52 blendshapes, with input
dropout), `blendshapes`, `units` (the encoder's 25-unit action-unit read-out), `embedding_units`
(embedding + read-out; `--unit-dropout` zeroes either half now and then, as `both` does), and
`per_avatar` (one decoder per avatar on the embedding: the baseline; `per_avatar_units` and
`per_avatar_embedding_units` read what those kinds read; --baselines writes them for
`freeavatar eval animator --baselines`). Every kind but `blendshapes` is servable: its
AnimatorConfig names what it reads, and the runtime joins the same parts. Compared on the same
held-out inputs: the animator installed now, and MediaPipe read straight onto the aliased
controls (the live path's default reader with every other control at rest).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from animator_train import artist_keyframes, artist_poses  # research/: the simulated artist

from freeavatar_server.avatars.sampling import propose_rig_vectors
from freeavatar_server.images import resize
from freeavatar_server.inference.animator import ANIMATOR_FILE
from freeavatar_server.inference.shipped import ENCODER_CHECKPOINT
from freeavatar_server.live.sessions import BlendshapeDrive
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.animator.data import (
    HELDOUT_IDENTITY_OFFSET,
    TRAIN_IDENTITY_OFFSET,
    actor_images,
)
from freeavatar_server.training.animator.encoding import (
    ENCODER_FILE,
    embed_images,
    load_frozen_encoder,
    read_images,
    save_encoder_copy,
)
from freeavatar_server.training.animator.evaluate import (
    HELDOUT_SEED,
    per_avatar_file,
    retarget_error,
    save_decoder,
)
from freeavatar_server.training.animator.export import export_runtime
from freeavatar_server.training.animator.keyframes import (
    RENDER_PRIOR_STRENGTH,
    fit_keyframes,
    render_prior,
    suggest_keyframes,
)
from freeavatar_server.training.animator.model import (
    AnimatorConfig,
    AvatarRig,
    PerAvatarDecoder,
    SharedAnimator,
    animator_inputs,
    load_animator,
    save_animator,
    unit_default,
)
from freeavatar_server.training.correlation import column_correlations
from freeavatar_server.training.encoder.evaluate import mediapipe_features

SHIPPED = Path("server/freeavatar_server/models/animator")
SIZE = 192
SAMPLE_SIZE = 128  # the avatar's render samples, as `freeavatar avatars render-samples` uploads them


def weights_digest(encoder: torch.nn.Module) -> str:
    """Names the encoder's weights, so cached embeddings are known to be its."""
    digest = hashlib.sha256()
    for name, value in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def build(path: Path, n: int, offset: int, identities: int, seed: int, encoder: torch.nn.Module) -> dict[str, np.ndarray]:
    """The actors (rendering and MediaPipe are the slow part, cached in `path`); their
    embeddings are redone from the cached encoder-sized faces when another encoder made them
    (the actors rendered again, the same ones, when that encoder reads another crop size)."""
    digest, size = weights_digest(encoder), encoder.cfg.img_size
    if path.exists():
        data = dict(np.load(path))
        resized = data["small"].shape[1] != size  # (the digest does not see the crop size)
        if resized:
            actors = actor_images(n, identity_offset=offset, n_identities=identities, seed=seed, size=SIZE)
            if not np.array_equal(actors.action_units, data["aus"]):
                raise SystemExit(f"{path}: the actors rendered again are not the cached ones; delete it to rebuild")
            data["small"] = downsized(actors.images, size)
        if resized or str(data.get("encoder", "")) != digest:
            data["embeddings"], data["encoder"] = embed_images(encoder, data["small"]).numpy(), np.array(digest)
            np.savez_compressed(path, **data)
        return data
    started = time.time()
    actors = actor_images(n, identity_offset=offset, n_identities=identities, seed=seed, size=SIZE)
    small = downsized(actors.images, size)
    embeddings = embed_images(encoder, small).numpy()
    blendshapes = mediapipe_features("blendshapes")(actors.images)  # as the tracker reads a still face
    data = {"embeddings": embeddings, "blendshapes": blendshapes, "aus": actors.action_units, "small": small,
            "encoder": np.array(digest)}
    np.savez_compressed(path, **data)
    print(f"{path.name}: {n} actors in {time.time() - started:.0f} s", flush=True)
    return data


def avatar_renders(path: Path, name: str, n: int, rigs_from: str, encoder: torch.nn.Module) -> dict[str, np.ndarray]:
    """The avatar's (rig, image) samples, drawn by its reference renderer at 128 px (as
    `freeavatar avatars render-samples` uploads them; cached in `path`) and read by the encoder
    as an animator job reads them (`images.resize` to its crop size). The rigs: `random`, each
    control moved or left at rest at random (`sample_rigs`), or `proposed`, the mix of sweeps,
    sparse and dense vectors the server proposes for renderer training (what a job has when a
    studio uploaded only those)."""
    if path.exists():
        with np.load(path) as cached:
            rigs, images = cached["rigs"], cached["images"]
    else:
        avatar = BUILTIN_AVATARS[name]
        index = list(BUILTIN_AVATARS).index(name)
        rigs = (avatar.sample_rigs(n, np.random.default_rng(300 + index)) if rigs_from == "random"
                else propose_rig_vectors(avatar.spec, n, seed=0))
        images = np.concatenate([avatar.render(rigs[i : i + 250], SAMPLE_SIZE) for i in range(0, n, 250)])
        np.savez_compressed(path, rigs=rigs, images=images)
    size = encoder.cfg.img_size
    embeddings, units = read_images(encoder, np.stack([resize(image, size) for image in images]))
    read = {"rigs": rigs, "embeddings": embeddings.numpy()}
    if units is not None:
        read["units"] = units.numpy()
    return read


def downsized(images: np.ndarray, size: int) -> np.ndarray:
    """The encoder's view of the actors: each face downsized to its crop."""
    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])


def alias_read(name: str, blendshapes: np.ndarray) -> np.ndarray:
    """The default reader's aliased controls (MediaPipe's 0..1 onto rest..max), the rest at rest."""
    avatar = BUILTIN_AVATARS[name]
    return BlendshapeDrive.of(avatar.spec).apply(avatar.neutral(len(blendshapes)), blendshapes)


def reading_of(kind: str) -> str:
    """The kind whose input an animator of this kind reads (a per_avatar_* baseline reads what
    its suffix's kind does; plain per_avatar, the embedding)."""
    return kind.removeprefix("per_avatar").removeprefix("_") or "embedding"


def kind_config(kind: str, unit_dim: int, readout: str = "attention") -> AnimatorConfig:
    """What an animator of this kind reads, and how (the shared animator's readout)."""
    reading = reading_of(kind)
    if "units" in reading and not unit_dim:
        raise SystemExit(f"the kind {kind} reads the encoder's action-unit read-out, and this encoder has none")
    config = {"embedding": AnimatorConfig(),
              "both": AnimatorConfig(blendshape_dim=52),
              "blendshapes": AnimatorConfig(embed_dim=0, blendshape_dim=52),
              "units": AnimatorConfig(embed_dim=0, unit_dim=unit_dim),
              "embedding_units": AnimatorConfig(unit_dim=unit_dim)}[reading]
    return config if kind.startswith("per_avatar") else replace(config, readout=readout)


def features(data: dict[str, np.ndarray], config: AnimatorConfig) -> torch.Tensor:
    """The input rows an animator of `config` reads, in the runtime's order."""
    def part(name: str) -> torch.Tensor | None:
        return torch.from_numpy(data[name].astype(np.float32)) if name in data else None

    return animator_inputs(config, part("embeddings"), part("units"), part("blendshapes"))


SUGGESTION_POOL = 1000  # frames a suggestion picks from (a draw is another pool)


def keyframes(name: str, index: int, aus: np.ndarray, k: int, draw: int,
              rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The artist's k keyframes of the avatar at `index` in BUILTIN_AVATARS: (actor indices,
    rigs). Random actors, or with `rows` (every actor's animator input) the ones
    `suggest_keyframes` picks from a pool of them, the same actors for every avatar."""
    rng = np.random.default_rng(100 + index + 1000 * draw)
    if rows is None:
        return artist_keyframes(name, aus, k, rng)  # (module docstring)
    pool = np.random.default_rng(200 + draw).choice(len(rows), min(SUGGESTION_POOL, len(rows)), replace=False)
    idx = pool[suggest_keyframes(rows[pool], k)]
    return idx, artist_poses(name, aus[idx], rng)


def fit_linear(train_data: dict[str, np.ndarray], kind: str, k: int, strength: float, keyframe_draw: int = 0,
               suggested: bool = False, dead_zones: bool = True,
               renders: dict[str, dict[str, np.ndarray]] | None = None,
               prior_penalty: float = RENDER_PRIOR_STRENGTH) -> SharedAnimator:
    """The shared animator with a linear readout: its input scale from every training actor
    (unlabeled), each avatar's readout the ridge regression of its keyframes (closed form; with
    `renders`, pulled towards the regression fitted on the avatar's own renders instead of
    towards zero) and its dead zones from the keyframes' share at rest over every training actor."""
    config = kind_config(kind, train_data["units"].shape[1] if "units" in train_data else 0, "linear")
    x = features(train_data, config)
    model = SharedAnimator(config)
    model.standardise_inputs(x)
    for i, name in enumerate(BUILTIN_AVATARS):
        model.add_avatar(name, AvatarRig.from_spec(BUILTIN_AVATARS[name].spec), seed=i)
        idx, rigs = keyframes(name, i, train_data["aus"], k, keyframe_draw, x.numpy() if suggested else None)
        prior = None
        if renders is not None:
            prior = render_prior(model, name, features(renders[name], config), torch.from_numpy(renders[name]["rigs"]),
                                 prior_penalty)
        fit_keyframes(model, name, x[idx], torch.from_numpy(rigs), strength, unlabeled=x if dead_zones else None,
                      prior=prior)
    return model.eval()


def train(train_data: dict[str, np.ndarray], kind: str, k: int, steps: int, seed: int,
          dropout: float, sparsity: float, alias_weight: float = 1.0, keyframe_draw: int = 0,
          unit_dropout: float = 0.0, suggested: bool = False,
          renders: dict[str, dict[str, np.ndarray]] | None = None) -> torch.nn.Module:
    """The shared animator with the attention readout, trained by gradient (or, for a
    per_avatar kind, a ModuleDict of one decoder per avatar); with `renders`, each avatar's own
    (rig, image) pairs are learnt from as its keyframes are."""
    torch.manual_seed(seed)
    per_avatar = kind.startswith("per_avatar")
    config = kind_config(kind, train_data["units"].shape[1] if "units" in train_data else 0)
    x = features(train_data, config)
    model = SharedAnimator(config)
    decoders = torch.nn.ModuleDict()  # the per_avatar baseline: one decoder each, same signals
    plan = {}
    own: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # each avatar's renders: input rows, rigs in units
    for i, name in enumerate(BUILTIN_AVATARS):
        rig = AvatarRig.from_spec(BUILTIN_AVATARS[name].spec)
        if per_avatar:
            decoders[name] = PerAvatarDecoder(config, rig)
        else:
            model.add_avatar(name, rig, seed=i)
        lo, span = np.array(rig.minimum, np.float32), rig.span.astype(np.float32)
        controls = BlendshapeDrive.of(BUILTIN_AVATARS[name].spec).controls
        alias_unit = torch.from_numpy((alias_read(name, train_data["blendshapes"]) - lo) / span)[:, controls]
        key_unit = None
        idx = np.zeros(0, np.int64)
        if k:
            idx, rigs = keyframes(name, i, train_data["aus"], k, keyframe_draw, x.numpy() if suggested else None)
            key_unit = torch.from_numpy((rigs - lo) / span)
        plan[name] = (torch.from_numpy(controls), alias_unit, torch.from_numpy(idx), key_unit, unit_default(rig))
        if renders is not None:
            own[name] = (features(renders[name], config), torch.from_numpy((renders[name]["rigs"] - lo) / span))
    trained = decoders if per_avatar else model
    opt = torch.optim.AdamW(trained.parameters(), lr=2e-3, weight_decay=1e-4)

    def unbounded(inputs: torch.Tensor, name: str) -> torch.Tensor:
        return decoders[name].unbounded(inputs) if per_avatar else model.unbounded(inputs, name)

    g = torch.Generator().manual_seed(seed)
    n = len(x)
    e = config.embed_dim
    # input dropout: with the blendshapes, each half alone must also serve (a frame may come
    # without them); with the units (never missing at run time), only as a regulariser
    halves_dropout = {"both": dropout, "embedding_units": unit_dropout}.get(reading_of(kind), 0.0)
    for _ in range(steps):
        loss = torch.zeros(())
        for name, (controls, alias_unit, idx, key_unit, default) in plan.items():
            batch = torch.randint(0, n, (64,), generator=g)
            inputs = x[batch]
            if halves_dropout > 0:
                drop = torch.rand(len(batch), generator=g)
                inputs = inputs.clone()
                inputs[drop < halves_dropout / 2, :e] = 0
                inputs[(drop >= halves_dropout / 2) & (drop < halves_dropout), e:] = 0
            z = unbounded(inputs, name)
            unit = z.clamp(0, 1)
            free = torch.ones(z.shape[1], dtype=torch.bool)
            if len(controls) and alias_weight > 0:
                loss = loss + alias_weight * (unit[:, controls] - alias_unit[batch]).abs().mean()
                free[controls] = False
            if sparsity and free.any():
                loss = loss + sparsity * (unit[:, free] - default[free]).abs().mean()
            loss = loss + (z - unit).pow(2).mean()
            if key_unit is not None:
                kz = unbounded(x[idx], name).clamp(0, 1)
                loss = loss + (kz - key_unit).abs().mean()
            if name in own:
                rows, rigs = own[name]
                pick = torch.randint(0, len(rows), (64,), generator=g)
                loss = loss + (unbounded(rows[pick], name).clamp(0, 1) - rigs[pick]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return trained.eval()


def scores(name: str, predicted: np.ndarray, aus: np.ndarray) -> dict[str, object]:
    avatar = BUILTIN_AVATARS[name]
    truth = avatar.expected_rig(aus)
    r = column_correlations(predicted, truth)
    rig = AvatarRig.from_spec(avatar.spec)
    neutral = retarget_error(avatar.neutral(len(truth)), truth, rig)
    return {
        "correlation": round(float(np.nanmean(r)), 3),
        "error_vs_neutral": round(retarget_error(predicted, truth, rig) / neutral, 3),
        "by_control": {c.name: round(float(v), 2) for c, v in zip(avatar.spec.controls, r, strict=True) if not np.isnan(v)},
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, default=Path("runs/animator_direct"))
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--heldout", type=int, default=600)
    p.add_argument("--keyframes", type=int, nargs="+", default=[20])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--dropout", type=float, default=0.3, help="input dropout of the kind `both`")
    p.add_argument("--unit-dropout", type=float, default=0.0,
                   help="input dropout of the kinds that read embedding and units (either half zeroed; a regulariser)")
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.02], help="weight of the pull to rest (several: a sweep)")
    p.add_argument("--val", type=int, default=0,
                   help="hold back the last N training actors and score them too, for choosing settings without the held-out set")
    p.add_argument("--kinds", nargs="+", default=["both", "blendshapes", "embedding"])
    p.add_argument("--readout", choices=("attention", "linear"), default="attention",
                   help="the shared animator's readout: attention (trained by gradient) or linear (ridge on the keyframes)")
    p.add_argument("--suggested", action="store_true",
                   help="the keyframes are the actors suggest_keyframes picks (else random ones)")
    p.add_argument("--no-dead-zones", action="store_true", help="ablation: a linear readout without its dead zones")
    p.add_argument("--renders", type=int, default=0, metavar="N",
                   help="N of each avatar's own (rig, image) renders: a linear readout's keyframe fit is pulled towards "
                        "the fit on them; an animator trained by gradient learns from them beside its keyframes (0: none)")
    p.add_argument("--render-rigs", choices=("random", "proposed"), default="random",
                   help="the renders' rigs: sample_rigs (random), or the server's proposal for renderer training")
    p.add_argument("--prior-penalty", type=float, default=RENDER_PRIOR_STRENGTH,
                   help="the renders' fit's own ridge penalty, per render")
    p.add_argument("--true-units", action="store_true",
                   help="a ceiling: the kinds that read units read the true action units instead of the encoder's")
    p.add_argument("--ridge", type=float, nargs="+", default=[10.0],
                   help="a linear readout's penalty on its squared weights (several: a sweep)")
    p.add_argument("--alias-weight", type=float, default=1.0, help="0: no blendshape targets for aliased controls")
    p.add_argument("--tag", default="")
    p.add_argument("--baselines", type=Path, default=None, help="write the per_avatar decoders here")
    p.add_argument("--seed", type=int, default=0, help="initialisation and batches (the keyframes stay the same)")
    p.add_argument("--keyframe-draws", type=int, nargs="+", default=[0],
                   help="which training images the artist posed (several: the spread over draws)")
    p.add_argument("--ship", type=Path, default=None,
                   help="train the first --kinds/--keyframes setting and write it here as a servable animator "
                        "(animator.pt, the encoder it reads, ONNX graphs)")
    p.add_argument("--encoder", type=Path, default=ENCODER_CHECKPOINT,
                   help="the expression encoder whose embedding the animator reads (default: the package's)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)
    encoder = load_frozen_encoder(args.encoder)
    train_data = build(args.work / "train.npz", args.train, TRAIN_IDENTITY_OFFSET, 300, 3, encoder)
    held = build(args.work / "heldout.npz", args.heldout, HELDOUT_IDENTITY_OFFSET, 60, HELDOUT_SEED, encoder)
    if encoder.au_head is not None:  # the kinds that read the units (the live path serves them)
        for data in (train_data, held):
            data["units"] = read_images(encoder, data["small"])[1].numpy()  # as the runtime's graph does
    if args.true_units and args.renders:
        raise SystemExit("--renders reads the encoder's units of the renders, which --true-units replaces for the actors")
    if args.true_units:  # a ceiling: the world's own action units, standardised, as the reading
        mean, std = train_data["aus"].mean(0), train_data["aus"].std(0) + 1e-6
        for data in (train_data, held):
            data["units"] = ((data["aus"] - mean) / std).astype(np.float32)
    unit_dim = train_data["units"].shape[1] if "units" in train_data else 0
    renders = None
    if args.renders:
        renders = {name: avatar_renders(args.work / f"samples_{name}_{args.render_rigs}_{args.renders}_{SAMPLE_SIZE}.npz",
                                        name, args.renders, args.render_rigs, encoder) for name in BUILTIN_AVATARS}
    report: dict[str, object] = {}
    shipped_reads_these = weights_digest(load_frozen_encoder(SHIPPED / ENCODER_FILE)) == weights_digest(encoder)
    if shipped_reads_these and not args.true_units:  # reads this encoder's embedding and units
        shipped = load_animator(SHIPPED / "animator.pt")
        with torch.no_grad():
            x = features(held, shipped.config)
            report["shipped"] = {n: scores(n, shipped(x, n).numpy(), held["aus"]) for n in BUILTIN_AVATARS}
    report["mediapipe_aliases"] = {n: scores(n, alias_read(n, held["blendshapes"]), held["aus"]) for n in BUILTIN_AVATARS}
    fit_data, val = train_data, None
    if args.val:
        # per-actor arrays split; the cache's scalar entries (the encoder's digest) stay whole
        fit_data = {key: v[: -args.val] if v.ndim else v for key, v in train_data.items()}
        val = {key: v[-args.val :] if v.ndim else v for key, v in train_data.items()}
    def linear(kind: str) -> bool:
        return args.readout == "linear" and not kind.startswith("per_avatar")

    # the sweep's last axis: the pull to rest of a gradient-trained animator, a linear readout's ridge
    settings = [(kind, k, weight, draw) for kind in args.kinds for k in args.keyframes
                for weight in (args.ridge if linear(kind) else args.sparsity) for draw in args.keyframe_draws]
    for kind, k, weight, draw in settings:
        started = time.time()
        swept = len(args.ridge if linear(kind) else args.sparsity) > 1
        row = (f"{kind}_k{k}" + ("_linear" if linear(kind) else "") + ("_suggested" if args.suggested else "")
               + ("_no_dead_zones" if linear(kind) and args.no_dead_zones else "")
               + (f"_renders{args.renders}" + ("_proposed" if args.render_rigs == "proposed" else "") if args.renders else "")
               + (f"_pp{args.prior_penalty:g}" if linear(kind) and args.renders
                  and args.prior_penalty != RENDER_PRIOR_STRENGTH else "")
               + (f"_{'r' if linear(kind) else 's'}{weight:g}" if swept else "")
               + (f"_ud{args.unit_dropout:g}" if reading_of(kind) == "embedding_units" and args.unit_dropout
                  and not linear(kind) else "")
               + (f"_draw{draw}" if len(args.keyframe_draws) > 1 else ""))
        if linear(kind):
            model = fit_linear(fit_data, kind, k, weight, draw, args.suggested, not args.no_dead_zones, renders,
                               args.prior_penalty)
        else:
            model = train(fit_data, kind, k, args.steps, args.seed, args.dropout, weight, args.alias_weight, draw,
                          args.unit_dropout, args.suggested, renders)
        per_avatar = kind.startswith("per_avatar")
        with torch.no_grad():
            for name, data in (("", held), ("val_", val)):
                if data is None:
                    continue
                x = features(data, kind_config(kind, unit_dim, args.readout))
                report[name + row] = {
                    n: scores(n, (model[n](x) if per_avatar else model(x, n)).numpy(), data["aus"])
                    for n in BUILTIN_AVATARS}
            report[row]["parameters"] = sum(p.numel() for p in model.parameters())
        print(f"{row}: {time.time() - started:.0f} s", flush=True)
        if per_avatar and args.baselines is not None:  # read by `freeavatar eval animator --baselines`
            args.baselines.mkdir(parents=True, exist_ok=True)
            for n in BUILTIN_AVATARS:
                save_decoder(model[n], args.baselines / per_avatar_file("per_avatar", n), {"setting": row})
        if args.ship is not None:  # the first setting only
            args.ship.mkdir(parents=True, exist_ok=True)
            save_animator(model, args.ship / ANIMATOR_FILE, {"trained_by": "research/animator_direct.py",
                                                             "setting": row, "heldout": report[row]})
            save_encoder_copy(args.encoder, args.ship / ENCODER_FILE)  # the embedding space it reads
            export_runtime(args.ship)
            break
    (args.work / f"report{args.tag}.json").write_text(json.dumps(report, indent=1))
    if args.json:
        print(json.dumps(report))
    for row, by_avatar in report.items():
        print(f"{row:24s}", "  ".join(f"{n} r {s['correlation']:.2f} err {s['error_vs_neutral']:.2f}"
                                      for n, s in by_avatar.items() if n in BUILTIN_AVATARS))


if __name__ == "__main__":
    main()
