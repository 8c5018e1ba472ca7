"""Small operators built on ojsctrl.runtime, run as processes by the e2e tests."""
