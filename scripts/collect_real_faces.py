"""Collect the real-face photo set (server/freeavatar_server/training/realface/photos/)
from photos that ship inside packages, so the set can be rebuilt the same way on any machine.

Each photo is read from its installed package, its EXIF orientation applied, downsized so
its longer side is at most 640 px (Lanczos, never enlarged), converted to RGB, and written as
JPEG quality 90 without metadata. Every source file's SHA-256 is checked against the one the
set was built from: a mismatch (a different package version) is an error unless --allow-changed
is given, because labels.csv holds face boxes in pixels of the stored photos.

Install the sources (a scratch venv keeps them out of the project's .venv):

    python3 -m venv .venv-photos
    .venv-photos/bin/pip install scikit-image==0.26.0 matplotlib==3.11.2 pillow
    apt-get update && apt-get install -y opencv-doc        # Debian 4.6.0+dfsg-12
    mkdir -p /tmp/npmfaces && (cd /tmp/npmfaces && npm pack @vladmandic/face-api@1.7.15)

then run (from the repository root):

    .venv-photos/bin/python scripts/collect_real_faces.py \
        --face-api /tmp/npmfaces/vladmandic-face-api-1.7.15.tgz

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

Only Pillow is needed to run it (plus scikit-image and matplotlib installed, unless their
folders are given).
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
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "server" / "freeavatar_server" / "training" / "realface" / "photos"
MAX_SIDE = 640
QUALITY = 90
FACE_API_SPEC = "@vladmandic/face-api@1.7.15"


@dataclass(frozen=True)
class Photo:
    name: str  # stored file name
    source: str  # "skimage" | "matplotlib" | "opencv-doc" | "face-api"
    path: str  # path inside the source package
    sha256: str  # of the original file the labels were made on


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


def downsize(data: bytes) -> bytes:
    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
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
            jpeg = downsize(data)
            (args.out / photo.name).write_bytes(jpeg)
            total += len(jpeg)
            w, h = Image.open(io.BytesIO(jpeg)).size
            print(
                f"{photo.name:26s} {w}x{h} {len(jpeg) // 1024:4d} KiB  <- "
                f"{photo.source}:{photo.path}"
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
