"""Hotel photo tagging: a score in (0, 1) for each tag of a photo.

The talk's image-tagging model: several tags per photo (``inside``, ``outside``, ``bed``,
``breakfast_buffet``, ``balcony``, ``pool``, ``sea_view``). The tags form a hierarchy
(``bed`` and ``breakfast_buffet`` are ``inside``; ``balcony``, ``pool`` and ``sea_view`` are
``outside``) that the exported model enforces: a parent never scores below its children.

The runtime decodes any JPEG/PNG and resizes it to 64x64 RGB before calling ``tagger``:

    python functions/tagger/train.py --sample-photo photo.jpg --labels sea_view,balcony
    curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8080/function/tagger
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnserve import Image, predict


def load(checkpoint_dir: str) -> Any:
    """Load the SavedModel in ``checkpoint_dir`` (fetched and verified by the runtime)."""
    import tensorflow as tf

    return tf.saved_model.load(checkpoint_dir)


@predict(loader=load, max_batch_size=64)
def tagger(model: Any, photo: Image[64, 64]) -> dict[str, float]:
    """Scores of each tag for a hotel photo; parents (inside/outside) >= their children."""
    # One call of the compiled serving signature for the whole batch of photos. The tag
    # names come from the model, so a retrained model with more tags needs no code change.
    outputs = model.signatures["serving_default"](photo=np.asarray(photo, dtype=np.uint8))
    return {tag: scores.numpy() for tag, scores in sorted(outputs.items())}
