"""Talking to OJS servers and deciding replica counts.

* ``ojsctrl.ojs.model``: plain values (queue counts, worker info) shared by the two modules below.
* ``ojsctrl.ojs.client``: the HTTP client (``OJSClient``), the per-cluster ``StatsCache`` and ``url_for``.
* ``ojsctrl.ojs.autoscale``: pure decisions (``server_desired``, ``worker_desired``, ``plan_drain``); it
  imports no client and does no I/O.

Nothing is re-exported here on purpose: importing the decision code must not pull in the HTTP client.
"""
