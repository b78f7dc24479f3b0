"""MLflow model folders written by MLflow itself (``mlflow.<flavor>.save_model``), one per
flavor servion serves and one per way it refuses, plus MLmodel files edited to be hostile."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from servion.errors import ServionError, UnsafeArtifact, ValidationFailed

RUN_ID = "5f0c2a9e8d7b4c61a3e2f1d0c9b8a7f6"
COLUMNS = ["amount", "age", "balance", "tenure"]
# MLflow otherwise loads each model in a child process to infer its pip requirements.
NO_INFERENCE: dict[str, Any] = {"pip_requirements": []}
X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
WRAPPER = """
class Model:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    outputs = [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]

    def load(self):
        pass

    def predict(self, inputs):
        return {"y": inputs["x"]}
"""


@dataclass(frozen=True)
class Accepted:
    """A folder servion serves, and what its runtime must answer for ``X``."""

    folder: Path
    format: str
    flavor: str
    output: str
    expected: np.ndarray


@dataclass(frozen=True)
class Refused:
    """A folder servion refuses, with the error and the words that say why."""

    folder: Path
    error: type[ServionError]
    message: str


@dataclass
class MlflowFolders:
    accepted: dict[str, Accepted] = field(default_factory=dict)
    refused: dict[str, Refused] = field(default_factory=dict)


def _origin() -> Any:
    from mlflow.models import Model

    # What log_model passes save_model: the run and the artifact path inside it.
    return Model(run_id=RUN_ID, artifact_path="model")


def make_mlflow_folders(root: Path) -> MlflowFolders:
    made = MlflowFolders()
    _sklearn(root, made)
    _onnx(root, made)
    _pytorch(root, made)
    _boosters(root, made)
    _without_servable_flavor(root, made)
    _hostile(root, made)
    return made


def _sklearn(root: Path, made: MlflowFolders) -> None:
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(X, Y)
    # Named columns in MLflow's signature; servion's probe names the one input "input".
    signature = infer_signature(pd.DataFrame(X, columns=COLUMNS), Y)
    for how, fmt in (("skops", "sklearn-skops"), ("pickle", "sklearn-pickle")):
        folder = root / f"sklearn-{how}"
        mlflow.sklearn.save_model(
            model,
            folder,
            serialization_format=how,
            signature=signature,
            mlflow_model=_origin(),
            **NO_INFERENCE,
        )
        made.accepted[f"sklearn-{how}"] = Accepted(
            folder, fmt, "sklearn", "label", model.predict(X)
        )
    folder = root / "sklearn-cloudpickle"
    mlflow.sklearn.save_model(model, folder, serialization_format="cloudpickle", **NO_INFERENCE)
    made.refused["sklearn-cloudpickle"] = Refused(
        folder, UnsafeArtifact, r"saved with cloudpickle.*serialization_format=\"skops\""
    )


def _onnx(root: Path, made: MlflowFolders) -> None:
    import mlflow.onnx
    from onnx import TensorProto, helper, numpy_helper
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(X, Y)
    graph = to_onnx(model, X[:1], options={"zipmap": False}, target_opset=17)
    mlflow.onnx.save_model(graph, root / "onnx", mlflow_model=_origin(), **NO_INFERENCE)
    made.accepted["onnx"] = Accepted(root / "onnx", "onnx", "onnx", "label", model.predict(X))

    # A weight over onnx's 1 KiB threshold: MLflow saves it beside the graph.
    weights = np.random.default_rng(1).normal(size=(4, 128)).astype(np.float32)
    matmul = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMul", ["x", "W"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 128])],
            [numpy_helper.from_array(weights, "W")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    mlflow.onnx.save_model(matmul, root / "onnx-external", **NO_INFERENCE)
    assert len(list((root / "onnx-external").iterdir())) > 5, "no external data file written"
    made.accepted["onnx-external"] = Accepted(
        root / "onnx-external", "onnx", "onnx", "y", X @ weights
    )


def _pytorch(root: Path, made: MlflowFolders) -> None:
    import mlflow.pytorch
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    with torch.inference_mode():
        expected = net(torch.from_numpy(X)).numpy()
    mlflow.pytorch.save_model(net, root / "pytorch-pt2", input_example=X[:2], **NO_INFERENCE)
    made.accepted["pytorch-pt2"] = Accepted(
        root / "pytorch-pt2", "torch-export", "pytorch", "output", expected
    )
    mlflow.pytorch.save_model(
        torch.jit.script(net),
        root / "pytorch-script",
        serialization_format="pickle",
        **NO_INFERENCE,
    )
    made.accepted["pytorch-script"] = Accepted(
        root / "pytorch-script",
        "torchscript",
        "pytorch",
        "output",
        expected,
    )
    mlflow.pytorch.save_model(
        net, root / "pytorch-pickle", serialization_format="pickle", **NO_INFERENCE
    )
    made.refused["pytorch-pickle"] = Refused(
        root / "pytorch-pickle",
        UnsafeArtifact,
        r"saved this model with torch\.save.*untrusted globals.*torch\.nn\.modules.*"
        r"serialization_format=\"pt2\" \(torch\.export\).*TorchScript.*convert it to ONNX",
    )


def _boosters(root: Path, made: MlflowFolders) -> None:
    import lightgbm as lgb
    import mlflow.lightgbm
    import mlflow.xgboost
    import xgboost as xgb

    classifier = xgb.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1).fit(X, Y)
    mlflow.xgboost.save_model(classifier, root / "xgboost", **NO_INFERENCE)
    made.accepted["xgboost"] = Accepted(
        root / "xgboost", "xgboost", "xgboost", "label", classifier.predict(X)
    )
    mlflow.xgboost.save_model(
        classifier, root / "xgboost-binary", model_format="xgb", **NO_INFERENCE
    )
    made.refused["xgboost-binary"] = Refused(
        root / "xgboost-binary", ValidationFailed, r"model_format 'xgb' is not served"
    )
    params = {"objective": "binary", "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(X, Y), num_boost_round=5)
    mlflow.lightgbm.save_model(booster, root / "lightgbm", **NO_INFERENCE)
    labels = (np.asarray(booster.predict(X)) > 0.5).astype(np.int64)
    made.accepted["lightgbm"] = Accepted(root / "lightgbm", "lightgbm", "lightgbm", "label", labels)
    wrapped = lgb.LGBMClassifier(n_estimators=5, n_jobs=1, verbose=-1).fit(X, Y)
    mlflow.lightgbm.save_model(wrapped, root / "lightgbm-sklearn", **NO_INFERENCE)
    made.refused["lightgbm-sklearn"] = Refused(
        root / "lightgbm-sklearn", ValidationFailed, r"LGBMClassifier was saved as skops.*booster_"
    )


def _without_servable_flavor(root: Path, made: MlflowFolders) -> None:
    import mlflow.pyfunc
    from mlflow.models import Model

    def predict(self: Any, context: Any, model_input: Any) -> Any:
        return model_input

    echo = type("Echo", (mlflow.pyfunc.PythonModel,), {"predict": predict})
    mlflow.pyfunc.save_model(root / "pyfunc", python_model=echo(), **NO_INFERENCE)
    made.refused["pyfunc"] = Refused(
        root / "pyfunc",
        ValidationFailed,
        r"only the python_function flavor.*runs the model's own code.*--format python --trust-code",
    )
    # What the refusal suggests: the user's own model.py, trusted, beside MLflow's files.
    wrapped = root / "pyfunc-wrapped"
    shutil.copytree(root / "pyfunc", wrapped)
    (wrapped / "model.py").write_text(WRAPPER)
    made.accepted["pyfunc-wrapped"] = Accepted(wrapped, "python", "python_function", "y", X)
    keras = Model(run_id=RUN_ID, artifact_path="model")
    keras.add_flavor("keras", keras_version="3.6.0", data="data")
    mlflow.pyfunc.add_to_model(keras, loader_module="mlflow.tensorflow")
    (root / "keras").mkdir()
    keras.save(str(root / "keras" / "MLmodel"))
    made.refused["unknown-flavor"] = Refused(
        root / "keras",
        ValidationFailed,
        r"no MLflow flavor servion serves in this model \(found: keras, python_function\);"
        r" servion serves: onnx; sklearn saved as skops or pickle",
    )


def _hostile(root: Path, made: MlflowFolders) -> None:
    onnx = root / "onnx"
    outside = root / "outside.onnx"
    shutil.copy(onnx / "model.onnx", outside)

    def data(value: str) -> Callable[[dict[str, Any]], None]:
        def edit(doc: dict[str, Any]) -> None:
            doc["flavors"]["onnx"]["data"] = value

        return edit

    refusals: list[tuple[str, Callable[[dict[str, Any]], None] | str, type[ServionError], str]] = [
        ("escape", data("../outside.onnx"), UnsafeArtifact, r"'\.\./outside\.onnx' points outside"),
        ("absolute", data(str(outside)), UnsafeArtifact, r"points outside the model folder"),
        ("not-yaml", "flavors:\n  onnx: {data: [model.onnx\n", ValidationFailed, "not valid YAML"),
        ("no-flavors", "- a list\n- not a model\n", ValidationFailed, "no 'flavors' mapping"),
        ("huge", "#" + "x" * (1 << 20) + "\n", ValidationFailed, r"MLmodel is over 1048576 bytes"),
    ]
    for name, change, error, message in refusals:
        folder = root / name / "model"
        shutil.copytree(onnx, folder)
        mlmodel = folder / "MLmodel"
        if isinstance(change, str):
            text = change if name != "huge" else mlmodel.read_text() + change
            mlmodel.write_text(text)
        else:
            doc = yaml.safe_load(mlmodel.read_text())
            change(doc)
            mlmodel.write_text(yaml.safe_dump(doc))
        made.refused[name] = Refused(folder, error, message)
    linked = root / "linked"
    shutil.copytree(onnx, linked)
    (linked / "model.onnx").unlink()
    (linked / "model.onnx").symlink_to(outside)
    made.refused["symlink"] = Refused(linked, UnsafeArtifact, r"'model\.onnx' goes through a symb")
