"""The Kafka tests' fixtures: ``scene`` makes a consumer group on the session's broker, ``chain``
starts the whole alerting chain for this test's namespace with VictoriaMetrics scraping its pods."""

from __future__ import annotations

import pytest

from tests.chain import Chain
from tests.kafkascene import TOKEN, Scene
from tests.podscrape import pod_scrape_config, scraper_token


@pytest.fixture
def scene(kafka_broker, kube, tmp_path):
    scenes = []

    def make(partitions: int, replicas: int, **kwargs) -> Scene:
        made = Scene(kafka_broker, kube, tmp_path, partitions, replicas, **kwargs)
        scenes.append(made)
        return made

    yield make
    for made in scenes:
        made.stop()


@pytest.fixture
def chain(control_plane, kube, tmp_path):
    """``chain(config)``: the whole chain for this test's namespace, VictoriaMetrics scraping its pods."""
    started = []

    def start(config: dict) -> Chain:
        token = scraper_token(control_plane, tmp_path / "scraper-token")
        made = Chain(tmp_path / "chain", config, kube.write_kubeconfig(tmp_path / "kubeconfig"), TOKEN,
                     scrape_config=pod_scrape_config(control_plane, [kube.namespace], token))
        (tmp_path / "chain").mkdir(exist_ok=True)
        started.append(made.start())
        return made

    yield start
    for made in started:
        made.stop()
