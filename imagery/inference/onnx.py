"""Segmenters on ONNX Runtime: export any network of the family to ONNX (fp32 or int8), and run it.

What is exported is the *network*: preprocessed input ``x`` ``(B, C, H, W)`` float32 (dynamic batch
``B``, dynamic ``H`` and ``W`` in multiples of :data:`STRIDE`, so any ``--tile`` runs) to its head outputs
as logits, one ONNX output per key of the network's output dict (``out`` ``(B, 2, H, W)``; ``out_256`` and
``out_64`` for the multi-resolution head; ``patch_logit`` ``(B,)`` for
the dual head). Everything around it stays in Python and is the same code as the torch path, so both
runtimes give the same outputs:

* before: :class:`imagery.transforms.preprocess.Preprocessor` (cleaning, engineered channels in
  NumPy/OpenCV, normalisation), which needs the statistics stored with the model;
* after: :func:`imagery.inference.postprocess.predict_probs` (softmax, test-time augmentation, voting,
  the patch probability), thresholding and morphology.

The model's :class:`~imagery.inference.segmenter.SegmenterMeta` travels inside the ``.onnx`` file
(metadata key ``landslide.segmenter_meta``), so one file is a deployable segmenter:
:func:`load_onnx_segmenter`. It also stores ``source_digest``, the :func:`~imagery.inference.segmenter.state_digest`
of the torch weights it was exported from: the converted model's ``digest`` is its source model's, so a fuser
trained on that model's out-of-fold predictions accepts it (int8 too: the same model, quantized). Files
exported before this carry no ``source_digest`` (digest: the file's sha256) and may have a fixed tile size
(``OnnxNetwork.fixed_size``; scene prediction then tiles at that size).

int8 (``int8=True``): static post-training quantization with ONNX Runtime (QDQ format, per-channel
int8 weights, uint8 activations), calibrated on preprocessed patches (the project's synthetic
patches by default, or real ones).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from common.atomic import atomic_path
from common.cli import UserError, one_line
from imagery.data.bands import band_indices
from imagery.data.synthetic import synth_patch
from imagery.inference.segmenter import Segmenter, SegmenterMeta, state_digest
from imagery.transforms import Normalizer, Preprocessor
from imagery.transforms.features import n_channels

META_KEY = "landslide.segmenter_meta"
INPUT_NAME = "x"
OPSET = 18
#: The network halves its input 4 times: exported heights and widths are multiples of this.
STRIDE = 16


class _Outputs(nn.Module):
    """The network with its output dict flattened to a tuple in ``names`` order (ONNX outputs)."""

    def __init__(self, net: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.net, self.names = net, names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(x)
        return tuple(out[k] for k in self.names)


def _output_names(net: nn.Module, example: torch.Tensor) -> tuple[str, ...]:
    with torch.no_grad():
        return tuple(net(example).keys())


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """The exporter prints progress lines and logs warnings of its own (torchvision is absent on
    purpose); keep the command's output the project's."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def export_onnx(
    net: nn.Module,
    meta: SegmenterMeta,
    path: str | os.PathLike[str],
    *,
    int8: bool = False,
    calibration: np.ndarray | None = None,
    opset: int = OPSET,
) -> Path:
    """Write ``net`` (with ``meta`` inside) as an ONNX file at ``path``, atomically; returns the path.

    ``calibration``: preprocessed inputs ``(N, C, H, W)`` float32 for the int8 calibration (default: 16
    synthetic patches of the model's patch size, preprocessed like the model's inputs).
    """
    net = net.to("cpu").float().eval()
    size = int(meta.patch_size)
    # the model's own input channels: the channel set on its band set (22 for the L2A bands without B10, not 23)
    example = torch.zeros(2, n_channels(int(meta.channel_set), meta.bands or None), size, size)
    names = _output_names(net, example)
    wrapped = _Outputs(net, names).eval()
    target = Path(path)
    source_digest = state_digest(net)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        dims = {0: torch.export.Dim("batch", min=1)}
        dynamic = {
            **dims,
            2: STRIDE * torch.export.Dim("h16", min=1, max=4096),
            3: STRIDE * torch.export.Dim("w16", min=1, max=4096),
        }
        with _silenced():
            try:  # any tile size (multiples of STRIDE); a network that cannot be traced so keeps its patch size
                _export(wrapped, example, fp32, names, dynamic, opset)
            except Exception:  # noqa: BLE001 - torch.export raises many types for a shape it cannot generalise
                _export(wrapped, example, fp32, names, dims, opset)
        model_path = fp32
        if int8:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            model_path = Path(tmp) / "int8.onnx"
            data = calibration if calibration is not None else calibration_inputs(meta)
            with _silenced():
                quantize_static(
                    str(prepared),
                    str(model_path),
                    _Reader(data),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                )
        model = onnx.load(str(model_path))
        stored = {**meta.to_dict(), "onnx_outputs": list(names), "int8": bool(int8), "source_digest": source_digest}
        onnx.helper.set_model_props(model, {META_KEY: json.dumps(stored)})
        with atomic_path(target) as part:
            onnx.save(model, str(part))
    return target


def _export(
    wrapped: nn.Module, example: torch.Tensor, path: Path, names: tuple[str, ...], dims: dict, opset: int
) -> None:
    torch.onnx.export(
        wrapped,
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=list(names),
        dynamic_shapes={"x": dims},
        opset_version=opset,
        dynamo=True,
        external_data=False,
    )


def calibration_inputs(meta: SegmenterMeta, n: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` synthetic patches (half with landslides) preprocessed as the model's inputs ``(n, C, H, W)``."""
    rng = np.random.default_rng(seed)
    raw = np.stack([synth_patch(rng, has_landslide=i % 2 == 0, size=int(meta.patch_size))[0] for i in range(n)])
    raw = raw[:, band_indices(meta.bands)]  # the 14 L4S bands -> the model's band set, in its order
    normalizer = Normalizer.from_dict(meta.normalizer) if meta.normalizer else None
    prep = Preprocessor(meta.channel_set, normalizer, bands=meta.bands)
    return prep(raw, torch.device("cpu")).numpy().astype(np.float32)


class _Reader(CalibrationDataReader):
    """Feeds calibration inputs one at a time to ONNX Runtime's static quantizer."""

    def __init__(self, data: np.ndarray) -> None:
        self._items = iter([{INPUT_NAME: np.ascontiguousarray(x[None], dtype=np.float32)} for x in data])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


class OnnxNetwork:
    """An ONNX Runtime session with the network contract: ``net(x (B, C, H, W) tensor) -> {name: logits}``.

    Runs on the CPU (``CPUExecutionProvider``) with ``threads`` intra-op threads (0 = one per core this
    process may use), all graph optimizations (fusions, constant folding, layout changes) and sequential
    execution (on 2 cores parallel operators would only fight for the same cores). ``digest`` is the source
    model's weight digest stored at export (files exported before: the sha256 of the ``.onnx`` file).
    ``fixed_size``: the tile size a file exported with a fixed height and width takes (``None``: any
    multiple of :data:`STRIDE`). ``shrink_arena``: give the memory arena back after every run (ONNX Runtime's
    ``memory.enable_memory_arena_shrinkage``): the engine sets it while it measures several sessions side by
    side, each of whose arenas would otherwise keep a batch's activations (two sessions of the small RAU-Net 1
    at batch 8: 812 instead of 2,131 MB peak, runs 12 % slower).
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 0) -> None:
        p = Path(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads) or len(os.sched_getaffinity(0))  # one per core this process has
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
            raise UserError(f"{p}: not a loadable ONNX model ({one_line(exc)[:160]})") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        stored = _stored_meta(p, self.session.get_modelmeta().custom_metadata_map)
        self.digest = str(stored.get("source_digest") or hashlib.sha256(p.read_bytes()).hexdigest())
        h, w = self.session.get_inputs()[0].shape[2:4]
        self.fixed_size: int | None = int(h) if isinstance(h, int) and h == w else None
        self.shrink_arena = False
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def eval(self) -> OnnxNetwork:
        return self

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        outs = self.session.run(self.output_names, {INPUT_NAME: arr}, self._shrink if self.shrink_arena else None)
        return {name: torch.from_numpy(np.asarray(o)) for name, o in zip(self.output_names, outs, strict=True)}


def read_meta(path: str | os.PathLike[str]) -> SegmenterMeta:
    """The :class:`SegmenterMeta` stored inside an exported ``.onnx`` file."""
    p = Path(path)
    try:
        props = {m.key: m.value for m in onnx.load(str(p), load_external_data=False).metadata_props}
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for a bad file
        raise UserError(f"{p}: not an ONNX file ({one_line(exc)[:160]})") from None
    return SegmenterMeta.from_dict(_stored_meta(p, props), source=str(p))


def _stored_meta(p: Path, props: dict[str, str]) -> dict:
    """The segmenter metadata JSON stored in an ``.onnx`` file's properties ``props``; one-line errors."""
    if META_KEY not in props:
        raise UserError(f"{p}: no segmenter metadata ({META_KEY}); expected a file from pipelines.export_imagery")
    try:
        data = json.loads(props[META_KEY])
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{p}: its segmenter metadata ({META_KEY}) is not valid JSON ({exc.msg}); re-export it"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: its segmenter metadata ({META_KEY}) is not a JSON object; re-export it")
    return data


def load_onnx_segmenter(path: str | os.PathLike[str], threads: int = 0) -> Segmenter:
    """A :class:`Segmenter` running the exported network ``path`` on ONNX Runtime (CPU)."""
    return Segmenter(OnnxNetwork(path, threads), read_meta(path), device="cpu")
