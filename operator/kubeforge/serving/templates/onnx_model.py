"""Triton Python-backend model: runs the `model.onnx` beside it with ONNX Runtime.

Shipped by kubeforge (serving/templates/onnx_model.py) and copied into each local model
repository as `<model>/1/model.py`. Everything it needs comes from the model's
config.pbtxt: with `max_batch_size > 0` the requests of a dynamic batch are concatenated
into one ONNX Runtime call and the outputs split back by each request's batch size;
with `max_batch_size: 0` (detection: one image per call, variable detection count) each
request is its own call and gets the export's outputs unchanged.
"""

import json
import os
import shutil
import sys

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# The stub's embedded interpreter ignores PYTHONDONTWRITEBYTECODE (isolated config), so importing
# this file has just written __pycache__/ beside it: inside the served repository, i.e. the store.
# Each instance removes it after its own import, so none is left whatever the instances' order.
sys.dont_write_bytecode = True
shutil.rmtree(os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__"), ignore_errors=True)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.model_name = config["name"]
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.input_name = config["input"][0]["name"]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]]
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        threads = config.get("parameters", {}).get("intra_op_num_threads", {}).get("string_value")
        if threads:
            options.intra_op_num_threads = int(threads)
        # Errors only: Mask R-CNN's paste loop grows an output per detection and ORT warns at every step.
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = {o.name for o in self.session.get_outputs()}
        missing = [name for name, _ in self.outputs if name not in names]
        if missing:
            raise pb_utils.TritonModelException(
                f"{path}: config.pbtxt names outputs {missing} that the ONNX graph lacks (it has {sorted(names)})"
            )

    def _run(self, x):
        results = self.session.run([name for name, _ in self.outputs], {self.input_name: x})
        pairs = zip(results, self.outputs, strict=True)
        return [np.ascontiguousarray(r.astype(dtype, copy=False)) for r, (_, dtype) in pairs]

    def _response(self, arrays):
        tensors = [pb_utils.Tensor(name, arr) for (name, _), arr in zip(self.outputs, arrays, strict=True)]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _error(self, exc):
        return pb_utils.InferenceResponse(
            output_tensors=[], error=pb_utils.TritonError(f"model {self.model_name!r}: {exc}")
        )

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        if not self.batching or len(inputs) == 1:
            responses = []
            for x in inputs:
                try:
                    responses.append(self._response(self._run(x)))
                except Exception as exc:  # ORT raises several types; the client must get a message
                    responses.append(self._error(exc))
            return responses
        sizes = [x.shape[0] for x in inputs]
        try:
            outputs = self._run(np.concatenate(inputs, axis=0))
        except Exception as exc:
            return [self._error(exc) for _ in requests]
        splits = np.cumsum(sizes)[:-1]
        parts = [np.split(out, splits, axis=0) for out in outputs]
        return [self._response([part[i] for part in parts]) for i in range(len(requests))]
