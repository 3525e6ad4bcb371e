"""Counters, gauges and histograms kept as plain numbers, read by prometheus_client at scrape.

prometheus_client's own metric objects take a lock and check their state on every update
(about 0.3 µs for a counter, 0.7 µs for a histogram); on the per-message path of a worker
that is a large share of a no-op job. These keep each label child as plain numbers that
the event loop updates, and a collector registered in the registry turns them into
samples when `/metrics` is scraped.

Guarantees and limits, kept by the code below:

- Updates come from one thread (the worker's event loop); a scrape from another thread
  reads numbers that are each whole (CPython's GIL), so a scrape may see a histogram a
  message "behind" in one bucket, never a torn value. Counters never go down.
- The exposition is that of prometheus_client's metrics of the same name, type, labels
  and buckets (`_total`, `_bucket{le}`, `_sum`, `_count`), without `_created` samples.
- Only for single-process mode: multiprocess mode needs prometheus_client's own values
  (they live in shared files), and the metrics plugin uses those there.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric


class CounterValue:
    """One counter child: `inc()` adds one (or `amount`)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class GaugeValue:
    """One gauge child: `inc()` / `dec()`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class HistogramValue:
    """One histogram child: `observe(v)` counts v in the first bucket whose bound is >= v
    (the last, +Inf, past every bound) and adds it to the sum.

    The metrics plugin's recorders write `observe` out on the hot path (a call costs
    more than the update): `counts[0 if v <= first else bisect_left(bounds, v)] += 1`
    and `sum += v`; `first`, the lowest bound, spares the search for the values most
    observations are (no-op runs, broker calls, an idle queue's lag)."""

    __slots__ = ("bounds", "counts", "first", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.first = bounds[0] if bounds else float("inf")
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[0 if amount <= self.first else bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class _Family:
    """A metric name with its label names and children, by label values."""

    def __init__(self, kind: str, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: tuple[float, ...] = ()) -> None:
        self.kind, self.name, self.documentation = kind, name, documentation
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(float(b) for b in buckets)
        self.children: dict[tuple[str, ...], CounterValue | GaugeValue | HistogramValue] = {}

    def labels(self, *values: str) -> Any:
        """The child of these label values, made on first use (bind it once and keep it):
        a `CounterValue`, `GaugeValue` or `HistogramValue` by the family's kind (typed Any,
        as prometheus_client's children are, so the plugin uses either alike)."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = (
                CounterValue() if self.kind == "counter" else
                GaugeValue() if self.kind == "gauge" else HistogramValue(self.buckets))
        return child

    def collect(self) -> Metric:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        children = list(self.children.items())
        if self.kind == "histogram":
            histogram = HistogramMetricFamily(self.name, self.documentation,
                                              labels=self.labelnames)
            bounds = (*self.buckets, float("inf"))
            for values, child in children:
                assert isinstance(child, HistogramValue)
                running, cumulative = 0, []
                for bound, count in zip(bounds, list(child.counts), strict=True):
                    running += count
                    cumulative.append((_le(bound), float(running)))
                histogram.add_metric(list(values), cumulative, child.sum)
            return histogram
        plain = (CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily)(
            self.name, self.documentation, labels=self.labelnames)
        for values, child in children:
            assert not isinstance(child, HistogramValue)
            plain.add_metric(list(values), child.value)
        return plain


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it (`0.005`, `1.0`, `+Inf`)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


class FastCollector:
    """The families of one (registry, prefix), registered there as one collector."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._families: list[_Family] = []
        self._registry = registry
        self._registered = False

    def counter(self, name: str, documentation: str, labelnames: Sequence[str]) -> _Family:
        # prometheus_client's Counter("x") is exposed as x_total: so is this one
        return self._add(_Family("counter", name, documentation, labelnames))

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str]) -> _Family:
        return self._add(_Family("gauge", name, documentation, labelnames))

    def histogram(self, name: str, documentation: str, labelnames: Sequence[str],
                  buckets: Sequence[float]) -> _Family:
        return self._add(_Family("histogram", name, documentation, labelnames,
                                 tuple(buckets)))

    def _add(self, family: _Family) -> _Family:
        self._families.append(family)
        return family

    def register(self) -> None:
        """Register in the registry (once every family is added: the registry checks the
        names against its others then)."""
        if not self._registered:
            self._registry.register(self)
            self._registered = True

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (lets the registry refuse a name used twice)."""
        from prometheus_client.core import Metric as MetricClass

        for family in self._families:
            yield MetricClass(family.name, family.documentation, family.kind)

    def collect(self) -> Iterator[Metric]:
        """Every family with its samples, as of now."""
        for family in self._families:
            yield family.collect()
