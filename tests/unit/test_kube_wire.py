"""The Kubernetes adapter's wire, without a server: the protobuf envelope and what it refuses,
the one-shot gzip inflate, and a protobuf Status turned into the error the JSON one gives. The
same reads against the real API server are in tests/integration/test_protobuf_wire.py."""

from __future__ import annotations

import gzip
import io
import json

import pytest
import urllib3
from hypothesis import given, settings
from hypothesis import strategies as st

from rebalancer.adapters.kube import wire_pb2 as wire
from rebalancer.adapters.kube.connection import _arriving, _inflated, _status_text
from rebalancer.adapters.kube.protobuf_codec import MAGIC, PROTOBUF, status_of
from rebalancer.errors import KubeUnavailableError

PROTOBUF_TYPE = "application/vnd.kubernetes.protobuf"


def enveloped(message, envelope, **fields) -> bytes:
    return MAGIC + envelope(raw=message, **fields).SerializeToString()


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, value: bytes) -> bytes:
    """One length-delimited field, as the API server writes it."""
    return varint(number << 3 | 2) + varint(len(value)) + value


def pod_list_answer(pods: list[wire.Pod], content_encoding: str = "") -> bytes:
    """What the API server sends for a PodList: magic, runtime.Unknown{typeMeta, raw: PodList{metadata,
    items...}, contentEncoding, contentType}, with Kubernetes' field numbers."""
    listed = field(1, b"\x12\x0512345") + b"".join(field(2, pod.SerializeToString()) for pod in pods)
    type_meta = wire.TypeMeta(apiVersion="v1", kind="PodList").SerializeToString()
    return MAGIC + field(1, type_meta) + field(2, listed) + field(3, content_encoding.encode()) + field(4, b"")


def a_pod(name: str, **meta) -> wire.Pod:
    pod = wire.Pod()
    pod.metadata.name, pod.metadata.uid = name, f"u-{name}"
    for key, value in meta.items():
        getattr(pod.metadata, key).seconds = value
    pod.status.phase = "Running"
    pod.status.conditions.add(type="Ready", status="True")
    return pod


def test_a_pod_without_deletion_timestamp_or_annotations_is_neither_terminating_nor_excluded():
    (state,) = PROTOBUF.pods([pod_list_answer([a_pod("c-0")])], set(), None, "list pods").states

    assert (state.name, state.terminating, state.excluded, state.created_at, state.ready) == ("c-0", False, False, None, True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=80))
def test_a_list_read_in_any_pieces_gives_the_pods_read_whole(cuts):
    """The pods are decoded as the pieces arrive: wherever the pieces split the answer (inside a
    varint, a length, a pod), the result is the one of the answer in one piece."""
    pods = [a_pod(f"c-{i}", creationTimestamp=1_700_000_000 + i % 3) for i in range(12)]
    pods[4].metadata.deletionTimestamp.seconds = 1_700_000_100
    pods[7].metadata.annotations["pod-rebalancer/exclude"] = "true"
    answer = pod_list_answer(pods)
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(answer[at:at + cut])
        at += cut
    pieces.append(answer[at:])

    assert PROTOBUF.pods(pieces, set(), None, "list pods") == PROTOBUF.pods([answer], set(), None, "list pods")
    states = PROTOBUF.pods(pieces, set(), None, "list pods").states
    assert [s.name for s in states if s.terminating] == ["c-4"] and [s.name for s in states if s.excluded] == ["c-7"]


def test_an_answer_without_the_magic_prefix_is_refused():
    with pytest.raises(KubeUnavailableError, match="without its magic prefix"):
        PROTOBUF.pods([pod_list_answer([a_pod("c-0")])[4:]], set(), None, "list pods")


@pytest.mark.parametrize("cut", [1, 3, 20])
def test_a_truncated_answer_is_malformed(cut):
    answer = pod_list_answer([a_pod("c-0"), a_pod("c-1")])
    without_trailer = answer[:-len(field(3, b"") + field(4, b""))]

    with pytest.raises(KubeUnavailableError, match="malformed object while trying to list pods"):
        PROTOBUF.pods([without_trailer[:-cut]], set(), None, "list pods")


def test_an_object_in_a_content_encoding_we_cannot_read_is_refused_not_read_as_empty():
    with pytest.raises(KubeUnavailableError, match="content encoding 'zstd'"):
        PROTOBUF.pods([pod_list_answer([a_pod("c-0")], content_encoding="zstd")], set(), None, "list pods")


def test_a_gzip_answer_is_inflated_in_one_go_and_a_broken_one_is_an_error():
    body = json.dumps({"items": list(range(50_000))}).encode()

    assert _inflated(gzip.compress(body), "gzip") == body
    assert _inflated(body, None) == body
    with pytest.raises(urllib3.exceptions.DecodeError, match="does not inflate"):
        _inflated(gzip.compress(body)[:-20], "gzip")
    with pytest.raises(urllib3.exceptions.DecodeError, match="'br'"):
        _inflated(body, "br")


def test_a_streamed_gzip_answer_inflates_piece_by_piece_and_a_cut_one_is_an_error():
    body = pod_list_answer([a_pod(f"c-{i}") for i in range(2_000)])
    compressed = gzip.compress(body)

    def response(data: bytes) -> urllib3.HTTPResponse:
        return urllib3.HTTPResponse(body=io.BytesIO(data), preload_content=False)

    assert b"".join(_arriving(response(compressed), "gzip")) == body
    assert len(PROTOBUF.pods(_arriving(response(compressed), "gzip"), set(), None, "list pods").states) == 2_000
    with pytest.raises(urllib3.exceptions.DecodeError, match="ended before its end"):
        b"".join(_arriving(response(compressed[:len(compressed) // 2]), "gzip"))


def test_a_protobuf_status_becomes_the_json_status_the_error_translation_reads():
    status = wire.Status(status="Failure", message='pods "c-0" is forbidden', reason="Forbidden", code=403)
    status.details.causes.add(message="Cannot evict pod as it would violate the pod's disruption budget.")
    data = enveloped(status, wire.StatusEnvelope)

    text = json.loads(_status_text(data, PROTOBUF_TYPE))

    assert text == {"kind": "Status", "message": 'pods "c-0" is forbidden', "reason": "Forbidden",
                    "details": {"causes": [{"message": "Cannot evict pod as it would violate the pod's disruption budget."}]}}
    assert status_of(b"not protobuf") is None
    assert _status_text(b"upstream proxy error", PROTOBUF_TYPE) == "upstream proxy error"
