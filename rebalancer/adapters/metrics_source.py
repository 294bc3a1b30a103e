"""VictoriaMetrics / Prometheus HTTP API adapter: one instant query -> ``{pod: value}``.

Both servers speak the same ``/api/v1/query`` API. Failures are translated here:
unreachable, timed out, 5xx or an answer that is not the Prometheus API -> MetricsUnavailableError
(the request gets 503 and Alertmanager retries); a query the server rejects (4xx) or a result
that cannot be attributed to pods -> MetricsQueryError (that decision is skipped, with the reason).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import msgspec
import requests

from rebalancer.core.partitions import PartitionLag
from rebalancer.errors import MetricsQueryError, MetricsUnavailableError, RebalanceUnderWayError

POD_LABEL = "pod"
PartitionKey = tuple[str, str, str]  # (pod, topic, partition)
# Prometheus refuses a range query of more than 11,000 points per series; stay below it.
MAX_POINTS_PER_REQUEST = 10_000


@dataclass(frozen=True)
class PodValues:
    values: dict[str, float]
    series_without_pod: int = 0  # series the query returned that carry no pod label


@dataclass(frozen=True)
class PartitionValues:
    held: dict[str, list[PartitionLag]]  # pod -> its partitions
    series_without_pod: int = 0

    @property
    def values(self) -> dict[str, float]:
        return {pod: math.fsum(p.lag for p in partitions) for pod, partitions in self.held.items()}


class MetricsSource:
    def __init__(self, base_url: str, timeout_seconds: float, session: requests.Session | None = None) -> None:
        # base_url may carry a path prefix (vmselect's /select/0/prometheus, a proxy's /prom).
        self.query_url = base_url.rstrip("/") + "/api/v1/query"
        self.range_url = base_url.rstrip("/") + "/api/v1/query_range"
        self.timeout_seconds = timeout_seconds
        self.session = session or requests.Session()

    def query_range_by_pod(self, query: str, start: datetime, end: datetime, step: timedelta) -> dict[str, dict[float, float]]:
        """Evaluate ``query`` at every ``step`` from ``start`` to ``end`` (inclusive), in as few
        range queries as the per-request point limit allows: {pod: {unix time: value}}."""
        found: dict[str, dict[float, float]] = {}
        for series in self._query_range(query, start, end, step):
            for pod, points in _one_per_pod((s.metric.get(POD_LABEL), s.points()) for s in series)[0].items():
                found.setdefault(pod, {}).update(points)
        return found

    def query_range_partitions(self, query: str, start: datetime, end: datetime,
                               step: timedelta) -> dict[PartitionKey, dict[float, float]]:
        """A partitions query over a period: {(pod, topic, partition): {unix time: value}}. A
        partition changes hands over time, so the same partition may appear under several pods."""
        found: dict[PartitionKey, dict[float, float]] = {}
        for series in self._query_range(query, start, end, step):
            for s in series:
                pod, topic, partition = (s.metric.get(label) for label in (POD_LABEL, "topic", "partition"))
                if pod and topic is not None and partition is not None:
                    found.setdefault((pod, topic, partition), {}).update(s.points())
        return found

    def query_range_by_partition(self, query: str, start: datetime, end: datetime,
                                 step: timedelta) -> dict[tuple[str, str], dict[float, float]]:
        """A per-partition query (an inflow) over a period: {(topic, partition): {unix time: value}}."""
        found: dict[tuple[str, str], dict[float, float]] = {}
        for series in self._query_range(query, start, end, step):
            for s in series:
                topic, partition = s.metric.get("topic"), s.metric.get("partition")
                if topic is not None and partition is not None:
                    found.setdefault((topic, partition), {}).update(s.points())
        return found

    def _query_range(self, query: str, start: datetime, end: datetime, step: timedelta) -> Iterator[list[_Series]]:
        """The series of each range query the period takes (chunked by the per-request point limit)."""
        step_s = step.total_seconds()
        first, last = start.timestamp(), end.timestamp()
        chunk_start = first
        while chunk_start <= last:
            chunk_end = min(last, chunk_start + step_s * (MAX_POINTS_PER_REQUEST - 1))
            # nocache=1: VictoriaMetrics may otherwise shift start and end for its response cache, and the
            # replay looks its steps up by timestamp. Prometheus ignores the parameter.
            form = {"query": query, "start": f"{chunk_start:.3f}", "end": f"{chunk_end:.3f}", "step": f"{step_s:g}s",
                    "timeout": f"{self.timeout_seconds:g}s", "nocache": "1"}
            yield _parse_matrix(self._post(self.range_url, form))
            chunk_start = chunk_end + step_s

    def _post(self, url: str, form: dict[str, str]) -> requests.Response:
        try:
            response = self.session.post(url, data=form, timeout=self.timeout_seconds)
        except requests.Timeout as e:
            raise MetricsUnavailableError(f"metrics backend did not answer within {self.timeout_seconds:g}s") from e
        except requests.exceptions.ChunkedEncodingError as e:
            raise MetricsUnavailableError(f"metrics backend unreachable: the connection broke in the middle of an answer "
                                          f"({type(e).__name__})") from e
        except requests.RequestException as e:
            raise MetricsUnavailableError(f"metrics backend unreachable: {type(e).__name__}") from e
        if response.status_code >= 500:
            raise MetricsUnavailableError(
                f"metrics backend answered HTTP {response.status_code}: {_error_text(response)}"
            )
        if response.status_code in (401, 403):
            raise MetricsQueryError(
                f"metrics backend refused the function's credentials (HTTP {response.status_code}): check the metrics_* "
                "credential settings"
            )
        if 400 <= response.status_code < 500:
            raise MetricsQueryError(
                f"metrics backend rejected the query (HTTP {response.status_code}): {_error_text(response)}"
            )
        return response

    def _instant(self, query: str, at: datetime) -> list[_Sample]:
        form = {"query": query, "time": f"{at.timestamp():.3f}", "timeout": f"{self.timeout_seconds:g}s"}
        result = _api_data(self._post(self.query_url, form), "vector")
        try:
            return _VECTOR.decode(result)
        except msgspec.DecodeError as e:
            raise MetricsUnavailableError("metrics backend answered a malformed sample") from e

    def query_by_pod(self, query: str, at: datetime) -> PodValues:
        """Evaluate ``query`` at ``at`` and return one value per ``pod`` label."""
        return _pod_values(self._instant(query, at))

    def query_partitions(self, query: str, at: datetime) -> PartitionValues:
        """Evaluate a partitions query at ``at``: each pod's partitions (labels ``topic`` and
        ``partition``) with their lag."""
        return _partition_values(self._instant(query, at))

    def query_by_partition(self, query: str, at: datetime) -> dict[tuple[str, str], float]:
        """Evaluate a per-partition query (an inflow: labels ``topic`` and ``partition``, no pod)
        at ``at``. Two series for one partition are refused: the query must aggregate them."""
        return _by_partition(self._instant(query, at))


def _error_text(response: requests.Response) -> str:
    """The backend's own error text, shortened, with the credential we sent taken out: some auth
    proxies (vmauth among them) echo an unknown token back in their error."""
    try:
        body = response.json()
        text = f"{body.get('errorType', 'error')}: {body.get('error', '')}"[:500]
    except (ValueError, AttributeError):
        text = response.text[:200]
    sent = response.request.headers.get("Authorization", "") if response.request is not None else ""
    credential = str(sent, "latin-1") if isinstance(sent, bytes) else sent
    credential = credential.partition(" ")[2].strip()
    return text.replace(credential, "[redacted]") if credential else text


class _Data(msgspec.Struct):
    resultType: str = ""
    result: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"[]"))  # decoded once known to be a vector


class _ApiResponse(msgspec.Struct):
    status: str = ""
    data: _Data | None = None


class _Sample(msgspec.Struct):
    metric: dict[str, str]
    value: tuple[float, str]  # [unix time, "value"]: "NaN", "+Inf" parse; the decision core refuses them


class _Series(msgspec.Struct):
    metric: dict[str, str]
    values: list[tuple[float, str]]

    def points(self) -> dict[float, float]:
        try:
            return {t: float(v) for t, v in self.values}
        except ValueError as e:
            raise MetricsUnavailableError("metrics backend answered a malformed sample") from e


# msgspec, like the Kubernetes adapter: 10,000 series decode in a few ms instead of 36 ms.
_API_RESPONSE = msgspec.json.Decoder(_ApiResponse)
_VECTOR = msgspec.json.Decoder(list[_Sample])
_MATRIX = msgspec.json.Decoder(list[_Series])


def _api_data(response: requests.Response, expected: str) -> msgspec.Raw:
    """The ``result`` of a Prometheus API answer whose ``resultType`` must be ``expected``."""
    try:
        body = _API_RESPONSE.decode(response.content)
    except msgspec.ValidationError as e:
        raise MetricsUnavailableError("metrics backend answered something that is not a Prometheus API response") from e
    except msgspec.DecodeError as e:
        # An empty 200 is what Python's HTTP client makes of a connection closed inside the headers.
        said = "an empty answer (the connection may have been cut)" if not response.content else "something that is not JSON"
        raise MetricsUnavailableError(f"metrics backend answered {said}") from e
    if body.status != "success" or body.data is None:
        raise MetricsUnavailableError("metrics backend answered something that is not a Prometheus API response")
    if body.data.resultType != expected:
        what = "an instant vector" if expected == "vector" else "a range"
        raise MetricsQueryError(
            f"the query returned a {body.data.resultType or None!s}, not {what} with one series per pod"
        )
    return body.data.result


Value = TypeVar("Value")


def _one_per_pod(parsed: Iterable[tuple[str | None, Value]]) -> tuple[dict[str, Value], int]:
    """{pod: value} from (pod label, value) pairs, and how many series had no pod label. Two
    series for one pod mean the query does not aggregate by pod: refused, never summed here."""
    found: dict[str, Value] = {}
    without_pod = 0
    for pod, value in parsed:
        if not pod:
            without_pod += 1
            continue
        if pod in found:
            raise MetricsQueryError(
                f"the query returned several series for pod {pod}: it must aggregate by pod, e.g. sum by (pod) (...)"
            )
        found[pod] = value
    return found, without_pod


def _parse_matrix(response: requests.Response) -> list[_Series]:
    try:
        return _MATRIX.decode(_api_data(response, "matrix"))
    except msgspec.DecodeError as e:
        raise MetricsUnavailableError("metrics backend answered a malformed sample") from e


def _pod_values(samples: list[_Sample]) -> PodValues:
    try:
        parsed = [(sample.metric.get(POD_LABEL), float(sample.value[1])) for sample in samples]
    except ValueError as e:
        raise MetricsUnavailableError("metrics backend answered a malformed sample") from e
    values, without_pod = _one_per_pod(parsed)
    return PodValues(values=values, series_without_pod=without_pod)


def _by_partition(samples: list[_Sample]) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for sample in samples:
        topic, partition = sample.metric.get("topic"), sample.metric.get("partition")
        if topic is None or partition is None:
            raise MetricsQueryError("the inflow query returned a series without a topic or partition label: it must "
                                    "return one series per (topic, partition)")
        if (topic, partition) in out:
            raise MetricsQueryError(f"the inflow query returned partition {topic}/{partition} twice: aggregate it, e.g. "
                                    "max by (topic, partition) (...)")
        try:
            out[topic, partition] = float(sample.value[1])
        except ValueError as e:
            raise MetricsUnavailableError("metrics backend answered a malformed sample") from e
    return out


def _partition_values(samples: list[_Sample]) -> PartitionValues:
    """Each pod's partitions. A partition reported for two pods (a rebalance under way, or a
    query that does not join on the assignment) is refused: its lag cannot be attributed."""
    held: dict[str, list[PartitionLag]] = {}
    owners: dict[tuple[str, str], str] = {}
    without_pod = 0
    for sample in samples:
        labels = sample.metric
        pod, topic, partition = labels.get(POD_LABEL), labels.get("topic"), labels.get("partition")
        if not pod:
            without_pod += 1
            continue
        if topic is None or partition is None:
            raise MetricsQueryError("the partitions query returned a series without a topic or partition label: it must "
                                    "return one series per (topic, partition), labelled pod, topic and partition")
        if (topic, partition) in owners:
            # Seen on a real group: for about half a second of a rebalance, the old owner's series
            # is not yet stale. Temporary, so the answer is a 503 and Alertmanager asks again.
            raise RebalanceUnderWayError(f"partition {topic}/{partition} is reported for pods {owners[topic, partition]} and "
                                         f"{pod}: a consumer-group rebalance is under way (or the partitions query does not "
                                         "join on the current assignment), so its lag cannot be attributed now")
        owners[topic, partition] = pod
        try:
            lag = float(sample.value[1])
        except ValueError as e:
            raise MetricsUnavailableError("metrics backend answered a malformed sample") from e
        held.setdefault(pod, []).append(PartitionLag(topic, partition, lag))
    return PartitionValues(held, without_pod)
