"""The committed generated code matches proto/ as the pinned generator writes it."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh() -> None:
    gen_proto = load_generator()
    stale = gen_proto.stale_files(gen_proto.generate())
    assert not stale, f"run `python scripts/gen_proto.py`; stale: {stale}"


def test_staleness_is_detected(tmp_path, monkeypatch) -> None:
    gen_proto = load_generator()
    files = gen_proto.generate()
    files["rig_pb2.py"] += "# edited by hand\n"
    assert gen_proto.stale_files(files) == ["rig_pb2.py"]
