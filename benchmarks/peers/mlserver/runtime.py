"""Seldon MLServer custom runtime: the recs checkpoint (id lookups, then the SavedModel), v2 protocol.

MLServer's adaptive batching (``max_batch_size``/``max_batch_time`` in model-settings.json,
written by compare.py) merges concurrent v2 requests along the first dimension before
``predict`` and splits the answer after it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recs_model import RecsModel  # benchmarks/peers, beside this folder


class SavedModelRuntime(MLModel):
    async def load(self) -> bool:
        uri = self.settings.parameters.uri if self.settings.parameters else None
        self._model = RecsModel(str(uri))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {i.name: NumpyCodec.decode_input(i).reshape(-1) for i in payload.inputs}
        probability = self._model(inputs)
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("probability", probability)]
        )
