"""nnlandmark's layers: nnU-Net is reached only through ``nnlandmark.nnunet``, the bottom layer.

The rules (see ``nnlandmark/nnunet/__init__.py`` and ``nnlandmark/model/__init__.py``):

- no module outside ``nnlandmark/nnunet`` imports ``nnunetv2``, so that an
  nnunetv2 upgrade is a change in one package;
- ``nnlandmark/nnunet`` imports nothing of nnlandmark but itself and leaf
  modules (:data:`ADAPTER_MAY_IMPORT`): the layers above (data, planning,
  training, inference, evaluation, report) pass down what it needs;
- each package in :data:`BELOW` imports none of the packages listed for it: the model
  folder's contract (``model``) sits below training, inference, evaluation and report,
  and training reaches neither inference nor report (what it needs of them lives below,
  or is passed down).

Every module is parsed with ``ast``, not imported, so this runs in a second and
sees imports inside functions too (most of ours are lazy). Dynamic imports are
seen when the module name is a literal (``importlib.import_module("...")``).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nnlandmark"
ADAPTER = "nnlandmark.nnunet"
#: what the adapter may import of nnlandmark: itself, and leaf modules that import nothing above it
ADAPTER_MAY_IMPORT = ("nnlandmark.nnunet", "nnlandmark.geometry", "nnlandmark.errors", "nnlandmark.files",
                      "nnlandmark.architectures")
#: package -> packages above it, which it must not import
BELOW = {
    "nnlandmark.model": ("nnlandmark.training", "nnlandmark.inference", "nnlandmark.evaluation",
                         "nnlandmark.report", "nnlandmark.cli", "nnlandmark.demo"),
    "nnlandmark.training": ("nnlandmark.inference", "nnlandmark.report", "nnlandmark.evaluation"),
}


def module_name(path: Path, package_dir: Path = PACKAGE) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imported_modules(source: str, module: str, is_package: bool = False) -> list:
    """``(line, dotted name)`` of everything ``source`` (the text of ``module``) imports.

    ``from a.b import c`` gives ``a.b.c`` (``c`` may be a module or a name in
    ``a.b``; either way it is inside ``a.b``); relative imports are resolved
    against ``module``'s package.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found += [(node.lineno, base if alias.name == "*" else f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if called in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def layering_violations(package_dir: Path = PACKAGE) -> list:
    """One line per import that breaks the rules of this module's docstring."""
    problems = []
    for path in sorted(package_dir.rglob("*.py")):
        module = module_name(path, package_dir)
        in_adapter = _within(module, ADAPTER)
        for line, name in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            where = f"{path.relative_to(package_dir.parent)}:{line}"
            if _within(name, "nnunetv2") and not in_adapter:
                problems.append(f"{where}: imports {name}; only {ADAPTER} may import nnunetv2")
            if in_adapter and _within(name, "nnlandmark") \
                    and not any(_within(name, allowed) for allowed in ADAPTER_MAY_IMPORT):
                problems.append(f"{where}: imports {name}; {ADAPTER} is the bottom layer and may import only "
                                f"{', '.join(ADAPTER_MAY_IMPORT)}")
            for package, above in BELOW.items():
                if _within(module, package) and any(_within(name, a) for a in above):
                    problems.append(f"{where}: imports {name}; {package} sits below {', '.join(above)}")
    return problems


def test_nnunetv2_only_under_the_adapter_and_the_adapter_imports_nothing_above_it():
    problems = layering_violations()
    assert not problems, "\n".join(problems)


def test_the_walk_sees_the_adapters_nnunetv2_imports():
    """Guards against a check that passes because it reads nothing."""
    adapter = [name for path in (PACKAGE / "nnunet").glob("*.py")
               for _, name in imported_modules(path.read_text(), module_name(path))]
    assert any(_within(name, "nnunetv2") for name in adapter)


@pytest.mark.parametrize("module, source, bad", [
    ("nnlandmark.training.train", "def f():\n    from nnunetv2.utilities import helpers\n", True),
    ("nnlandmark.report.qc", "import importlib\nimportlib.import_module('nnunetv2.paths')\n", True),
    ("nnlandmark.nnunet.raw", "from nnlandmark.data.dataset import LandmarkDataset\n", True),
    ("nnlandmark.nnunet.raw", "from ..training import presets\n", True),
    ("nnlandmark.nnunet.raw", "from nnlandmark import inference\n", True),
    ("nnlandmark.nnunet.raw", "from . import planning\nfrom nnlandmark.geometry import nearest_voxel\n", False),
    ("nnlandmark.nnunet.trainer", "from nnunetv2.training import nnUNetTrainer\n", False),
    ("nnlandmark.model.folder", "def f():\n    from nnlandmark.training.presets import PRESETS\n", True),
    ("nnlandmark.model.description", "from ..inference import predict\n", True),
    ("nnlandmark.model.folder", "from nnlandmark.nnunet.predictor import LandmarkPredictor\n", False),
    ("nnlandmark.training.train", "from nnlandmark.report.curves import plot_training_curves\n", True),
    ("nnlandmark.training.train", "from nnlandmark.inference.shape import fit_shape_prior\n", True),
    ("nnlandmark.training.train", "from nnlandmark.model.shape import fit_shape_prior\n", False),
])
def test_the_rules_catch_bad_imports(tmp_path, module, source, bad):
    path = tmp_path / Path(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True)
    path.write_text(source)
    assert bool(layering_violations(tmp_path / "nnlandmark")) == bad
