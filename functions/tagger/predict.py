"""Hotel photo tagging: a score in (0, 1) for each tag of a photo.

The talk's image-tagging model: several tags per photo (``inside``, ``outside``, ``bed``,
``breakfast_buffet``, ``balcony``, ``pool``, ``sea_view``). The tags form a hierarchy
(``bed`` and ``breakfast_buffet`` are ``inside``; ``balcony``, ``pool`` and ``sea_view`` are
``outside``) that the exported model enforces: a parent never scores below its children.
The same file serves the trained SavedModel and every variant ``fn optimize`` makes of it
(a quantized LiteRT flatbuffer, a frozen graph): ``fnserve.load_model`` calls each alike.

The runtime decodes any JPEG/PNG and resizes it to 64x64 RGB before calling ``tagger``:

    python functions/tagger/train.py --sample-photo photo.jpg --labels sea_view,balcony
    curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8080/function/tagger
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fnserve import Image, load_model, predict

# Which tags contain which (the model's hierarchy, as train.py trains it): enforced again here,
# on every variant's scores, since quantization rounds a parent and its child apart.
CHILDREN = {"inside": ("bed", "breakfast_buffet"), "outside": ("balcony", "pool", "sea_view")}


@predict(loader=load_model, max_batch_size=64)
def tagger(model: Any, photo: Image[64, 64]) -> dict[str, float]:
    """Scores of each tag for a hotel photo; parents (inside/outside) >= their children."""
    # One model call for the whole batch of photos. The tag names come from the model, so a
    # retrained model with more tags needs no code change.
    scores = model(photo=np.asarray(photo, dtype=np.uint8))
    for parent, children in CHILDREN.items():
        if parent in scores:
            scores[parent] = np.maximum.reduce(
                [scores[parent], *(scores[c] for c in children if c in scores)]
            )
    return dict(sorted(scores.items()))
