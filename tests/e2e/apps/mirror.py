"""A test operator on the runtime: every ConfigMap labelled `ojsctrl-test/source=true` gets a
`<name>-mirror` ConfigMap (server-side apply, controller owner reference) whose data copies the
source's and records which manager wrote it. Run with the ojsctrl flags plus --identity.
"""

from __future__ import annotations

import argparse
import sys

from ojsctrl import cli
from ojsctrl.runtime.client import CONFIGMAPS, JSON, NotFoundError
from ojsctrl.runtime.controller import Controller, Request, Result
from ojsctrl.runtime.manager import Manager

SOURCE_LABEL = "ojsctrl-test/source"
MIRROR_LABEL = "ojsctrl-test/mirror"


def setup(manager: Manager, args: argparse.Namespace) -> None:
    if args.identity:
        manager.identity = args.identity
        manager.client.options.user_agent = f"ojsctrl-test/{args.identity}"
    sources = manager.informers.informer(CONFIGMAPS, label_selector=f"{SOURCE_LABEL}=true")
    mirrors = manager.informers.informer(CONFIGMAPS, label_selector=f"{MIRROR_LABEL}=true")
    client = manager.client

    def reconcile(req: Request) -> Result | None:
        src = sources.store.get_by_name(req.namespace, req.name)
        if src is None:
            return None  # the mirror goes with its owner (garbage collection)
        desired: JSON = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{req.name}-mirror",
                "namespace": req.namespace,
                "labels": {MIRROR_LABEL: "true"},
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": req.name,
                        "uid": src["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "data": {**(src.get("data") or {}), "writer": manager.identity},
        }
        current = mirrors.store.get_by_name(req.namespace, f"{req.name}-mirror")
        if current is not None and current.get("data") == desired["data"]:
            return None
        try:
            client.apply(CONFIGMAPS, desired, field_manager="ojsctrl-test")
        except NotFoundError:
            return None
        return None

    ctrl = Controller("mirror", reconcile, max_concurrent_reconciles=args.max_concurrent_reconciles)
    ctrl.watch_primary(sources)
    ctrl.watch_owned(mirrors, "v1", "ConfigMap")
    manager.add_controller(ctrl)


def main() -> int:
    parser = cli.build_parser()
    parser.add_argument("--identity", default="")
    return cli.run(sys.argv[1:], setup, parser)


if __name__ == "__main__":
    sys.exit(main())
