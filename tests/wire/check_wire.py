#!/usr/bin/env python3
"""Wire-compatibility check of Halter's protos against the real LittleHorse client.

Compiles everything under proto/ with the stock protoc shipped in grpcio-tools,
then compares every message, enum and RPC we declare in package `littlehorse`
with the descriptors of the installed `littlehorse-client` (littlehorse.model).

Checked per message: every field's number, type, type_name, label,
proto3_optional flag and (real) oneof name; map fields by key/value types;
fields the real message has that ours lacks. Per enum: value names and numbers.
Per RPC: existence, input/output types (our `.halter.Empty` stands for
`.google.protobuf.Empty`) and client/server streaming.

Prints one line per mismatch (`<full name>: <what> <ours> != <real>`), then `N passed, M failed` (N/M count checked
messages, enums and RPCs). Exits non-zero if anything failed.

Run from the repository root (tests/wire/run.sh does this):
    python tests/wire/check_wire.py
"""

from __future__ import annotations

import glob
import importlib
import os
import pkgutil
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2

FDP = descriptor_pb2.FieldDescriptorProto
TYPE_NAMES = {v: k[len("TYPE_"):].lower() for k, v in FDP.Type.items()}

PACKAGE = "littlehorse"
SERVICE = "littlehorse.LittleHorse"
OUR_EMPTY = ".halter.Empty"
REAL_EMPTY = ".google.protobuf.Empty"


def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def compile_ours(root: str) -> descriptor_pb2.FileDescriptorSet:
    """Compile our protos with grpcio-tools' protoc, imports relative to proto/."""
    proto_dir = os.path.join(root, "proto")
    # Every file under proto/ (our internal package too): all must compile with a stock protoc.
    sources = sorted(glob.glob(os.path.join(proto_dir, "**", "*.proto"), recursive=True))
    rel = [os.path.relpath(p, root) for p in sources]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "halter.pb")
        cmd = [
            sys.executable, "-m", "grpc_tools.protoc",
            "-I", "proto",
            "--include_imports",
            f"--descriptor_set_out={out}",
            *rel,
        ]
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            sys.stderr.flush()
            print("protoc: compilation failed")
            print("0 passed, 1 failed")
            sys.exit(1)
        if proc.stderr.strip():
            # protoc warnings (e.g. unused imports) are shown but not fatal.
            sys.stderr.write(proc.stderr)
            sys.stderr.flush()
        fds = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as fh:
            fds.ParseFromString(fh.read())
    return fds


def load_theirs() -> list[descriptor_pb2.FileDescriptorProto]:
    """FileDescriptorProtos of every file reachable from littlehorse.model."""
    import littlehorse.model as lm

    pool = None
    for mod in pkgutil.iter_modules(lm.__path__):
        m = importlib.import_module(f"littlehorse.model.{mod.name}")
        if pool is None and hasattr(m, "DESCRIPTOR"):
            pool = m.DESCRIPTOR.pool
    if pool is None:
        raise SystemExit("no descriptor modules found in littlehorse.model")

    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(fd) -> None:
        if fd.name in files:
            return
        fdp = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(fdp)
        files[fd.name] = fdp
        for dep in fd.dependencies:
            add(dep)

    for mod in pkgutil.iter_modules(lm.__path__):
        m = importlib.import_module(f"littlehorse.model.{mod.name}")
        if hasattr(m, "DESCRIPTOR"):
            add(pool.FindFileByName(m.DESCRIPTOR.name))
    return list(files.values())


class Index:
    """Full name -> descriptor proto, for messages, enums and services."""

    def __init__(self, files) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
        self.package_of: dict[str, str] = {}
        for f in files:
            prefix = f.package
            for m in f.message_type:
                self._add_msg(m, prefix, f.package)
            for e in f.enum_type:
                self._add_enum(e, prefix, f.package)
            for s in f.service:
                full = f"{prefix}.{s.name}" if prefix else s.name
                self.services[full] = s
                self.package_of[full] = f.package

    def _add_msg(self, m, prefix, pkg) -> None:
        full = f"{prefix}.{m.name}" if prefix else m.name
        self.messages[full] = m
        self.package_of[full] = pkg
        for n in m.nested_type:
            self._add_msg(n, full, pkg)
        for e in m.enum_type:
            self._add_enum(e, full, pkg)

    def _add_enum(self, e, prefix, pkg) -> None:
        full = f"{prefix}.{e.name}" if prefix else e.name
        self.enums[full] = e
        self.package_of[full] = pkg

    def map_entry(self, field) -> descriptor_pb2.DescriptorProto | None:
        if field.type != FDP.TYPE_MESSAGE or field.label != FDP.LABEL_REPEATED:
            return None
        entry = self.messages.get(field.type_name.lstrip("."))
        if entry is not None and entry.options.map_entry:
            return entry
        return None


def label_str(f) -> str:
    """proto3 wording: repeated, optional (the keyword) or singular."""
    if f.label == FDP.LABEL_REPEATED:
        return "repeated"
    return "optional" if f.proto3_optional else "singular"


def type_str(f) -> str:
    return f.type_name if f.type_name else TYPE_NAMES[f.type]


def real_oneof(msg, f) -> str | None:
    if f.HasField("oneof_index") and not f.proto3_optional:
        return msg.oneof_decl[f.oneof_index].name
    return None


def compare_message(name, ours, theirs, oi: Index, ti: Index) -> list[str]:
    errs: list[str] = []
    their_fields = {f.name: f for f in theirs.field}
    our_names = set()
    for f in ours.field:
        our_names.add(f.name)
        where = f"{name}.{f.name}"
        t = their_fields.get(f.name)
        if t is None:
            errs.append(f"{where}: field does not exist in the real message")
            continue
        if f.number != t.number:
            errs.append(f"{where}: number {f.number} != {t.number}")
        o_entry, t_entry = oi.map_entry(f), ti.map_entry(t)
        if o_entry is not None or t_entry is not None:
            if o_entry is None or t_entry is None:
                def kind(fld, entry) -> str:
                    return "map" if entry is not None else f"{label_str(fld)} {type_str(fld)}"
                errs.append(f"{where}: {kind(f, o_entry)} != {kind(t, t_entry)}")
            else:
                ok = {x.name: x for x in o_entry.field}
                tk = {x.name: x for x in t_entry.field}
                for part in ("key", "value"):
                    a, b = ok[part], tk[part]
                    if (a.type, a.type_name) != (b.type, b.type_name):
                        errs.append(f"{where}: map {part} type {type_str(a)} != {type_str(b)}")
        else:
            if f.type != t.type:
                errs.append(f"{where}: type {TYPE_NAMES[f.type]} != {TYPE_NAMES[t.type]}")
            if f.type_name != t.type_name:
                errs.append(f"{where}: type_name {f.type_name or '-'} != {t.type_name or '-'}")
            if f.label != t.label:
                errs.append(f"{where}: label {label_str(f)} != {label_str(t)}")
        if f.proto3_optional != t.proto3_optional:
            errs.append(f"{where}: proto3_optional {f.proto3_optional} != {t.proto3_optional}")
        oo, to = real_oneof(ours, f), real_oneof(theirs, t)
        if oo != to:
            errs.append(f"{where}: oneof {oo or '-'} != {to or '-'}")
    for t in theirs.field:
        if t.name not in our_names:
            errs.append(f"{name}.{t.name}: missing field (real: {label_str(t)} "
                        f"{type_str(t)} = {t.number})")
    return errs


def compare_enum(name, ours, theirs) -> list[str]:
    errs: list[str] = []
    tv = {v.name: v.number for v in theirs.value}
    ov = {v.name: v.number for v in ours.value}
    for n, num in ov.items():
        if n not in tv:
            errs.append(f"{name}.{n}: enum value does not exist in the real enum")
        elif num != tv[n]:
            errs.append(f"{name}.{n}: number {num} != {tv[n]}")
    for n, num in tv.items():
        if n not in ov:
            errs.append(f"{name}.{n}: missing enum value (real: {num})")
    return errs


def reachable(oi: Index) -> set[str]:
    """Types reachable from our service's RPCs (for an informational note)."""
    seen: set[str] = set()
    todo = []
    for sname, svc in oi.services.items():
        for m in svc.method:
            todo += [m.input_type.lstrip("."), m.output_type.lstrip(".")]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if "." in n and n.rsplit(".", 1)[0] in oi.messages:
            todo.append(n.rsplit(".", 1)[0])  # containing message
        msg = oi.messages.get(n)
        if msg is not None:
            for f in msg.field:
                if f.type_name:
                    todo.append(f.type_name.lstrip("."))
    return seen


def main() -> int:
    root = repo_root()
    os.chdir(root)
    ours_fds = compile_ours(root)
    oi = Index(ours_fds.file)
    ti = Index(load_theirs())

    passed = failed = 0
    n_msg = n_enum = n_rpc = 0

    def record(errs: list[str]) -> None:
        nonlocal passed, failed
        for e in errs:
            print(e)
        if errs:
            failed += 1
        else:
            passed += 1

    for name in sorted(oi.messages):
        if oi.package_of[name] != PACKAGE:
            continue
        msg = oi.messages[name]
        if msg.options.map_entry:
            continue  # synthesized; checked through its map field
        n_msg += 1
        theirs = ti.messages.get(name)
        if theirs is None or ti.package_of.get(name) != PACKAGE:
            record([f"{name}: message does not exist in the real package"])
            continue
        record(compare_message(name, msg, theirs, oi, ti))

    for name in sorted(oi.enums):
        if oi.package_of[name] != PACKAGE:
            continue
        n_enum += 1
        theirs = ti.enums.get(name)
        if theirs is None or ti.package_of.get(name) != PACKAGE:
            record([f"{name}: enum does not exist in the real package"])
            continue
        record(compare_enum(name, oi.enums[name], theirs))

    # halter.Empty must stay empty, otherwise it is not interchangeable with
    # google.protobuf.Empty on the wire.
    empty = oi.messages.get("halter.Empty")
    n_msg += 1
    if empty is None:
        record(["halter.Empty: not defined"])
    else:
        record([f"halter.Empty.{f.name}: halter.Empty must have no fields" for f in empty.field])

    their_svc = ti.services.get(SERVICE)
    our_services = [n for n in oi.services if oi.package_of[n] == PACKAGE]
    if SERVICE not in oi.services:
        record([f"{SERVICE}: service not defined in our protos"])
    for sname in our_services:
        if sname != SERVICE:
            record([f"{sname}: service does not exist in the real package"])
            continue
        their_methods = {m.name: m for m in their_svc.method} if their_svc else {}
        for m in oi.services[sname].method:
            n_rpc += 1
            where = f"{sname}.{m.name}"
            t = their_methods.get(m.name)
            if t is None:
                record([f"{where}: rpc does not exist in the real service"])
                continue
            errs = []
            for what, a, b in (("input", m.input_type, t.input_type),
                               ("output", m.output_type, t.output_type)):
                if a != b and not (a == OUR_EMPTY and b == REAL_EMPTY):
                    errs.append(f"{where}: {what} {a} != {b}")
            if m.client_streaming != t.client_streaming:
                errs.append(f"{where}: client_streaming {m.client_streaming} != {t.client_streaming}")
            if m.server_streaming != t.server_streaming:
                errs.append(f"{where}: server_streaming {m.server_streaming} != {t.server_streaming}")
            record(errs)

    used = reachable(oi)
    unreached = sorted(
        n for n in list(oi.messages) + list(oi.enums)
        if oi.package_of[n] == PACKAGE
        and not (n in oi.messages and oi.messages[n].options.map_entry)
        and n not in used
    )
    for n in unreached:
        print(f"note: {n} is not reachable from any RPC of {SERVICE}")

    sys.stderr.flush()
    print(f"checked {n_msg} messages, {n_enum} enums, {n_rpc} rpcs")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
