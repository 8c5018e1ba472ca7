"""Pure builders: OJSCluster/OJSWorker spec -> desired Kubernetes objects (server-side apply bodies).

- ``common``: labels, selectors, owner references, the config hash, secure contexts, pod settings, env merge.
- ``cluster``: the server's Deployment/Service/ConfigMap/Secret/PDB, monitoring objects, embedded Redis.
- ``worker``: the worker Deployment and its CPU HPA.

No I/O, no clock, no randomness, no client: callers read Secrets and generate random values.
"""
