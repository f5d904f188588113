"""The model arguments every tool shares (--model, --checkpoint, --img-size, --label-names) and the model they give.
"""
import argparse
import os
from typing import List

from ..utils.options import positive_int
from .checks import CheckpointError, check_label_names
from .checkpoint import DEFAULT_MODEL
from .record import ExpressionModel
from .sources import load_expression_model


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The one-model-source options shared by eval, predict, explain and export-onnx."""
    g = parser.add_argument_group('model (one source)')
    g.add_argument('--model', default=None, help=f'model name (msanet_r18, msanet_r18.tv_in1k, hf-hub:org/repo); '
                   f'with --checkpoint: its architecture when the checkpoint does not name it. Without any source: '
                   f'{DEFAULT_MODEL}, the FER2013 model installed with the package')
    g.add_argument('--checkpoint', default=None, help='train.py checkpoint, state dict or .safetensors file')
    g.add_argument('--hf-hub', default=None, metavar='ORG/REPO', help='Hub repo published with timm-msanet publish')
    g.add_argument('--num-classes', type=positive_int, default=None, help='class count if the checkpoint does not tell')
    g.add_argument('--label-names', default=None, metavar='A,B,...',
                   help='class names in output order, comma-separated (for a class count without canonical names)')
    g.add_argument('--no-ema', action='store_true', help="use a train.py checkpoint's raw weights, not its EMA ones")
    g.add_argument('--img-size', type=positive_int, default=None, metavar='N',
                   help='input height and width (default: the size the model was trained at, from its config)')
    g.add_argument('--no-pretrained', action='store_true',
                   help='with a plain --model name: random weights, no download (for smoke tests)')


def model_input_paths(args: argparse.Namespace) -> List[str]:
    """The files a command's model comes from (a --checkpoint file or folder's files, a local-dir: folder's
    files): outputs may never be one of them (timm_msanet.utils.outputs)."""
    paths = []
    for source in (args.checkpoint, args.model[len('local-dir:'):] if (args.model or '').startswith('local-dir:')
                   else None):
        if not source:
            continue
        if os.path.isdir(source):
            paths += [os.path.join(source, name) for name in sorted(os.listdir(source))]
        else:
            paths.append(source)
    return paths


def model_from_args(args: argparse.Namespace) -> ExpressionModel:
    """The `ExpressionModel` the model options name (the packaged FER2013 model when they name none)."""
    model_name = args.model
    if not (args.model or args.checkpoint or args.hf_hub):
        model_name = DEFAULT_MODEL  # the packaged expression model: the commands work out of the box
    names = getattr(args, 'label_names', None)
    if names is not None:
        names = [n.strip() for n in names.split(',')]
        check_label_names(names, None, '--label-names')
    source = dict(model_name=model_name, checkpoint=args.checkpoint, hf_hub=args.hf_hub, num_classes=args.num_classes,
                  use_ema=False if args.no_ema else None, pretrained=not args.no_pretrained)
    try:
        try:
            record = load_expression_model(**source)  # with its own names, when it has them (or canonical)
        except CheckpointError as e:
            if names is None or 'no label names' not in str(e):
                raise
            record = load_expression_model(**source, label_names=names)
    except ValueError as e:  # options that contradict each other (two sources, --no-pretrained with a checkpoint)
        raise CheckpointError(str(e)) from None
    if names is not None and tuple(names) != record.label_names:
        if len(names) != record.num_classes:
            raise CheckpointError(f'{len(names)} label names given for a {record.num_classes}-class model; expected '
                                  f'one name per class in output order')
        import warnings
        warnings.warn('--label-names renames the outputs of a model that has its own names: '
                      + ', '.join(f'{a} -> {b}' for a, b in zip(record.label_names, names) if a != b)
                      + '. Drop --label-names unless the model really was trained with that class order',
                      UserWarning, stacklevel=2)
        record.set_label_names(names)
    if getattr(args, 'img_size', None):
        record.set_input_size(args.img_size)
    return record
