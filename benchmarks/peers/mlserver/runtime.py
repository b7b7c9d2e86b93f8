"""Seldon MLServer custom runtime: the recs SavedModel's serving signature behind the v2 protocol.

MLServer's adaptive batching (``max_batch_size``/``max_batch_time`` in model-settings.json,
written by compare.py) merges concurrent v2 requests along the first dimension before
``predict`` and splits the answer after it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

DTYPES = {"day_of_week": np.int64, "hotel_id": np.int64, "hotel_price": np.float32}


class SavedModelRuntime(MLModel):
    async def load(self) -> bool:
        import tensorflow as tf

        uri = self.settings.parameters.uri if self.settings.parameters else None
        self._signature: Any = tf.saved_model.load(uri).signatures["serving_default"]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {
            i.name: NumpyCodec.decode_input(i).reshape(-1).astype(DTYPES.get(i.name, object))
            for i in payload.inputs
        }
        probability = self._signature(**inputs)["probability"].numpy()
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("probability", probability)]
        )
