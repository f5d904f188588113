"""Export a model to ONNX with its class order and data config in the file, and check it with onnxruntime.

    timm-msanet export-onnx --checkpoint model_best.pth.tar --model msanet_r18 --output msanet.onnx --check

The export is `torch.onnx.export(..., dynamo=True)` (torch.export under the hood), input `input`
(N x C x H x W float32, already preprocessed), output `logits` (N x num_classes), batch dimension
dynamic (`torch.export.Dim('batch', min=1)`) unless `dynamic_batch=False`; height and width are fixed
at the model cfg's input size (or `img_size`). Metadata (`metadata_props`, JSON strings) so a
deployment needs nothing but the .onnx file:

* `label_names`: the class names in output order, e.g. `["anger", "disgust", ...]`;
* `data_config`: `input_size`, `mean`, `std`, `interpolation`, `crop_pct`, `crop_mode` (the model's
  timm data config: squash resize to `input_size`, scale to [0, 1], subtract mean, divide by std) and
  `grey_input` (true for a grey-trained model without a grey step of its own: convert colour images to
  grey, replicated to 3 channels, first) and `grey_step_in_graph` (true for grey-trained msanet models such
  as `msanet_r18.fer2013`: the graph makes colour input grey itself, so feed colour images as they are);
* `temperature`: the model's calibration temperature T (`timm-msanet calibrate`; 1.0 when it has none).
  The graph already divides the logits by T as its last operation, so `softmax(logits)` of the ONNX
  output is the calibrated probability that `timm-msanet predict` prints; the argmax is unchanged;
* `model_name`, `timm_msanet_version`, `num_classes`.

Read them with `{p.key: p.value for p in onnx.load(path).metadata_props}` or onnxruntime's
`session.get_modelmeta().custom_metadata_map`.

torch.export without ONNX (an `ExportedProgram`, e.g. for ExecuTorch or AOTInductor) works the same way::

    batch = torch.export.Dim('batch', min=1)
    ep = torch.export.export(model.eval(), (torch.randn(2, 3, 224, 224),), dynamic_shapes=({0: batch},))
    ep.module()(x)   # any batch size
"""
import argparse
import importlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from ..utils import safe_json
from ..loading import ExpressionModel, add_model_args, model_from_args, model_input_paths
from ..utils.errors import ToolError, install_hint
from ..utils.options import non_negative_float, positive_int
from ..utils.outputs import add_overwrite_argument, atomic_path, check_output
from ..version import __version__


def onnx_metadata(model, img_size: Optional[int] = None) -> Dict[str, str]:
    """The metadata_props written into an exported file (all values JSON-encoded strings). `model`: an
    `ExpressionModel` or a timm model."""
    record = ExpressionModel.of(model)
    _, cfg = record.transform(img_size)  # the data config predict uses (1 channel for in_chans=1 models)
    data_config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    # grey_input: the runtime must make colour images grey (3 equal channels) before the transform (a grey-trained
    # model without a grey step of its own); grey_step_in_graph: the graph does it itself (msanet `grey_input`)
    data_config['grey_input'] = record.needs_grey_transform
    data_config['grey_step_in_graph'] = record.grey_step
    return {
        'label_names': json.dumps(list(record.label_names)),
        'data_config': json.dumps(data_config),
        'model_name': json.dumps(record.architecture or type(record.module).__name__),
        'num_classes': json.dumps(int(record.module.num_classes)),
        'temperature': json.dumps(record.temperature),
        'timm_msanet_version': json.dumps(__version__),
    }


def _with_temperature(record):
    """The module itself, or a wrapper whose output is its logits divided by its calibration temperature."""
    import torch

    model, t = record.module, record.temperature
    if t == 1.0:
        return model

    class Calibrated(torch.nn.Module):
        def __init__(self, net, temperature: float):
            super().__init__()
            self.net = net
            self.temperature = temperature

        def forward(self, x):
            return self.net(x) / self.temperature

    return Calibrated(model, t).eval()


def read_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    """The decoded metadata_props of an exported file."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    out = {}
    for k, v in props.items():
        try:
            out[k] = safe_json.loads(v)
        except ValueError:
            out[k] = v
    return out


def export_onnx(model, path: Union[str, Path], img_size: Optional[int] = None, opset: Optional[int] = None,
                dynamic_batch: bool = True, inputs: Sequence[Union[str, Path]] = (), overwrite: bool = False) -> Path:
    """Export `model` (eval mode, CPU float32) to `path` with label names and data config in its metadata.

    Args:
        model: A timm model, e.g. from `timm_msanet.loading.load_model`.
        path: Output .onnx file.
        img_size: Input height and width (default: the model cfg's input size).
        opset: ONNX opset (default: torch's default for the dynamo exporter).
        dynamic_batch: Make the batch dimension dynamic (any N >= 1).
        inputs: Files the model came from, which `path` may never be (timm_msanet.utils.outputs).
        overwrite: Replace an existing `path`.
    """
    import torch

    path = check_output(path, inputs, overwrite, 'ONNX output')
    record = ExpressionModel.of(model)
    meta = onnx_metadata(record, img_size)
    c, h, w = json.loads(meta['data_config'])['input_size']
    model = record.module
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device('cpu')
        x = torch.randn(2 if dynamic_batch else 1, c, h, w, device=device)
        kwargs: Dict[str, Any] = dict(dynamo=True, input_names=['input'], output_names=['logits'], verbose=False)
        if dynamic_batch:
            kwargs['dynamic_shapes'] = ({0: torch.export.Dim('batch', min=1)},)
        if opset is not None:
            import onnx
            newest = onnx.defs.onnx_opset_version()
            if not 1 <= opset <= newest:
                raise ToolError(f'ONNX opset {opset} does not exist for the installed onnx (1 to {newest}); '
                                f'leave --opset out for torch\'s default')
            kwargs['opset_version'] = opset
        program = torch.onnx.export(_with_temperature(record), (x,), **kwargs)
    finally:
        model.train(was_training)
    made = program.model.opset_imports.get('')
    if opset is not None and made != opset:  # torch's version converter failed and kept its own opset
        raise ToolError(f'torch could not write this model as ONNX opset {opset} (it made opset {made}); nothing '
                        f'was written. Use --opset {made} or higher, or leave --opset out')
    for k, v in meta.items():
        program.model.metadata_props[k] = v
    with atomic_path(path, inputs, overwrite, 'ONNX output') as tmp:
        program.save(str(tmp))
    return path


def check_onnx(path: Union[str, Path], model, inputs=None, batch_sizes: Sequence[int] = (1, 3)) -> float:
    """Max abs difference of logits between onnxruntime (CPU) and the torch model (divided by its temperature),
    the torch side run by the engine (`loading.engine.Classifier`, CPU float32).

    `inputs`: preprocessed N x C x H x W tensors to compare on (default: random ones of each batch size).
    """
    import numpy as np
    import onnxruntime as ort
    import torch

    record = ExpressionModel.of(model)
    engine = record.engine(device='cpu', batch_size=max(batch_sizes))

    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    shape = sess.get_inputs()[0].shape
    if inputs is None:
        g = torch.Generator().manual_seed(0)
        inputs = [torch.randn(b, *[int(s) for s in shape[1:]], generator=g) for b in batch_sizes]
    diff = 0.0
    for x in inputs:
        x = x.float().cpu()
        ref = (engine.logits(x) / record.temperature).numpy()
        (got,) = sess.run(['logits'], {'input': x.numpy()})
        diff = max(diff, float(np.abs(got - ref).max()))
    return diff


def require_onnx(*modules: str) -> None:
    """Raise ToolError naming the extra to install when the ONNX packages are missing (they are optional)."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ToolError(f'export-onnx needs {" and ".join(missing)}, which are not installed: {install_hint("onnx")}')


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument('--output', '-o', required=True, metavar='FILE.onnx', help='output file')
    parser.add_argument('--opset', type=positive_int, default=None, help='ONNX opset (default: torch default)')
    parser.add_argument('--static-batch', action='store_true', help='fixed batch size 1 instead of a dynamic batch')
    parser.add_argument('--check', action='store_true',
                        help='compare logits with onnxruntime on random inputs (batch 1 and 3)')
    parser.add_argument('--tolerance', type=non_negative_float, default=1e-4,
                        help='max abs logit difference for --check')
    add_overwrite_argument(parser, 'the output file')


def run(args: argparse.Namespace) -> int:
    require_onnx('onnx', 'onnxscript', *(('onnxruntime',) if args.check else ()))  # before loading the model
    inputs = model_input_paths(args)
    check_output(args.output, inputs, args.overwrite, '--output')
    model = model_from_args(args)
    model.module.cpu().float()
    path = export_onnx(model, args.output, opset=args.opset, dynamic_batch=not args.static_batch, inputs=inputs,
                       overwrite=args.overwrite)
    meta = read_metadata(path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): input {meta['data_config']['input_size']}, "
          f"batch {'fixed 1' if args.static_batch else 'dynamic'}, labels {', '.join(meta['label_names'])}")
    if args.check:
        diff = check_onnx(path, model, batch_sizes=(1,) if args.static_batch else (1, 3))
        ok = diff <= args.tolerance
        print(f"onnxruntime check: max abs logit diff {diff:.3g} ({'ok' if ok else 'FAILED'}, "
              f'tolerance {args.tolerance:g})')
        if not ok:
            return 1
    return 0
