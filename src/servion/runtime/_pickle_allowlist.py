"""The default lists behind ``safe_pickle.AllowList``.

Kept apart from the loader so a security review can read every trusted and
every never-trusted name on one page.  The allow-list is the gate; the
never-trusted lists only stop a deployment's extension (or a class prefix) from
ever reaching a known code-execution primitive.
"""

from __future__ import annotations

import functools
import importlib

# Module prefixes whose *classes* are trusted (functions under them are not).
# Only scikit-learn: its classes are estimators and their plain-data helpers,
# whose constructors store parameters and run nothing.  numpy and scipy are
# trusted name by name below, because both ship classes that open, write or
# call things (numpy.memmap, numpy.vectorize, scipy.io.FortranFile, ...).
TRUSTED_CLASS_PREFIXES: frozenset[str] = frozenset({"sklearn."})

# Exact ``module.qualname`` globals trusted as they are, functions included:
# each is safe to call with arbitrary (already allow-listed) arguments.
_BUILTINS = frozenset(
    f"builtins.{n}"
    for n in (
        "set frozenset slice complex bytearray bytes range object "
        "list dict tuple int float bool str"
    ).split()
)
_NUMPY = frozenset(
    {
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.ma.MaskedArray",
        "numpy.ma.core.MaskedArray",
        "numpy.ma.core._mareconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
        "numpy.core.multiarray.scalar",
        "numpy._core.numeric._frombuffer",
        "numpy.core.numeric._frombuffer",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random.mtrand.RandomState",
        "numpy.random._generator.Generator",
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        "numpy.random._pcg64.PCG64DXSM",
        "numpy.random._philox.Philox",
        "numpy.random._sfc64.SFC64",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
    }
)
_SPARSE_FORMATS = ("bsr", "coo", "csc", "csr", "dia", "dok", "lil")
_SCIPY = frozenset(
    f"scipy.sparse._{fmt}.{fmt}_{kind}" for fmt in _SPARSE_FORMATS for kind in ("matrix", "array")
) | frozenset(f"scipy.sparse.{fmt}.{fmt}_matrix" for fmt in ("csr", "csc", "coo"))
_STDLIB = frozenset(
    {
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.Counter",
        "collections.deque",
        # Only ever calls base.__new__/base.__init__ on objects that already
        # passed the gate, so it adds no reach beyond the listed classes.
        "copyreg._reconstructor",
        # Protocol 2 spells bytes as _codecs.encode(str, "latin1").
        "_codecs.encode",
    }
)
# Reads its raw array bytes from the file; the restricted joblib loader
# validates it and reads object arrays with the restricted unpickler.
_JOBLIB = frozenset({"joblib.numpy_pickle.NumpyArrayWrapper"})

DEFAULT_NAMES: frozenset[str] = _BUILTINS | _NUMPY | _SCIPY | _STDLIB | _JOBLIB

# Extra names trusted inside a PyTorch zip's data.pkl (checked statically, never
# loaded; torch is not imported).  torch.storage._load_from_bytes is absent on
# purpose: it calls torch.load on attacker bytes.
TORCH_NAMES: frozenset[str] = frozenset(
    {
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch.serialization._get_layout",
        "torch.Size",
        "torch.device",
        "torch.UntypedStorage",
    }
    | {
        f"torch.{kind}Storage"
        for kind in (
            "Float Double Half BFloat16 Long Int Short Char Byte Bool ComplexFloat ComplexDouble"
        ).split()
    }
    | {
        f"torch.{dtype}"
        for dtype in (
            "float16 float32 float64 bfloat16 int8 int16 int32 int64 uint8 bool "
            "complex64 complex128"
        ).split()
    }
)

# Never trusted, whatever a deployment adds: each entry matches itself and
# everything below it ("os" matches "os.system" and "os.path.join").
_DANGEROUS_BUILTINS = (
    "eval exec compile getattr setattr delattr __import__ open input "
    "breakpoint globals locals vars exit quit help memoryview type super"
).split()
NEVER_TRUSTED: frozenset[str] = frozenset(f"builtins.{n}" for n in _DANGEROUS_BUILTINS) | frozenset(
    {
        "__builtin__",
        "os",
        "posix",
        "nt",
        "sys",
        "subprocess",
        "runpy",
        "pydoc",
        "marshal",
        "importlib",
        "pkgutil",
        "zipimport",
        "pip",
        "ensurepip",
        "venv",
        "code",
        "codeop",
        "pickle",
        "_pickle",
        "pickletools",
        "shelve",
        "types.FunctionType",
        "types.LambdaType",
        "types.CodeType",
        "types.MethodType",
        "types.ModuleType",
        "functools",
        "operator",
        "_operator",
        "inspect",
        "ast",
        "dis",
        "gc",
        "ctypes",
        "_ctypes",
        "shutil",
        "tempfile",
        "io",
        "_io",
        "pathlib",
        "socket",
        "ssl",
        "urllib",
        "http",
        "webbrowser",
        "pty",
        "signal",
        "multiprocessing",
        "concurrent",
        "threading",
        "_thread",
        "asyncio",
        "timeit",
        "cProfile",
        "profile",
        "pdb",
        "bdb",
        "trace",
        "doctest",
        "uuid",
        "logging",
        "cloudpickle",
        "dill",
        "numpy.testing",
        "numpy.f2py",
        "numpy.distutils",
        "numpy.ctypeslib",
        "numpy._pytesttester",
        "numpy.load",
        "numpy.save",
        "numpy.savez",
        "numpy.loadtxt",
        "numpy.genfromtxt",
        "numpy.fromfile",
        "numpy.memmap",
        "numpy.vectorize",
        "numpy.frompyfunc",
        "numpy.lib._datasource",
        "numpy.lib.npyio",
        "numpy.lib._npyio_impl",
        "numpy.lib.format",
        "numpy.lib._format_impl",
        "numpy.lib._function_base_impl.vectorize",
        "numpy.lib.function_base.vectorize",
        "numpy._core.memmap",
        "numpy.core.memmap",
        "scipy.io",
        "scipy.datasets",
        "scipy.LowLevelCallable",
        "scipy._lib",
        "joblib.load",
        "joblib.numpy_pickle.load",
        "joblib.numpy_pickle.NDArrayWrapper",
        "joblib.numpy_pickle.ZNDArrayWrapper",
        "joblib.numpy_pickle_compat",
        "joblib.externals",
        "joblib.parallel",
        "joblib.memory",
        "torch.load",
        "torch.serialization.load",
        "torch.storage._load_from_bytes",
        "torch.hub",
        "torch.jit",
        "torch.package",
        "torch.utils",
        "torch._inductor",
        "torch._dynamo",
        "torch.fx",
    }
)

# Modules under a trusted class prefix that are still not trusted: test code,
# dataset fetchers, vendored third-party code and process-pool helpers.
EXCLUDED_FROM_PREFIXES: frozenset[str] = frozenset(
    {
        "sklearn.datasets",
        "sklearn.externals",
        "sklearn.experimental",
        "sklearn.conftest",
        "sklearn._build_utils",
        "sklearn.__check_build",
        "sklearn._min_dependencies",
        "sklearn.utils._testing",
        "sklearn.utils._mocking",
        "sklearn.utils._test_common",
        "sklearn.utils.estimator_checks",
        "sklearn.utils.discovery",
        "sklearn.utils.parallel",
        "sklearn.utils._joblib",
        "sklearn.utils._show_versions",
        "sklearn.utils.fixes",
    }
)

# Module path parts that mark test code in any trusted package.
TEST_MODULE_PARTS: frozenset[str] = frozenset({"tests", "testing", "_testing", "conftest"})

# (module, attribute) pairs resolved lazily: objects that are refused even when
# reached through an alias the name lists did not foresee.
_FORBIDDEN_REFS: tuple[tuple[str, str], ...] = (
    *(("builtins", n) for n in ("eval", "exec", "compile", "getattr", "setattr", "__import__")),
    *(("builtins", n) for n in ("open", "input", "breakpoint", "delattr", "globals", "vars")),
    ("functools", "partial"),
    ("functools", "reduce"),
    ("operator", "attrgetter"),
    ("operator", "itemgetter"),
    ("operator", "methodcaller"),
    ("types", "FunctionType"),
    ("types", "CodeType"),
    ("types", "MethodType"),
    ("os", "system"),
    ("os", "popen"),
    ("subprocess", "Popen"),
    ("marshal", "loads"),
    ("importlib", "import_module"),
    ("pickle", "loads"),
    ("pickle", "load"),
    ("numpy", "vectorize"),
    ("numpy", "frompyfunc"),
    ("numpy", "memmap"),
    ("numpy", "load"),
    ("numpy", "fromfile"),
    ("numpy", "loadtxt"),
    ("numpy", "genfromtxt"),
    ("numpy", "save"),
)


@functools.cache
def forbidden_objects() -> tuple[object, ...]:
    """Resolve ``_FORBIDDEN_REFS`` once; a missing module simply drops out.

    Only standard-library modules and numpy are imported here, all of which
    the process already depends on.
    """
    found: list[object] = []
    for module, attr in _FORBIDDEN_REFS:
        try:
            found.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            continue
    return tuple(found)
