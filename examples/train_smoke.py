"""Short timm train.py runs of the msanet models on generated faces, recording what ran and the figures.

On CPU: plain float32 runs. On CUDA (when `--device cuda` or a GPU is found): bf16 AMP, channels_last
and torch.compile, the settings users train with. Writes `smoke.json` with every command line, wall
time and train.py's last summary row (loss, top-1), plus torch/timm/device versions.

    python examples/train_smoke.py --timm-repo ~/pytorch-image-models --out runs/smoke [--device cuda]
"""
import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import make_dataset  # noqa: E402
from table3_study import run_train  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--timm-repo', type=Path, required=True)
    parser.add_argument('--out', type=Path, default=Path('runs/smoke'))
    parser.add_argument('--models', nargs='+', default=['msanet_r18', 'msanet_r18_ms', 'msanet_r18_as'])
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--img-size', type=int, default=None, help='default 64 on CPU, 224 on CUDA')
    parser.add_argument('--per-class', type=int, default=None, help='training images per class')
    parser.add_argument('--epochs', type=int, default=1)
    args = parser.parse_args(argv)

    import torch
    import timm
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    cuda = device.startswith('cuda')
    img_size = args.img_size or (224 if cuda else 64)
    per_class = args.per_class or (64 if cuda else 6)
    data = args.out / 'data'
    if not (data / 'train').is_dir():
        make_dataset(data, per_class, max(2, per_class // 4))
    extra = ['--train-split', 'train', '--val-split', 'validation', '--num-classes', '7', '--img-size', str(img_size),
             '--epochs', str(args.epochs), '-b', '32' if cuda else '8', '-j', '4' if cuda else '0',
             '--lr', '1e-3', '--opt', 'adamw', '--drop-path', '0.1']
    if cuda:
        extra += ['--amp', '--amp-dtype', 'bfloat16', '--channels-last', '--torchcompile', 'inductor']

    record = dict(torch=torch.__version__, timm=timm.__version__, python=platform.python_version(), device=device,
                  gpu=torch.cuda.get_device_name(0) if cuda else None, img_size=img_size, runs=[])
    for model in args.models:
        run = run_train(args.timm_repo, data, model, {}, None, args.out, None, device, extra)
        record['runs'].append(dict(model=model, **run))
        print(f"{model}: {run['seconds']} s, last epoch {run['last_epoch']}", flush=True)
    (args.out / 'smoke.json').write_text(json.dumps(record, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
