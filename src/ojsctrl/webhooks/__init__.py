"""Admission webhooks for OJSCluster and OJSWorker (design.md §admission).

- ``handlers``: the validating handlers (the rules themselves live once, in ``ojsctrl.api.validation``);
- ``flags``: the ``--webhook-*`` flags; ``setup``: wires the server and the certificates into a Manager;
- ``manifests``: generates the ValidatingWebhookConfiguration (in-cluster and out-of-cluster development).
"""

from ojsctrl.api.common import GROUP, VERSION

CLUSTER_PATH = "/validate-ojs-openjobspec-dev-v1alpha1-ojscluster"
WORKER_PATH = "/validate-ojs-openjobspec-dev-v1alpha1-ojsworker"
CLUSTER_WEBHOOK = f"vojscluster.{GROUP}"
WORKER_WEBHOOK = f"vojsworker.{GROUP}"

__all__ = ["CLUSTER_PATH", "CLUSTER_WEBHOOK", "GROUP", "VERSION", "WORKER_PATH", "WORKER_WEBHOOK"]
