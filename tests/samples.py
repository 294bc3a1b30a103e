"""Real Alertmanager 0.25 payloads (copied verbatim from shared/samples; a test keeps them equal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).parent / "fixtures" / "alertmanager"
SHARED_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"


def sample_path(name: str) -> Path:
    path = SAMPLES / name
    if not path.exists():
        raise FileNotFoundError(f"no sample payload {name} in {SAMPLES}")
    return path


def sample(name: str) -> dict[str, Any]:
    return json.loads(sample_path(name).read_text())


def sample_bytes(name: str) -> bytes:
    return sample_path(name).read_bytes()


def sample_in_namespace(name: str, namespace: str) -> dict[str, Any]:
    """A sample payload whose alerts name ``namespace`` instead of the namespace they were
    recorded in: each test on the real control plane works in a namespace of its own."""
    payload = sample(name)
    for labels in [payload["groupLabels"], payload["commonLabels"], *(a["labels"] for a in payload["alerts"])]:
        if "namespace" in labels:
            labels["namespace"] = namespace
    return payload
