"""Every ``io.fnserve.*`` label of the images fnserve builds and the containers it starts, once.

Images carry what they were built from; containers carry who owns them, so the docker target finds
its own (and only its own) by label. Kubernetes objects have their own keys in
:mod:`fnserve.k8s.names`.

>>> FUNCTION_LABEL, BAKED_LABEL
('io.fnserve.function', 'io.fnserve.checkpoint-baked')
"""

from __future__ import annotations

LABEL_PREFIX = "io.fnserve."

# Images (`fn build`, `fn build --gateway`, `fn base-image`)
FUNCTION_LABEL = LABEL_PREFIX + "function"  # the function an image serves, or a container runs
FNSERVE_VERSION_LABEL = LABEL_PREFIX + "fnserve-version"  # the fnserve that built the image
TEMPLATE_LABEL = LABEL_PREFIX + "template"
CHECKPOINT_LABEL = LABEL_PREFIX + "checkpoint"  # name@version the image loads, or "none"
BAKED_LABEL = LABEL_PREFIX + "checkpoint-baked"  # "sha256:<manifest digest>" of a baked checkpoint
MODEL_FORMAT_LABEL = LABEL_PREFIX + "model-format"  # a baked version's: savedmodel, litert, frozen
TRAINABLE_LABEL = LABEL_PREFIX + "trainable"  # "true" when the image has the function's train.py
PORT_LABEL = LABEL_PREFIX + "port"  # the port the image's runtime listens on

# Containers (the docker target, `fn run`, `fn train --in-container`)
ROLE_LABEL = LABEL_PREFIX + "role"  # "replica" or "gateway" ("serve"/"train": fn run, fn train)
PROJECT_LABEL = LABEL_PREFIX + "project"  # project_id(): two projects never touch each other's
VERSION_LABEL = LABEL_PREFIX + "version"  # the function version a replica serves
SPEC_LABEL = LABEL_PREFIX + "spec"  # spec_digest(): what the container runs
STANDBY_LABEL = LABEL_PREFIX + "standby"  # "true": started as a warm pool's standby (a replica once claimed)
