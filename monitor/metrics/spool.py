"""The spool's state, read at scrape time: how many records sit in quarantine.

A gauge of files present rather than a counter of files set aside: it stays up, and its alert
keeps firing, until someone has dealt with each file, and it reads the same after a restart.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.metrics import names as m
from monitor.probing.spool import Spool


class SpoolCollector(Collector):
    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def collect(self) -> Iterator[Metric]:
        quarantined = GaugeMetricFamily(m.SPOOL_QUARANTINED.full_name, m.SPOOL_QUARANTINED.help)
        quarantined.add_metric([], len(self.spool.quarantined()))
        yield quarantined
