"""Regenerate the Python gRPC code of the RPC contracts in ``proto/``.

Usage::

    uv run python scripts/gen_proto.py          # write into libs/rpc/src
    uv run python scripts/gen_proto.py --check  # exit 1 if libs/rpc/src is stale

Runs ``grpc_tools.protoc`` with ``-I proto`` over every ``*.proto`` under ``proto/``
and writes ``*_pb2.py``, ``*_pb2_grpc.py`` and their mypy-protobuf stubs
(``*.pyi``) into ``libs/rpc/src`` (modules ``driftline.v1.*_pb2``,
``inference.grpc_service_pb2`` ...). The output is exactly protoc's, byte for
byte, so it is deterministic for a given grpcio-tools / mypy-protobuf version.

Every directory holding generated modules also gets an ``__init__.py`` (kept as
is when present) and a ``py.typed`` marker; the ``driftline`` namespace package
itself is never given an ``__init__.py``. Generated files whose ``.proto`` is
gone are deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "libs" / "rpc" / "src"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
MARKERS = ("__init__.py", "py.typed")


def _proto_files() -> list[Path]:
    files = sorted(PROTO_DIR.rglob("*.proto"), key=lambda p: p.relative_to(PROTO_DIR).as_posix())
    if not files:
        sys.exit(f"gen_proto: no .proto files under {PROTO_DIR}")
    return files


def _plugin(name: str) -> str:
    """Path of a protoc plugin installed next to this interpreter (or on PATH)."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        sys.exit(f"gen_proto: protoc plugin {name!r} not found; install mypy-protobuf")
    return found


def _is_generated(path: Path) -> bool:
    return path.name.endswith(GENERATED_SUFFIXES)


def _generated_files(root: Path, top_packages: set[str]) -> dict[str, Path]:
    """Generated files under ``root`` in the packages the protos produce, by relative path."""
    found: dict[str, Path] = {}
    for top in sorted(top_packages):
        base = root / top
        if not base.is_dir():
            continue
        for path in base.rglob("*"):
            if path.is_file() and _is_generated(path):
                found[path.relative_to(root).as_posix()] = path
    return found


def _display(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _top_packages(protos: list[Path]) -> set[str]:
    return {p.relative_to(PROTO_DIR).parts[0] for p in protos}


def generate(dest: Path) -> None:
    """Run protoc over every proto into ``dest``."""
    protos = _proto_files()
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={dest}",
        f"--grpc_python_out={dest}",
        f"--mypy_out={dest}",
        f"--mypy_grpc_out={dest}",
        *(str(p) for p in protos),
    ]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        sys.exit(f"gen_proto: protoc failed (exit {result.returncode})")


def _package_dirs(files: dict[str, Path]) -> set[str]:
    return {str(Path(rel).parent.as_posix()) for rel in files}


@contextlib.contextmanager
def _fresh() -> Iterator[tuple[dict[str, Path], set[str]]]:
    """Generate into a temporary directory, kept while in the block: yields the fresh
    files by relative path and the top-level packages they belong to."""
    tops = _top_packages(_proto_files())
    with tempfile.TemporaryDirectory(prefix="driftline-proto-") as tmp:
        tmp_dir = Path(tmp)
        generate(tmp_dir)
        yield _generated_files(tmp_dir, tops), tops


def check() -> int:
    """Compare freshly generated code with libs/rpc/src; 0 if identical, else 1."""
    with _fresh() as (fresh, tops):
        committed = _generated_files(OUT_DIR, tops)
        stale = sorted(
            rel
            for rel, path in fresh.items()
            if rel not in committed or committed[rel].read_bytes() != path.read_bytes()
        )
        orphans = sorted(set(committed) - set(fresh))
    missing_markers = sorted(
        f"{pkg}/{marker}"
        for pkg in _package_dirs(fresh)
        for marker in MARKERS
        if not (OUT_DIR / pkg / marker).is_file()
    )
    problems = (
        [f"  stale or missing: {rel}" for rel in stale]
        + [f"  no longer generated (delete): {rel}" for rel in orphans]
        + [f"  missing marker: {rel}" for rel in missing_markers]
    )
    out = _display(OUT_DIR)
    if problems:
        print(
            f"gen_proto: generated code in {out} is out of date with proto/:\n"
            + "\n".join(problems)
            + "\nrun: uv run python scripts/gen_proto.py",
            file=sys.stderr,
        )
        return 1
    print(f"gen_proto: {out} is up to date ({len(fresh)} generated files)")
    return 0


def write() -> int:
    """Regenerate into libs/rpc/src, touching only files whose bytes change."""
    with _fresh() as (fresh, tops):
        changed = 0
        for rel, path in sorted(fresh.items()):
            target = OUT_DIR / rel
            data = path.read_bytes()
            if target.is_file() and target.read_bytes() == data:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            changed += 1
            print(f"wrote {_display(target)}")
    for rel in sorted(set(_generated_files(OUT_DIR, tops)) - set(fresh)):
        (OUT_DIR / rel).unlink()
        changed += 1
        print(f"deleted {_display(OUT_DIR / rel)}")
    for pkg in sorted(_package_dirs(fresh)):
        for marker in MARKERS:
            path = OUT_DIR / pkg / marker
            if not path.exists():
                path.write_bytes(b"")
                changed += 1
                print(f"wrote {_display(path)}")
    print(f"gen_proto: {len(fresh)} generated files, {changed} changed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="generate into a temporary directory and exit 1 if libs/rpc/src differs",
    )
    args = parser.parse_args(argv)
    return check() if args.check else write()


if __name__ == "__main__":
    sys.exit(main())
