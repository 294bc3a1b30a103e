"""The trimmed protobuf schema the function reads the API server with (rebalancer/adapters/kube/
wire.proto) against the .proto files that k8s.io/api and k8s.io/apimachinery ship, at the versions
tests/controlplane/go.mod pins: every field the function reads must have Kubernetes' number, type
and label, and its message types must match theirs all the way down. A rename, a renumbering or
a type change upstream fails here before it can misread a pod."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_tools import protoc

from rebalancer.adapters.kube import wire_pb2
from rebalancer.adapters.kube.protobuf_codec import LIST_ITEMS, UNKNOWN_CONTENT_ENCODING, UNKNOWN_RAW

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "tests" / "controlplane"
UPSTREAM_FILES = ("k8s.io/api/core/v1/generated.proto", "k8s.io/api/apps/v1/generated.proto",
                  "k8s.io/api/autoscaling/v2/generated.proto")
# Our message -> Kubernetes' message; fields are then matched by number, from these roots down.
ROOTS = {
    "Pod": "k8s.io.api.core.v1.Pod",
    "PodWithRequests": "k8s.io.api.core.v1.Pod",
    "ConfigMap": "k8s.io.api.core.v1.ConfigMap",
    "Deployment": "k8s.io.api.apps.v1.Deployment",
    "ReplicaSetList": "k8s.io.api.apps.v1.ReplicaSetList",
    "HorizontalPodAutoscalerList": "k8s.io.api.autoscaling.v2.HorizontalPodAutoscalerList",
    "Status": "k8s.io.apimachinery.pkg.apis.meta.v1.Status",
}
UNKNOWN = "k8s.io.apimachinery.pkg.runtime.Unknown"


def module_dirs() -> dict[str, Path]:
    """Where the Go module cache holds k8s.io/api and k8s.io/apimachinery for our go.mod."""
    go = subprocess.run([str(REPO / "scripts" / "ensure-go")], capture_output=True, text=True, check=True).stdout.strip()
    listed = subprocess.run([go, "list", "-m", "-f", "{{.Path}} {{.Dir}}", "k8s.io/api", "k8s.io/apimachinery"],
                            cwd=MODULE, capture_output=True, text=True)
    assert listed.returncode == 0, f"go list failed (make controlplane downloads the modules): {listed.stderr}"
    dirs = dict(line.split(" ", 1) for line in listed.stdout.splitlines())
    assert all(dirs.get(m) and Path(dirs[m]).is_dir() for m in ("k8s.io/api", "k8s.io/apimachinery")), \
        f"k8s.io/api or k8s.io/apimachinery is not in the module cache: {dirs}"
    return {m: Path(d) for m, d in dirs.items()}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> DescriptorPool:
    """Kubernetes' own .proto files, compiled by the same protoc into a pool of descriptors."""
    root = tmp_path_factory.mktemp("proto")
    for module, directory in module_dirs().items():  # imports name them by import path, not by module@version
        (root / module).parent.mkdir(parents=True, exist_ok=True)
        (root / module).symlink_to(directory)
    out = root / "upstream.binpb"
    grpc_include = Path(protoc.__file__).parent / "_proto"
    status = protoc.main(["protoc", f"-I{root}", f"-I{grpc_include}", "--include_imports",
                          f"--descriptor_set_out={out}", *UPSTREAM_FILES])
    assert status == 0, "protoc could not compile Kubernetes' .proto files"
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool


def mismatches(ours: Descriptor, theirs: Descriptor, seen: set[tuple[str, str]] | None = None) -> list[str]:
    """Every field of ``ours`` that Kubernetes' ``theirs`` lacks or declares otherwise, recursively."""
    seen = seen if seen is not None else set()
    if (ours.full_name, theirs.full_name) in seen:
        return []
    seen.add((ours.full_name, theirs.full_name))
    found = []
    for field in ours.fields:
        where = f"{ours.name}.{field.name} = {field.number} (against {theirs.full_name})"
        upstream = theirs.fields_by_number.get(field.number)
        if upstream is None:
            found.append(f"{where}: no field {field.number} upstream")
            continue
        if upstream.name != field.name:
            found.append(f"{where}: upstream calls field {field.number} {upstream.name!r}")
        if upstream.is_repeated != field.is_repeated:
            found.append(f"{where}: repeated {field.is_repeated} here, {upstream.is_repeated} upstream")
        if field.type == FieldDescriptor.TYPE_MESSAGE and upstream.type == FieldDescriptor.TYPE_MESSAGE:
            found += mismatches(field.message_type, upstream.message_type, seen)
        elif field.type != upstream.type:
            found.append(f"{where}: type {field.type} here, {upstream.type} upstream")
    return found


def envelope_mismatches(ours: Descriptor, upstream: DescriptorPool) -> list[str]:
    """An envelope is runtime.Unknown with ``raw`` (bytes upstream) declared as the object it holds:
    the same bytes on the wire, so only that one field may differ in type."""
    unknown = upstream.FindMessageTypeByName(UNKNOWN)
    found = []
    for field in ours.fields:
        theirs = unknown.fields_by_number.get(field.number)
        if theirs is None or theirs.name != field.name:
            found.append(f"{ours.name}.{field.name} = {field.number}: not so in {UNKNOWN}")
        elif field.name == "raw":
            if theirs.type != FieldDescriptor.TYPE_BYTES or field.type != FieldDescriptor.TYPE_MESSAGE:
                found.append(f"{ours.name}.raw: upstream bytes read as a message, found {theirs.type}/{field.type}")
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            found += mismatches(field.message_type, theirs.message_type)
        elif field.type != theirs.type:
            found.append(f"{ours.name}.{field.name}: type {field.type} here, {theirs.type} upstream")
    return found


def test_every_field_read_has_the_number_name_and_type_kubernetes_gives_it(upstream):
    problems = []
    for ours, theirs in ROOTS.items():
        problems += mismatches(wire_pb2.DESCRIPTOR.message_types_by_name[ours], upstream.FindMessageTypeByName(theirs))
    assert problems == []


def test_every_envelope_is_runtime_unknown_holding_the_object_it_names(upstream):
    envelopes = [m for name, m in wire_pb2.DESCRIPTOR.message_types_by_name.items() if name.endswith("Envelope")]
    assert len(envelopes) == 5
    problems = [p for envelope in envelopes for p in envelope_mismatches(envelope, upstream)]
    assert problems == []
    # Each holds a root that the test above compares with Kubernetes.
    assert {e.fields_by_name["raw"].message_type.name for e in envelopes} == set(ROOTS) - {"Pod", "PodWithRequests"}


def test_the_pod_list_is_framed_by_kubernetes_field_numbers(upstream):
    """The pod list is read pod by pod as it arrives, by field numbers of our own code: runtime.
    Unknown's raw and contentEncoding, and the list's items, which are pods."""
    unknown = upstream.FindMessageTypeByName(UNKNOWN)
    pod_list = upstream.FindMessageTypeByName("k8s.io.api.core.v1.PodList")

    assert unknown.fields_by_number[UNKNOWN_RAW].name == "raw"
    assert unknown.fields_by_number[UNKNOWN_CONTENT_ENCODING].name == "contentEncoding"
    items = pod_list.fields_by_number[LIST_ITEMS]
    assert (items.name, items.is_repeated, items.message_type.full_name) == ("items", True, "k8s.io.api.core.v1.Pod")
    # Every other field of both is length-delimited, as the framing expects.
    others = [f for f in (*unknown.fields, *pod_list.fields) if f.type not in (FieldDescriptor.TYPE_BYTES,
                                                                                 FieldDescriptor.TYPE_STRING,
                                                                                 FieldDescriptor.TYPE_MESSAGE)]
    assert others == []


def test_the_comparison_catches_a_renumbered_or_retyped_field(upstream):
    """A schema that drifted must fail: a copy of ours with a field moved and one retyped."""
    file = descriptor_pb2.FileDescriptorProto()
    wire_pb2.DESCRIPTOR.CopyToProto(file)
    for message in file.message_type:
        if message.name == "PodStatus":
            next(f for f in message.field if f.name == "podIP").number = 7  # hostIP is 5, podIP 6 upstream
        if message.name == "ObjectMeta":
            next(f for f in message.field if f.name == "generation").type = FieldDescriptor.TYPE_INT32
    pool = DescriptorPool()
    pool.Add(file)
    drifted = pool.FindMessageTypeByName("rebalancer.kube.Pod")

    problems = mismatches(drifted, upstream.FindMessageTypeByName(ROOTS["Pod"]))

    assert any("PodStatus.podIP = 7" in p for p in problems), problems
    assert any("ObjectMeta.generation" in p and "type" in p for p in problems), problems


def test_the_generated_code_is_what_protoc_makes_of_wire_proto(tmp_path):
    """wire_pb2.py and its stubs are committed (the function installs no protoc): `make proto`
    must have been run after the last change to wire.proto."""
    source = "rebalancer/adapters/kube/wire.proto"
    status = protoc.main(["protoc", f"-I{REPO}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", str(REPO / source)])
    assert status == 0
    for generated in ("wire_pb2.py", "wire_pb2.pyi"):
        fresh = tmp_path / "rebalancer" / "adapters" / "kube" / generated
        assert filecmp.cmp(fresh, REPO / "rebalancer" / "adapters" / "kube" / generated, shallow=False), \
            f"{generated} is stale: run `make proto`"
