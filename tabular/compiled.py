"""Compiled prediction: a LightGBM model's trees as native code (lleaves + LLVM), with a safe cache.

:func:`compile_forest` turns the Booster's text model (cut at the rounds kept) into an
``lleaves.Model`` whose ``predict`` equals ``Booster.predict`` to floating-point rounding: lleaves
applies the same rules as LightGBM's categorical splits (NaN and negative codes go right, a code is
"left" when its bit is set in the split's bitset) and the binary objective's sigmoid.

The compile cache (``cache_dir``) holds native object files, which are loaded and executed: **anyone
who can write that folder can run code in the process that reads it**, so keep it private to the
user (never a shared or world-writable folder). Each file is named by, and starts with, a digest of
the model text, the compile options, the lleaves/llvmlite versions and the host CPU: a file swapped
in from another model (or truncated) does not carry this model's digest and is recompiled, never
loaded. The digest cannot stop someone who can write the folder from forging a file: that is why the
folder must be private.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lightgbm as lgb
import lleaves
import llvmlite
import llvmlite.binding as llvm
import llvmlite.ir
from lleaves.compiler.ast import parse_to_ast
from lleaves.compiler.codegen import gen_forest
from lleaves.lleaves import get_entry_func_type

from common.atomic import atomic_path

COMPILE_OPTIONS = "lleaves fp64 blocksize=34 O3 inline codemodel=large"  # part of the compile cache key
#: Cache files start with this line and the model's key; a file without the right line is never loaded.
CACHE_FORMAT = "landslide-lleaves-cache/1"


def _compile_lleaves(model: Any, object_code: bytes | None = None) -> bytes:
    """Compile an uncompiled ``lleaves.Model`` in place (what ``Model.compile()`` does).

    lleaves 1.3.0's ``Model.compile`` optimizes with llvmlite's legacy ``PassManagerBuilder``, which
    llvmlite 0.45+ removed (``AttributeError`` with the pinned llvmlite 0.50). This builds the same
    LLVM module with lleaves' own parser and code generator (fp64, cache block size 34, binary
    objective applied, i.e. probabilities), optimizes it with llvmlite's new pass manager at O3
    with inlining, and JIT-links it for the host CPU with MCJIT as lleaves does (``cache``:
    object-code file to load if it exists, else written after compiling). No fast-math flags: the
    trees are summed in order, as LightGBM does.
    """
    llvm.initialize_native_target()  # llvm.initialize() (called by lleaves) now raises
    llvm.initialize_native_asmprinter()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        features = ""
    tm = llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=features, reloc="pic", codemodel="large"
    )
    root = "forest_root"
    cached = object_code is not None
    if cached:
        module = llvm.parse_assembly("")  # the object code comes from the cache
    else:
        forest = parse_to_ast(model.model_file)
        forest.raw_score = False
        ir_module = llvmlite.ir.Module(name="forest")
        gen_forest(forest, ir_module, 34, root, True)
        ir_module.triple = llvm.get_process_triple()
        module = llvm.parse_assembly(str(ir_module))
        module.verify()
        pto = llvm.create_pipeline_tuning_options(speed_level=3)
        pto.inlining_threshold = 1
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(module, pb)
    engine = llvm.create_mcjit_compiler(module, tm)
    produced: list[bytes] = []
    if cached:
        engine.set_object_cache(getbuffer_func=lambda _m: object_code)
    else:
        engine.set_object_cache(notify_func=lambda _m, buf: produced.append(bytes(buf)))
    engine.finalize_object()
    engine.run_static_constructors()
    model.use_fp64 = True
    model._execution_engine = engine  # keeps the code alive
    model._c_entry_func = get_entry_func_type(True)(engine.get_function_address(root))
    model.is_compiled = True
    return object_code if object_code is not None else b"".join(produced)


def cache_key(model_text: str) -> str:
    """Digest of everything that determines the compiled code (model text, options, versions, CPU)."""
    try:
        cpu_features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        cpu_features = ""
    src = "\n".join(
        [model_text, COMPILE_OPTIONS, version("lleaves"), llvmlite.__version__, llvm.get_host_cpu_name(), cpu_features]
    )
    return hashlib.sha256(src.encode("utf-8")).hexdigest()[:24]


def compile_forest(
    booster: lgb.Booster, best_iteration: int, n_features: int, cache_dir: str | os.PathLike[str] | None = None
) -> Any:
    """An ``lleaves.Model`` of ``booster``'s first ``best_iteration`` rounds (all when 0), compiled.

    ``cache_dir``: folder reusing compiled object code across calls (see the module docstring).
    Raises ``ValueError`` when the compiled forest does not hold the expected trees and features.
    """
    text = booster.model_to_string(num_iteration=best_iteration or None)
    key = cache_key(text)
    header = f"{CACHE_FORMAT} {key}\n".encode()
    with tempfile.TemporaryDirectory(prefix="lleaves_") as tmp:
        model_file = Path(tmp) / "model.txt"
        model_file.write_text(text, encoding="utf-8")
        model = lleaves.Model(model_file=str(model_file))
        if cache_dir is None:
            _compile_lleaves(model)
        else:
            target = Path(cache_dir) / f"lleaves_{key}.o"
            cached = target.read_bytes() if target.is_file() else b""
            if cached.startswith(header):  # code compiled from this very model text (else: recompile)
                _compile_lleaves(model, cached[len(header) :])
            else:
                with atomic_path(target) as part:
                    part.write_bytes(header + _compile_lleaves(model))
    n_iter = booster.current_iteration()
    expected_trees = booster.num_model_per_iteration() * (min(best_iteration, n_iter) if best_iteration else n_iter)
    if model.num_trees() != expected_trees or model.num_feature() != n_features:
        raise ValueError(
            f"compiled model has {model.num_trees()} trees / {model.num_feature()} features, expected "
            f"{expected_trees} / {n_features}"
        )
    return model
