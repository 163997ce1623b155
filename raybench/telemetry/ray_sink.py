"""The Ray adapter: a ``MetricsSink`` over ``ray.util.metrics``, used inside actors only."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ray.util.metrics import Counter, Gauge

from raybench.telemetry import catalog


class RayMetricsSink:
    """Creates the catalog's metrics: ``names`` at once (in the actor's constructor, so no
    registration lands inside a cell), any other on first use."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._metrics: dict[str, Counter | Gauge] = {}
        for name in names:
            self._metric(name)

    def _metric(self, name: str) -> Counter | Gauge:
        metric = self._metrics.get(name)
        if metric is None:
            spec = catalog.spec(name)
            cls = Counter if spec.kind is catalog.MetricKind.COUNTER else Gauge
            metric = self._metrics[name] = cls(spec.name, description=spec.description, tag_keys=spec.tag_keys)
        return metric

    def set_gauge(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        self._metric(name).set(value, tags=dict(tags))

    def inc_counter(self, name: str, value: float, tags: Mapping[str, str]) -> None:
        if value > 0:  # Ray refuses increments <= 0
            self._metric(name).inc(value, tags=dict(tags))
