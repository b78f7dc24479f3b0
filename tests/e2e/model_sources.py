"""Small custom Python models for endpoint tests: slow, failing, flaky, unsure, doubling,
paced; and ONNX matrix products whose memory is their weights' (the cache's tests)."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SLOW_MODEL = """
import time

import numpy as np


class Slowpoke:
    inputs = [{"name": "X", "datatype": "FP32", "shape": [-1, 32]}]
    outputs = [{"name": "label", "datatype": "INT64", "shape": [-1]}]

    def load(self):
        pass

    def predict(self, inputs):
        time.sleep(0.4)
        return {"label": np.zeros(len(inputs["X"]), np.int64)}
"""

DOUBLER_MODEL = """
class Doubler:
    inputs = [{"name": "A", "datatype": "FP32", "shape": [-1, 32]}]
    outputs = [{"name": "twice", "datatype": "FP32", "shape": [-1, 32]}]

    def load(self):
        pass

    def predict(self, inputs):
        return {"twice": inputs["A"] * 2}
"""

FLAKY_MODEL = """
import itertools

import numpy as np

CALLS = itertools.count(1)


class Flaky:
    inputs = [{"name": "X", "datatype": "FP32", "shape": [-1, 32]}]
    outputs = [{"name": "label", "datatype": "INT64", "shape": [-1]}]

    def load(self):
        pass

    def predict(self, inputs):
        if inputs["X"][0, 0] == np.float32(0.25) and next(CALLS) % 2:
            raise RuntimeError("every other call fails")
        return {"label": np.zeros(len(inputs["X"]), np.int64)}
"""

UNSURE_MODEL = """
import numpy as np


class Unsure:
    inputs = [{"name": "X", "datatype": "FP32", "shape": [-1, 32]}]
    outputs = [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    ]

    def load(self):
        pass

    def predict(self, inputs):
        sure = inputs["X"][:, 0] > 0
        probabilities = np.where(sure[:, None], [[0.99, 0.01]], [[0.5, 0.5]]).astype(np.float32)
        return {"label": np.where(sure, 0, 1).astype(np.int64), "probabilities": probabilities}
"""

SHADOW_MODEL = """
import time

import numpy as np

SEEN = set()


class Shadow:
    inputs = [{"name": "X", "datatype": "FP32", "shape": [-1, 32]}]
    outputs = [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    ]

    def load(self):
        pass

    def predict(self, inputs):
        x = inputs["X"]
        if MODE == "fail" and x[0, 0] == np.float32(0.25):
            raise RuntimeError("shadow model failure")
        if MODE == "slow" and x[0, 0] == np.float32(0.25):
            time.sleep(0.3)
        n = len(x)
        if MODE == "checked":  # answers how many different inputs it has seen
            SEEN.add(x.tobytes())
            label = np.full(n, len(SEEN), np.int64)
            return {"label": label, "probabilities": np.zeros((n, 2), np.float32)}
        return {"label": np.zeros(n, np.int64), "probabilities": np.zeros((n, 2), np.float32)}
"""

PACED_MODEL = """
import time

import numpy as np


class Paced:
    inputs = [{"name": "X", "datatype": "FP32", "shape": [-1, 32]}]
    outputs = [{"name": "label", "datatype": "INT64", "shape": [-1]}]

    def load(self):
        pass

    def predict(self, inputs):
        time.sleep(PACE_S)
        return {"label": np.zeros(len(inputs["X"]), np.int64)}
"""


def write_matmul_onnx(path: Path, weights: np.ndarray) -> Path:
    """An ONNX graph ``Y = X @ W`` with ``weights`` as W (float32, [inputs, outputs])."""
    rows, cols = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])], "matmul",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", rows])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", cols])],
        [numpy_helper.from_array(weights, "W")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path
