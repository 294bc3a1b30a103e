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
