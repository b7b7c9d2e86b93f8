"""The ``docker`` target: function replicas as containers behind a gateway container, on one machine.

    containers   container specs as data: store access, serving and training containers
    replicas     a version's replica containers: names, labels, the plan that converges them
    tracker      per-replica health and restart backoff
    platform     the target's :class:`~fnserve.gateway.platform.Platform` (``create_platform``)
    gateway      the gateway container's spec; gateway_container starts it and waits until ready
    running      ``fn run``: one function's image served until Ctrl-C
    training     ``fn train --in-container``: train.py in the function's image, then removed

Images come from :mod:`fnserve.images`; :mod:`fnserve.docker_engine` is the one module that talks
to the engine.
"""
