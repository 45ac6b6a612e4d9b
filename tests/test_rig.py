import json
import math

import pytest

from freeavatar import InvalidRigSpec, RigControl, RigSpec, load_rig_spec
from freeavatar.arkit import ARKIT_BLENDSHAPES


def test_arkit52_spec_is_valid_and_mirrored() -> None:
    spec = RigSpec.arkit52("head")
    spec.validate()
    assert spec.control_names == list(ARKIT_BLENDSHAPES)
    assert len(set(ARKIT_BLENDSHAPES)) == 52
    by_name = {c.name: c for c in spec.controls}
    assert by_name["eyeBlinkLeft"].mirror == "eyeBlinkRight"
    assert by_name["jawOpen"].mirror == ""
    assert by_name["browInnerUp"].group == "brow"


def test_spec_round_trips_through_dict_json_file_and_proto(tmp_path) -> None:
    spec = RigSpec(
        "robot",
        (
            RigControl("jaw", 0.0, 1.0, 0.0, "mouth"),
            RigControl("eye_l", -1.0, 1.0, 0.1, "eyes", mirror="eye_r"),
            RigControl("eye_r", -1.0, 1.0, 0.1, "eyes", mirror="eye_l"),
        ),
    )
    assert RigSpec.from_dict(spec.to_dict()) == spec
    assert RigSpec.from_proto(spec.to_proto()) == spec
    path = tmp_path / "robot.json"
    path.write_text(spec.to_json())
    assert load_rig_spec(path) == spec
    assert load_rig_spec(str(path)) == spec
    assert load_rig_spec(spec.to_dict()) == spec


def test_control_defaults_from_dict_take_min() -> None:
    spec = load_rig_spec({"name": "a", "controls": [{"name": "x", "min": -1, "max": 1}]})
    assert spec.controls[0] == RigControl("x", -1.0, 1.0, -1.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "a", "controls": []}, "no controls"),
        ({"name": "", "controls": [{"name": "x"}]}, "empty name"),
        ({"name": "a", "controls": [{"name": "x"}, {"name": "x"}]}, "'x' appears more than once"),
        ({"name": "a", "controls": [{"name": " "}]}, "control #0 has an empty name"),
        ({"name": "a", "controls": [{"name": "x", "min": 1, "max": 1}]}, "'x': min 1 is not below max 1"),
        ({"name": "a", "controls": [{"name": "x", "default": 2}]}, "'x': default 2 is outside [0, 1]"),
        ({"name": "a", "controls": [{"name": "x", "max": math.inf}]}, "'x': max is not a finite"),
        ({"name": "a", "controls": [{"name": "x", "min": math.nan}]}, "'x': min is not a finite"),
        ({"name": "a", "controls": [{"name": "x", "arkit_alias": "smile"}]}, "'x': arkit_alias 'smile'"),
        ({"name": "a", "controls": [{"name": "x", "mirror": "y"}]}, "mirror partner 'y'"),
        ({"name": "a", "controls": [{"name": "x", "min": "low"}]}, "control 'x'"),
        ({"name": "a", "controls": [{"name": "x", "colour": 1}]}, "unknown fields colour"),
        ({"name": "a", "controls": [{"max": 1}]}, "control #0 has no name"),
        ({"name": "a", "controls": [{"name": f"c{i}"} for i in range(1025)]}, "1025 controls"),
    ],
)
def test_invalid_specs_name_the_control_and_problem(data: dict, message: str) -> None:
    with pytest.raises(InvalidRigSpec, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_rig_spec(data)


def test_unreadable_spec_files_say_why(tmp_path) -> None:
    with pytest.raises(InvalidRigSpec, match="cannot read rig spec file"):
        load_rig_spec(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidRigSpec, match="not valid JSON"):
        load_rig_spec(bad)
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([1, 2]))
    with pytest.raises(InvalidRigSpec, match="must be a mapping"):
        load_rig_spec(listed)
