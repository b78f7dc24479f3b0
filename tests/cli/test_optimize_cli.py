"""``servion optimize`` run as a real process on a real registry: the ONNX version is
registered with its lineage and report, a step that moves the answers or costs accuracy
fails the command and leaves nothing behind, refused input exits 2 naming what is wrong,
and every run is audited."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from conftest import N_FEATURES, TabularModels, cli
from servion.audit import read_events
from servion.config import Settings
from servion.registry import ModelRegistry, RegisterRequest

FAST = ("--measure-seconds", "0.1")


@dataclass
class Home:
    home: Path
    files: Path
    tmp: Path
    """TMPDIR of the commands: whatever a run leaves behind shows up here."""

    @property
    def env(self) -> dict[str, str]:
        return {"TMPDIR": str(self.tmp)}

    def optimize(self, *args: str) -> tuple[int, str, str]:
        done = cli(self.home, "optimize", *args, *FAST, env=self.env)
        return done.returncode, done.stdout, done.stderr

    def leftovers(self) -> list[Path]:
        """Folders servion left in TMPDIR (onnxruntime keeps a session file of its own)."""
        return [p for p in self.tmp.iterdir() if p.name.startswith("servion-")]

    def versions(self, name: str) -> list[str]:
        registry = ModelRegistry(Settings.load(home=self.home))
        try:
            return [mv.version for mv in registry.list_versions(name)]
        finally:
            registry.close()

    def events(self, version: str) -> list[dict[str, Any]]:
        audit_dir = Settings.load(home=self.home).audit_dir
        return [
            e
            for e in read_events(audit_dir)
            if e["operation"] == "optimize" and e["model_version"] == version
        ]


def lossy_model(folder: Path) -> None:
    """A logistic regression over raw features near 4e6 (epoch-like offsets): its float64
    arithmetic cancels an intercept of millions that ONNX's float32 cannot hold, so the
    converted model really answers differently on some rows."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    z = rng.standard_normal((2000, 8))
    y = (z @ rng.standard_normal(8) + 0.5 * rng.standard_normal(2000) > 0).astype(int)
    model = LogisticRegression(max_iter=500).fit(z, y)
    offset = 4e6
    model.intercept_ = model.intercept_ - model.coef_ @ np.full(8, offset)
    joblib.dump(model, folder / "lossy.joblib")
    np.savez(folder / "lossy.npz", input=(z + offset).astype(np.float32), y=y)


def mlp_model(folder: Path, x: np.ndarray, y: np.ndarray) -> None:
    """A small MLP: MatMul weights for int8 to quantize (the tabular pipeline's linear
    model converts to ONNX-ML operators, which have none)."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=300, random_state=0))
    joblib.dump(model.fit(x, y), folder / "mlp.joblib")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, tabular: TabularModels) -> Iterator[Home]:
    from sklearn.datasets import make_classification

    root = tmp_path_factory.mktemp("optimize-cli")
    files, tmp = root / "files", root / "tmp"
    files.mkdir()
    tmp.mkdir()
    _, y = make_classification(n_samples=600, n_features=N_FEATURES, random_state=0)
    header = ",".join(f"f{j}" for j in range(N_FEATURES))
    rows = np.column_stack([tabular.x, y])
    np.savetxt(
        files / "val.csv", rows, delimiter=",", header=header + ",y", comments="", fmt="%.9g"
    )
    np.savez(files / "val.npz", input=tabular.x, y=y)
    lossy_model(files)
    mlp_model(files, tabular.x, y)
    registry = ModelRegistry(Settings.load(home=root / "home"))
    try:
        registry.register(RegisterRequest("tabular", tabular.joblib, "v1.0.0"))
        registry.register(RegisterRequest("lossy", files / "lossy.joblib", "v1.0.0"))
        registry.register(RegisterRequest("mlp", files / "mlp.joblib", "v1.0.0"))
    finally:
        registry.close()
    yield Home(root / "home", files, tmp)


def test_the_onnx_version_is_registered_with_its_lineage_and_report(home: Home) -> None:
    csv = home.files / "val.csv"
    code, out, err = home.optimize(
        "tabular:v1.0.0", "--to-version", "v1.1.0", "--validate", str(csv), "--target", "y"
    )
    assert code == 0, err
    assert err == ""  # piped: no progress, no warning (the signature is the source's)
    lines = out.splitlines()
    assert lines[0] == "tabular:v1.0.0 -> tabular:v1.1.0: accuracy against target 'y'"
    assert lines[1].split()[:3] == ["STEP", "FORMAT", "SIZE"]
    assert lines[3].split()[:2] == ["source", "sklearn-joblib"]
    assert lines[4].split()[:2] == ["onnx", "onnx"] and lines[4].split()[-1] == "ok"
    assert lines[5].startswith("registered tabular:v1.1.0 (onnx, ")
    assert "x the rows/s at batch 32" in lines[5]

    shown = cli(home.home, "models", "show", "tabular:v1.1.0").stdout
    assert "  derived from   tabular:v1.0.0\n" in shown
    assert "  recipe         onnx (max accuracy drop 0.01)\n" in shown
    assert f"  validated on   {csv} (600 rows, target 'y', sha256 " in shown
    assert re.search(r"  report         accuracy 0\.\d{4} \(source 0\.\d{4}, drop", shown)

    as_json = json.loads(cli(home.home, "models", "show", "tabular:v1.1.0", "--json").stdout)
    source = json.loads(cli(home.home, "models", "show", "tabular:v1.0.0", "--json").stdout)
    assert as_json["format"] == "onnx" and as_json["held"] is None
    assert as_json["signature"] == source["signature"]  # clients send and read the same
    assert source["lineage"] is None
    lineage = as_json["lineage"]
    assert lineage["derived_from"] == "tabular:v1.0.0"
    assert lineage["recipe"]["steps"] == ["onnx"]
    assert lineage["validation"] == {
        "path": str(csv),
        "sha256": hashlib.sha256(csv.read_bytes()).hexdigest(),
        "rows": 600,
        "target": "y",
    }
    report = lineage["report"]
    assert report["passed"] and report["metric"] == "accuracy"
    assert [s["step"] for s in report["stages"]] == ["source", "onnx"]
    for stage in report["stages"]:
        assert [t["batch_size"] for t in stage["latency"]] == [1, 32]
        assert stage["rows_per_s"] > 0 and stage["size_bytes"] > 0
    converted = report["stages"][1]
    assert converted["equivalence"]["label_agreement"] == 1.0
    assert converted["equivalence"]["max_score_diff"] < 1e-4 and converted["drop"] == 0.0

    started, success = home.events("v1.1.0")
    assert (started["outcome"], success["outcome"]) == ("started", "success")
    assert success["resources"]["source"] == "tabular:v1.0.0"
    assert "model:tabular:v1.1.0" in success["resources_affected"]
    assert success["performance_metrics"]["score_result"] == converted["score"]
    assert home.leftovers() == []


def test_a_step_that_moves_the_answers_fails_and_leaves_nothing_behind(home: Home) -> None:
    artifacts = Settings.load(home=home.home).artifacts_dir
    stored = sorted(artifacts.iterdir())
    data = str(home.files / "lossy.npz")
    base = ("lossy:v1.0.0", "--to-version", "v1.1.0", "--validate", data, "--target", "y")
    code, out, err = home.optimize(*base)
    assert code == 1, err
    assert re.search(
        r"error: step 'onnx' changed the answers: 'probabilities' differs by up to 0\.\d+ from"
        r" the model before it \(--max-score-diff 0\.001\); labels agree on \d\d\.\d\d% of 2000"
        r" rows; nothing registered",
        err,
    ), err
    assert out.splitlines()[4].split()[-1] == "failed"
    # Told to let the gate judge, the gate refuses: the accuracy really drops.
    loose = ("--max-score-diff", "1", "--min-label-agreement", "0", "--json")
    code, out, err = home.optimize(*base, *loose)
    assert code == 1
    assert re.search(
        r"error: step 'onnx' costs 0\.\d{4} of accuracy \(0\.\d{4} -> 0\.\d{4}\), more than"
        r" --max-accuracy-drop 0\.01; nothing registered",
        err,
    ), err
    answer = json.loads(out)
    assert answer["registered"] is None and not answer["report"]["passed"]
    assert answer["report"]["stages"][1]["drop"] > 0.01
    # Nothing registered, stored or left in the temporary folder.
    assert home.versions("lossy") == ["v1.0.0"]
    assert sorted(artifacts.iterdir()) == stored
    assert home.leftovers() == []
    events = home.events("v1.1.0")
    failures = [e for e in events if e["model_name"] == "lossy" and e["outcome"] == "failure"]
    assert len(failures) == 2
    detail = failures[1]["error_detail"]
    assert isinstance(detail, dict) and "costs" in str(detail["message"])


def refusals(home: Home) -> list[tuple[tuple[str, ...], str]]:
    files = home.files
    (files / "dir.csv").mkdir(exist_ok=True)
    (files / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (files / "val.json").write_text("{}")
    np.savez(files / "narrow.npz", input=np.zeros((5, 5), np.float32))
    np.savetxt(files / "wrong.csv", np.ones((3, N_FEATURES + 1)), delimiter=",", comments="",
               header=",".join([*(f"f{j}" for j in range(N_FEATURES)), "y"]), fmt="%d")  # fmt: skip
    np.savetxt(files / "labels.csv", np.full((3, N_FEATURES + 1), 7), delimiter=",", comments="",
               header=",".join([*(f"f{j}" for j in range(N_FEATURES)), "y"]), fmt="%d")  # fmt: skip
    val = str(files / "val.csv")
    ok = ("--to-version", "v2.0.0", "--validate", val, "--target", "y")

    def run(source: str = "tabular:v1.0.0", *more: str) -> tuple[str, ...]:
        return (source, *ok, *more)

    def data(file: str, *more: str) -> tuple[str, ...]:
        return ("tabular:v1.0.0", "--to-version", "v2.0.0", "--validate", file, *more)

    return [
        (run("nomodel:v1.0.0"), "error: unknown model 'nomodel'"),
        (run("tabular:v9.0.0"), "error: unknown version 'v9.0.0' of model 'tabular'"),
        (run("tabular"), "error: name the version to optimize: tabular:VERSION"),
        (run("x:v1.0.0"), "error: invalid model name 'x'"),
        (
            ("tabular:v1.0.0", "--to-version", "v1.0.0", "--validate", val),
            "error: tabular:v1.0.0 is already registered: choose another --to-version",
        ),
        (
            ("tabular:v1.0.0", "--to-version", "1.2", "--validate", val),
            "error: invalid version '1.2'",
        ),
        (data(str(files / "nope.csv")), "error: validation file 'nope.csv' does not exist"),
        (data(str(files / "dir.csv")), "error: validation file 'dir.csv' is a folder"),
        (data(str(files / "broken.npz")), "error: cannot read validation file 'broken.npz'"),
        (data(str(files / "val.json")), "'val.json': use .npz, .csv or .parquet, not '.json'"),
        (
            data(str(files / "narrow.npz")),
            "error: validation input 'input' has shape [5, 5]; the model takes [-1, 32]",
        ),
        (
            data(str(files / "wrong.csv")),
            "(or exactly 32 columns for a single-input model); if one column is the expected"
            " output, name it with --target",
        ),
        (
            data(val, "--target", "label"),
            "error: validation file 'val.csv' has no 'label' (it has 'f0',",
        ),
        (
            data(str(files / "labels.csv"), "--target", "y"),
            "error: target 'y' holds values (7) none of which the model predicts",
        ),
        (
            run("tabular:v1.0.0", "--steps", "quantize"),
            "error: unknown step 'quantize' (known: onnx,",
        ),
        (
            run("tabular:v1.0.0", "--steps", "int8-dynamic,onnx"),
            "error: step 'int8-dynamic' takes an ONNX model, but first the model is"
            " sklearn-joblib: put 'onnx' before it",
        ),
        (
            run("tabular:v1.0.0", "--steps", "onnx", "--steps", "prune"),
            "error: step 'prune' takes a torch-export, torchscript model",
        ),
        (run("tabular:v1.0.0", "--steps", "onnx,"), "error: --steps 'onnx,' has an empty step"),
        (run("tabular:v1.0.0", "--max-accuracy-drop", "2"), "'--max-accuracy-drop': 2.0 is not"),
    ]


def test_refused_input_exits_2_naming_what_is_wrong(home: Home) -> None:
    cases = refusals(home)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: home.optimize(*case[0]), cases))
    for (args, message), (code, _, err) in zip(cases, results, strict=True):
        assert code == 2, (args, err)
        assert message in err, (args, err)
        assert "Traceback" not in err
    assert "v2.0.0" not in home.versions("tabular")
    assert home.leftovers() == []


def test_a_recipe_through_the_onnx_steps(home: Home) -> None:
    pytest.importorskip("servion.optimize.onnx_steps")
    code, out, err = home.optimize(
        "mlp:v1.0.0", "--to-version", "v1.1.0", "--validate", str(home.files / "val.npz"),
        "--target", "y", "--steps", "onnx,graph,int8-dynamic", "--json",
    )  # fmt: skip
    assert code == 0, err
    answer = json.loads(out)
    stages = answer["report"]["stages"]
    assert [s["step"] for s in stages] == ["source", "onnx", "graph", "int8-dynamic"]
    assert [s["equivalence_checked"] for s in stages[1:]] == [True, True, False]
    assert all(s["drop"] <= 0.01 for s in stages)
    assert answer["registered"]["format"] == "onnx"
    shown = json.loads(cli(home.home, "models", "show", "mlp:v1.1.0", "--json").stdout)
    assert shown["lineage"]["recipe"]["steps"] == ["onnx", "graph", "int8-dynamic"]
    assert stages[-1]["size_bytes"] * 1.5 < stages[-2]["size_bytes"]  # int8 weights
