"""The one Prometheus registry of the process: controller-runtime's metric names, the operator's own, and
the standard process and platform collectors."""

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    disable_created_metrics,
)

# No `*_created` samples: the Go client (and so controller-runtime) has none, no dashboard reads them, and
# they add a series for every counter and histogram label set.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
# process_* (CPU seconds, resident memory, open fds, start time) and python_info / python_gc_*: what an
# operator's alerts on memory and restarts read. They live in the default registry; register the same
# collectors here too, since /metrics serves this registry.
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)
