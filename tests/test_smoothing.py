import numpy as np
import pytest

from freeavatar_server.live.smoothing import NeutralCalibration, OneEuroFilter, ease_towards


def test_one_euro_removes_jitter_but_follows_fast_motion() -> None:
    rng = np.random.default_rng(0)
    times = np.arange(120) / 30
    still = 0.5 + 0.02 * rng.standard_normal((120, 1))
    smooth = OneEuroFilter()
    out = np.array([smooth(v, t) for v, t in zip(still, times, strict=True)])
    assert out[30:].std() < 0.5 * still[30:].std()  # more than halved (0.46 since blinks got through)

    jump = np.where(times < 2, 0.0, 1.0)[:, None]
    follow = OneEuroFilter()
    out = np.array([follow(v, t) for v, t in zip(jump, times, strict=True)])
    assert out[60 + 6, 0] > 0.8  # within 200 ms of a full-range jump


def test_calibration_removes_the_actors_resting_bias() -> None:
    calibration = NeutralCalibration(defaults=np.zeros(2), frames_needed=3)
    resting = np.array([0.2, 0.0])
    assert calibration(resting) == pytest.approx(resting)  # not calibrated yet
    calibration.request()
    for _ in range(3):
        calibration(resting)
    assert calibration.calibrated
    assert calibration(np.array([0.7, 0.5])) == pytest.approx([0.5, 0.5])


def test_ease_towards_neutral() -> None:
    value = ease_towards(np.array([1.0]), np.array([0.0]), dt_s=0.3)
    assert value[0] == pytest.approx(np.exp(-1))
    assert ease_towards(np.array([1.0]), np.array([0.0]), dt_s=3.0)[0] < 1e-4


def test_one_euro_lets_a_blink_through() -> None:
    """A blink is over in five frames at 30 fps; the smoothed lid must still close most of the way."""
    lid = np.array([0.0] * 10 + [0.6, 1.0, 0.7, 0.1] + [0.0] * 10)[:, None]
    times = np.arange(len(lid)) / 30
    smooth = OneEuroFilter()
    out = np.array([smooth(v, t) for v, t in zip(lid, times, strict=True)])
    assert out.max() > 0.7
    assert out[-1, 0] < 0.1  # and opens again
