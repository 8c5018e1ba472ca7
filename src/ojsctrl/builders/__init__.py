"""ojsctrl.builders."""
