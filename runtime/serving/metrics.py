"""Prometheus metrics endpoint (``serve --metrics-port PORT``; off by default).

Needs the optional ``prometheus_client`` package (``pip install nvmstream[metrics]``). The
server (or broker) loop publishes a copy of its ``stats`` about once a second; the HTTP thread
of ``prometheus_client`` turns the latest copy into metrics, so scraping never touches the
loop's state. Names follow Prometheus conventions (base units, ``_total`` for counters)."""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)

__all__ = ["start_metrics_server"]

_COUNTERS = [("frames", "frames stepped"), ("messages", "messages received"),
             ("batches", "engine steps"), ("busy_frames", "frames refused busy"),
             ("dropped_replies", "replies dropped for clients that do not read"),
             ("opened", "streams opened"), ("closed", "streams closed"),
             ("evicted", "streams evicted idle")]
_GAUGES = [("streams", "open streams"), ("queued", "frames queued"),
           ("batch_mean", "mean engine batch (streams per step)")]


class _Collector:
    def __init__(self, snapshot: Callable[[], dict | None]):
        self.snapshot = snapshot

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st: dict[str, Any] | None = self.snapshot()
        if not st:
            return
        for k, doc in _COUNTERS:
            if isinstance(st.get(k), (int, float)):
                yield CounterMetricFamily(f"nvmstream_{k}", doc, value=st[k])
        for k, doc in _GAUGES:
            if isinstance(st.get(k), (int, float)):
                yield GaugeMetricFamily(f"nvmstream_{k}", doc, value=st[k])
        if isinstance(st.get("queued_ms"), (int, float)):
            yield GaugeMetricFamily("nvmstream_queued_seconds", "estimated work time of the "
                                    "queued frames", value=st["queued_ms"] / 1e3)
        errs = CounterMetricFamily("nvmstream_errors", "error replies by code", labels=["code"])
        for code, n in (st.get("errors") or {}).items():
            errs.add_metric([str(code)], n)
        yield errs
        lat = GaugeMetricFamily("nvmstream_server_time_seconds", "server time of recent frame "
                                "replies (receive to reply queued)", labels=["quantile"])
        for q, v in (st.get("srv_us") or {}).items():
            if isinstance(v, (int, float)) and q.startswith("p"):
                lat.add_metric([str(int(q[1:]) / 100)], v / 1e6)
        yield lat
        streams = GaugeMetricFamily("nvmstream_device_streams", "open streams per device "
                                    "configuration", labels=["profile", "overrides", "votes"])
        energy = CounterMetricFamily("nvmstream_device_energy_joules", "emulated device energy "
                                     "per device configuration",
                                     labels=["profile", "overrides", "votes"])
        for e in st.get("engines") or []:
            lab = [str(e.get("profile")), ",".join(e.get("overrides") or []), str(e.get("votes"))]
            streams.add_metric(lab, e.get("streams") or 0)
            if isinstance(e.get("e_pJ"), (int, float)):
                energy.add_metric(lab, e["e_pJ"] * 1e-12)
        yield streams
        yield energy
        if "workers" in st:
            yield GaugeMetricFamily("nvmstream_workers", "live engine workers",
                                    value=len(st["workers"]))
            b = st.get("broker") or {}
            yield CounterMetricFamily("nvmstream_workers_lost", "workers taken for dead",
                                      value=b.get("workers_lost", 0))


def start_metrics_server(port: int, snapshot: Callable[[], dict | None],
                         addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``addr:port`` from ``snapshot()`` (the latest stats dict).
    Raises ImportError with the install hint when prometheus_client is missing."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise ImportError("--metrics-port needs the prometheus_client package: pip install "
                          "'nvmstream[metrics]'") from None
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(snapshot))
    start_http_server(port, addr=addr, registry=reg)
    log.info("Prometheus metrics on http://%s:%d/metrics", addr, port)
