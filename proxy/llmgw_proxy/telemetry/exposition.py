"""The Prometheus text format (0.0.4) of the sidecar's metric families, without prometheus_client.

The sidecar builds every family at scrape time from plain counters
(``metrics``), so all it needs of a Prometheus library is the text it writes.
``prometheus_client``'s package ``__init__`` imports its HTTP servers, push
gateway client and default collectors too (``http.server``, ``wsgiref``,
``urllib.request``, ``gzip``): about 1.5 MB of the idle sidecar's RSS
(docs/reliability.md). ``render`` writes what ``prometheus_client.generate_latest``
writes for the same families, byte for byte: counters get the ``_total``
suffix, labels are sorted by name, values are spelled as Go spells them.
``Metrics.registry`` (tests and tools) shows the same families to
prometheus_client, which is how the tests compare the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import prometheus_client

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Family:
    """One metric family: its samples as (name, ((label, value), ...), value), in the order added."""

    __slots__ = ("documentation", "labels", "name", "samples", "type")

    def __init__(self, name: str, documentation: str, type_: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.type = type_
        self.labels = tuple(labels)
        self.samples: list[tuple[str, tuple[tuple[str, str], ...], float]] = []

    def add(self, values: Sequence[str], value: float) -> None:
        """A counter's or a gauge's sample (a counter's is named ``<name>_total``)."""
        name = self.name + "_total" if self.type == COUNTER else self.name
        self.samples.append((name, tuple(zip(self.labels, values, strict=True)), value))

    def add_histogram(
        self, values: Sequence[str], buckets: Sequence[tuple[str, float]], total: float
    ) -> None:
        """A histogram's cumulative ``buckets`` (upper bound as written, count; ``+Inf`` last) and sum."""
        labels = tuple(zip(self.labels, values, strict=True))
        for bound, count in buckets:
            self.samples.append((self.name + "_bucket", (*labels, ("le", bound)), count))
        self.samples.append((self.name + "_count", labels, buckets[-1][1]))
        self.samples.append((self.name + "_sum", labels, total))


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Family:
    return Family(name, documentation, COUNTER, labels)


def gauge(name: str, documentation: str, labels: Sequence[str] = (), value: float | None = None) -> Family:
    family = Family(name, documentation, GAUGE, labels)
    if value is not None:
        family.add((), value)
    return family


def histogram(name: str, documentation: str, labels: Sequence[str] = ()) -> Family:
    return Family(name, documentation, HISTOGRAM, labels)


def number(value: float) -> str:
    """A sample value as Go (and Prometheus) spell it: ``+Inf``, ``NaN``, ``1e+06`` past six digits."""
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Python writes 1234567.0 where Go switches to an exponent
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def render(families: Iterable[Family]) -> bytes:
    out: list[str] = []
    for family in families:
        name = family.name + "_total" if family.type == COUNTER else family.name
        documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {documentation}\n# TYPE {name} {family.type}\n")
        for sample, labels, value in family.samples:
            if labels:
                pairs = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(labels))
                out.append(f"{sample}{{{pairs}}} {number(value)}\n")
            else:
                out.append(f"{sample} {number(value)}\n")
    return "".join(out).encode()


def registry(families: Callable[[], Iterable[Family]]) -> prometheus_client.CollectorRegistry:
    """A prometheus_client registry that collects ``families()``: its ``get_sample_value`` and
    ``generate_latest`` for tests and tools. prometheus_client is imported here, never at start."""
    import prometheus_client
    from prometheus_client import core

    class View(prometheus_client.registry.Collector):
        def collect(self) -> Iterator[core.Metric]:
            for family in families():
                metric = core.Metric(family.name, family.documentation, family.type)
                for name, labels, value in family.samples:
                    metric.add_sample(name, dict(labels), value)
                yield metric

    view = prometheus_client.CollectorRegistry(auto_describe=True)
    view.register(View())
    return view
