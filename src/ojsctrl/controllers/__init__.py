"""ojsctrl.controllers."""
