"""``kubectl ojs``: the kubectl plugin shipped in the ojsctrl wheel (console script ``kubectl-ojs``).

- ``kube``: kubeconfig/context/namespace handling and the API client.
- ``views``: pure functions from API objects to the data each command shows (what ``-o json|yaml`` prints).
- ``text``: the human rendering of those views (colour only on a TTY, never with ``NO_COLOR``).
- ``pause``: the pause annotations of an OJSWorker and their merge patches.
- ``redact`` / ``report``: the support tarball, with every Secret value and credential redacted.
- ``cli``: argument parsing and the commands.

It reads the objects the operator writes; it never imports the controllers.
"""
