"""ONNX-to-ONNX steps: graph optimization, float16 and TensorRT, and what every step shares.

Each step is a function from a ``source`` file to a new ``target`` file. The source is
never written; the target appears only once it is shown to be the same served model
(it loads in servion's ONNX runtime with the same inputs and outputs, and answers a
sample), and a step that fails leaves no file behind. int8 quantization lives in
``quantize.py`` on the same helpers. A bad argument raises ``InvalidInput``; a model
the tool cannot handle raises ``RuntimeFailure`` with the tool's own reason.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servion.config import RuntimeSettings
from servion.errors import InvalidInput, RuntimeFailure, ServionError, printable, quoted
from servion.runtime import Signature, make_runtime

if TYPE_CHECKING:  # onnx is imported where a graph is read, like everywhere in servion
    import onnx

__all__ = ["check_same_interface", "optimize_graph", "tensorrt", "to_fp16"]

# Built without reading SERVION_RUNTIME_* so the check does not depend on the caller's
# environment; one thread each is what a serving worker uses.
_CHECK_SETTINGS = RuntimeSettings.model_construct()


@dataclass(frozen=True)
class StepFiles:
    """What a step works on: the source, its graph and served signature, and the output
    path to write (a temporary name beside the target until the step is checked)."""

    source: Path
    model: onnx.ModelProto
    signature: Signature
    out: Path


def optimize_graph(source: Path, target: Path) -> None:
    """Write ``source`` with onnxruntime's basic and extended graph optimizations applied.

    Constant folding, redundant-node removal and operator fusion (MatMul+Add into Gemm,
    Gemm+activation, Conv+BatchNorm+activation, ...) are done once, offline, and saved.
    The level is ``ORT_ENABLE_EXTENDED``, not ``ALL``: ``ALL`` adds layout transforms
    (NCHWc blocking) tuned to this CPU's vector width, which onnxruntime says must only
    be served on the machine that made them. Extended fusions run on any CPU. Fused
    nodes are onnxruntime contrib operators (``com.microsoft``), so the result is for
    onnxruntime, which is what servion serves ONNX with.

    >>> optimize_graph(Path("mlp.onnx"), Path("mlp.opt.onnx"))  # doctest: +SKIP
    """
    import onnxruntime as ort

    with writing(source, target) as files:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(files.out)
        try:
            ort.InferenceSession(str(files.source), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise step_failure("graph optimization", source, exc) from exc


def to_fp16(source: Path, target: Path) -> None:
    """Write ``source`` with its float32 weights and computations in float16.

    Inputs and outputs stay float32 (``keep_io_types``), so clients send and receive what
    they did. Operators with no float16 form (the ONNX-ML ones of scikit-learn models,
    TopK, Resize, ...) stay float32 behind Casts. The file halves; on a CPU the speed does
    not: onnxruntime's CPU provider has no float16 MatMul, Gemm or Conv kernel on x86, so
    when it loads the model it surrounds them with Casts and folds the weights back to
    float32. The result computes in float32 with weights rounded to float16 (the
    accuracy gate measures what that costs); the time gain is for GPUs.

    >>> to_fp16(Path("mlp.onnx"), Path("mlp.fp16.onnx"))  # doctest: +SKIP
    """
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError:
        raise RuntimeFailure(
            "float16 conversion needs onnxconverter-common: pip install 'servion[optimize]'"
        ) from None
    with writing(source, target) as files:
        model = onnx.load(str(files.source))
        _name_nodes(model)
        # onnxconverter-common does not rewrite Cast(to=float32) nodes, so a graph that
        # casts its input (every skl2onnx model does) would feed float32 into float16
        # weights. Blocking those Casts makes the converter cast their output to float16.
        widening = [n.name for n in model.graph.node if _casts_to(n, onnx.TensorProto.FLOAT)]
        try:
            converted = float16.convert_float_to_float16(
                model, keep_io_types=True, node_block_list=widening
            )
        except Exception as exc:
            raise step_failure("float16 conversion", source, exc) from exc
        if not any(t.data_type == onnx.TensorProto.FLOAT16 for t in converted.graph.initializer):
            kept = sorted(
                {n.op_type for n in model.graph.node} & set(float16.DEFAULT_OP_BLOCK_LIST)
            )
            raise RuntimeFailure(
                f"float16 conversion would leave {quoted(source.name)} all float32: it has no "
                "float weights outside operators kept in float32"
                + (f" ({', '.join(kept)}, which have no float16 form)" if kept else "")
            )
        _pack_raw(converted)
        onnx.save(converted, str(files.out))


def tensorrt(source: Path, target: Path, *, fp16: bool = True) -> None:
    """Compile ``source`` into a TensorRT engine, written as an ONNX "EP context" model.

    Needs an NVIDIA GPU and onnxruntime-gpu built with TensorRT; anywhere else it raises
    ``RuntimeFailure`` saying what this machine has (it never quietly does nothing). The
    engine is embedded in the target, so it is one artifact; it is bound to the GPU
    model and TensorRT version that built it, and it loads only with onnxruntime's
    TensorRT provider (servion's ONNX runtime runs the CPU provider).

    >>> tensorrt(Path("cnn.onnx"), Path("cnn.trt.onnx"))  # doctest: +SKIP
    """
    import onnxruntime as ort

    read_model(source)
    _check_target(source, target)
    _require_tensorrt()
    provider = ("TensorrtExecutionProvider", {"trt_fp16_enable": "1" if fp16 else "0"})
    with writing(source, target, check=_names_check(provider)) as files:
        opts = ort.SessionOptions()
        opts.add_session_config_entry("ep.context_enable", "1")
        opts.add_session_config_entry("ep.context_file_path", str(files.out))
        opts.add_session_config_entry("ep.context_embed_mode", "1")
        try:
            ort.InferenceSession(str(files.source), opts, providers=[provider])
        except Exception as exc:
            raise step_failure("TensorRT compilation", source, exc) from exc


def check_same_interface(source: Path, target: Path) -> Signature:
    """Load both models in servion's ONNX runtime and return ``target``'s signature if it
    serves the same interface: the same input and output names, datatypes and ranks, and
    every input dimension the source leaves free still free. Raises ``RuntimeFailure``
    naming the first difference (``InvalidInput`` if the source itself does not load).

    >>> check_same_interface(Path("mlp.onnx"), Path("mlp.int8.onnx"))  # doctest: +SKIP
    Signature(inputs=(TensorSpec(name='X', datatype='FP32', shape=(-1, 64)),), ...)
    """
    before = served_signature(source, InvalidInput)
    after = served_signature(target, RuntimeFailure)
    difference = interface_difference(before, after)
    if difference is not None:
        raise RuntimeFailure(
            f"{quoted(target.name)} does not serve the interface of {quoted(source.name)}: "
            + difference
        )
    return after


# --- shared by the steps (here and in quantize.py) -----------------------------------

Check = Callable[[StepFiles], None]


def _check_served(files: StepFiles) -> None:
    after = served_signature(files.out, RuntimeFailure)
    difference = interface_difference(files.signature, after)
    if difference is not None:
        raise RuntimeFailure(
            f"the result for {quoted(files.source.name)} no longer serves its interface: "
            + difference
        )


@contextmanager
def writing(source: Path, target: Path, check: Check = _check_served) -> Iterator[StepFiles]:
    """Check the arguments and give the step an output path in a private folder beside
    ``target``; move the output to ``target`` once ``check`` accepts it, and leave
    nothing behind otherwise. The folder (not a bare temporary file) lets tools that
    refuse to overwrite, or write companion files, work unhindered."""
    model = read_model(source)
    _check_target(source, target)
    signature = served_signature(source, InvalidInput)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        files = StepFiles(source, model, signature, folder / target.name)
        yield files
        if not files.out.is_file():
            raise RuntimeFailure(f"the step wrote no model for {quoted(source.name)}")
        check(files)
        os.replace(files.out, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_model(source: Path) -> onnx.ModelProto:
    """The graph of ``source`` (external tensors not followed); ``InvalidInput`` when the
    file is missing, is not ONNX, or keeps its weights in external data files."""
    import onnx

    if not source.is_file():
        raise InvalidInput(f"no model file at {quoted(str(source))}")
    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise InvalidInput(
            f"{quoted(source.name)} is not an ONNX model: {printable(str(exc))}"
        ) from None
    # Protobuf parses many byte strings as an empty message; a model has a graph.
    if not model.graph.node or not model.opset_import:
        raise InvalidInput(f"{quoted(source.name)} is not an ONNX model: it has no graph")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise InvalidInput(
            f"{quoted(source.name)} keeps its weights in external data files; the "
            "optimization steps take single-file models (under 2 GB)"
        )
    return model


def served_signature(path: Path, error: type[ServionError]) -> Signature:
    """Load ``path`` as servion serves it, answer one sample, and return its signature;
    any failure becomes ``error`` naming the file."""
    runtime = make_runtime("onnx", path, _CHECK_SETTINGS)
    try:
        runtime.load()
        runtime.warmup()
        return runtime.signature()
    except ServionError as exc:
        raise error(f"{quoted(path.name)} does not load and answer in onnxruntime: {exc}") from exc
    finally:
        runtime.unload()


def interface_difference(before: Signature, after: Signature) -> str | None:
    """How ``after`` would break a client of ``before`` (None: it would not)."""
    for kind, old_specs, new_specs in (
        ("input", before.inputs, after.inputs),
        ("output", before.outputs, after.outputs),
    ):
        old_names, new_names = [t.name for t in old_specs], [t.name for t in new_specs]
        if old_names != new_names:
            return f"{kind}s {old_names} became {new_names}"
        for old, new in zip(old_specs, new_specs, strict=True):
            if old.datatype != new.datatype:
                return f"{kind} {quoted(old.name)} changed from {old.datatype} to {new.datatype}"
            if not _fits(old.shape, new.shape, free_stays_free=kind == "input"):
                return f"{kind} {quoted(old.name)} shape {list(old.shape)} became {list(new.shape)}"
    if before.batched != after.batched:
        return "the batch dimension changed"
    return None


def step_failure(step: str, source: Path, exc: BaseException) -> RuntimeFailure:
    """A tool's failure on a model, in the tool's own words (they name the node)."""
    return RuntimeFailure(
        f"{step} could not handle {quoted(source.name)}: {printable(str(exc), 500)}"
    )


def op_names(model: onnx.ModelProto) -> str:
    """The distinct operators of a graph, with their domain when it is not ONNX's own."""
    ops = sorted({f"{n.op_type} ({n.domain})" if n.domain else n.op_type for n in model.graph.node})
    return ", ".join(ops)


def _fits(old: tuple[int, ...], new: tuple[int, ...], *, free_stays_free: bool) -> bool:
    if len(old) != len(new):
        return False
    if free_stays_free:  # an input may accept more than before, never less
        return all(n in (o, -1) for o, n in zip(old, new, strict=True))
    return all(o == n or -1 in (o, n) for o, n in zip(old, new, strict=True))


def _check_target(source: Path, target: Path) -> None:
    if target.is_dir():
        raise InvalidInput(f"the target {quoted(str(target))} is a folder, not a file name")
    if target.exists() and os.path.samefile(source, target):
        raise InvalidInput(
            f"the target {quoted(str(target))} is the source; a step never overwrites it"
        )
    if not target.parent.is_dir():
        raise InvalidInput(
            f"no folder {quoted(str(target.parent))} to write {quoted(target.name)} in"
        )


def _casts_to(node: Any, elem_type: int) -> bool:
    return bool(
        node.op_type == "Cast" and any(a.name == "to" and a.i == elem_type for a in node.attribute)
    )


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed nodes a unique name: blocking a node in a converter goes by name."""
    taken = {n.name for n in model.graph.node}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = next(
                name for k in range(index, index + len(taken) + 1)
                if (name := f"{node.op_type}_{k}") not in taken
            )  # fmt: skip
            taken.add(node.name)


def _pack_raw(model: onnx.ModelProto) -> None:
    """Store initializers as raw bytes. The float16 converter writes its values into
    ``int32_data`` (a varint each, up to 3 bytes) when the source used ``float_data``;
    raw bytes are 2 per value, so the file really halves."""
    import onnx
    from onnx import numpy_helper

    for tensor in model.graph.initializer:
        if not tensor.raw_data and tensor.data_type != onnx.TensorProto.STRING:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))


def _nvidia_gpu() -> bool:
    return Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None


def _require_tensorrt() -> None:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    gpu = _nvidia_gpu()
    if gpu and "TensorrtExecutionProvider" in providers:
        return
    raise RuntimeFailure(
        "TensorRT needs an NVIDIA GPU and onnxruntime-gpu with TensorRT; this machine has "
        + ("an NVIDIA GPU" if gpu else "no NVIDIA GPU")
        + f" and onnxruntime {ort.__version__} ({ort.get_device()} build) with "
        + ", ".join(providers)
    )


def _names_check(provider: tuple[str, dict[str, str]]) -> Check:
    """The check for outputs servion's CPU runtime cannot load (a TensorRT engine): they
    load with ``provider`` and keep the source's input and output names."""

    def check(files: StepFiles) -> None:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(files.out), providers=[provider])
        except Exception as exc:
            raise step_failure("loading the compiled engine", files.source, exc) from exc
        found = (
            tuple(a.name for a in session.get_inputs()),
            tuple(a.name for a in session.get_outputs()),
        )
        wanted = (
            tuple(t.name for t in files.signature.inputs),
            tuple(t.name for t in files.signature.outputs),
        )
        if found != wanted:
            raise RuntimeFailure(f"the engine's inputs and outputs {found} are not {wanted}")

    return check
