"""The client, built once per instance, and the one raw request every call goes through."""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.config
import urllib3
from kubernetes.client.api_client import ApiClient
from kubernetes.client.configuration import Configuration
from kubernetes.client.exceptions import ApiException

from rebalancer.adapters.kube.json_codec import JSON, JsonCodec
from rebalancer.adapters.kube.protobuf_codec import MEDIA_TYPE as PROTOBUF_MEDIA_TYPE
from rebalancer.adapters.kube.protobuf_codec import PROTOBUF, ProtobufCodec, status_of
from rebalancer.background import BackgroundReads
from rebalancer.errors import ConfigError


def api_client(*, kubeconfig: Path | None, in_cluster: bool, gke_endpoint: str | None = None,
               gke_ca_cert: str | None = None, retries: int = 1) -> ApiClient:
    """Build the client once per instance: in-cluster, else KUBECONFIG, else GKE (endpoint, CA and
    Google credentials), else ~/.kube/config. No network traffic happens here."""
    configuration = Configuration()
    default_kubeconfig = Path("~/.kube/config").expanduser()
    try:
        if in_cluster:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        elif kubeconfig is not None or (not gke_endpoint and default_kubeconfig.exists()):
            path = kubeconfig or default_kubeconfig
            if not path.exists():
                raise ConfigError(f"KUBECONFIG names {path}, which does not exist")
            kubernetes.config.load_kube_config(config_file=str(path), client_configuration=configuration)
        elif gke_endpoint and gke_ca_cert:
            from rebalancer.adapters.gke import gke_configuration

            configuration = gke_configuration(gke_endpoint, gke_ca_cert)
        else:
            raise ConfigError(
                "no Kubernetes access configured: not running in a cluster, no KUBECONFIG, "
                "no REBALANCER_GKE_ENDPOINT/REBALANCER_GKE_CA_CERT, and no ~/.kube/config"
            )
    except kubernetes.config.ConfigException as e:
        raise ConfigError(f"cannot load Kubernetes configuration: {e}") from e
    # One quick retry on a refused connection; anything longer is Alertmanager's retry to make.
    # urllib3 would also sleep out any Retry-After (up to 32 s from API Priority and Fairness) on a
    # read: the connection's own rule for a throttled request (THROTTLED_RETRIES) replaces that.
    configuration.retries = urllib3.Retry(total=retries, respect_retry_after_header=False)
    return ApiClient(configuration)


# A request the API server throttled before handling it (API Priority and Fairness, or the
# max-in-flight filter) was never carried out, so sending it again is safe, even an eviction or the
# lock's write. It is sent again at most this many times, and only when the wait it asks for is
# short; a longer one is Alertmanager's retry to make (the answer is a 503).
THROTTLED_RETRIES = 2
THROTTLED_WAIT_LIMIT = 2.0  # seconds of Retry-After waited for at most, each time


@dataclass(frozen=True)
class Answer:
    """A 2xx answer, inflated, and its media type (which codec reads it): the whole body, or
    (``streamed``) its pieces as they arrive."""

    media_type: str
    body: bytes = b""
    stream: Iterator[bytes] | None = None

    @property
    def codec(self) -> Codec:
        return PROTOBUF if self.media_type == PROTOBUF_MEDIA_TYPE else JSON

    def pieces(self) -> Iterator[bytes]:
        return self.stream if self.stream is not None else iter((self.body,))


class KubeConnection:
    """One API client with a timeout, and the raw request every read and write goes through.
    Reads ask for protobuf first (``protobuf=False``: JSON only, as before; the tests compare)."""

    def __init__(self, api_client: ApiClient, timeout_seconds: float, *, protobuf: bool = True,
                 background: BackgroundReads | None = None) -> None:
        self.client = api_client
        self.timeout = timeout_seconds
        self.background = background  # where reads that do not wait for each other run at once
        # A server that cannot answer protobuf (an aggregated API, a proxy) answers JSON: both are read.
        self.read_accept = f"{PROTOBUF_MEDIA_TYPE}, application/json" if protobuf else "application/json"

    def _read(self, path: str, query: Sequence[tuple[str, str]] = (), *, streamed: bool = False) -> Answer:
        """``streamed``: a protobuf answer is handed over as it arrives, so that it is decoded
        while the server is still sending it (a list of 10,000 pods takes it about 0.4 s)."""
        return self._call("GET", path, {"Accept": self.read_accept}, query=query, streamed=streamed)

    def _request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
                 body: Any = None, content_type: str = "application/json") -> bytes:
        """A write (or any JSON request): the raw JSON body of a 2xx answer."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        return self._call(method, path, headers, query=query, body=body).body

    def _call(self, method: str, path: str, headers: dict[str, str], *, query: Sequence[tuple[str, str]] = (),
              body: Any = None, streamed: bool = False) -> Answer:
        """One API request with the client's authentication; the body of a 2xx answer, else the
        client's own ApiException (with the Status body, as JSON), as its generated methods raise."""
        # gzip: the API server compresses large answers when asked; across a network far fewer bytes travel.
        headers = {**headers, "Accept-Encoding": "gzip"}
        request = self.client.param_serialize(
            method=method, resource_path=path, query_params=list(query), header_params=headers,
            body=body, auth_settings=["BearerToken"],
        )
        for attempt in range(THROTTLED_RETRIES + 1):
            response = self.client.call_api(*request, _request_timeout=self.timeout)
            wait = _throttled_before_handling(response)
            if wait is None or wait > THROTTLED_WAIT_LIMIT or attempt == THROTTLED_RETRIES:
                break
            response.response.drain_conn()
            time.sleep(wait)
        media_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
        encoding = response.headers.get("Content-Encoding")
        if streamed and media_type == PROTOBUF_MEDIA_TYPE and 200 <= response.status <= 299:
            return Answer(media_type, stream=_arriving(response.response, encoding))
        data = _inflated(response.response.read(decode_content=False), encoding)
        if not 200 <= response.status <= 299:
            ApiException.from_response(http_resp=response, body=_error_text(response, data, media_type), data=None)
        return Answer(media_type, data)


def _throttled_before_handling(response: Any) -> float | None:
    """The Retry-After of a 429 the API server answered before handling the request, else None.
    Those come from its filters (API Priority and Fairness, max-in-flight) as plain text with a
    Retry-After; a 429 from a handler (a disruption budget's) or an admission webhook is a Status."""
    if response.status != 429 or not (response.headers.get("Content-Type") or "").startswith("text/plain"):
        return None
    try:
        return max(0.0, float(response.headers.get("Retry-After") or ""))
    except ValueError:
        return None


def _gzipped(encoding: str | None) -> bool:
    if not encoding or encoding == "identity":
        return False
    if encoding != "gzip":
        raise urllib3.exceptions.DecodeError(f"the API server answered in content encoding {encoding!r}, asked only gzip")
    return True


def _inflated(data: bytes, encoding: str | None) -> bytes:
    """The body, inflated in one call. urllib3 inflates a gzip body in the small pieces it reads:
    about 223 ms of CPU for a list of 10,000 pods as JSON, where one zlib call took 80 to 130."""
    if not _gzipped(encoding):
        return data
    try:
        return zlib.decompress(data, wbits=16 + zlib.MAX_WBITS)
    except zlib.error as e:
        raise urllib3.exceptions.DecodeError(f"the API server's gzip answer does not inflate: {e}") from e


def _arriving(response: urllib3.BaseHTTPResponse, encoding: str | None) -> Iterator[bytes]:
    """The body's inflated pieces as the server sends them: each read takes what has arrived (up
    to 1 MiB) and inflates it in one zlib call, so the inflating is done while the server is still
    sending, not after it."""
    finished = False
    try:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if _gzipped(encoding) else None
        while piece := response.read1(_PIECE, decode_content=False):
            yield inflater.decompress(piece) if inflater else piece
        if inflater is not None and not inflater.eof:
            raise urllib3.exceptions.DecodeError("the API server's gzip answer ended before its end")
        finished = True
    except zlib.error as e:
        raise urllib3.exceptions.DecodeError(f"the API server's gzip answer does not inflate: {e}") from e
    finally:
        if not finished:  # a reader that stopped early: this connection holds the rest, never reuse it
            response.close()


_PIECE = 1 << 20


def _status_text(data: bytes, media_type: str) -> str:
    """An error answer's body as the JSON Status the error translation reads: a protobuf Status
    (what the server answers a protobuf read's error with) is turned into the same fields."""
    if media_type == PROTOBUF_MEDIA_TYPE:
        status = status_of(data)
        if status is not None:
            return json.dumps({"kind": "Status", "message": status.message, "reason": status.reason,
                               "details": {"causes": [{"message": m} for m in status.causes]}})
    return data.decode("utf-8", "replace")


def _error_text(response: Any, data: bytes, media_type: str) -> str:
    """The error answer as a JSON Status; a throttled request's plain text says so, and for how long."""
    wait = _throttled_before_handling(response)
    if wait is not None:
        said = data.decode("utf-8", "replace").strip() or "Too many requests"
        return json.dumps({"kind": "Status", "reason": "TooManyRequests",
                           "message": f"{said} (throttled before it was handled, by API Priority and Fairness or "
                                      f"the max-in-flight limit; Retry-After {wait:g} s)"})
    return _status_text(data, media_type)


Codec = JsonCodec | ProtobufCodec
