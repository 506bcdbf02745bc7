"""DVC reruns a stage exactly when its code changes: every stage's deps list its whole import closure.

The closure of a stage is computed from the code: every `import` of a `steps` module in the stage's module, also
inside functions, followed recursively. Two kinds of module are not deps, because a change to them cannot alter a
stage's outputs; dvc.yaml's header says the same:
- NOT_DEPS: MLflow tracking and the model registry (what they import for themselves is not followed either);
- the packages' `__init__.py` files, which hold a docstring and nothing else (checked here).
A package listed whole (FOLDER_DEPS: the config package, whose `__init__.py` re-exports its modules) is one folder
dep that covers every file in it; .dvcignore keeps `__pycache__` out of the folder's hash.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

STEPS = REPO / "steps"
NOT_DEPS = frozenset({"steps/core/tracking.py", "steps/core/registry.py"})
FOLDER_DEPS = ("steps/core/config",)
PIPELINES = ("dvc.yaml", "sweeps/dvc.yaml")
STAGE_MODULE = re.compile(r"python -m (steps\.[a-z_]+)")


def module_file(name: str) -> Path | None:
    """The file of module `name` (steps.a.b -> steps/a/b.py or steps/a/b/__init__.py), None if it is not ours."""
    if name != "steps" and not name.startswith("steps."):
        return None
    base = REPO / name.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_files(path: Path) -> set[Path]:
    """Every `steps` module file `path` imports anywhere (top level, functions, `from pkg import module`)."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                # `import steps.a.b` imports steps, steps.a and steps.a.b
                found |= {f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i])))}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            found |= {f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i])))}
            found |= {f for alias in node.names if (f := module_file(f"{node.module}.{alias.name}"))}
    return found


def closure(module: str) -> set[str]:
    """The repo-relative files a stage module runs, minus NOT_DEPS (whose own imports are not followed)."""
    start = module_file(module)
    assert start is not None, f"{module} is not a module of the steps package"
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen or path.relative_to(REPO).as_posix() in NOT_DEPS:
            continue
        seen.add(path)
        todo += imported_files(path) - seen
    files = {p.relative_to(REPO).as_posix() for p in seen}
    return {folder_of(f) for f in files if not (f.endswith("/__init__.py") and folder_of(f) == f)}


def folder_of(file: str) -> str:
    """The folder dep that covers `file`, or the file itself."""
    return next((folder for folder in FOLDER_DEPS if file.startswith(folder + "/")), file)


def stages(pipeline: str) -> list[tuple[str, str, set[str]]]:
    """(stage name, stage module, the steps/ files listed as deps) for every stage of a dvc.yaml."""
    data = yaml.safe_load((REPO / pipeline).read_text(encoding="utf-8"))
    out = []
    for name, stage in data["stages"].items():
        body = stage.get("do", stage)
        match = STAGE_MODULE.search(body["cmd"])
        assert match, f"{pipeline}: stage {name} does not run `python -m steps.<stage>`: {body['cmd']!r}"
        deps = {d for d in body.get("deps", []) if d.startswith("steps/")}
        out.append((name, match.group(1), deps))
    return out


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_stage_depends_on_exactly_the_code_it_runs(pipeline: str) -> None:
    problems = []
    for name, module, deps in stages(pipeline):
        needed = closure(module)
        if missing := sorted(needed - deps):
            problems.append(f"{pipeline}: {name} ({module}) runs but does not list {missing}")
        if extra := sorted(deps - needed):
            problems.append(f"{pipeline}: {name} ({module}) lists {extra}, which it does not import")
    assert not problems, "\n".join(problems)


def test_a_stage_never_imports_another_stage() -> None:
    stage_files = {module_file(m) for p in PIPELINES for _, m, _ in stages(p)}
    for path in stage_files:
        others = sorted(f.relative_to(REPO).as_posix() for f in imported_files(path) & stage_files - {path})
        assert not others, f"{path.relative_to(REPO)} imports the stage modules {others}"


def test_the_stage_modules_are_the_top_level_modules() -> None:
    top = {p.stem for p in STEPS.glob("*.py")} - {"__init__"}
    run = {m.removeprefix("steps.") for p in PIPELINES for _, m, _ in stages(p)}
    assert top == run, f"top-level modules that are not stages: {sorted(top - run)}; stages elsewhere: {run - top}"


def test_package_init_files_hold_only_a_docstring() -> None:
    for init in sorted(STEPS.rglob("__init__.py")):
        if folder_of(init.relative_to(REPO).as_posix()) != init.relative_to(REPO).as_posix():
            continue  # a package listed whole: its __init__.py is a dep
        body = ast.parse(init.read_text(encoding="utf-8")).body
        code = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert not code, f"{init.relative_to(REPO)} holds code: it would run in every stage without being a dep"


def test_the_config_does_not_drag_the_metrics_into_the_corpus() -> None:
    assert closure("steps.core.config") == {"steps/core/config"}
    # the whole package: every module of it is re-exported, and none imports anything else of ours
    within = {f.relative_to(REPO).as_posix() for f in (STEPS / "core" / "config").glob("*.py")}
    reached = set()
    for f in within:
        reached |= {p.relative_to(REPO).as_posix() for p in imported_files(REPO / f) if p.name != "__init__.py"}
    assert reached <= within
    assert not {f for f in closure("steps.synth") if f.startswith(("steps/evaluation/", "steps/training/"))}


def test_closure_follows_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from steps.data.splits import load_split\n    import steps.core.io\n")
    assert imported_files(source) >= {STEPS / "data" / "splits.py", STEPS / "core" / "io.py"}


def test_methods_trained_on_some_tasks_only_match_the_pipeline() -> None:
    from steps.core.config import ONLY_ON

    data = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for method, tasks in ONLY_ON.items():
        assert tuple(data[method]["foreach"]) == tasks, f"dvc.yaml trains {method} on {data[method]['foreach']}"
        assert tuple(data[f"evaluate_{method}"]["foreach"]) == tasks


# ModelConfig keys a training stage does not read from params: the model comes from models/base (pretrain records
# its id and revision), and the tiny preset's shape is pretrain's.
NOT_TRAINING_MODEL_KEYS = frozenset({"name_or_path", "revision", "tiny"})
TRAINING_MODULES = frozenset({"steps.sft", "steps.grpo", "steps.seeds"})


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_a_stage_that_trains_lists_every_fine_tuning_switch(pipeline: str) -> None:
    """A stage that trains (loading.apply_finetune_switches freezes or adapts parts of the model) reruns when any
    switch changes: one left out (as `freeze_audio_encoder_layers` once was) lets DVC keep a model trained
    without it."""
    import dataclasses

    from steps.core.config import ModelConfig

    switches = {f"model.{f.name}" for f in dataclasses.fields(ModelConfig) if f.name not in NOT_TRAINING_MODEL_KEYS}
    data = yaml.safe_load((REPO / pipeline).read_text(encoding="utf-8"))["stages"]
    trained = [name for name, module, _ in stages(pipeline) if module in TRAINING_MODULES]
    assert trained, f"{pipeline} has no training stage"
    for name in trained:
        params = set(data[name].get("do", data[name]).get("params", []))
        missing = set() if "model" in params else switches - params  # "model": the whole section
        assert not missing, f"{pipeline}: {name} does not list {sorted(missing)}"
