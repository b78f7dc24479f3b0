"""Recipes: step names in order, refused when a step is unknown, planned, out of order or
missing from the build; the scoring of answers against a target or the source's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click
import numpy as np
import pytest

from servion.errors import InvalidInput, ValidationFailed
from servion.optimize import PLANNED, STEPS, ValidationSet, parse_recipe
from servion.optimize.scoring import (
    Judged,
    equivalence,
    expected_answers,
    judged_output,
    score,
)
from servion.optimize.steps import default_recipe, plan
from servion.runtime import Signature, TensorSpec

HAS_ONNX_STEPS = importlib.util.find_spec("servion.optimize.onnx_steps") is not None


def test_steps_are_read_in_order_from_lists_and_repeats() -> None:
    assert parse_recipe(["onnx, graph", "int8-dynamic"]) == ["onnx", "graph", "int8-dynamic"]
    with pytest.raises(InvalidInput, match="has an empty step"):
        parse_recipe(["onnx,,graph"])
    assert default_recipe("sklearn-joblib") == ["onnx"] and default_recipe("onnx") == ["graph"]


@pytest.mark.parametrize(
    ("names", "fmt", "message"),
    [
        (["foo"], "onnx", "unknown step 'foo' (known: onnx, graph, int8-dynamic"),
        (["prune"], "onnx", "step 'prune' takes a torch-export, torchscript model, but first"),
        (["distill"], "onnx", "step 'distill': name the student: distill-mlp or distill-trees"),
        (
            ["int8-dynamic"],
            "sklearn-joblib",
            "step 'int8-dynamic' takes an ONNX model, but first the model is sklearn-joblib:"
            " put 'onnx' before it",
        ),
        (
            ["onnx", "onnx"],
            "sklearn-skops",
            "step 'onnx' takes a sklearn-joblib, sklearn-pickle, sklearn-skops, torch-export,"
            " torchscript model, but after onnx the model is onnx",
        ),
        (["onnx"], "python", "step 'onnx' takes a sklearn-joblib"),
        ([], "onnx", "the recipe has no step"),
    ],
)
def test_a_recipe_that_cannot_run_is_refused_naming_the_step(
    names: list[str], fmt: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        plan(names, fmt)
    assert message in refused.value.message


@pytest.mark.skipif(HAS_ONNX_STEPS, reason="this build has the ONNX steps")
def test_a_step_missing_from_the_build_is_named() -> None:
    with pytest.raises(InvalidInput, match="step 'graph' is not in this build of servion"):
        plan(["onnx", "graph"], "sklearn-joblib")


def test_every_step_gives_onnx_and_planned_names_are_not_steps() -> None:
    assert not set(PLANNED) & set(STEPS)
    assert [s.name for s in plan(["onnx"], "sklearn-pickle")] == ["onnx"]
    assert {n for n, s in STEPS.items() if s.faithful} == {"onnx", "graph"}


def signature(*outputs: TensorSpec) -> Signature:
    return Signature((TensorSpec("input", "FP32", (-1, 2)),), outputs)


def test_the_judged_output_is_a_label_else_a_value_else_a_row_of_scores() -> None:
    label = TensorSpec("label", "INT64", (-1,))
    proba = TensorSpec("probabilities", "FP64", (-1, 3))
    value = TensorSpec("prediction", "FP64", (-1,))
    assert judged_output(signature(proba, label)) == Judged("label", "label")
    assert judged_output(signature(value)) == Judged("prediction", "value")
    assert judged_output(signature(proba)) == Judged("probabilities", "argmax")
    with pytest.raises(ValidationFailed, match="no output to judge"):
        judged_output(signature(TensorSpec("image", "FP32", (-1, 3, 3))))


def data(target: object) -> ValidationSet:
    x = {"input": np.zeros((4, 2), np.float32)}
    return ValidationSet(Path("val.csv"), "0" * 64, x, np.asarray(target), "y")


def test_a_target_is_read_as_the_models_labels_or_refused() -> None:
    labels = Judged("label", "label")
    source = np.array([0, 1, 1, 0])
    got = expected_answers(data(["0", "1", "1.0", "1"]), labels, source)
    assert got.dtype == source.dtype and got.tolist() == [0, 1, 1, 1]
    assert score(labels, source, got) == 0.75
    with pytest.raises(ValidationFailed, match=r"target 'y' holds 'cat', 'dog': not numbers"):
        expected_answers(data(["cat", "dog", "cat", "dog"]), labels, source)
    with pytest.raises(ValidationFailed, match=r"target 'y' holds 0\.5, not a class label"):
        expected_answers(data([0, 0.5, 1, 1]), labels, source)
    with pytest.raises(ValidationFailed, match=r"none of which the model predicts \(0, 1\)"):
        expected_answers(data([7, 8, 7, 8]), labels, source)
    text = np.array([b"cat", b"dog", b"dog", b"cat"], dtype=object)
    assert expected_answers(data(["cat", "dog", "cat", "cat"]), labels, text).tolist() == [
        b"cat", b"dog", b"cat", b"cat"
    ]  # fmt: skip


def test_regressors_are_scored_by_r2_and_agreement_is_the_sources_answers() -> None:
    value = Judged("prediction", "value")
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    assert score(value, truth, truth) == 1.0
    assert score(value, np.full(4, truth.mean()), truth) == 0.0
    source = np.array([1.0, 2.0, 3.0, 5.0])
    no_target = ValidationSet(Path("v.npz"), "0" * 64, {}, None, None)
    assert expected_answers(no_target, value, source) is source


def test_equivalence_takes_the_worst_float_output_and_the_share_of_same_labels() -> None:
    labels = Judged("label", "label")
    before = {"label": np.array([0, 1, 1, 0]), "probabilities": np.array([[0.9, 0.1]] * 4)}
    after = {"label": np.array([0, 1, 0, 0]), "probabilities": np.array([[0.7, 0.3]] * 4)}
    moved = equivalence(labels, before, after)
    assert moved.worst_output == "probabilities" and moved.label_agreement == 0.75
    assert moved.max_score_diff == pytest.approx(0.2)
    values = Judged("prediction", "value")
    big = {"prediction": np.array([1000.0, np.nan])}
    close = equivalence(values, big, {"prediction": np.array([1001.0, np.nan])})
    assert close.max_score_diff == pytest.approx(1e-3) and close.label_agreement is None
    broken = equivalence(values, big, {"prediction": np.array([1000.0, 2.0])})
    assert broken.max_score_diff == float("inf")


def test_the_help_names_every_step() -> None:
    from servion.cli.optimize import optimize as command
    from servion.optimize import STEPS

    (steps,) = [p for p in command.params if p.name == "steps"]
    assert isinstance(steps, click.Option) and steps.help is not None
    assert [name for name in STEPS if name not in steps.help] == []
