"""An MLServer custom runtime for ONNX models: `MLModel` subclass calling onnxruntime, the way
MLServer's docs serve a framework it has no built-in runtime for. model-settings.json names it as
`"implementation": "mlserver_runtime.OnnxRuntime"` and the model file as `parameters.uri`;
`parameters.extra.intra_op_threads` sets ONNX Runtime's intra-op threads (default 1)."""
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        uri = await get_model_uri(self._settings)
        extra = (self._settings.parameters.extra or {}) if self._settings.parameters else {}
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(extra.get("intra_op_threads", 1))
        so.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(uri, so, providers=["CPUExecutionProvider"])
        self._out_names = [o.name for o in self._sess.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        outs = self._sess.run(self._out_names, feeds)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(n, o) for n, o in zip(self._out_names, outs)],
        )
