"""ojsctrl.ojs."""
