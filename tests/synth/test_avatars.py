from __future__ import annotations

import numpy as np
import pytest

from freeavatar.arkit import ARKIT_BLENDSHAPES
from freeavatar_server.synth.actors import AU_INDEX, N_AU, prototype_vector, sample_expressions
from freeavatar_server.synth.avatars import BUILTIN_AVATARS, get_avatar

NAMES = sorted(BUILTIN_AVATARS)


def test_the_built_in_kinds_exist() -> None:
    assert {"human_arkit", "cartoon", "robot", "cat"} <= set(BUILTIN_AVATARS)
    assert get_avatar("human_arkit").spec.control_names == list(ARKIT_BLENDSHAPES)
    assert all(c.arkit_alias == c.name for c in get_avatar("human_arkit").spec.controls)
    assert 10 <= get_avatar("cartoon").n_controls <= 16
    assert get_avatar("robot").n_controls <= 8
    with pytest.raises(KeyError, match="known"):
        get_avatar("dragon")


def test_every_list_of_the_built_ins_names_them_all() -> None:
    """The CLI, the benchmarks, the demo and the test servers name the built-ins without
    importing the renderers (torch): those lists must not fall behind BUILTIN_AVATARS."""
    import inspect

    from freeavatar_server.app.cli import BUILTIN_NAMES, eval_renderer
    from freeavatar_server.tools.bench import BUILTIN
    from freeavatar_server.tools.demo import DemoConfig
    from tests.conftest import BUILTIN as TEST_BUILTIN

    evaluated = inspect.signature(eval_renderer).parameters["avatars"].default.split(",")
    for names in (BUILTIN_NAMES, BUILTIN, DemoConfig().avatars, TEST_BUILTIN, evaluated):
        assert tuple(names) == tuple(BUILTIN_AVATARS)


@pytest.mark.parametrize("name", NAMES)
def test_spec_validates_and_round_trips(name: str) -> None:
    avatar = BUILTIN_AVATARS[name]
    avatar.spec.validate()
    assert type(avatar.spec).from_dict(avatar.spec.to_dict()) == avatar.spec


@pytest.mark.parametrize("name", NAMES)
def test_renderer_is_deterministic_with_shape_and_dtype(name: str) -> None:
    avatar = BUILTIN_AVATARS[name]
    rig = avatar.sample_rigs(4, np.random.default_rng(0))
    a, b = avatar.render(rig, size=48), avatar.render(rig, size=48)
    assert a.shape == (4, 48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    with pytest.raises(ValueError):
        avatar.render(np.zeros((2, avatar.n_controls + 1), np.float32))


@pytest.mark.parametrize("name", NAMES)
def test_renderer_responds_to_every_control(name: str) -> None:
    """From neutral and from a random pose of the rig, moving any single control changes pixels."""
    avatar = BUILTIN_AVATARS[name]
    rng = np.random.default_rng(1)
    for base in (avatar.neutral(1)[0], avatar.sample_rigs(1, rng, sparsity=0.0)[0] * 0.5):
        rigs = [base]
        for i, control in enumerate(avatar.spec.controls):
            moved = base.copy()
            far = control.max if base[i] - control.min < control.max - base[i] else control.min
            moved[i] = far
            rigs.append(moved)
        images = avatar.render(np.stack(rigs), size=64).astype(np.int32)
        for i, control in enumerate(avatar.spec.controls):
            changed = np.abs(images[i + 1] - images[0]).max(axis=-1)
            assert (changed > 8).sum() >= 4, f"{name}.{control.name} does not show"


@pytest.mark.parametrize("name", NAMES)
def test_expected_rig_is_in_range_and_neutral_for_neutral(name: str) -> None:
    avatar = BUILTIN_AVATARS[name]
    aus = sample_expressions(64, np.random.default_rng(2))
    rig = avatar.expected_rig(aus)
    lo = np.array([c.min for c in avatar.spec.controls])
    hi = np.array([c.max for c in avatar.spec.controls])
    assert rig.shape == (64, avatar.n_controls) and rig.dtype == np.float32
    assert (rig >= lo).all() and (rig <= hi).all()
    assert np.allclose(avatar.expected_rig(np.zeros((1, N_AU), np.float32)), avatar.neutral(1))
    assert np.abs(rig - avatar.neutral(64)).sum(axis=1).mean() > 0.1, "expressions move the rig"


def test_expected_rig_semantics() -> None:
    smile = prototype_vector("smile")[None]
    human = get_avatar("human_arkit")
    names = human.spec.control_names
    rig = human.expected_rig(smile)[0]
    assert rig[names.index("mouthSmileLeft")] > 0.5 and rig[names.index("mouthFrownLeft")] == 0
    cartoon = get_avatar("cartoon")
    assert cartoon.expected_rig(smile)[0][cartoon.spec.control_names.index("grin")] > 0.5
    robot = get_avatar("robot")
    sad = prototype_vector("sad")[None]
    assert robot.expected_rig(sad)[0][robot.spec.control_names.index("mouth_curve")] < -0.5
    wink = np.zeros((1, N_AU), np.float32)
    wink[0, AU_INDEX["blink_L"]] = 1.0
    c = cartoon.expected_rig(wink)[0]
    assert c[cartoon.spec.control_names.index("blink_L")] == 1.0
    assert c[cartoon.spec.control_names.index("blink_R")] == 0.0


def _corner_lift(name: str, curve: float, size: int = 128) -> float:
    """How the mouth pixels a `mouth_curve` of `curve` changes sit: the correlation, over the
    changed pixels in the lower half, between distance from the middle column and image row
    (rows grow downwards, so corners drawn higher than the middle give a negative value)."""
    avatar = get_avatar(name)
    rigs = avatar.neutral(2)
    rigs[1, avatar.spec.control_names.index("mouth_curve")] = curve
    a, b = avatar.render(rigs, size=size).astype(np.int32)
    rows, cols = np.nonzero(np.abs(a - b).max(axis=-1)[size // 2 :] > 24)
    return float(np.corrcoef(np.abs(cols - size / 2), rows)[0, 1])


@pytest.mark.parametrize("name", ["robot", "cat"])
def test_a_positive_mouth_curve_is_drawn_as_a_smile(name: str) -> None:
    """mouth_curve = AU12 - AU15 in the ground truth, so + must lift the corners: the robot once
    drew it as a frown, and every actor's smile was scored against a frowning robot."""
    assert _corner_lift(name, 1.0) < -0.3
    assert _corner_lift(name, 1.0) < _corner_lift(name, -1.0)


def test_human_expected_rig_reproduces_the_actors_expression() -> None:
    """The evaluation mapping is coherent: the ARKit head driven by expected_rig(AUs) looks like
    the same head driven by the AUs directly, closer than to any other expression."""
    from freeavatar_server.synth.actors import au_to_muscles
    from freeavatar_server.synth.avatars import render_human_muscles
    from freeavatar_server.synth.face import MUSCLES

    human = get_avatar("human_arkit")
    aus = sample_expressions(40, np.random.default_rng(7))
    aus = aus[np.abs(aus).sum(axis=1) > 0.5][:16]  # near-neutral faces all look alike
    via_rig = human.render(human.expected_rig(aus), size=64).astype(np.float32)
    muscles = au_to_muscles(aus)
    assert set(muscles) == set(MUSCLES)
    direct = render_human_muscles(muscles, len(aus), 64).clamp(0, 1) * 255
    direct = direct.permute(0, 2, 3, 1).numpy()
    d = np.abs(via_rig[:, None] - direct[None]).mean(axis=(2, 3, 4))  # (via rig i, direct j)
    assert (d.argmin(axis=1) == np.arange(len(aus))).mean() >= 0.9


# ---------------------------------------------------------------------------------------------
# cat: the animal, the fourth built-in


def _cat_rig(prototype: str) -> dict[str, float]:
    cat = get_avatar("cat")
    rig = cat.expected_rig(prototype_vector(prototype)[None])[0]
    return dict(zip(cat.spec.control_names, rig.tolist(), strict=True))


def _single_au(name: str, value: float = 1.0) -> dict[str, float]:
    aus = np.zeros((1, N_AU), np.float32)
    aus[0, AU_INDEX[name]] = value
    cat = get_avatar("cat")
    return dict(zip(cat.spec.control_names, cat.expected_rig(aus)[0].tolist(), strict=True))


def test_cat_rig_is_its_own_size_with_signed_controls() -> None:
    cat = get_avatar("cat")
    assert cat.n_controls == 11
    sizes = {a.n_controls for name, a in BUILTIN_AVATARS.items() if name != "cat"}
    assert cat.n_controls not in sizes, "each built-in avatar has a rig size of its own"
    signed = {c.name for c in cat.spec.controls if c.min < 0}
    assert {"ears_perk", "ear_tilt", "pupils", "jaw_side", "whiskers"} <= signed
    assert all(c.min <= c.default <= c.max for c in cat.spec.controls)
    assert cat.spec.defaults == [0.0] * 11


def test_cat_renders_at_any_size_and_every_control_moves_both_ways() -> None:
    """Signed controls show on both sides of neutral, not just at one end."""
    cat = get_avatar("cat")
    for size in (16, 37, 128):
        assert cat.render(cat.neutral(2), size=size).shape == (2, size, size, 3)
    rigs = [cat.neutral(1)[0]]
    ends = [(i, end) for i, c in enumerate(cat.spec.controls) for end in {c.min, c.max} - {0.0}]
    for i, end in ends:
        rig = cat.neutral(1)[0]
        rig[i] = end
        rigs.append(rig)
    images = cat.render(np.stack(rigs), size=64).astype(np.int32)
    for k, (i, end) in enumerate(ends):
        changed = np.abs(images[k + 1] - images[0]).max(axis=-1)
        assert (changed > 8).sum() >= 4, f"cat.{cat.spec.controls[i].name} at {end} does not show"


def test_cat_blinks_are_per_side_on_the_correct_half() -> None:
    """blink_L closes the eye on image right (the cat's left), as for actors and the cartoon."""
    cat = get_avatar("cat")
    rigs = cat.neutral(2)
    rigs[1, cat.spec.control_names.index("blink_L")] = 1.0
    a, b = cat.render(rigs, size=64).astype(np.int32)
    changed = np.abs(a - b).max(axis=-1) > 8
    assert changed[:, 32:].sum() > 10 and changed[:, :32].sum() == 0


def test_cat_expected_rig_reads_expressions_like_an_animal() -> None:
    surprise, anger, sad = _cat_rig("surprise"), _cat_rig("anger"), _cat_rig("sad")
    assert surprise["ears_perk"] > 0.5 and surprise["pupils"] > 0.5 and surprise["brows"] > 0.5
    assert anger["ears_perk"] < -0.5 and anger["pupils"] < -0.5 and anger["brows"] < -0.5
    assert sad["ears_perk"] < 0 and sad["mouth_curve"] < -0.5 and sad["whiskers"] < -0.3
    smile = _cat_rig("smile")
    assert smile["mouth_curve"] > 0.5 and smile["whiskers"] > 0.5
    assert 0 < smile["blink_L"] < 0.5  # a contented half-squint, not a blink
    assert _cat_rig("disgust")["snarl"] > 0.8 and _cat_rig("disgust")["ears_perk"] < 0
    assert _cat_rig("puff")["whiskers"] > 0.5


@pytest.mark.parametrize(
    ("au", "control", "sign"),
    [
        ("brow_outer_raise_L", "ear_tilt", 1),
        ("brow_outer_raise_R", "ear_tilt", -1),
        ("blink_L", "blink_L", 1),
        ("upper_lid_raise", "pupils", 1),
        ("lid_tighten", "pupils", -1),
        ("brow_lower", "ears_perk", -1),
        ("brow_lower", "brows", -1),
        ("nose_wrinkle", "snarl", 1),
        ("upper_lip_raise", "snarl", 1),
        ("jaw_drop", "jaw_open", 1),
        ("lips_part", "jaw_open", 1),
        ("jaw_sideways_L", "jaw_side", 1),
        ("jaw_sideways_R", "jaw_side", -1),
        ("lip_corner_depress_L", "mouth_curve", -1),
        ("cheek_puff", "whiskers", 1),
        ("chin_raise", "whiskers", -1),
    ],
)
def test_cat_expected_rig_follows_the_action_units_it_claims(
    au: str, control: str, sign: int
) -> None:
    assert sign * _single_au(au)[control] > 0.2
    assert _single_au(au, 0.0)[control] == 0.0


def test_every_cat_control_is_driven_by_some_action_unit() -> None:
    cat = get_avatar("cat")
    moved = np.zeros(cat.n_controls, dtype=bool)
    for i in range(N_AU):
        for value in (0.5, 1.0):
            aus = np.zeros((1, N_AU), np.float32)
            aus[0, i] = value
            moved |= np.abs(cat.expected_rig(aus)[0]) > 0.05
    assert moved.all(), [n for n, m in zip(cat.spec.control_names, moved, strict=True) if not m]
