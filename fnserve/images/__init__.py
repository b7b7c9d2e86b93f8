"""Container images: function and gateway image plans computed as data, built through the Docker adapter.

    plan = prepare_build(settings, "recs", engine)    # data: context, Dockerfile, tag (plan_build)
    image = build_image(plan, engine, on_output=print)  # the engine does the work

Nothing here imports the Docker SDK: :mod:`fnserve.docker_engine` is the one module that talks
to the engine. Nothing in :mod:`fnserve.runtime` imports this package: images run the runtime.
"""

from __future__ import annotations

from fnserve.runtime.errors import FnError


class BuildError(FnError):
    """A build, base image, run or container training could not be done; the message says why."""

    status = 422  # the function's sources or the build's settings are at fault
