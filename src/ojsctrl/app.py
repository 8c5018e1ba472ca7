"""The operator assembled: its controllers and its admission webhooks registered side by side on one
Manager. Neither package imports the other; this module is the one place that knows both."""

from __future__ import annotations

import argparse

from ojsctrl.controllers.setup import setup_controllers
from ojsctrl.runtime.manager import Manager
from ojsctrl.webhooks.setup import setup_webhooks


def setup_operator(manager: Manager, args: argparse.Namespace) -> None:
    """Register everything the operator runs: reconcilers, queue-stats poller and event recorder, then the
    webhook server (and its certificates). Raises ValueError on a bad flag value."""
    setup_controllers(manager, args)
    setup_webhooks(manager, args)
