"""Talking to OJS servers and deciding replica counts.

* ``ojsctrl.ojs.model``: plain values (queue counts, worker info) shared by the modules below.
* ``ojsctrl.ojs.urls``: the ``--ojs-url-template`` checks and ``url_for`` (pure).
* ``ojsctrl.ojs.wire``: OJS JSON bodies -> model values, strictly (pure).
* ``ojsctrl.ojs.transport``: the bounded HTTP transport (pool, timeouts, retries, size cap, error mapping).
* ``ojsctrl.ojs.client``: the API client (``OJSClient``): queue stats, workers, quiet, pagination.
* ``ojsctrl.ojs.errors``: ``OJSError``, the one error all of them raise.
* ``ojsctrl.ojs.autoscale``: pure decisions (``server_desired``, ``worker_desired``, hold samples across
  outages); it imports no client and does no I/O.
* ``ojsctrl.ojs.drain``: pure drain planning (``match_workers``, ``plan_drain``): which OJS worker runs in
  which pod, which pods go first.
* ``ojsctrl.ojs.quiet``: ``QuietSender``, quiet calls from a small background pool, never awaited.

Nothing is re-exported here on purpose: importing the decision code must not pull in the HTTP client.
"""
