"""The exported streaming graphs compiled ahead of time by Apache TVM (Relax), run with the stream
loop of :mod:`lrac.runtime`.

onnxruntime spends most of a 10 ms step on per-node overhead (about 1,200 small nodes a frame);
the same graphs compiled by TVM run about three times faster on one core, with the same tokens.
Usage::

    from lrac.tvm_engine import compile_tvm, TvmCodec
    compile_tvm("t1-onnx/")                 # once: t1-onnx/tvm/*.so, weights.npz, lrac-tvm.json
    codec = TvmCodec("t1-onnx/")            # an OnnxCodec whose graphs run in TVM
    enc = codec.stream_encoder(6000)        # as lrac.runtime.OnnxCodec

What the compiler writes (``out_dir``, default ``ONNX_DIR/tvm``): one shared library per float32
graph the export's sidecar lists, the graphs' weights lifted out into one pool ``weights.npz``
(keyed by content hash: the branches of a side share almost all their weights, so each is stored
and held in memory once), and ``lrac-tvm.json``: the TVM version and target, each library's
checksum, its inputs and its weights. A graph TVM cannot compile is recorded with the reason and
runs in onnxruntime (a warning names it). Running needs only ``tvm.runtime``.

The target is LLVM for ``x86-64-v3`` (AVX2, FMA: any x86-64 CPU since about 2015) by default: on
a Zen 4 machine it was 2-4 % slower than the host's own ``-mcpu``. Pass ``mcpu`` to build for
another CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .runtime import SIDECAR, ModelFileError, OnnxCodec, check_file, file_sha256

TVM_SIDECAR = "lrac-tvm.json"
TVM_FORMAT = "lrac-tvm"
TVM_FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.npz"
DEFAULT_MCPU = "x86-64-v3"
# the CPU features an x86-64-v3 library uses (as /proc/cpuinfo names them)
_X86_64_V3_FLAGS = ("avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe")
LIFT_MIN_BYTES = 256   # folded constants at least this big go to the weights pool


def _import_tvm():
    os.environ.setdefault("TVM_NUM_THREADS", "1")   # read once, when tvm loads its thread pool
    try:
        import tvm
        import tvm.runtime.vm  # noqa: F401
    except ImportError:
        raise ModelFileError("the TVM engine needs Apache TVM: pip install 'lrac[tvm]'") from None
    return tvm


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def compiled(onnx_dir: str | Path) -> bool:
    """Whether :func:`compile_tvm` compiled the export in ``onnx_dir`` (into its default ``tvm/``)."""
    return (Path(onnx_dir) / "tvm" / TVM_SIDECAR).is_file()


# -- compiling -------------------------------------------------------------------------------------
def compile_tvm(onnx_dir: str | Path, out_dir: str | Path | None = None, mcpu: str = DEFAULT_MCPU,
                log: Callable[[str], None] | None = None) -> dict:
    """Compile every float32 graph of the export in ``onnx_dir`` (``lrac-export``) for the CPU.

    Args:
        onnx_dir: the export folder (its ``lrac-onnx.json`` lists the graphs).
        out_dir: where the libraries go (default ``onnx_dir/tvm``).
        mcpu: LLVM CPU name of the target (default ``x86-64-v3``; ``native``-like names work too).
        log: called with one line per graph.

    Returns the sidecar written as ``out_dir/lrac-tvm.json``.
    """
    tvm = _import_tvm()
    from tvm import relax

    codec = OnnxCodec(onnx_dir, "float32")   # checks the export's files and checksums
    out = Path(out_dir) if out_dir is not None else codec.model_dir / "tvm"
    out.mkdir(parents=True, exist_ok=True)
    _patch_onnx_frontend()
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 1})
    pool: dict[str, np.ndarray] = {}
    graphs: dict[str, dict] = {}
    for side in ("encoder", "decoder"):
        for branch in codec.meta[side]["branches"]:
            graph = branch["graph"]
            if graph in graphs:
                continue
            path = codec.model_dir / "float32" / graph
            entry: dict[str, Any] = {"side": side, "onnx_sha256": codec.meta["files"][f"float32/{graph}"]}
            start = time.time()
            try:
                executable, inputs, weights = _compile_graph(path, target, relax, tvm)
                library = out / (Path(graph).stem + ".so")
                executable.export_library(str(library))
            except Exception as exc:  # TVM raises many types; the graph then runs in onnxruntime
                entry["error"] = _one_line(exc)
                if log:
                    log(f"{graph}: TVM cannot compile it ({entry['error']}); it will run in onnxruntime")
            else:
                keys = []
                for a in weights:
                    key = hashlib.sha1(repr((a.shape, a.dtype.str)).encode() + a.tobytes()).hexdigest()
                    pool.setdefault(key, a)
                    keys.append(key)
                entry.update(library=library.name, sha256=file_sha256(library), inputs=inputs, weights=keys)
                if log:
                    log(f"{graph}: {library.name} in {time.time() - start:.1f} s, {len(keys)} weights")
            graphs[graph] = entry
    np.savez(out / WEIGHTS_FILE, **pool)
    sidecar = {"format": TVM_FORMAT, "version": TVM_FORMAT_VERSION, "model_id": codec.meta["model_id"],
               "tvm_version": tvm.__version__, "target": str(target), "mcpu": mcpu,
               "weights": {"file": WEIGHTS_FILE, "sha256": file_sha256(out / WEIGHTS_FILE), "tensors": len(pool),
                           "bytes": int(sum(a.nbytes for a in pool.values()))},
               "graphs": graphs}
    (out / TVM_SIDECAR).write_text(json.dumps(sidecar, indent=1))
    return sidecar


def _compile_graph(path: Path, target, relax, tvm) -> tuple[Any, list[str], list[np.ndarray]]:
    """One ONNX graph (static input shapes, as lrac-export writes them) -> (VM executable, its graph
    input names, the lifted weights appended to them as extra inputs, in order)."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load(str(path))   # reads the weights file beside it
    shapes, dtypes = {}, {}
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if not all(d.HasField("dim_value") for d in dims):
            raise ValueError(f"input {inp.name} has a symbolic shape")
        shapes[inp.name] = [int(d.dim_value) for d in dims]
        dtypes[inp.name] = str(onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = from_onnx(model, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    with target:
        mod = relax.transform.DecomposeOpsForInference()(mod)
    lifted: list[np.ndarray] = []
    executable = relax.build(mod, target=target, relax_pipeline=_pipeline(target, lifted, relax, tvm),
                             exec_mode="compiled")
    return executable, list(shapes), lifted


def _pipeline(target, lifted: list, relax, tvm):
    """TVM's generic CPU pipeline with two changes: after constant folding, the constants are
    rewritten (:func:`_rewrite_constants`), and the matrix products and convolutions get a schedule
    that reads the weights row by row (:func:`_schedule_matmuls`)."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    @tvm.transform.module_pass(opt_level=0)
    def run(mod, _ctx):
        with target:
            mod = tvm.transform.Sequential(cpu.library_dispatch_passes(target) + [
                relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant()])(mod)
            mod, lifted[:] = _rewrite_constants(mod, relax, tvm)
            mod = tvm.transform.Sequential([relax.transform.FuseOps(), relax.transform.FuseTIR()])(mod)
            mod = _schedule_matmuls(mod, relax)
            mod = tvm.transform.Sequential(cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))(mod)
        return mod

    return run


def _rewrite_constants(mod, relax, tvm) -> tuple[Any, list[np.ndarray]]:
    """Constants of the folded module: each of >= LIFT_MIN_BYTES becomes a parameter of ``main``
    (after the graph inputs), so the weights live in the shared pool instead of every library;
    each with zero elements becomes ``R.zeros``: the executable's constant loader rejects an empty
    tensor whose first dimension is not 0 ("Invalid DLTensor file format") - without this the
    libraries of the start-up graphs (empty states) compile but do not load."""
    lifted: list = []

    @relax.expr_functor.mutator
    class Rewrite(relax.PyExprMutator):
        def visit_generic_const_(self, op):
            value = op.value
            if not hasattr(value, "numpy"):
                return op
            shape = [int(d) for d in value.shape]
            if shape and 0 in shape:
                return self.builder_.emit(relax.op.zeros(relax.ShapeExpr(shape), str(value.dtype)))
            a = value.numpy()
            if a.nbytes < LIFT_MIN_BYTES:
                return op
            var = relax.Var(f"w{len(lifted)}", relax.TensorType(shape, str(value.dtype)))
            lifted.append((var, a))
            return var

    main = mod["main"]
    body = Rewrite().visit_expr(main.body)
    mod["main"] = relax.Function(list(main.params) + [v for v, _ in lifted], body, main.ret_ty,
                                 main.is_pure, main.attrs)
    # the R.zeros just emitted are high-level ops again: legalize them
    mod = tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern()])(mod)
    return mod, [a for _, a in lifted]


def _schedule_matmuls(mod, relax):
    """For each matrix product / convolution block: move the reduction loop outside the last
    spatial loop, so that the inner loop walks a weight row contiguously (out[n] += x[k] * W[k, n])
    and vectorizes (by 16 or 8 lanes where the row divides). The default schedule reduces over k
    innermost, reading W by columns, which is slow for the one-frame products of a stream."""
    from tvm import s_tir

    names = ("matmul", "NT_matmul", "T_matmul", "T_matmul_NN", "T_matmul_NT", "conv1d_ncw", "conv2d_nchw",
             "group_conv1d_ncw")
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function) or ("matmul" not in gv.name_hint and "conv" not in gv.name_hint):
            continue
        sch = s_tir.Schedule(func)
        changed = False
        for name in names:
            try:
                block = sch.get_sblock(name)
            except Exception:  # no such block in this function
                continue
            reduce = [str(v.iter_type) in ("2", "CommReduce") for v in sch.get(block).iter_vars]
            loops = sch.get_loops(block)
            n_red = sum(reduce)
            if n_red == 0 or len(loops) != len(reduce) or not all(reduce[-n_red:]):
                continue
            inner = loops[-n_red - 1]
            extent = int(sch.get(inner).extent)
            if extent == 1:
                continue
            sch.reorder(*loops[-n_red:], inner)
            for lanes in (16, 8):
                if extent % lanes == 0 and extent > lanes:
                    _, vec = sch.split(inner, [None, lanes])
                    sch.vectorize(vec)
                    break
            sch.decompose_reduction(block, loops[-n_red])
            changed = True
        if changed:
            mod[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
    return mod


_PATCHED = False


def _patch_onnx_frontend() -> None:
    """Fixes to TVM 0.27's ONNX frontend for what lrac's graphs contain (applied once)."""
    global _PATCHED
    if _PATCHED:
        return
    from . import _tvm_frontend

    _tvm_frontend.apply()
    _PATCHED = True


# -- running ---------------------------------------------------------------------------------------
class TvmGraph:
    """One compiled graph: ``(chunk, state) -> (output, new state values)``. The state stays in TVM
    tensors between calls; numpy values (a stream's empty start state, or an onnxruntime fallback
    graph's outputs) are handed over through DLPack, which costs ~3 us where ``tvm.runtime.tensor``
    costs ~30."""

    def __init__(self, tvm, vm, inputs: list[str], chunk_name: str, weights: list) -> None:
        self.vm, self.main = vm, vm["main"]
        self.inputs, self.chunk_name, self.weights = inputs, chunk_name, weights
        self.tensor_type, self.from_dlpack, self.empty = tvm.runtime.Tensor, tvm.runtime.from_dlpack, tvm.runtime.empty

    def _tensor(self, value):
        if isinstance(value, self.tensor_type):
            return value
        value = np.asarray(value)
        if value.size == 0:   # numpy's empty arrays have strides TVM's kernels refuse as not compact
            return self.empty(value.shape, str(value.dtype))
        # a fresh 64-byte aligned copy: TVM's kernels may assume aligned data, and the graph's
        # outputs (the next state) may be views of its inputs, so a caller's buffer is never lent
        raw = np.empty(value.nbytes + 64, np.uint8)
        start = (-raw.ctypes.data) % 64
        a = raw[start:start + value.nbytes].view(value.dtype).reshape(value.shape)
        a[...] = value
        return self.from_dlpack(a)

    def __call__(self, chunk: np.ndarray, state: dict) -> tuple[np.ndarray, list]:
        args = [self._tensor(chunk if n == self.chunk_name else state[n]) for n in self.inputs]
        out = self.main(*args, *self.weights)
        return np.from_dlpack(out[0]).copy(), list(out[1:])


def _check_cpu(mcpu: str, folder: Path) -> None:
    """Refuse (one line) an x86-64-v3 library on a CPU without its features, where Linux says."""
    if mcpu != DEFAULT_MCPU:
        return
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    if flags is None:
        return
    missing = [f for f in _X86_64_V3_FLAGS if f not in flags]
    if missing:
        raise ModelFileError(f"{folder}: compiled for {mcpu}, this CPU lacks {', '.join(missing)}: "
                             f"compile again with another mcpu")


class TvmCodec(OnnxCodec):
    """An exported codec whose float32 graphs run as TVM libraries (:func:`compile_tvm`); the stream
    loop, the checks and the API are :class:`lrac.runtime.OnnxCodec`'s.

    Args:
        model_dir: the export folder (``lrac-export``).
        tvm_dir: the compiled libraries (default ``model_dir/tvm``).
        threads: threads of onnxruntime for graphs TVM could not compile (TVM's kernels use one).
    """

    def __init__(self, model_dir: str | Path, tvm_dir: str | Path | None = None, threads: int = 1) -> None:
        model_dir = Path(model_dir)
        self.tvm_dir = Path(tvm_dir) if tvm_dir is not None else model_dir / "tvm"
        self._tvm = _import_tvm()
        sidecar_path = self.tvm_dir / TVM_SIDECAR
        if not sidecar_path.is_file():
            raise ModelFileError(f"{self.tvm_dir}: no {TVM_SIDECAR} (compile the export first: "
                                 f"lrac-export MODEL DIR --tvm)")
        try:
            self.tvm_meta = json.loads(sidecar_path.read_text())
            assert self.tvm_meta["format"] == TVM_FORMAT and isinstance(self.tvm_meta["graphs"], dict)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AssertionError):
            raise ModelFileError(f"{sidecar_path}: unreadable or not an lrac TVM sidecar") from None
        if self.tvm_meta.get("version") != TVM_FORMAT_VERSION:
            raise ModelFileError(f"{sidecar_path}: format version {self.tvm_meta.get('version')}, this lrac "
                                 f"reads {TVM_FORMAT_VERSION}: compile the export again")
        built, have = self.tvm_meta.get("tvm_version", "?"), self._tvm.__version__
        if built.split(".")[:2] != have.split(".")[:2]:
            raise ModelFileError(f"{self.tvm_dir}: compiled with TVM {built}, this is TVM {have}: compile again")
        _check_cpu(self.tvm_meta.get("mcpu", ""), self.tvm_dir)
        self._weights: list | None = None
        super().__init__(model_dir, "float32", threads)
        if self.tvm_meta.get("model_id") != self.meta["model_id"]:
            raise ModelFileError(f"{self.tvm_dir}: compiled from another model ({self.tvm_meta.get('model_id')}; "
                                 f"this export is {self.meta['model_id']}): compile again")
        # a graph left to onnxruntime is worth a warning where it streams: a flush (a chunk of 0
        # frames; t1's five such graphs) runs once a stream, as fast in either engine
        streaming = {b["graph"] for side in ("encoder", "decoder") for b in self.meta[side]["branches"]
                     if b["frames"] > 0}
        failed = sorted(g for g, e in self.tvm_meta["graphs"].items() if "error" in e and g in streaming)
        if failed:
            warnings.warn(f"{len(failed)} of {len(self.tvm_meta['graphs'])} graphs run in onnxruntime "
                          f"(TVM could not compile them): {', '.join(failed)}", stacklevel=2)

    def _weight_pool(self) -> dict:
        """The shared weights, checked and loaded once, as TVM tensors keyed by content hash."""
        if self._weights is None:
            info = self.tvm_meta.get("weights", {})
            path = self.tvm_dir / str(info.get("file", WEIGHTS_FILE))
            check_file(path, info.get("sha256"), TVM_SIDECAR, "compile again")
            with np.load(path) as z:
                self._weights = {k: self._tvm.runtime.tensor(z[k]) for k in z.files}
        return self._weights

    def load_graph(self, side: str, graph: str) -> Callable:
        entry = self.tvm_meta["graphs"].get(graph)
        if entry is None:
            raise ModelFileError(f"{self.tvm_dir}: {graph} was not compiled ({TVM_SIDECAR} does not list it): "
                                 f"compile again")
        if entry.get("onnx_sha256") != self.meta["files"].get(f"float32/{graph}"):
            raise ModelFileError(f"{self.tvm_dir}: {graph} was compiled from another file: compile again")
        if "error" in entry:   # warned about in __init__
            return super().load_graph(side, graph)
        path = self.tvm_dir / str(entry["library"])
        check_file(path, entry.get("sha256"), TVM_SIDECAR, "compile again")
        pool = self._weight_pool()
        try:
            weights = [pool[k] for k in entry["weights"]]
        except KeyError:
            raise ModelFileError(f"{self.tvm_dir / WEIGHTS_FILE}: lacks weights of {graph}: compile again") from None
        tvm = self._tvm
        try:
            vm = tvm.runtime.vm.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
        except Exception as exc:  # TVM's loader raises its own types
            raise ModelFileError(f"{path}: TVM cannot load it ({_one_line(exc)})") from None
        return TvmGraph(tvm, vm, list(entry["inputs"]), self.meta[side]["input"], weights)
