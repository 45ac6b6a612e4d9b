"""Write the .meta files Unity needs for unity_client/ (a package installed from git is read-only
to Unity, which then ignores any asset without one). Run after adding files there:

    python scripts/unity_meta.py

GUIDs come from each asset's path, so they are the same on every machine; existing .meta files
are left alone. Folders ending in ~ (Samples~, Documentation~) are not imported and get none.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "unity_client"

_IMPORTERS = {
    ".cs": "MonoImporter:\n  externalObjects: {}\n  serializedVersion: 2\n  defaultReferences: []\n"
    "  executionOrder: 0\n  icon: {instanceID: 0}\n",
    ".asmdef": "AssemblyDefinitionImporter:\n  externalObjects: {}\n",
    "package.json": "PackageManifestImporter:\n  externalObjects: {}\n",
    "folder": "folderAsset: yes\nDefaultImporter:\n  externalObjects: {}\n",
    "text": "TextScriptImporter:\n  externalObjects: {}\n",
}
_TAIL = "  userData: \n  assetBundleName: \n  assetBundleVariant: \n"


def meta_text(asset: Path) -> str:
    relative = asset.relative_to(PACKAGE).as_posix()
    guid = hashlib.md5(f"com.freeavatar.client/{relative}".encode()).hexdigest()
    kind = "folder" if asset.is_dir() else asset.name if asset.name == "package.json" else asset.suffix
    return f"fileFormatVersion: 2\nguid: {guid}\n" + _IMPORTERS.get(kind, _IMPORTERS["text"]) + _TAIL


def assets() -> list[Path]:
    return sorted(
        p
        for p in PACKAGE.rglob("*")
        if p.suffix != ".meta" and not any(part.endswith("~") for part in p.relative_to(PACKAGE).parts)
    )


def main() -> None:
    written = 0
    for asset in assets():
        meta = asset.with_name(asset.name + ".meta")
        if not meta.exists():
            meta.write_text(meta_text(asset))
            written += 1
    print(f"wrote {written} .meta files under {PACKAGE.name}/")


if __name__ == "__main__":
    main()
