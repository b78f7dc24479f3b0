"""The pickle allow-list: its default contents and how one global is judged.

Kept apart from the loaders so a security review can read every trusted and
every never-trusted name on one page.  The allow-list is the gate; the
never-trusted lists only stop a deployment's extension (or a class prefix)
from ever reaching a known code-execution primitive.
"""

from __future__ import annotations

import _compat_pickle
import functools
import importlib
import re
import types
from collections.abc import Iterable
from dataclasses import dataclass

from servion.errors import ConfigError, UnsafeArtifact


def _words(text: str) -> list[str]:
    return text.split()


# Module prefixes whose *classes* are trusted (functions under them are not).
# Only scikit-learn: its classes are estimators and plain-data helpers whose
# constructors store parameters and run nothing.  numpy and scipy are trusted
# name by name, because both ship classes that open, write or call things
# (numpy.memmap, numpy.vectorize, scipy.io.FortranFile, ...).
TRUSTED_CLASS_PREFIXES: frozenset[str] = frozenset({"sklearn."})

# Exact ``module.qualname`` globals, functions included: each is safe to call
# with arbitrary arguments that themselves passed the gate.
DEFAULT_NAMES: frozenset[str] = frozenset(
    [f"builtins.{n}" for n in _words("set frozenset slice complex bytearray bytes range object")]
    + [f"builtins.{n}" for n in _words("list dict tuple int float bool str")]
    + [f"collections.{n}" for n in _words("OrderedDict defaultdict Counter deque")]
    # copyreg._reconstructor only calls base.__new__/__init__ on objects that
    # already passed the gate; protocol 2 spells bytes as _codecs.encode(s, "latin1").
    + ["copyreg._reconstructor", "_codecs.encode"]
    + _words("numpy.ndarray numpy.dtype numpy.ma.MaskedArray numpy.ma.core.MaskedArray")
    + _words("numpy.ma.core._mareconstruct")
    # Scalar types, pickled as classes when an estimator stores ``dtype=np.float64``.
    + [
        f"numpy.{t}"
        for t in _words(
            "float16 float32 float64 longdouble int8 int16 int32 int64 uint8 uint16 uint32 "
            "uint64 bool bool_ complex64 complex128 object_ str_ bytes_ intp uintp"
        )
    ]
    + [
        f"{core}.{name}"
        for core in ("numpy._core", "numpy.core")
        for name in _words("multiarray._reconstruct multiarray.scalar numeric._frombuffer")
    ]
    + [
        f"numpy.random.{name}"
        for name in _words(
            "_pickle.__randomstate_ctor _pickle.__generator_ctor _pickle.__bit_generator_ctor "
            "mtrand.RandomState _generator.Generator _mt19937.MT19937 _pcg64.PCG64 "
            "_pcg64.PCG64DXSM _philox.Philox _sfc64.SFC64 bit_generator.SeedSequence "
            "bit_generator.__pyx_unpickle_SeedSequence"
        )
    ]
    + [
        f"scipy.sparse._{fmt}.{fmt}_{kind}"
        for fmt in _words("bsr coo csc csr dia dok lil")
        for kind in ("matrix", "array")
    ]
    + [f"scipy.sparse.{fmt}.{fmt}_matrix" for fmt in ("csr", "csc", "coo")]
    # Cython helpers that only do ``cls.__new__(cls)`` for the tree and metric classes.
    + _words(
        "sklearn.neighbors._kd_tree.newObj sklearn.neighbors._ball_tree.newObj "
        "sklearn.metrics._dist_metrics.newObj"
    )
    # Score functions SelectKBest and friends store; they only compute statistics.
    + [
        f"sklearn.feature_selection.{f}"
        for f in _words(
            "_univariate_selection.f_classif _univariate_selection.f_regression "
            "_univariate_selection.r_regression _univariate_selection.chi2"
        )
    ]
    # Validated by the restricted joblib loader, which also reads its bytes.
    + ["joblib.numpy_pickle.NumpyArrayWrapper"]
)

# Extra names trusted inside a PyTorch zip's pickles, checked statically and
# never loaded.  torch.storage._load_from_bytes is absent on purpose: it calls
# torch.load on attacker-chosen bytes.
TORCH_NAMES: frozenset[str] = frozenset(
    [f"torch._utils._rebuild_{n}" for n in _words("tensor tensor_v2 tensor_v3 parameter")]
    + _words("torch._utils._rebuild_parameter_with_state torch.serialization._get_layout")
    + _words("torch.Size torch.device torch.UntypedStorage")
    + [
        f"torch.{kind}Storage"
        for kind in _words(
            "Float Double Half BFloat16 Long Int Short Char Byte Bool ComplexFloat ComplexDouble"
        )
    ]
    + [
        f"torch.{dtype}"
        for dtype in _words(
            "float16 float32 float64 bfloat16 int8 int16 int32 int64 uint8 bool complex64 "
            "complex128"
        )
    ]
)

# Never trusted, whatever a deployment adds; an entry matches itself and all
# below it ("os" matches "os.system" and "os.path.join").
NEVER_TRUSTED: frozenset[str] = frozenset(
    [
        f"builtins.{n}"
        for n in _words(
            "eval exec compile getattr setattr delattr __import__ open input breakpoint "
            "globals locals vars exit quit help memoryview type super"
        )
    ]
    + _words(
        "__builtin__ os posix nt sys subprocess runpy pydoc marshal importlib pkgutil "
        "zipimport pip ensurepip venv code codeop pickle _pickle pickletools shelve "
        "functools operator _operator inspect ast dis gc ctypes _ctypes shutil tempfile "
        "io _io pathlib socket ssl urllib http webbrowser pty signal multiprocessing "
        "concurrent threading _thread asyncio timeit cProfile profile pdb bdb trace "
        "doctest uuid logging cloudpickle dill"
    )
    + [f"types.{n}" for n in _words("FunctionType LambdaType CodeType MethodType ModuleType")]
    + [
        f"numpy.{n}"
        for n in _words(
            "testing f2py distutils ctypeslib _pytesttester load save savez loadtxt "
            "genfromtxt fromfile memmap vectorize frompyfunc _core.memmap core.memmap "
            "lib._datasource lib.npyio lib._npyio_impl lib.format lib._format_impl "
            "lib._function_base_impl.vectorize lib.function_base.vectorize"
        )
    ]
    + _words("scipy.io scipy.datasets scipy.LowLevelCallable scipy._lib")
    + [
        f"joblib.{n}"
        for n in _words(
            "load numpy_pickle.load numpy_pickle.NDArrayWrapper numpy_pickle.ZNDArrayWrapper "
            "numpy_pickle_compat externals parallel memory"
        )
    ]
    + [
        f"torch.{n}"
        for n in _words(
            "load serialization.load storage._load_from_bytes hub jit package utils "
            "_inductor _dynamo fx"
        )
    ]
)

# Modules under a trusted class prefix that are still not trusted: test code,
# dataset fetchers, vendored third-party code and process-pool helpers.
EXCLUDED_FROM_PREFIXES: frozenset[str] = frozenset(
    f"sklearn.{n}"
    for n in _words(
        "datasets externals experimental conftest _build_utils __check_build "
        "_min_dependencies utils._testing utils._mocking utils._test_common "
        "utils.estimator_checks utils.discovery utils.parallel utils._joblib "
        "utils._show_versions utils.fixes"
    )
)

# Module path parts that mark test code in any prefix-trusted package.
TEST_MODULE_PARTS: frozenset[str] = frozenset(_words("tests testing _testing conftest"))

# Objects refused even when reached through an alias the name lists missed.
_FORBIDDEN_REFS: tuple[tuple[str, str], ...] = tuple(
    tuple(ref.rsplit(".", 1))  # type: ignore[misc]  # every entry has exactly one dot
    for ref in _words(
        "builtins.eval builtins.exec builtins.compile builtins.getattr builtins.setattr "
        "builtins.__import__ builtins.open builtins.input builtins.breakpoint "
        "builtins.delattr builtins.globals builtins.vars functools.partial functools.reduce "
        "operator.attrgetter operator.itemgetter operator.methodcaller types.FunctionType "
        "types.CodeType types.MethodType os.system os.popen subprocess.Popen marshal.loads "
        "importlib.import_module pickle.loads pickle.load numpy.vectorize numpy.frompyfunc "
        "numpy.memmap numpy.load numpy.fromfile numpy.loadtxt numpy.genfromtxt numpy.save"
    )
)


@functools.cache
def forbidden_objects() -> tuple[object, ...]:
    """Resolve ``_FORBIDDEN_REFS`` once (stdlib and numpy only); a missing one drops out."""
    found: list[object] = []
    for module, attr in _FORBIDDEN_REFS:
        try:
            found.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


# --- judging one global -------------------------------------------------------

Ref = tuple[str, str]
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")


def _within(qualified: str, entries: Iterable[str]) -> bool:
    """True if ``qualified`` is one of ``entries`` or lies below one of them."""
    return any(qualified == e or qualified.startswith(e + ".") for e in entries)


def qualified(ref: Ref) -> str:
    """``module.name``, or just the description for a reference that never resolved."""
    return f"{ref[0]}.{ref[1]}" if ref[1] else ref[0]


@dataclass(frozen=True)
class AllowList:
    """The globals a pickle may reference; everything else is refused.

    ``names`` are exact ``module.qualname`` globals, trusted as they are.
    ``modules`` are prefixes (``"sklearn."``) under which only *classes* are
    trusted: a prefix cannot vouch that every function below it is safe to
    call with attacker-chosen arguments.  ``NEVER_TRUSTED`` wins over both.

        allow = AllowList.default().extended(["mypkg.models.*", "mypkg.feats.log1p"])
        allow.allows("sklearn.svm._classes", "SVC")  # True
    """

    modules: frozenset[str]
    names: frozenset[str]

    @classmethod
    def default(cls) -> AllowList:
        """scikit-learn classes plus the numpy, scipy.sparse and stdlib helpers they pickle."""
        return cls(modules=TRUSTED_CLASS_PREFIXES, names=DEFAULT_NAMES)

    def extended(self, extra: Iterable[str]) -> AllowList:
        """A copy that also trusts ``extra``: exact ``pkg.mod.Name`` or ``pkg.mod.*`` prefixes.

        Raises ``ConfigError`` for a malformed or never-trusted entry (``os.*``,
        ``builtins.eval``): failing loudly beats an entry that silently does nothing.
        """
        modules, names = set(self.modules), set(self.names)
        for entry in extra:
            target = entry.removesuffix(".*")
            if not _DOTTED.fullmatch(target) or _within(target, NEVER_TRUSTED):
                raise ConfigError(f"cannot add '{entry}' to the pickle allow-list")
            if entry.endswith(".*"):
                modules.add(target + ".")
            else:
                names.add(target)
        return AllowList(modules=frozenset(modules), names=frozenset(names))

    def allows(self, module: str, name: str) -> bool:
        """Whether a pickle may reference ``module.name``.

        Exact names are judged by name alone (nothing is imported, so torch
        need not be installed); a prefix match imports the trusted module and
        requires a class.  An untrusted module is never imported.
        """
        if not self.names_allow(module, name):
            return False
        if f"{module}.{name}" in self.names:
            return True
        try:
            resolve((module, name), self)
        except UnsafeArtifact:
            return False
        return True

    def names_allow(self, module: str, name: str) -> bool:
        """The by-name verdict alone: on an exact list, or under a trusted prefix."""
        if not (_DOTTED.fullmatch(module) and _DOTTED.fullmatch(name)):
            return False
        full = f"{module}.{name}"
        return not _within(full, NEVER_TRUSTED) and (
            full in self.names or self.trusts_module(module)
        )

    def trusts_module(self, module: str) -> bool:
        """True if classes defined in ``module`` are trusted through a prefix."""
        if _within(module, EXCLUDED_FROM_PREFIXES) or _within(module, NEVER_TRUSTED):
            return False
        if TEST_MODULE_PARTS.intersection(module.split(".")):
            return False
        dotted = module + "."
        return any(dotted.startswith(p if p.endswith(".") else p + ".") for p in self.modules)


def fix_import(module: str, name: str, proto: int) -> Ref:
    """Python 2 names, mapped the way ``pickle._Unpickler.find_class`` maps them."""
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return module, name


def _import(module: str) -> object:
    # numpy 2 moved numpy.core to numpy._core; the old path works but warns.
    if module == "numpy.core" or module.startswith("numpy.core."):
        try:
            return importlib.import_module("numpy._core" + module[len("numpy.core") :])
        except ImportError:
            pass
    return importlib.import_module(module)


def _is_forbidden(obj: object) -> bool:
    forbidden = forbidden_objects()
    classes = tuple(f for f in forbidden if isinstance(f, type))
    return any(obj is f for f in forbidden) or (isinstance(obj, type) and issubclass(obj, classes))


def _prefix_trusted(obj: object, ref: Ref, allow: AllowList) -> bool:
    """A class defined under a trusted prefix, or Cython's own unpickle helper.

    ``__pyx_unpickle_X`` only rebuilds its own extension type X, so it is as
    safe as that class.
    """
    if isinstance(obj, type):
        return isinstance(obj.__module__, str) and allow.trusts_module(obj.__module__)
    return (
        ref[1].startswith("__pyx_unpickle_")
        and type(obj).__name__ == "cython_function_or_method"
        and getattr(obj, "__module__", None) == ref[0]
    )


def resolve(ref: Ref, allow: AllowList) -> object:
    """Import and return an allowed global, or raise ``UnsafeArtifact`` naming it.

    The name is judged before anything is imported: importing a module runs
    its code, so a module off the list is never imported.
    """
    full = qualified(ref)
    if not allow.names_allow(*ref):
        raise UnsafeArtifact(f"untrusted global '{full}' is not on the pickle allow-list")
    try:
        obj = _import(ref[0])
        for part in ref[1].split("."):
            obj = getattr(obj, part)
            if isinstance(obj, types.ModuleType):  # never hop into another module
                raise AttributeError(f"'{part}' is a module")
    except Exception as exc:  # an allowed module that fails to import is still refused
        raise UnsafeArtifact(f"global '{full}' cannot be resolved: {exc}") from exc
    if _is_forbidden(obj):
        raise UnsafeArtifact(f"global '{full}' is a never-trusted callable")
    if full not in allow.names and not _prefix_trusted(obj, ref, allow):
        raise UnsafeArtifact(f"global '{full}' is not a class; a module prefix only trusts classes")
    return obj
