"""Builds predictd (this package's C sources) once per machine and version of its inputs.

It is compiled from the C sources beside this file, C code that protoc-c generates from the
installed Python protos of TF Serving's API (so the wire format is the one the Python server
reads), Debian's gRPC and protobuf-c, and TensorFlow's own C headers (the library itself is
opened at run time, see servables.c). The binary is cached under a hash of all of these, so a
new TensorFlow, proto or source change rebuilds it and nothing else does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from recflow.errors import ConfigError

log = logging.getLogger("recflow.serving.native")

SOURCES = Path(__file__).resolve().parent
HEADERS = ("/usr/include/grpc/grpc.h", "/usr/include/protobuf-c/protobuf-c.h")
CACHE_ENV = "RECFLOW_NATIVE_CACHE"


def descriptor_set() -> bytes:
    """predict.proto and its imports as a FileDescriptorSet, from the installed Python protos.

    protoc-c 1.4 (Debian 12) refuses proto3 ``optional`` fields, so they are made plain fields:
    the wire format is the same; only presence tracking of fields predictd never reads is lost.
    """
    from google.protobuf import descriptor_pb2
    from tensorflow_serving.apis import predict_pb2

    files: dict[str, Any] = {}

    def add(fd: Any) -> None:
        if fd.name in files:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        files[fd.name] = proto

    def plain(messages: Any) -> None:
        for message in messages:
            synthetic = set()
            for field in message.field:
                if field.proto3_optional:
                    synthetic.add(field.oneof_index)
                    field.proto3_optional = False
                    field.ClearField("oneof_index")
            kept = [o for i, o in enumerate(message.oneof_decl) if i not in synthetic]
            del message.oneof_decl[:]
            message.oneof_decl.extend(kept)
            plain(message.nested_type)

    add(predict_pb2.DESCRIPTOR)
    for proto in files.values():
        plain(proto.message_type)
    return descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString()


def tensorflow_dir() -> Path:
    import tensorflow as tf

    return Path(tf.__file__).parent


def tensorflow_library() -> Path:
    """TensorFlow's C and C++ library inside the installed wheel (TF_CC_LIB of servables.c)."""
    return tensorflow_dir() / "libtensorflow_cc.so.2"


def missing_tools() -> list[str]:
    missing = [t for t in ("gcc", "protoc-c") if shutil.which(t) is None]
    return missing + [h for h in HEADERS if not Path(h).exists()]


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recflow" / "predictd"


def _fingerprint(protos: bytes) -> str:
    digest = hashlib.sha256(protos)
    for path in sorted(SOURCES.glob("*.[ch]")):
        digest.update(path.name.encode() + path.read_bytes())
    for header in HEADERS:
        digest.update(Path(header).read_bytes())
    digest.update(str(tensorflow_library().stat().st_size).encode())
    digest.update(str(tensorflow_dir()).encode())
    return digest.hexdigest()[:16]


def predictd_binary(cache: Path | None = None) -> Path:
    """The path of a predictd built from the current inputs, building it when none is cached.

    Raises ConfigError naming what is missing when the build tools are not installed or the
    build fails (with the compiler's output)."""
    missing = missing_tools()
    if missing:
        raise ConfigError(
            f"--native_frontend needs {', '.join(missing)} to build predictd; run "
            "`make native-deps` (as root: it installs the Debian packages), or start the server "
            "without --native_frontend"
        )
    protos = descriptor_set()
    target = (cache or cache_root()) / _fingerprint(protos) / "predictd"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built in a scratch folder and renamed into place: concurrent servers never run a
    # half-written binary, and the last of two simultaneous builds simply wins.
    with tempfile.TemporaryDirectory(prefix="build-", dir=target.parent) as tmp:
        work = Path(tmp)
        log.info("Building predictd in %s", target.parent)
        _compile(work, protos)
        os.replace(work / "predictd", target)
    return target


def _compile(work: Path, protos: bytes) -> None:
    from google.protobuf import descriptor_pb2

    gen = work / "gen"
    gen.mkdir()
    (work / "protos.pb").write_bytes(protos)
    names = [f.name for f in descriptor_pb2.FileDescriptorSet.FromString(protos).file]
    _run(["protoc-c", f"--descriptor_set_in={work / 'protos.pb'}", f"--c_out={gen}", *names])
    _run([
        "gcc", "-O2", "-Wall", "-o", str(work / "predictd"),
        *sorted(str(p) for p in SOURCES.glob("*.c")), *sorted(str(p) for p in gen.rglob("*.c")),
        f"-I{gen}", f"-I{tensorflow_dir() / 'include'}", f"-I{SOURCES}",
        "-lgrpc", "-lgpr", "-lprotobuf-c", "-lpthread", "-ldl",
    ])  # fmt: skip


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise ConfigError(
            f"building predictd failed at {argv[0]} (exit {done.returncode}): "
            f"{done.stderr.strip()[-2000:]}; are the packages of `make native-deps` installed?"
        )
