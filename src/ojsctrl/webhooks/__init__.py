"""ojsctrl.webhooks."""
