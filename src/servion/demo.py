"""The quickstart's demo model: a real scikit-learn pipeline exported to ONNX."""

from __future__ import annotations

from pathlib import Path

N_FEATURES = 4
EXAMPLE_ROW = [0.5, -1.2, 3.3, 0.7]


def build_demo_model(target: Path) -> Path:
    """Train StandardScaler + LogisticRegression on synthetic data and save it as ONNX.

    Deterministic (fixed seeds), so the same bytes come out on every machine
    with the same library versions.
    """
    try:
        from skl2onnx import to_onnx
        from sklearn.datasets import make_classification
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as exc:
        raise SystemExit(
            f"the quickstart builds its model with scikit-learn: pip install 'servion[sklearn]' "
            f"({exc.name} is missing)"
        ) from None
    import numpy as np

    x, y = make_classification(
        n_samples=500,
        n_features=N_FEATURES,
        n_informative=3,
        n_redundant=0,
        n_classes=3,
        n_clusters_per_class=1,
        random_state=0,
    )
    x = x.astype(np.float32)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    onnx_model = to_onnx(
        pipeline,
        x[:1],
        options={"zipmap": False},
        initial_types=None,
        target_opset=17,
        final_types=None,
        naming="demo_",
    )
    # skl2onnx names the input after the sample ("X"); rename to the documented "input".
    graph = onnx_model.graph
    old = graph.input[0].name
    graph.input[0].name = "input"
    for node in graph.node:
        node.input[:] = ["input" if i == old else i for i in node.input]
    for out, name in zip(graph.output, ("label", "probabilities"), strict=True):
        for node in graph.node:
            node.output[:] = [name if o == out.name else o for o in node.output]
        out.name = name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(onnx_model.SerializeToString())
    return target
