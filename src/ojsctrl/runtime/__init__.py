"""ojsctrl.runtime."""
