"""The package's architecture, checked (issue 19).

gapfit/ is layered: each package imports only packages of lower layers (or its own modules, with
no circles among them).  From the bottom:

    errors, version → runtime → options → linalg → descriptors → config → data → kernels → sparse
    → solve → model → fit → api, cli

Also: mpi4py is imported in runtime/parallel.py only; ``import gapfit`` loads neither SciPy nor
mpi4py; every option error is raised by the config (before the banner); and only the options and
config packages read an option by its key string (descriptors read their own parameter tables).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from gapfit.config.fit_config import build_config
from gapfit.errors import ConfigError
from gapfit.options.gp import GP_KEYS
from gapfit.options.top_level import TOP_LEVEL, parse_top_level

from conftest import ROOT, run_gapfit

PACKAGE = ROOT / "gapfit"
LAYERS = [("errors", "version"), ("runtime",), ("options",), ("linalg",), ("descriptors",), ("config",), ("data",),
          ("kernels",), ("sparse",), ("solve",), ("model",), ("fit",), ("api", "cli", "__init__", "__main__")]
LAYER = {name: k for k, names in enumerate(LAYERS) for name in names}


def _modules():
    """{dotted module name: path} of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path):
    """Every gapfit module ``name`` imports (top level and inside functions), and every other module."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            yield base
            for alias in node.names:  # "from . import x" may import a module
                yield f"{base}.{alias.name}"


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYER[parts[1] if len(parts) > 1 else "__init__"]


def test_imports_go_down_the_layers_without_circles():
    modules = _modules()
    for name in modules:
        assert len(name.split(".")) == 1 or name.split(".")[1] in LAYER, f"{name}: a package of no layer"
    graph = {name: sorted({m for m in _imports(name, path) if m in modules and m != name})
             for name, path in modules.items()}
    upward = [f"{a} -> {b}" for a, deps in graph.items() for b in deps
              if b != "gapfit" and _layer(a) < _layer(b)]
    assert not upward, "imports up the layers:\n" + "\n".join(upward)
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in graph[node]:
            if nxt == "gapfit":
                continue
            if state.get(nxt) == "open":
                raise AssertionError("a circle of imports: " + " -> ".join(trail + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = "done"
    for name in graph:
        if name not in state:
            visit(name, [])
    print(f"{len(modules)} modules in {len(LAYERS)} layers; {sum(map(len, graph.values()))} imports, none upward")


def test_mpi4py_is_imported_by_the_parallel_module_only():
    importers = [name for name, path in _modules().items()
                 if any(m == "mpi4py" or m.startswith("mpi4py.") for m in _imports(name, path))]
    assert importers == ["gapfit.runtime.parallel"], importers


def test_import_gapfit_loads_neither_scipy_nor_mpi4py():
    code = "import sys, gapfit; print(sorted(m for m in ('scipy', 'mpi4py') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_no_function_over_80_lines_and_no_file_over_600():
    long_functions, long_files = [], []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > 600:
            long_files.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long_functions.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long_functions and not long_files, long_functions + long_files


#: the option names, and the modules that may read an option by them: the option tables and the config
#: (descriptors read their own parameter tables, whose keys are theirs)
OPTION_NAMES = set(TOP_LEVEL.names()) | set(GP_KEYS.names())
READERS = ("gapfit.options", "gapfit.config", "gapfit.descriptors")


#: the names the options travelled under before the config (opts.values, v, values, ctx.values, gp[...])
OPTION_HOLDERS = {"values", "v", "opts", "options", "given", "gp", "gp_given", "top_level"}


def _holder(node) -> str:
    """The name of what a subscript, call or ``in`` test reads from (``x`` of ``a.x``, or ``x`` itself)."""
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _key_reads(path: Path):
    """(line, key) of every read of an option holder by an option's name: ``holder["key"]``,
    ``holder.get/key/has("key")``, ``"key" in holder``."""
    for node in ast.walk(ast.parse(path.read_text())):
        key = holder = None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key, holder = node.slice.value, _holder(node.value)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("get", "key", "has") and node.args and isinstance(node.args[0], ast.Constant)):
            key, holder = node.args[0].value, _holder(node.func.value)
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) \
                and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            key, holder = node.left.value, _holder(node.comparators[0])
        if isinstance(key, str) and key in OPTION_NAMES and holder in OPTION_HOLDERS:
            yield node.lineno, key


def test_only_the_config_reads_options_by_their_keys(tmp_path):
    probe = tmp_path / "probe.py"  # what the test looks for (the pipeline's reads before issue 19)
    probe.write_text('jitter = v["sparse_jitter"]\nm = spec.gp["n_sparse"]\nif "e0" in opts.given:\n    pass\n'
                     'out = opts.values.get("report_file")\nz = element.get("zeta")\n')
    assert [key for _, key in _key_reads(probe)] == ["sparse_jitter", "n_sparse", "e0", "report_file"]
    reads = [f"{name}:{line} reads '{key}'" for name, path in _modules().items()
             if not name.startswith(READERS) for line, key in _key_reads(path)]
    assert not reads, "\n".join(reads)


GAP = "distance_2b cutoff=4.0 covariance_type=ard_se delta=1.0 theta_uniform=0.5 n_sparse=10 sparse_method=uniform"
BASE = ["at_file=Si.xyz", "energy_parameter_name=dft_energy", "force_parameter_name=dft_force",
        "default_sigma={0.01 1.0 0.5 0.0}", "gap={" + GAP + "}"]
#: option errors, several of them between options: (extra arguments, words of the message)
OPTION_ERRORS = {
    "export_covariance with e0_method=joint": (["e0_method=joint", "export_covariance=T"], "export_covariance"),
    "checkpoint_file with the dense solver": (["checkpoint_file=c.ckpt", "linear_solver=dense"], "streaming"),
    "theta_fac not a number": (["gap={" + GAP.replace("theta_uniform=0.5", "theta_fac=x") + "}"], "theta_fac"),
    "config_type_sigma malformed": (["config_type_sigma={bulk:0.01}"], "config_type_sigma"),
    "e0 of an unknown element": (["e0={Xx:1.0}"], "unknown element"),
    "core_ip_args not an init string": (["core_ip_args={Glue}"], "core_ip_args"),
    "an unknown key": (["sparse_jiter=1"], "sparse_jiter"),
}


@pytest.mark.parametrize("case", list(OPTION_ERRORS))
def test_every_option_error_comes_from_the_config_before_the_banner(tmp_path, case):
    args, words = OPTION_ERRORS[case]
    with pytest.raises(ConfigError, match=words):
        build_config(parse_top_level(BASE + args))
    (tmp_path / "Si.xyz").write_text("")
    proc = run_gapfit(BASE + args, tmp_path)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert proc.stdout == "", proc.stdout  # no banner: nothing ran
