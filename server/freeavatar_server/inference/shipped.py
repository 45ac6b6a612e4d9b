"""Where the package's shipped models live: the one place that knows their paths."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"

ENCODER_ONNX = MODELS_DIR / "expression_encoder.onnx"
ENCODER_INT8_ONNX = MODELS_DIR / "expression_encoder.int8.onnx"  # what the live pipeline runs
ENCODER_CHECKPOINT = MODELS_DIR / "expression_encoder.pt"  # what animator jobs train through
ENCODER_UNITS = MODELS_DIR / "expression_encoder.units.json"  # its action units' names and rest values
FACE_LOCALISER_ONNX = MODELS_DIR / "face_localiser.onnx"
HEAD_POSE_ONNX = MODELS_DIR / "head_pose.onnx"
ANIMATOR_DIR = MODELS_DIR / "animator"  # the built-in avatars' shared animator
MEDIAPIPE_DIR = MODELS_DIR / "mediapipe"  # MediaPipe's Face Landmarker, converted to ONNX
EMOTION_ONNX = MODELS_DIR / "fer" / "emotion.onnx"  # fer's real-face emotion classifier (the emotion guard)
MESH_FACE_BOX = MODELS_DIR / "mesh_face_box.npz"  # mesh landmarks -> the encoder crop's face box
BLENDSHAPE_CARRY = MODELS_DIR / "blendshape_carry.npz"  # the encoder's units -> blendshapes between meshes
