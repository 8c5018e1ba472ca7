"""The KEDA baseline of the autoscaling benchmark (issue #13): a ScaledObject, the HPA's default behaviour.

Written from KEDA's and Kubernetes' documented and coded behaviour, not a copy of either:

* KEDA (``pkg/scaling/executor/scale_scaledobjects.go``, ScaledObject spec docs): every ``pollingInterval``
  (default 30 s) it asks the scaler whether the trigger is active (metric > ``activationThreshold``, default
  0). Active at 0 replicas: scale to ``max(minReplicaCount, 1)``. Inactive for ``cooldownPeriod`` (default
  300 s) since the last active poll, at more than ``minReplicaCount`` (default 0): scale to
  ``minReplicaCount``. Between 1 and max it leaves the count to the HPA it owns
  (minReplicas = max(minReplicaCount, 1)).
* The HPA (``pkg/controller/podautoscaler/horizontal.go``, defaults of ``autoscaling/v2``): every 15 s
  (``--horizontal-pod-autoscaler-sync-period``) the external metric with an ``AverageValue`` target gives
  ``usageRatio = metric / (target * current)``; within the 10 % tolerance nothing changes, else
  ``desired = ceil(usageRatio * current) = ceil(metric / target)``. Default behaviour: scale-up without
  stabilisation, by at most max(100 %, 4 pods) per 15 s; scale-down to the highest recommendation of the
  last 300 s, by up to 100 % per 15 s; the result clamped to [minReplicas, maxReplicas]. At 0 replicas the
  HPA does nothing (KEDA activates).

The metric is the queue's ``available + active``, the same load ojsctrl's ``queueDepth`` mode reads, and
``target`` is the ScaledObject trigger's value (``targetJobsPerWorker`` in ojsctrl's words). The pure part is
:class:`KedaHpa`; :class:`BaselineLoop` reads the world's OJS double over HTTP and sets the Deployment's
replicas through the real API server's scale subresource.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

HPA_SYNC = 15.0
HPA_TOLERANCE = 0.1
HPA_DOWN_WINDOW = 300.0
HPA_UP_PERIOD = 15.0
HPA_UP_PODS = 4
HPA_UP_PERCENT = 100
KEDA_POLLING = 30.0
KEDA_COOLDOWN = 300.0


@dataclass
class KedaHpa:
    """KEDA's ScaledObject plus its HPA, as a state machine over time (seconds on any one clock)."""

    target: int
    min_replicas: int = 0
    max_replicas: int = 100
    activation: int = 0
    polling: float = KEDA_POLLING
    cooldown: float = KEDA_COOLDOWN
    sync: float = HPA_SYNC
    down_window: float = HPA_DOWN_WINDOW
    last_poll: float | None = None
    last_sync: float | None = None
    last_active: float | None = None
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    scale_ups: deque[tuple[float, int]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.target < 1:
            raise ValueError("target must be >= 1")

    def decide(self, now: float, metric: int | None, current: int) -> int:
        """The replica count to set at ``now`` given the metric (None: the scaler failed) and the current
        count; unchanged when neither KEDA nor the HPA is due."""
        desired = current
        if self.last_poll is None or now - self.last_poll >= self.polling:
            self.last_poll = now
            desired = self._keda(now, metric, desired)
        if desired > 0 and (self.last_sync is None or now - self.last_sync >= self.sync):
            self.last_sync = now
            desired = self._hpa(now, metric, desired)
        return desired

    def _keda(self, now: float, metric: int | None, current: int) -> int:
        if metric is None:
            return current  # no fallback configured: KEDA keeps the count
        if metric > self.activation:
            self.last_active = now
            if current == 0:
                return max(self.min_replicas, 1)
            return current
        idle_since = self.last_active
        if current > self.min_replicas and (idle_since is None or now - idle_since >= self.cooldown):
            self.recommendations.clear()
            return self.min_replicas
        return current

    def _hpa(self, now: float, metric: int | None, current: int) -> int:
        lo, hi = max(self.min_replicas, 1), self.max_replicas
        if metric is None:
            return current  # the HPA cannot compute: no change
        ratio = metric / (self.target * current)
        raw = current if abs(ratio - 1.0) <= HPA_TOLERANCE else math.ceil(ratio * current)
        raw = max(lo, min(hi, raw))
        self.recommendations.append((now, raw))
        while self.recommendations and self.recommendations[0][0] < now - self.down_window:
            self.recommendations.popleft()
        if raw > current:
            # Scale-up policies: max(100 %, 4 pods) per 15 s over the replicas at the period's start.
            while self.scale_ups and self.scale_ups[0][0] <= now - HPA_UP_PERIOD:
                self.scale_ups.popleft()
            start = current - sum(n for _, n in self.scale_ups)
            limit = max(start * (100 + HPA_UP_PERCENT) // 100, start + HPA_UP_PODS)
            desired = min(raw, limit, hi)
            if desired > current:
                self.scale_ups.append((now, desired - current))
            return max(desired, current)
        # Scale-down: the highest recommendation of the window (100 % per 15 s allows any step).
        stabilized = max(r for _, r in self.recommendations)
        return max(lo, min(current, stabilized))


@dataclass
class Scaled:
    """One replica change the baseline made."""

    at: float
    replicas: int
    metric: int | None


class BaselineLoop:
    """Runs :class:`KedaHpa` against a Deployment: reads the load of ``queue`` from the OJS double at
    ``ojs_url`` (as KEDA's metrics-api scaler would) and sets replicas through the scale subresource."""

    def __init__(
        self,
        apps: Any,
        namespace: str,
        deployment: str,
        ojs_url: str,
        queue: str,
        policy: KedaHpa,
        *,
        tick: float = 1.0,
    ) -> None:
        from ojsctrl.ojs.client import OJSClient

        self.apps = apps
        self.namespace = namespace
        self.deployment = deployment
        self.ojs_url = ojs_url
        self.queue = queue
        self.policy = policy
        self.tick = tick
        self.events: list[Scaled] = []
        self._client = OJSClient()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"keda-{namespace}", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> BaselineLoop:
        """Start the loop."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the loop; raises what it raised, if anything."""
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()
        if self.error is not None:
            raise self.error

    def _metric(self) -> int | None:
        from ojsctrl.ojs.client import OJSError

        try:
            stats = self._client.queue_stats(self.ojs_url, None)
        except OJSError:
            return None
        return sum(q.available + q.active for q in stats.queues if q.name == self.queue)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.tick):
                scale = self.apps.read_namespaced_deployment_scale(self.deployment, self.namespace)
                current = int(scale.spec.replicas or 0)
                metric = self._metric()
                desired = self.policy.decide(time.time(), metric, current)
                if desired != current:
                    self.apps.patch_namespaced_deployment_scale(
                        self.deployment, self.namespace, {"spec": {"replicas": desired}}
                    )
                    self.events.append(Scaled(time.time(), desired, metric))
        except BaseException as exc:
            self.error = exc
