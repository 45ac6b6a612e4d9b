"""The shared animator network and its runtime: shapes, ranges, new avatars, ONNX parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from freeavatar_server.inference.animator import AnimatorRuntime, NotExported
from freeavatar_server.synth.avatars import BUILTIN_AVATARS
from freeavatar_server.training.animator.export import export_runtime
from freeavatar_server.training.animator.model import (
    AnimatorConfig,
    AvatarRig,
    PerAvatarDecoder,
    SharedAnimator,
    animator_inputs,
    count_parameters,
    dead_zone,
    load_animator,
    save_animator,
)


def rig_of(name: str) -> AvatarRig:
    return AvatarRig.from_spec(BUILTIN_AVATARS[name].spec)


def all_avatars(output: str = "clamp") -> SharedAnimator:
    torch.manual_seed(0)
    model = SharedAnimator(AnimatorConfig(output=output))
    for i, name in enumerate(BUILTIN_AVATARS):
        model.add_avatar(name, rig_of(name), seed=i)
    return model.eval()


def embeddings(n: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, 16, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_every_rig_size_gets_its_controls_within_range() -> None:
    model = all_avatars()
    # big inputs push the outputs past their ends: they must still respect the ranges
    x = torch.cat([embeddings(64), 50 * embeddings(64, seed=1)])
    sizes = set()
    with torch.no_grad():
        for name, avatar in BUILTIN_AVATARS.items():
            rig = model(x, name)
            lo = torch.tensor([c.min for c in avatar.spec.controls])
            hi = torch.tensor([c.max for c in avatar.spec.controls])
            assert rig.shape == (len(x), avatar.n_controls)
            assert (rig >= lo - 1e-6).all() and (rig <= hi + 1e-6).all()
            sizes.add(avatar.n_controls)
    assert len(sizes) == len(BUILTIN_AVATARS)  # 52, 14, 11 and 8 controls through one network


def test_signed_controls_use_their_whole_range() -> None:
    model = all_avatars()
    cartoon = BUILTIN_AVATARS["cartoon"]
    signed = [i for i, c in enumerate(cartoon.spec.controls) if c.min < 0]
    assert signed, "cartoon has signed controls"
    with torch.no_grad():
        unit = torch.zeros(1, cartoon.n_controls)
        assert torch.allclose(model.to_rig(unit, "cartoon")[0, signed], torch.tensor([cartoon.spec.controls[i].min for i in signed]))


def test_a_new_avatar_needs_only_its_code_modulation_and_queries() -> None:
    model = all_avatars()
    before = {n: model(embeddings(32), n).detach().clone() for n in BUILTIN_AVATARS}
    extra = rig_of("robot")
    model.add_avatar("robot_2", extra, seed=9)
    own = model.avatar_parameters("robot_2")
    c = model.config
    assert sum(p.numel() for p in own) == c.code_dim + c.blocks * 2 * c.width + extra.n_controls * c.token_dim
    optimizer = torch.optim.Adam(own, lr=0.1)
    for _ in range(5):  # push the new avatar somewhere; the old ones must not move
        loss = (model.normalized(embeddings(32), "robot_2") - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        for name, old in before.items():
            assert torch.equal(model(embeddings(32), name), old)
    with pytest.raises(ValueError, match="already"):
        model.add_avatar("robot_2", extra)


def test_shared_network_is_smaller_than_one_decoder_per_avatar() -> None:
    model = all_avatars()
    per_avatar = sum(count_parameters(PerAvatarDecoder(AnimatorConfig(), rig_of(n))) for n in BUILTIN_AVATARS)
    assert count_parameters(model) < per_avatar


@pytest.mark.parametrize("output", ["clamp", "sigmoid"])
def test_checkpoint_round_trip_and_runtime_match_torch(tmp_path: Path, output: str) -> None:
    model = all_avatars(output)
    with torch.no_grad():  # FiLM and the attention biases start at zero; training moves them
        for block in model.blocks:
            block.film.weight.normal_(std=0.2)
            block.film.bias.normal_(std=0.2)
        for own in model.modulations.values():
            own.normal_(std=0.2)
        model.attend.in_proj_bias.normal_(std=0.2)
        model.attend.out_proj.bias.normal_(std=0.2)
        model.readout[-1].weight.mul_(20)  # outputs past the ends of their ranges: the bound matters
    save_animator(model, tmp_path / "animator.pt", {"note": "test"})
    loaded = load_animator(tmp_path / "animator.pt")
    with pytest.raises(NotExported, match=r"training\.animator\.export"):
        AnimatorRuntime.load(tmp_path)  # a checkpoint alone is not servable: it names the fix
    export_runtime(tmp_path)
    runtime = AnimatorRuntime.load(tmp_path)
    assert sorted(runtime.avatar_ids) == sorted(BUILTIN_AVATARS)
    x = embeddings(7, seed=3)
    for name, avatar in BUILTIN_AVATARS.items():
        with torch.no_grad():
            expected = model(x, name).numpy()
            assert np.array_equal(loaded(x, name).numpy(), expected)
        got = runtime.predict(x.numpy(), name)
        assert got.dtype == np.float32 and got.shape == (7, avatar.n_controls)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert runtime.control_names(name) == avatar.spec.control_names
    assert runtime.predict(x[:1].numpy(), "robot").shape == (1, 8)
    with pytest.raises(KeyError, match="no avatar 'ghost'"):
        runtime.predict(x.numpy(), "ghost")
    with pytest.raises(ValueError, match="embeddings must be"):
        runtime.predict(np.zeros((2, 8), np.float32), "robot")


def test_retarget_correlation_follows_expression_not_scale() -> None:
    from freeavatar_server.training.animator.evaluate import retarget_correlation

    truth = np.random.default_rng(0).random((50, 3))
    assert retarget_correlation(0.1 * truth + 0.4, truth) == pytest.approx(1.0)  # timid but right
    assert retarget_correlation(-truth, truth) == pytest.approx(-1.0)
    assert retarget_correlation(np.full_like(truth, 0.2), truth) == 0.0  # never moves
    resting = np.concatenate([truth, np.zeros((50, 1))], axis=1)  # a control the mapping never moves
    assert retarget_correlation(np.concatenate([truth, np.ones((50, 1))], axis=1), resting) == pytest.approx(1.0)


def test_a_checkpoint_from_before_bounded_outputs_loads_as_sigmoids(tmp_path: Path) -> None:
    torch.manual_seed(0)
    old = SharedAnimator(AnimatorConfig(output="sigmoid"))
    old.add_avatar("robot", rig_of("robot"))
    save_animator(old, tmp_path / "old.pt")
    checkpoint = torch.load(tmp_path / "old.pt", weights_only=True)
    del checkpoint["config"]["output"]  # as the files written before the field existed
    torch.save(checkpoint, tmp_path / "old.pt")
    loaded = load_animator(tmp_path / "old.pt")
    assert loaded.config.output == "sigmoid"
    x = embeddings(8)
    with torch.no_grad():
        assert torch.allclose(loaded(x, "robot"), old.eval()(x, "robot"))
        unit = loaded.normalized(x, "robot")
    assert ((unit > 0) & (unit < 1)).all()  # sigmoids never reach the ends; a clamp would


def test_a_checkpoint_from_before_per_avatar_modulations_loads(tmp_path: Path) -> None:
    model = all_avatars()
    with torch.no_grad():
        for block in model.blocks:
            block.film.weight.normal_(std=0.2)
    save_animator(model, tmp_path / "old.pt")
    checkpoint = torch.load(tmp_path / "old.pt", weights_only=True)
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("modulations.")}
    torch.save(checkpoint, tmp_path / "old.pt")  # as the files written before they existed
    loaded = load_animator(tmp_path / "old.pt")
    x = embeddings(8)
    with torch.no_grad():
        for name in BUILTIN_AVATARS:
            assert torch.equal(loaded(x, name), model.eval()(x, name))


def test_an_animator_that_reads_blendshapes_serves_them_beside_the_embedding(tmp_path: Path) -> None:
    model = SharedAnimator(AnimatorConfig(blendshape_dim=52))
    model.add_avatar("robot", rig_of("robot"))
    with torch.no_grad():
        model.stem.weight.normal_(std=0.5)
        model.readout[-1].weight.mul_(20)
    save_animator(model, tmp_path / "animator.pt")
    export_runtime(tmp_path)
    runtime = AnimatorRuntime.load(tmp_path)
    assert runtime.blendshape_dim == 52
    x, b = embeddings(5, seed=4), torch.rand(5, 52, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(torch.cat([x, b], dim=1), "robot").numpy()
        alone = model(torch.cat([x, torch.zeros_like(b)], dim=1), "robot").numpy()
    np.testing.assert_allclose(runtime.predict(x.numpy(), "robot", b.numpy()), expected, atol=1e-5)
    assert not np.allclose(expected, alone, atol=1e-3)  # the blendshapes do reach the rig
    # a frame without blendshapes is read from the embedding alone (trained with them dropped)
    np.testing.assert_allclose(runtime.predict(x.numpy(), "robot"), alone, atol=1e-5)
    with pytest.raises(ValueError, match="blendshapes must be"):
        runtime.predict(x.numpy(), "robot", np.zeros((5, 51), np.float32))


def units_of(n: int, seed: int = 0) -> torch.Tensor:
    """Standardised action units, as the encoder's read-out gives them."""
    return torch.randn(n, 25, generator=torch.Generator().manual_seed(seed))


def moving(config: AnimatorConfig) -> SharedAnimator:
    """A robot-only animator whose stem weighs every input (a fresh one barely moves)."""
    torch.manual_seed(0)
    model = SharedAnimator(config)
    model.add_avatar("robot", rig_of("robot"))
    with torch.no_grad():
        model.stem.weight.normal_(std=0.5)
        model.readout[-1].weight.mul_(20)
    return model.eval()


def test_an_animator_that_reads_units_needs_them_and_says_so(tmp_path: Path) -> None:
    model = moving(AnimatorConfig(unit_dim=25))
    save_animator(model, tmp_path / "animator.pt")
    export_runtime(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["unit_dim"] == 25 and manifest["inputs"] == [["embedding", 16], ["units", 25]]
    runtime = AnimatorRuntime.load(tmp_path)
    assert runtime.unit_dim == 25 and runtime.blendshape_dim == 0
    x, u = embeddings(5, seed=6), units_of(5, seed=7)
    with torch.no_grad():
        expected = model(torch.cat([x, u], dim=1), "robot").numpy()  # the documented order: embedding, units
        other = model(animator_inputs(model.config, x, units_of(5, seed=8)), "robot").numpy()
    np.testing.assert_allclose(runtime.predict(x.numpy(), "robot", units=u.numpy()), expected, atol=1e-5)
    assert not np.allclose(expected, other, atol=1e-3)  # the units do reach the rig
    # blendshapes are not read by it, and do not change it
    np.testing.assert_allclose(runtime.predict(x.numpy(), "robot", np.ones((5, 52), np.float32), units=u.numpy()),
                               expected, atol=1e-5)
    with pytest.raises(ValueError, match="reads the expression encoder's 25 action units"):
        runtime.predict(x.numpy(), "robot")
    with pytest.raises(ValueError, match=r"units must be \(5, 25\)"):
        runtime.predict(x.numpy(), "robot", units=u[:, :24].numpy())
    with pytest.raises(ValueError, match="reads 25 units and none were given"):
        animator_inputs(model.config, x)
    assert load_animator(tmp_path / "animator.pt").config == model.config  # the checkpoint records it


def test_every_input_part_joins_in_the_documented_order(tmp_path: Path) -> None:
    """embedding, blendshapes, units; and an animator may read the units alone."""
    x, b, u = embeddings(4, seed=1), torch.rand(4, 52, generator=torch.Generator().manual_seed(2)), units_of(4, seed=3)
    for config, row in ((AnimatorConfig(blendshape_dim=52, unit_dim=25), torch.cat([x, b, u], dim=1)),
                        (AnimatorConfig(embed_dim=0, unit_dim=25), u)):
        model = moving(config)
        assert config.in_dim == row.shape[1]
        directory = tmp_path / str(config.in_dim)
        directory.mkdir()
        save_animator(model, directory / "animator.pt")
        export_runtime(directory)
        runtime = AnimatorRuntime.load(directory)
        with torch.no_grad():
            expected = model(row, "robot").numpy()
            assert torch.equal(animator_inputs(config, x, u, b), row)
        np.testing.assert_allclose(runtime.predict(x.numpy(), "robot", b.numpy(), units=u.numpy()), expected, atol=1e-5)


def test_animators_from_before_the_units_ignore_them(tmp_path: Path) -> None:
    model = all_avatars()
    save_animator(model, tmp_path / "animator.pt")
    checkpoint = torch.load(tmp_path / "animator.pt", weights_only=True)
    del checkpoint["config"]["unit_dim"]  # as the files written before the field existed
    torch.save(checkpoint, tmp_path / "animator.pt")
    assert load_animator(tmp_path / "animator.pt").config.unit_dim == 0
    export_runtime(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for field in ("unit_dim", "inputs"):  # as the manifests written before them
        del manifest[field]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    runtime = AnimatorRuntime.load(tmp_path)
    assert runtime.unit_dim == 0
    x = embeddings(3).numpy()
    np.testing.assert_array_equal(runtime.predict(x, "cat", units=units_of(3).numpy()), runtime.predict(x, "cat"))


def linear_avatars(in_dim_units: int = 25) -> SharedAnimator:
    """A linear-readout animator over embedding + units with every part of it non-trivial:
    input scale, weights, biases and dead zones."""
    g = torch.Generator().manual_seed(4)
    model = SharedAnimator(AnimatorConfig(unit_dim=in_dim_units, readout="linear"))
    model.standardise_inputs(torch.randn(64, model.config.in_dim, generator=g) * 0.3 + 0.1)
    for i, name in enumerate(BUILTIN_AVATARS):
        model.add_avatar(name, rig_of(name), seed=i)
        with torch.no_grad():
            weights, bias = model.avatar_parameters(name)
            weights.normal_(std=0.3, generator=g)
            bias.normal_(std=0.2, generator=g)
            model.get_buffer(f"dead_zone_a_{name}").uniform_(0, 0.3, generator=g)
    return model.eval()


def test_a_linear_readout_starts_at_rest_and_owns_only_its_weights() -> None:
    model = SharedAnimator(AnimatorConfig(unit_dim=25, readout="linear"))
    model.add_avatar("robot", rig_of("robot"))
    rows = torch.randn(5, model.config.in_dim)
    rest = torch.tensor(BUILTIN_AVATARS["robot"].spec.defaults, dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(model(rows, "robot"), rest.expand(5, -1), atol=1e-6)
    assert model.shared_parameters() == []  # the input scale is a buffer, set from unlabeled actors
    assert sum(p.numel() for p in model.avatar_parameters("robot")) == 8 * model.config.in_dim + 8
    with pytest.raises(ValueError, match="sigmoid"):
        AnimatorConfig(readout="linear", output="sigmoid")
    with pytest.raises(ValueError, match="unknown animator readout"):
        AnimatorConfig(readout="mlp")


def test_a_linear_readout_round_trips_and_its_runtime_matches_torch(tmp_path: Path) -> None:
    model = linear_avatars()
    save_animator(model, tmp_path / "animator.pt")
    loaded = load_animator(tmp_path / "animator.pt")
    export_runtime(tmp_path)
    runtime = AnimatorRuntime.load(tmp_path)
    x, units = embeddings(9, seed=5), torch.randn(9, 25, generator=torch.Generator().manual_seed(6))
    rows = animator_inputs(model.config, x, units)
    for name, avatar in BUILTIN_AVATARS.items():
        with torch.no_grad():
            expected = model(rows, name).numpy()
            assert np.array_equal(loaded(rows, name).numpy(), expected)
            zoned = model.normalized(rows, name) - model.get_buffer(f"default_a_{name}")
        assert (zoned == 0).any() and (zoned != 0).any()  # the dead zones hold some controls, not all
        got = runtime.predict(x.numpy(), name, units=units.numpy())
        assert got.shape == (9, avatar.n_controls)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_dead_zone_holds_small_offsets_at_rest_and_keeps_the_whole_range() -> None:
    width = torch.tensor([0.0, 0.2, 0.5])
    assert torch.equal(dead_zone(torch.tensor([0.1, 0.15, -0.4]), width), torch.tensor([0.1, 0.0, 0.0]))
    torch.testing.assert_close(dead_zone(torch.tensor([1.0, -1.0, 1.0]), width), torch.tensor([1.0, -1.0, 1.0]))
    torch.testing.assert_close(dead_zone(torch.tensor([0.5, 0.6, 0.75]), width), torch.tensor([0.5, 0.5, 0.5]))


def test_no_dead_zone_passes_the_gradient_at_rest() -> None:
    """A linear readout starts at zero offset; with no dead zone (a job's avatar without
    keyframes) gradient descent must be able to move it."""
    offset = torch.zeros(3, requires_grad=True)
    dead_zone(offset, torch.zeros(3)).sum().backward()
    assert torch.equal(offset.grad, torch.ones(3))
