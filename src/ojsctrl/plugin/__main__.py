"""``python -m ojsctrl.plugin``: the same as ``kubectl-ojs``."""

from ojsctrl.plugin.cli import run

run()
