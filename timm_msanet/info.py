"""List the registered MSA-Net models (and timm's resnet18 for reference) with parameter counts and GMACs.

GMACs are counted with torch's FlopCounterMode on one image (a MAC is half a FLOP), in eval mode, at one input
size for every row (224 unless --img-size), so the column compares like with like; each model's own default
input size (64 for the FER2013-trained default tag) is its own column.
"""
import argparse
import json
from typing import Dict, List, Optional, Sequence

from .loading import ExpressionModel
from .utils.options import positive_int

DEFAULT_MODELS = ('resnet18', 'msanet_r18_ms', 'msanet_r18_as', 'msanet_r18')


COMMON_SIZE = 224


def model_costs(names: Sequence[str] = DEFAULT_MODELS, img_size: Optional[int] = None,
                num_classes: Optional[int] = None, **model_kwargs) -> List[Dict]:
    """Params and GMACs at `img_size` (each model's own default input size when None), with each model's own
    head or a `num_classes` one, built with `model_kwargs` (e.g. hierarchy='post')."""
    import torch
    import timm
    import importlib
    importlib.import_module('timm_msanet')  # registers the models when the autoload hook is off
    from torch.utils.flop_counter import FlopCounterMode

    if num_classes is not None:
        model_kwargs['num_classes'] = num_classes
    rows = []
    for name in names:
        model = timm.create_model(name, **model_kwargs).eval()
        size = img_size or model.pretrained_cfg['input_size'][-1]
        x = torch.zeros(1, model.pretrained_cfg['input_size'][0], size, size)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        rows.append(dict(
            model=name,
            img_size=size,
            default_size=model.pretrained_cfg['input_size'][-1],
            params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            gmacs=round(counter.get_total_flops() / 2e9, 2),
            num_features=model.num_features,
            label_names=list(ExpressionModel.of(model).label_names),
            pretrained_tags=timm.list_pretrained(name + '.*'),
        ))
    return rows


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS), help='model names')
    parser.add_argument('--img-size', type=positive_int, default=COMMON_SIZE,
                        help=f'input size GMACs are counted at, the same for every model (default {COMMON_SIZE})')
    parser.add_argument('--json', action='store_true', help='print JSON instead of a table')


def run(args: argparse.Namespace) -> int:
    rows = model_costs(args.models, args.img_size)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':16s} {'params (M)':>10s} {'GMACs @' + str(args.img_size):>10s} {'default size':>12s}  "
          f"pretrained tags")
    for r in rows:
        tags = r['pretrained_tags']
        shown = ', '.join(tags[:2]) + (f' (+{len(tags) - 2} more)' if len(tags) > 2 else '')
        print(f"{r['model']:16s} {r['params_m']:10.2f} {r['gmacs']:10.2f} {r['default_size']:12d}  {shown}")
    return 0
