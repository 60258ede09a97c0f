"""The sidecar process: the ``api`` and ``admin`` applications, and ``run``, which starts,
reloads and drains them."""
