"""A real Ray cluster on this machine, for the tests and the benchmarks.

A head and worker nodes on this machine, each node its own raylet with its own object store and
worker processes, started with Ray's own `ray.cluster_utils.Cluster` (what Ray's tests use).
A node is killed the way a machine dies, with SIGKILL to its processes, no goodbye. The head
offers no CPUs, so everything runs on worker nodes, as on a KubeRay cluster. Usage stats are
off, and every object store is capped small (Ray's default takes 30% of memory per node).

The nodes take the machine's own address, as `ray start` does: with `--node-ip-address=127.0.0.1`
a driver on the same machine never joins (Ray 2.60: `ray.init` waits in its GCS client forever).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

OBJECT_STORE_BYTES = 100 * 2**20


@dataclass
class LocalRay:
    cluster: Any
    cpus_per_worker: float
    workers: list[Any] = field(default_factory=list)

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add_worker(self, **resources: float) -> Any:
        node = self.cluster.add_node(num_cpus=self.cpus_per_worker, object_store_memory=OBJECT_STORE_BYTES,
                                     resources=resources)
        self.cluster.wait_for_nodes()
        self.workers.append(node)
        return node

    def kill(self, node_id: str) -> None:
        """The worker node `node_id` dies at once (SIGKILL to its raylet and workers)."""
        node = next(n for n in self.workers if n.node_id == node_id)
        self.workers.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self.cluster.shutdown()


@contextmanager
def local_ray(workers: int = 1, cpus_per_worker: float = 2) -> Iterator[LocalRay]:
    """A head and `workers` worker nodes; the driver (this process) is disconnected at the end."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False})
    ray = LocalRay(cluster, cpus_per_worker)
    try:
        for _ in range(workers):
            ray.add_worker()
        yield ray
    finally:
        ray.close()
