"""The pickle allow-list gate: real models load, a corpus of known bypasses never runs.

Every malicious file here is real and live: a control test hands it to the
ordinary unpickler in a child process and sees its marker file appear.  The
same file given to ``safe_pickle`` must be refused, naming the offending
global, with the marker absent and no unrestricted unpickler ever called.
"""

from __future__ import annotations

import bz2
import contextlib
import copyreg
import gzip
import io
import os
import pickle
import pickletools
import random
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joblib.numpy_pickle import NumpyArrayWrapper
from pickle_corpus import (
    EXT_CODE,
    bb,
    bu,
    call,
    corpus,
    g,
    gzip_bad_crc,
    poison_pickle,
    state_dict_pickle,
    su,
    torch_zip,
    u,
    zip_bytes,
)
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from servion.errors import ConfigError, UnsafeArtifact
from servion.runtime.pickle_check import check_pickle_file
from servion.runtime.safe_pickle import (
    AllowList,
    load_joblib_file,
    load_pickle_file,
    scan_pickle_bytes,
)

ALLOW = AllowList.default()
CASES = sorted(corpus(Path("/x")))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


@pytest.fixture
def no_full_unpickle(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Tripwires on every unrestricted unpickler: a refused file is never retried."""
    calls: list[str] = []

    def tripwire(name: str) -> Callable[..., Any]:
        def trip(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"unrestricted {name} was called")

        return trip

    for owner, attr in [
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (joblib, "load"),
    ]:
        monkeypatch.setattr(owner, attr, tripwire(f"{owner.__name__}.{attr}"))

    class TrippingUnpickler(pickle._Unpickler):
        """joblib reads object arrays with ``Unpickler(fh).load()``; its __init__ must work."""

        load = tripwire("joblib's nested Unpickler.load")

    monkeypatch.setattr("joblib.numpy_pickle.Unpickler", TrippingUnpickler)
    monkeypatch.setattr("joblib.numpy_pickle.load", tripwire("joblib.numpy_pickle.load"))
    yield calls
    assert calls == []


@pytest.fixture
def ext_registered() -> Iterator[None]:
    copyreg.add_extension("posix", "system", EXT_CODE)
    yield
    copyreg.remove_extension("posix", "system", EXT_CODE)


def _refused(fn: Callable[[Path, AllowList], object], path: Path) -> str:
    with pytest.raises(UnsafeArtifact) as info:
        fn(path, ALLOW)
    return str(info.value)


def _run_unrestricted(path: Path, loader: str = "pickle.load(open(p, 'rb'))") -> None:
    """The control: what an ordinary loader does with the file, in a child process."""
    script = f"import pickle, joblib, sys; p = sys.argv[1]\ntry: {loader}\nexcept Exception: pass"
    subprocess.run([sys.executable, "-c", script, str(path)], timeout=120, check=True)


def _wait_for(path: Path, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.exists()


@pytest.mark.parametrize("case", CASES)
def test_corpus_payload_is_live(case: str, tmp_path: Path, marker: Path) -> None:
    payload = corpus(marker)[case]
    if not payload.live:
        pytest.skip("not run even as a control")
    pickletools.dis(payload.data, out=io.StringIO())  # well-formed, stack and all
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload.data)
    _run_unrestricted(path)
    assert _wait_for(marker), "the control did not execute: the corpus entry is inert"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.usefixtures("ext_registered")
def test_corpus_is_refused_by_every_entry_point(
    case: str, tmp_path: Path, marker: Path, no_full_unpickle: list[str]
) -> None:
    payload = corpus(marker)[case]
    plain, via_joblib = tmp_path / "evil.pkl", tmp_path / "evil.joblib"
    plain.write_bytes(payload.data)
    via_joblib.write_bytes(payload.data)
    pip_was_imported = "pip" in sys.modules

    for message in (_refused(check_pickle_file, plain), _refused(load_pickle_file, plain)):
        if "computed" not in case:
            assert all(name in message for name in payload.offending), message
    # The joblib loader has no static pre-scan: this is find_class alone.
    for message in (
        _refused(load_joblib_file, via_joblib),
        _refused(check_pickle_file, via_joblib),
    ):
        assert payload.offending[0] in message, message

    time.sleep(0.2)  # a spawned process would have had time to run
    assert not marker.exists()
    assert pip_was_imported or "pip" not in sys.modules


def test_computed_stack_global_operands_are_refused_statically(marker: Path) -> None:
    payload = corpus(marker)["STACK_GLOBAL with a computed module"]
    with pytest.raises(UnsafeArtifact, match="computed operands"):
        scan_pickle_bytes(payload.data, ALLOW)


@pytest.mark.usefixtures("ext_registered")
def test_poisoned_extension_cache_still_goes_through_find_class(
    tmp_path: Path, marker: Path, no_full_unpickle: list[str]
) -> None:
    # An earlier unrestricted unpickle in this process could have cached the
    # code's target; the pure-Python unpickler would then skip find_class.
    copyreg._extension_cache[EXT_CODE] = os.system  # type: ignore[attr-defined]
    path = tmp_path / "evil.joblib"
    path.write_bytes(corpus(marker)["EXT1 via copyreg registry"].data)
    assert "posix.system" in _refused(load_joblib_file, path)
    assert not marker.exists()


def test_build_on_a_class_is_live_for_plain_pickle(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "poison.pkl"
    path.write_bytes(poison_pickle())
    _run_unrestricted(
        path,
        loader="pickle.load(open(p, 'rb')); import sklearn._loss.link as m; "
        f"m.Interval.poisoned == 1 and open({str(marker)!r}, 'w').close()",
    )
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".pkl", ".joblib"])
def test_build_cannot_rewrite_a_trusted_class(suffix: str, tmp_path: Path) -> None:
    # That would poison every model loaded later in the same process.
    from sklearn._loss.link import Interval

    path = tmp_path / f"poison{suffix}"
    path.write_bytes(poison_pickle())
    loader = load_pickle_file if suffix == ".pkl" else load_joblib_file
    assert "not an instance" in _refused(loader, path)
    assert "poisoned" not in vars(Interval)


def test_unregistered_extension_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ext.pkl"
    path.write_bytes(b"\x80\x02\x82\x63)R.")
    assert "unregistered extension code 99" in _refused(check_pickle_file, path)
    (tmp_path / "ext.joblib").write_bytes(path.read_bytes())
    _refused(load_joblib_file, tmp_path / "ext.joblib")


def test_static_scan_refuses_every_extension_code(tmp_path: Path) -> None:
    # The registry is per process: whoever loads the file may map the code elsewhere.
    copyreg.add_extension("collections", "OrderedDict", EXT_CODE)
    try:
        with pytest.raises(UnsafeArtifact, match=r"extension code 247 = collections\.OrderedDict"):
            scan_pickle_bytes(b"\x80\x02\x82\xf7)R.", ALLOW)
    finally:
        copyreg.remove_extension("collections", "OrderedDict", EXT_CODE)


# --- a harmless module no scanner knows ---------------------------------------------


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marker: Path) -> Iterator[str]:
    name = "servion_canary_mod"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\nclass Thing:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    "data",
    [
        g("servion_canary_mod", "Thing") + b"(tR.",
        b"\x80\x04" + su("servion_canary_mod") + su("Thing") + b"\x93)\x81.",
    ],
    ids=["GLOBAL", "STACK_GLOBAL"],
)
def test_unknown_module_is_refused_without_being_imported(
    data: bytes, tmp_path: Path, marker: Path, canary: str, no_full_unpickle: list[str]
) -> None:
    for suffix, loaders in [
        (".pkl", (check_pickle_file, load_pickle_file)),
        (".joblib", (check_pickle_file, load_joblib_file)),
    ]:
        path = tmp_path / f"thing{suffix}"
        path.write_bytes(data)
        for load in loaders:
            assert "servion_canary_mod.Thing" in _refused(load, path)
    assert not marker.exists()
    assert canary not in sys.modules


def test_extended_allow_list_admits_a_users_own_class(
    tmp_path: Path, marker: Path, canary: str
) -> None:
    path = tmp_path / "thing.pkl"
    path.write_bytes(b"\x80\x04" + su(canary) + su("Thing") + b"\x93)\x81.")
    for extra in ([f"{canary}.Thing"], [f"{canary}.*"]):
        thing = load_pickle_file(path, ALLOW.extended(extra))
        assert type(thing).__name__ == "Thing"
    assert marker.exists()  # trusted, so imported: the import is what ran


# --- the allow-list itself ------------------------------------------------------------


def test_prefixes_trust_classes_not_functions() -> None:
    assert ALLOW.allows("sklearn.svm._classes", "SVC")
    assert ALLOW.allows("sklearn.tree._tree", "Tree")
    assert ALLOW.allows("numpy._core.multiarray", "_reconstruct")  # exact name, a function
    assert not ALLOW.allows("sklearn.base", "clone")
    assert not ALLOW.allows("sklearn.base", "BaseEstimator.__init_subclass__")
    assert not ALLOW.allows("sklearn.base", "np.load")
    assert not ALLOW.allows("sklearn.utils._testing", "TempMemmap")
    assert not ALLOW.allows("sklearn.svm.tests.test_svm", "test_libsvm_iris")
    assert not ALLOW.allows("numpy", "vectorize")
    assert not ALLOW.allows("os", "system")
    assert not ALLOW.allows("os system", "x")


@pytest.mark.parametrize(
    "entry", ["os.*", "builtins.eval", "numpy.testing.*", "functools.partial", "not valid", ".*"]
)
def test_never_trusted_or_malformed_extensions_are_config_errors(entry: str) -> None:
    with pytest.raises(ConfigError):
        ALLOW.extended([entry])


def test_never_trusted_wins_over_a_direct_list() -> None:
    allow = AllowList(modules=frozenset({"os.", "functools."}), names=frozenset({"os.system"}))
    assert not allow.allows("os", "system")
    assert not allow.allows("functools", "partial")


def test_picklescan_still_refuses_what_an_extension_let_through(
    tmp_path: Path, marker: Path, no_full_unpickle: list[str]
) -> None:
    # A deployment trusted imaplib.IMAP4_stream, which runs its argument as a
    # shell command; picklescan knows it, so the file is refused before the call.
    allow = ALLOW.extended(["imaplib.IMAP4_stream"])
    data = call(g("imaplib", "IMAP4_stream"), u(f"touch {shlex.quote(str(marker))}")) + b"."
    for suffix, loaders in [
        (".pkl", (check_pickle_file, load_pickle_file)),
        (".joblib", (check_pickle_file, load_joblib_file)),
    ]:
        path = tmp_path / f"model{suffix}"
        path.write_bytes(data)
        for load in loaders:
            with pytest.raises(UnsafeArtifact, match=r"picklescan flags.*imaplib\.IMAP4_stream"):
                load(path, allow)
    assert not _wait_for(marker, seconds=0.5)


def test_numpy_1_pickles_use_numpy_core_without_warnings(tmp_path: Path) -> None:
    data = pickle.dumps(np.arange(3.0), protocol=2)
    assert b"numpy._core.multiarray" in data
    path = tmp_path / "old.pkl"
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert "numpy.core.multiarray._reconstruct" in check_pickle_file(path, ALLOW)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_pickle_file(path, ALLOW)
    np.testing.assert_array_equal(loaded, np.arange(3.0))


# --- real models --------------------------------------------------------------------


@dataclass
class Models:
    x: np.ndarray
    fitted: dict[str, Any]


@pytest.fixture(scope="module")
def models() -> Models:
    x, y = make_classification(n_samples=120, n_features=6, random_state=0)
    fitted = {
        "pipeline": Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]),
        "forest": RandomForestClassifier(n_estimators=5, random_state=np.random.RandomState(0)),
        "boosting": GradientBoostingClassifier(n_estimators=5, random_state=0),
        "svc": SVC(),
    }
    return Models(x, {name: est.fit(x, y) for name, est in fitted.items()})


def _same_predictions(loaded: Any, original: Any, x: np.ndarray) -> None:
    np.testing.assert_array_equal(loaded.predict(x), original.predict(x))


@pytest.mark.parametrize("name", ["pipeline", "forest", "boosting", "svc"])
@pytest.mark.parametrize("compress", [0, 3])
def test_joblib_models_load_and_predict_the_same(
    name: str, compress: int, models: Models, tmp_path: Path, no_full_unpickle: list[str]
) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(models.fitted[name], path, compress=compress)
    names = check_pickle_file(path, ALLOW)
    assert "joblib.numpy_pickle.NumpyArrayWrapper" in names
    _same_predictions(load_joblib_file(path, ALLOW), models.fitted[name], models.x)


@pytest.mark.parametrize("name", ["pipeline", "forest", "boosting", "svc"])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickled_models_load_and_predict_the_same(
    name: str, protocol: int, models: Models, tmp_path: Path, no_full_unpickle: list[str]
) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(models.fitted[name], protocol=protocol))
    names = check_pickle_file(path, ALLOW)
    assert f"{type(models.fitted[name]).__module__}.{type(models.fitted[name]).__name__}" in names
    _same_predictions(load_pickle_file(path, ALLOW), models.fitted[name], models.x)


@pytest.mark.parametrize("method", ["zlib", "gzip", "bz2", "xz", "lzma"])
def test_every_joblib_compression_loads(method: str, models: Models, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(models.fitted["pipeline"], path, compress=(method, 3))
    _same_predictions(load_joblib_file(path, ALLOW), models.fitted["pipeline"], models.x)


def test_benign_object_arrays_in_joblib_load(tmp_path: Path, no_full_unpickle: list[str]) -> None:
    path = tmp_path / "objects.joblib"
    labels = np.array(["yes", None, 3], dtype=object)
    joblib.dump({"labels": labels, "weights": np.arange(4.0)}, path)
    loaded = load_joblib_file(path, ALLOW)
    assert isinstance(loaded, dict)
    assert list(loaded["labels"]) == ["yes", None, 3]
    np.testing.assert_array_equal(loaded["weights"], np.arange(4.0))


# --- joblib-specific attacks ----------------------------------------------------------


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


@pytest.mark.parametrize("compress", [0, 3])
def test_object_array_with_a_nested_malicious_pickle_is_refused(
    compress: int, tmp_path: Path, marker: Path, no_full_unpickle: list[str]
) -> None:
    path = tmp_path / "evil.joblib"
    evil = np.array([_Evil(f"touch {shlex.quote(str(marker))}")], dtype=object)
    joblib.dump({"weights": evil}, path, compress=compress)
    for load in (check_pickle_file, load_joblib_file):
        assert "posix.system" in _refused(load, path)
    assert not marker.exists()


def test_nested_malicious_pickle_is_live_for_plain_joblib(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "evil.joblib"
    joblib.dump(np.array([_Evil(f"touch {shlex.quote(str(marker))}")], dtype=object), path)
    _run_unrestricted(path, loader="joblib.load(p)")
    assert marker.exists()


def _wrapper_pickle(**state: Any) -> bytes:
    wrapper = NumpyArrayWrapper(np.ndarray, (2,), "C", np.dtype("f8"))
    wrapper.__dict__.update(state)
    return pickle.dumps(wrapper, protocol=2)


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ({"read_array": 1}, "malformed"),
        ({"shape": (10**12,)}, "larger than the file"),
        ({"shape": (-1,)}, "malformed"),
        ({"order": "X"}, "malformed"),
        ({"dtype": "f8"}, "malformed"),
    ],
)
def test_forged_joblib_array_headers_are_refused(
    state: dict[str, Any], reason: str, tmp_path: Path
) -> None:
    path = tmp_path / "forged.joblib"
    path.write_bytes(_wrapper_pickle(**state) + b"\0" * 32)
    assert reason in _refused(load_joblib_file, path)


# --- files that do not parse --------------------------------------------------------


@pytest.fixture
def good_pickle(models: Models) -> bytes:
    return pickle.dumps(models.fitted["pipeline"], protocol=4)


UNPARSEABLE: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "empty pickle": (".pkl", lambda good: b""),
    "empty joblib": (".joblib", lambda good: b""),
    "empty torch": (".pt", lambda good: b""),
    "truncated pickle": (".pkl", lambda good: good[: len(good) // 2]),
    "truncated joblib": (".joblib", lambda good: good[: len(good) // 2]),
    "random bytes": (".pkl", lambda good: random.Random(0).randbytes(512)),
    "random bytes as joblib": (".joblib", lambda good: random.Random(1).randbytes(512)),
    "trailing bytes after STOP": (".pkl", lambda good: good + b"junk"),
    "a second pickle after STOP": (".pkl", lambda good: good + pickle.dumps(1)),
    "joblib trailing bytes": (".joblib", lambda good: good + b"junk"),
    "gzipped pickle named .pkl": (".pkl", gzip.compress),
    "gzip with a bad CRC": (".joblib", gzip_bad_crc),
    "gzip with a bad CRC, .gz": (".gz", gzip_bad_crc),
    "truncated zlib": (".joblib", lambda good: zlib.compress(good)[:-6]),
    "zlib then junk": (".joblib", lambda good: zlib.compress(good) + b"junk"),
    "truncated bz2": (".joblib", lambda good: bz2.compress(good)[:-10]),
    "compressed twice": (".joblib", lambda good: gzip.compress(gzip.compress(good))),
    "compressed payload with trailing bytes": (".joblib", lambda g_: zlib.compress(g_ + b"x")),
    "lz4 magic": (".joblib", lambda good: b"\x04\x22\x4d\x18" + good),
    "pre-0.10 joblib": (".joblib", lambda good: b"ZF0x00000000000000" + good),
    "unknown extension": (".bin", lambda good: good),
    "legacy torch.save (not a zip)": (".pt", lambda good: good),
    "pickle then zip (polyglot)": (".pt", lambda good: good + zip_bytes({"a/data.pkl": good})),
}


@pytest.mark.parametrize("case", sorted(UNPARSEABLE))
def test_unparseable_files_are_refused_not_reported_clean(
    case: str, good_pickle: bytes, tmp_path: Path, no_full_unpickle: list[str]
) -> None:
    suffix, make = UNPARSEABLE[case]
    path = tmp_path / f"model{suffix}"
    path.write_bytes(make(good_pickle))
    _refused(check_pickle_file, path)
    if suffix == ".pkl":
        _refused(load_pickle_file, path)
    if suffix in (".joblib", ".gz"):
        _refused(load_joblib_file, path)


def test_joblib_output_named_pkl_is_refused_with_a_hint(models: Models, tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    joblib.dump(models.fitted["pipeline"], path)
    assert ".joblib" in _refused(check_pickle_file, path)


def test_scan_accepts_a_binary_stream(good_pickle: bytes) -> None:
    names = scan_pickle_bytes(io.BytesIO(good_pickle), ALLOW)
    assert names[0] == "sklearn.pipeline.Pipeline"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_parsed_or_refused(data: bytes) -> None:
    with contextlib.suppress(UnsafeArtifact):
        scan_pickle_bytes(data, ALLOW)


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn: unpickling a "pre-0.18" model
@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_model_pickles_load_or_are_refused(data: st.DataObject) -> None:
    good = pickle.dumps(StandardScaler().fit(np.arange(6.0).reshape(3, 2)), protocol=4)
    at = data.draw(st.integers(0, len(good) - 1))
    mutated = good[:at] + bytes([data.draw(st.integers(0, 255))]) + good[at + 1 :]
    path = Path(tempfile.gettempdir()) / f"servion-mutated-{os.getpid()}.pkl"
    path.write_bytes(mutated)
    try:
        with contextlib.suppress(UnsafeArtifact):
            load_pickle_file(path, ALLOW)
    finally:
        path.unlink()


# --- PyTorch zips -------------------------------------------------------------------


def test_torch_state_dict_zip_passes(tmp_path: Path) -> None:
    data = state_dict_pickle()
    pickletools.dis(data, out=io.StringIO())
    imported = "torch" in sys.modules  # another test (or a library) may have loaded it
    names = check_pickle_file(torch_zip(tmp_path / "model.pt", data), ALLOW)
    assert "torch._utils._rebuild_tensor_v2" in names
    assert "torch.FloatStorage" in names
    assert ("torch" in sys.modules) == imported  # the check itself never imports torch


@pytest.mark.parametrize(
    ("payload", "offending"),
    [
        (
            call(g("torch.storage", "_load_from_bytes"), bb(b"x")) + b".",
            "torch.storage._load_from_bytes",
        ),
        (call(g("posix", "system"), u("touch nothing")) + b".", "posix.system"),
        (state_dict_pickle(storage=("servion_canary_mod", "Thing")), "servion_canary_mod.Thing"),
    ],
    ids=["_load_from_bytes", "posix.system", "unknown module"],
)
def testtorch_zip_with_untrusted_globals_is_refused(
    payload: bytes, offending: str, tmp_path: Path
) -> None:
    path = torch_zip(tmp_path / "model.pth", state_dict_pickle(), **{"archive/extra.pkl": payload})
    assert offending in _refused(check_pickle_file, path)
    path = torch_zip(tmp_path / "model.pth", payload)
    assert offending in _refused(check_pickle_file, path)


def testtorch_zip_structure_is_enforced(tmp_path: Path) -> None:
    good = state_dict_pickle()
    no_data = tmp_path / "nodata.pt"
    no_data.write_bytes(zip_bytes({"archive/version": b"3\n"}))
    assert "data.pkl" in _refused(check_pickle_file, no_data)

    corrupt = torch_zip(tmp_path / "corrupt.pt", good)
    raw = bytearray(corrupt.read_bytes())
    at = raw.index(bu("weight"))
    raw[at + 5] ^= 0x01  # change a byte of the stored data.pkl: its CRC no longer matches
    corrupt.write_bytes(bytes(raw))
    _refused(check_pickle_file, corrupt)

    with pytest.warns(UserWarning, match="Duplicate name"):
        duplicate = torch_zip(tmp_path / "dup.pt", good)
        with zipfile.ZipFile(duplicate, "a") as archive:
            archive.writestr("archive/data.pkl", good)
    assert "duplicate" in _refused(check_pickle_file, duplicate)
