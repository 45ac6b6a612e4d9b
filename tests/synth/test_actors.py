from __future__ import annotations

import numpy as np
import pytest

from freeavatar_server.synth.actors import (
    ACTION_UNITS,
    AU_INDEX,
    N_AU,
    PROTOTYPES,
    STYLISED_OFFSET,
    make_identities,
    mirror_permutation,
    prototype_vector,
    render_faces,
    render_frames,
    sample_expressions,
)

REQUIRED = (
    "brow_inner_raise", "brow_outer_raise_L", "brow_outer_raise_R", "brow_lower",
    "upper_lid_raise", "lid_tighten", "blink_L", "blink_R", "cheek_raise", "nose_wrinkle",
    "upper_lip_raise", "lip_corner_pull_L", "lip_corner_pull_R", "lip_corner_depress_L",
    "lip_corner_depress_R", "dimple", "chin_raise", "lip_stretch", "lip_pucker", "lip_press",
    "lips_part", "jaw_drop", "jaw_sideways_L", "jaw_sideways_R",
)  # fmt: skip


def test_action_units_cover_the_facs_list() -> None:
    assert len(ACTION_UNITS) >= 20
    assert len(set(ACTION_UNITS)) == len(ACTION_UNITS)
    assert set(REQUIRED) <= set(ACTION_UNITS)
    perm = mirror_permutation()
    assert ACTION_UNITS[perm[AU_INDEX["blink_L"]]] == "blink_R"
    assert np.array_equal(perm[perm], np.arange(N_AU))


def test_sample_expressions_are_plausible() -> None:
    expr = sample_expressions(2000, np.random.default_rng(0))
    assert expr.shape == (2000, N_AU) and expr.dtype == np.float32
    assert expr.min() >= 0.0 and expr.max() <= 1.0
    active = (expr > 0.1).sum(axis=1)
    assert np.median(active) <= 6, "expressions should be mostly sparse"
    assert (active == 0).mean() > 0.05, "some neutral faces"
    assert (expr > 0.1).any(axis=0).all(), "every AU is used"
    left, right = expr[:, AU_INDEX["lip_corner_pull_L"]], expr[:, AU_INDEX["lip_corner_pull_R"]]
    assert (np.abs(left - right) > 0.2).mean() > 0.05, "asymmetric expressions occur"
    assert np.array_equal(expr, sample_expressions(2000, np.random.default_rng(0)))


def test_identities_are_a_pure_function_of_the_id() -> None:
    a = make_identities(np.array([5, 10**15, -3]))
    b = make_identities(np.array([10**15]))
    assert np.array_equal(a.skin[1], b.skin[0]) and a.eye_dx[1] == b.eye_dx[0]
    assert not np.array_equal(a.skin[0], a.skin[2])


def test_stylised_characters_live_in_their_own_id_range() -> None:
    ids = np.arange(200)
    people, characters = make_identities(ids), make_identities(ids + STYLISED_OFFSET)
    mixed = make_identities(np.array([7, STYLISED_OFFSET + 7]))
    assert np.array_equal(mixed.skin[0], people.skin[7]) and np.array_equal(mixed.skin[1], characters.skin[7])
    # people have skin tones; characters any hue (green or blue ones occur), and bigger eyes
    human_like = lambda skin: (skin[:, 0] >= skin[:, 1]) & (skin[:, 1] >= skin[:, 2] - 0.02)  # noqa: E731
    assert human_like(people.skin).all() and (~human_like(characters.skin)).mean() > 0.4
    assert characters.eye_w.mean() > people.eye_w.mean() + 0.03
    assert characters.beard.max() == 0 and characters.glasses.max() == 0
    faces = render_faces(sample_expressions(4, np.random.default_rng(0)), STYLISED_OFFSET + np.arange(4), size=32)
    assert faces.images.shape == (4, 32, 32, 3)


def test_characters_are_cel_shaded_and_people_are_not() -> None:
    expr = sample_expressions(4, np.random.default_rng(2))
    ids = np.array([3, STYLISED_OFFSET + 3, 5, STYLISED_OFFSET + 5])
    faces = render_faces(expr, ids, size=64, seed=1, nuisance=False).images
    # a person alone renders as in a batch of people: the cel shading touches characters only
    alone = render_faces(expr[:1], ids[:1], size=64, seed=1, nuisance=False).images
    assert np.array_equal(alone[0], faces[0])

    def flat_share(face: np.ndarray) -> float:  # pixels in the six commonest colours
        counts = np.sort(np.unique(face.reshape(-1, 3), axis=0, return_counts=True)[1])
        return counts[-6:].sum() / counts.sum()

    shares = [flat_share(face) for face in faces]
    assert min(shares[1], shares[3]) > 0.6 > 0.5 > max(shares[0], shares[2])  # bands vs soft shading


def test_render_faces_shapes_ranges_and_determinism() -> None:
    expr = sample_expressions(6, np.random.default_rng(1))
    ids = np.arange(6) * 1000
    a = render_faces(expr, ids, size=64, seed=3)
    b = render_faces(expr, ids, size=64, seed=3)
    c = render_faces(expr, ids, size=64, seed=4)
    assert a.images.shape == (6, 64, 64, 3) and a.images.dtype == np.uint8
    assert a.expressions.dtype == np.float32 and a.identity_ids.dtype == np.int64
    assert a.poses.shape == (6, 3) and a.poses.dtype == np.float32
    assert np.abs(a.poses).max() <= 30.0
    assert a.boxes.shape == (6, 4) and a.boxes.dtype == np.float32
    assert (a.boxes[:, 2] > a.boxes[:, 0]).all() and (a.boxes[:, 3] > a.boxes[:, 1]).all()
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert np.array_equal(a.expressions, expr)


def test_sub_batches_render_the_same_pixels() -> None:
    expr = sample_expressions(5, np.random.default_rng(2))
    whole = render_faces(expr, np.arange(5), size=48, seed=9)
    part = render_faces(expr[2:4], np.arange(2, 4), size=48, sample_seeds=_seeds(9, 5)[2:4])
    assert np.array_equal(whole.images[2:4], part.images)


def test_a_face_renders_the_same_alone_or_in_any_batch() -> None:
    expr = sample_expressions(20, np.random.default_rng(4))
    ids = np.arange(20) + 500
    seeds = _seeds(2, 20)
    whole = render_faces(expr, ids, size=40, sample_seeds=seeds)  # one painter chunk
    big = render_faces(expr, ids, size=160, sample_seeds=seeds)  # several chunks
    for i in (0, 7, 19):
        alone = render_faces(
            expr[i : i + 1], ids[i : i + 1], size=40, sample_seeds=seeds[i : i + 1]
        )
        assert np.array_equal(whole.images[i], alone.images[0])
        big_alone = render_faces(
            expr[i : i + 1], ids[i : i + 1], size=160, sample_seeds=seeds[i : i + 1]
        )
        assert np.array_equal(big.images[i], big_alone.images[0])


def _seeds(seed: int, n: int) -> np.ndarray:
    from freeavatar_server.synth.actors import sample_seeds_for

    return sample_seeds_for(seed, n)


def test_nuisance_off_is_clean_and_given_poses_are_kept() -> None:
    expr = np.zeros((2, N_AU), np.float32)
    poses = np.array([[0, 0, 0], [20, -10, 5]], np.float32)
    clean = render_faces(expr, [7, 7], size=64, poses=poses, nuisance=False, seed=1)
    again = render_faces(expr, [7, 7], size=64, poses=poses, nuisance=False, seed=99)
    assert np.array_equal(clean.poses, poses)
    assert np.array_equal(clean.images, again.images), "no seed-dependent nuisance when off"
    corner = clean.images[0, :4, :4].reshape(-1, 3)
    assert np.ptp(corner, axis=0).max() <= 1, "plain background"


def _face(expr: np.ndarray, ident: int = 11, size: int = 96) -> np.ndarray:
    batch = render_faces(
        expr[None], [ident], size=size, poses=np.zeros((1, 3), np.float32), nuisance=False
    )
    return batch.images[0].astype(np.float32)


def _region(img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box
    return img[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)]


@pytest.mark.parametrize("ident", [3, 20])
def test_every_action_unit_changes_the_face(ident: int) -> None:
    neutral = _face(np.zeros(N_AU, np.float32), ident)
    box = (0.15, 0.15, 0.85, 0.95)
    for name in ACTION_UNITS:
        vec = np.zeros(N_AU, np.float32)
        vec[AU_INDEX[name]] = 1.0
        diff = _region(np.abs(_face(vec, ident) - neutral), box).mean()
        assert diff > 0.15, f"{name} barely changes face {ident} ({diff:.3f})"


def test_expressions_act_on_the_right_regions() -> None:
    neutral = _face(np.zeros(N_AU, np.float32))
    upper, lower = (0.1, 0.15, 0.9, 0.5), (0.1, 0.6, 0.9, 1.0)
    for name, region in (
        ("blink_L", upper),
        ("brow_inner_raise", upper),
        ("jaw_drop", lower),
        ("lip_pucker", lower),
    ):
        vec = np.zeros(N_AU, np.float32)
        vec[AU_INDEX[name]] = 1.0
        d = np.abs(_face(vec) - neutral)
        other = lower if region is upper else upper
        assert _region(d, region).mean() > 2 * _region(d, other).mean(), name
    # the actor's left eye is on the image right
    vec = np.zeros(N_AU, np.float32)
    vec[AU_INDEX["blink_L"]] = 1.0
    d = np.abs(_face(vec) - neutral)
    assert d[:, 48:].sum() > 5 * d[:, :48].sum()


def test_jaw_drop_lengthens_the_face_box_and_smile_narrows_the_eyes() -> None:
    zeros = np.zeros((2, N_AU), np.float32)
    zeros[1, AU_INDEX["jaw_drop"]] = 1.0
    batch = render_faces(zeros, [3, 3], size=96, poses=np.zeros((2, 3), np.float32), nuisance=False)
    h = batch.boxes[:, 3] - batch.boxes[:, 1]
    assert h[1] > h[0] * 1.05
    # a smile (AU12 alone) already pushes the cheeks up into the eyes
    smile = prototype_vector("smile")
    smile[AU_INDEX["cheek_raise"]] = 0.0
    d = np.abs(_face(smile) - _face(np.zeros(N_AU, np.float32)))
    assert _region(d, (0.15, 0.35, 0.85, 0.55)).mean() > 0.5


def test_identity_and_pose_change_pixels_more_than_subtle_expression() -> None:
    """Raw pixel distance is a poor expression measure: identity dominates it."""
    smile = prototype_vector("smile", 0.5)
    neutral = np.zeros(N_AU, np.float32)
    same_id = np.abs(_face(smile, 5) - _face(neutral, 5)).mean()
    other_id = np.abs(_face(neutral, 6) - _face(neutral, 5)).mean()
    assert other_id > 2 * same_id


def test_render_frames_places_the_face_in_the_box() -> None:
    expr = np.stack([prototype_vector(k) for k in list(PROTOTYPES)[:3]])
    boxes = np.array([[20, 30, 100, 130], [200, 100, 260, 180], [10, 10, 150, 200]], np.float32)
    batch = render_frames(expr, [1, 2, 3], width=320, height=240, face_boxes=boxes, seed=5)
    assert batch.images.shape == (3, 240, 320, 3)
    assert np.allclose(batch.boxes[:, 0], boxes[:, 0], atol=0.5)
    assert np.allclose(batch.boxes[:, 2], boxes[:, 2], atol=0.5)
    centre_y = (batch.boxes[:, 1] + batch.boxes[:, 3]) / 2
    assert np.allclose(centre_y, (boxes[:, 1] + boxes[:, 3]) / 2, atol=0.5)
    again = render_frames(expr, [1, 2, 3], width=320, height=240, face_boxes=boxes, seed=5)
    assert np.array_equal(batch.images, again.images)
    # the face is where the box says: the box interior differs from the same frame without it
    far = boxes.copy()
    far[0] = [250, 150, 300, 210]
    moved = render_frames(expr[:1], [1], width=320, height=240, face_boxes=far[:1], seed=5)
    x0, y0, x1, y1 = boxes[0].astype(int)
    diff = np.abs(moved.images[0].astype(int) - batch.images[0].astype(int))
    assert diff[y0:y1, x0:x1].mean() > 10


def test_sampled_frame_boxes_are_inside_the_frame() -> None:
    batch = render_frames(
        np.zeros((4, N_AU), np.float32), np.arange(4), width=160, height=120, seed=1
    )
    assert (batch.boxes[:, 0] >= -5).all() and (batch.boxes[:, 2] <= 165).all()
    assert (batch.boxes[:, 1] >= -15).all() and (batch.boxes[:, 3] <= 135).all()


@pytest.mark.parametrize("bad", [np.zeros((2, 5)), np.zeros(N_AU)])
def test_bad_expression_shapes_are_rejected(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        render_faces(bad, [0, 1])
