"""The Kubernetes adapter's wire, without a server: the protobuf envelope and what it refuses,
the one-shot gzip inflate, and a protobuf Status turned into the error the JSON one gives. The
same reads against the real API server are in tests/integration/test_protobuf_wire.py."""

from __future__ import annotations

import gzip
import json

import pytest
import urllib3

from rebalancer.adapters.kube import wire_pb2 as wire
from rebalancer.adapters.kube.connection import _inflated, _status_text
from rebalancer.adapters.kube.protobuf_codec import MAGIC, PROTOBUF, status_of
from rebalancer.errors import KubeUnavailableError

PROTOBUF_TYPE = "application/vnd.kubernetes.protobuf"


def enveloped(message, envelope, **fields) -> bytes:
    return MAGIC + envelope(raw=message, **fields).SerializeToString()


def pod_list() -> wire.PodList:
    listed = wire.PodList()
    pod = listed.items.add()
    pod.metadata.name, pod.metadata.uid = "c-0", "u-0"
    pod.status.phase = "Running"
    return listed


def test_a_pod_without_deletion_timestamp_or_annotations_is_neither_terminating_nor_excluded():
    data = enveloped(pod_list(), wire.PodListEnvelope)

    (state,) = PROTOBUF.pods(data, set(), None, "list pods").states

    assert (state.name, state.terminating, state.excluded, state.created_at, state.ready) == ("c-0", False, False, None, False)


def test_an_answer_without_the_magic_prefix_is_refused():
    with pytest.raises(KubeUnavailableError, match="without its magic prefix"):
        PROTOBUF.pods(wire.PodListEnvelope(raw=pod_list()).SerializeToString(), set(), None, "list pods")


def test_a_truncated_answer_is_malformed():
    data = enveloped(pod_list(), wire.PodListEnvelope)

    with pytest.raises(KubeUnavailableError, match="malformed object while trying to list pods"):
        PROTOBUF.pods(data[:-3], set(), None, "list pods")


def test_an_object_in_a_content_encoding_we_cannot_read_is_refused_not_read_as_empty():
    data = enveloped(pod_list(), wire.PodListEnvelope, contentEncoding="zstd")

    with pytest.raises(KubeUnavailableError, match="content encoding 'zstd'"):
        PROTOBUF.pods(data, set(), None, "list pods")


def test_a_gzip_answer_is_inflated_in_one_go_and_a_broken_one_is_an_error():
    body = json.dumps({"items": list(range(50_000))}).encode()

    assert _inflated(gzip.compress(body), "gzip") == body
    assert _inflated(body, None) == body
    with pytest.raises(urllib3.exceptions.DecodeError, match="does not inflate"):
        _inflated(gzip.compress(body)[:-20], "gzip")
    with pytest.raises(urllib3.exceptions.DecodeError, match="'br'"):
        _inflated(body, "br")


def test_a_protobuf_status_becomes_the_json_status_the_error_translation_reads():
    status = wire.Status(status="Failure", message='pods "c-0" is forbidden', reason="Forbidden", code=403)
    status.details.causes.add(message="Cannot evict pod as it would violate the pod's disruption budget.")
    data = enveloped(status, wire.StatusEnvelope)

    text = json.loads(_status_text(data, PROTOBUF_TYPE))

    assert text == {"kind": "Status", "message": 'pods "c-0" is forbidden', "reason": "Forbidden",
                    "details": {"causes": [{"message": "Cannot evict pod as it would violate the pod's disruption budget."}]}}
    assert status_of(b"not protobuf") is None
    assert _status_text(b"upstream proxy error", PROTOBUF_TYPE) == "upstream proxy error"
