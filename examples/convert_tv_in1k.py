"""torchvision's ImageNet ResNet-18 from a BN-folded export -> a timm ResNet-18 state dict for conv1..layer2.

The starting point of the FER releases, obtainable without the Hugging Face Hub. The input is a folder of
float32 `.npy` files, one per tensor, from an export of torchvision's IMAGENET1K_V1 ResNet-18 in which each
BatchNorm was folded into the conv before it (the conv's weight scaled per output channel, the BN shift
kept as a conv bias): `conv1.weight`, `conv1.bias`, `layer1.0.conv1.weight`, ..., `layer2.0.downsample.0.bias`.
One such export is `github:shiyegao/CudaResnet18` at commit 85b5947966eba80da43a2341a0968a80797a5019,
folder `weights/` (torchvision's weights, BSD-3-Clause; ImageNet's terms apply to their use).

Folding throws the BatchNorm statistics away, so they are measured again, on the training faces: every
BN is first set to "add the folded bias", the folded network is run (eval mode) on a seeded sample of
training images preprocessed as the model's data config does it, and each BN gets, from the mean m and
variance v of its conv's output z,

    running_mean = m, running_var = v, weight = sqrt(v + eps), bias = folded_bias + m

so that in eval mode BN(z) = (z - m) / sqrt(v + eps) * sqrt(v + eps) + folded_bias + m = z + folded_bias,
the folded network exactly, while a train-mode batch starts normalised where the faces put it. That is
the one difference from timm's `resnet18.tv_in1k` on the Hub, whose BN statistics are ImageNet's.

    python examples/convert_tv_in1k.py WEIGHTS_DIR DATA/train resnet18_tv_in1k_conv1-layer2.safetensors \
        --img-size 64

The file feeds `train.py --model msanet_r18.tv_in1k --pretrained --pretrained-path FILE` (the package's
checkpoint filter loads a ResNet-18 state dict into the pre-extractor) and `--model resnet18` the same way
(layer3, layer4 and the classifier stay at their fresh init: the fair baseline). Its safetensors metadata
records the source files' sha256, the images and the preprocessing used for the statistics.
"""
import argparse
import hashlib
import json
import os
import random
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn as nn

# (folded conv name in the export, BatchNorm name in timm's resnet18) for the stem, layer1 and layer2
STAGES = ('layer1', 'layer2')
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')


def conv_bn_pairs() -> List[Tuple[str, str]]:
    pairs = [('conv1', 'bn1')]
    for stage in STAGES:
        for block in range(2):
            for i in (1, 2):
                pairs.append((f'{stage}.{block}.conv{i}', f'{stage}.{block}.bn{i}'))
    pairs.append(('layer2.0.downsample.0', 'layer2.0.downsample.1'))
    return pairs


def read_folded(weights_dir: Path) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """The folded conv weights and biases of conv1..layer2, with each file's sha256."""
    arrays, hashes, missing = {}, {}, []
    for conv, _ in conv_bn_pairs():
        for part in ('weight', 'bias'):
            path = weights_dir / f'{conv}.{part}.npy'
            if not path.is_file():
                missing.append(path.name)
                continue
            data = path.read_bytes()
            hashes[path.name] = hashlib.sha256(data).hexdigest()
            arrays[f'{conv}.{part}'] = np.load(path, allow_pickle=False)
    if missing:
        raise SystemExit(f'error: {weights_dir} lacks {len(missing)} of the folded ResNet-18 tensors, e.g. '
                         f'{missing[:3]}; expected one .npy per tensor named like conv1.weight.npy')
    return arrays, hashes


def load_folded_into(model: nn.Module, arrays: Dict[str, np.ndarray]) -> None:
    """Conv weights from the export; every BN set to the identity plus the folded bias."""
    for conv_name, bn_name in conv_bn_pairs():
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        weight, bias = torch.from_numpy(arrays[f'{conv_name}.weight']), torch.from_numpy(arrays[f'{conv_name}.bias'])
        if weight.shape != conv.weight.shape or bias.shape != (conv.out_channels,):
            raise SystemExit(f'error: {conv_name}: expected weight {tuple(conv.weight.shape)} and bias '
                             f'({conv.out_channels},), got {tuple(weight.shape)} and {tuple(bias.shape)}: '
                             'not a ResNet-18 export')
        with torch.no_grad():
            conv.weight.copy_(weight)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # sqrt(var + eps) == 1
            bn.weight.fill_(1.0)
            bn.bias.copy_(bias)


def sample_images(train_dir: Path, count: int, seed: int) -> List[Path]:
    files = sorted(p for p in train_dir.rglob('*') if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise SystemExit(f'error: no images ({", ".join(IMAGE_EXTS)}) under {train_dir}: give the train/ '
                         'folder of an ImageFolder tree, e.g. from `timm-msanet export`')
    return random.Random(seed).sample(files, min(count, len(files)))


def pre_extractor(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.layer2(model.layer1(model.maxpool(model.act1(model.bn1(model.conv1(x))))))


@torch.no_grad()
def measure_statistics(model: nn.Module, images: List[Path], transform, batch_size: int = 128
                       ) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and (population) variance of every folded conv's output, bias excluded."""
    from PIL import Image
    sums: Dict[str, List[torch.Tensor]] = {}
    hooks = []
    for conv_name, _ in conv_bn_pairs():
        def hook(module, inputs, output, name=conv_name):
            z = output.double().transpose(0, 1).flatten(1)  # conv has no bias: z = W x
            s = sums.setdefault(name, [torch.zeros(z.shape[0], dtype=torch.float64) for _ in range(2)] + [0])
            s[0] += z.sum(1)
            s[1] += (z * z).sum(1)
            s[2] += z.shape[1]
        hooks.append(model.get_submodule(conv_name).register_forward_hook(hook))
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            batch = []
            for path in images[start:start + batch_size]:
                with Image.open(path) as img:
                    batch.append(transform(img.convert('RGB')))
            pre_extractor(model, torch.stack(batch))
    finally:
        for h in hooks:
            h.remove()
    stats = {}
    for name, (s1, s2, n) in sums.items():
        mean = s1 / n
        stats[name] = (mean, (s2 / n - mean * mean).clamp_min(0.0))
    return stats


def set_statistics(model: nn.Module, stats: Dict[str, Tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for conv_name, bn_name in conv_bn_pairs():
            bn = model.get_submodule(bn_name)
            mean, var = (t.to(bn.running_mean.dtype) for t in stats[conv_name])
            folded_bias = bn.bias.clone()
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var + bn.eps))
            bn.bias.copy_(folded_bias + mean)


def convert(weights_dir: Path, train_dir: Path, img_size: int = 64, count: int = 2048, seed: int = 0
            ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """The conv1..layer2 state dict (timm resnet18 names) and the metadata that says how it was made."""
    import timm
    from timm.data import create_transform, resolve_data_config
    arrays, hashes = read_folded(weights_dir)
    model = timm.create_model('resnet18', pretrained=False, num_classes=0)
    load_folded_into(model, arrays)
    # the FER data config the releases train with: a plain (squash) resize, ImageNet mean/std
    data_cfg = resolve_data_config({'input_size': (3, img_size, img_size), 'crop_pct': 1.0, 'crop_mode': 'squash',
                                    'interpolation': 'bilinear'}, model=model)
    images = sample_images(train_dir, count, seed)
    set_statistics(model, measure_statistics(model, images, create_transform(**data_cfg)))
    prefixes = ('conv1.', 'bn1.') + tuple(f'{s}.' for s in STAGES)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
             if k.startswith(prefixes) and not k.endswith('num_batches_tracked')}
    metadata = {
        'format': 'pt',
        'source': 'torchvision ResNet-18 IMAGENET1K_V1, BatchNorm folded into the convs (export of .npy files)',
        'source_sha256': json.dumps(hashes, sort_keys=True),
        'license': 'bsd-3-clause (torchvision weights; ImageNet terms apply to their use)',
        'bn_statistics': json.dumps({
            'images': len(images), 'seed': seed, 'train_dir': os.path.basename(os.path.normpath(train_dir)),
            'image_list_sha256': hashlib.sha256('\n'.join(
                str(p.relative_to(train_dir)) for p in images).encode()).hexdigest(),
            'data_config': {k: list(v) if isinstance(v, tuple) else v for k, v in data_cfg.items()}}),
        'layers': 'conv1, bn1, layer1, layer2 (timm resnet18 names)',
    }
    return state, metadata


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('weights_dir', type=Path, help='folder of folded .npy tensors (conv1.weight.npy, ...)')
    parser.add_argument('train_dir', type=Path, help='training images (an ImageFolder train/ folder)')
    parser.add_argument('output', type=Path, help='.safetensors file to write (must not exist)')
    parser.add_argument('--img-size', type=int, default=64, help='resolution the statistics are measured at')
    parser.add_argument('--images', type=int, default=2048, help='training images sampled for the statistics')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.output.exists():
        print(f'error: {args.output} exists; remove it or choose another name', file=sys.stderr)
        return 2
    from safetensors.torch import save_file
    from timm_msanet.utils.outputs import atomic_path
    state, metadata = convert(args.weights_dir, args.train_dir, args.img_size, args.images, args.seed)
    with atomic_path(args.output, what='output') as tmp:  # 0666 less the umask, not safetensors' 0600
        save_file(state, str(tmp), metadata=metadata)
    print(f'wrote {args.output}: {len(state)} tensors (conv1..layer2), BN statistics from '
          f'{json.loads(metadata["bn_statistics"])["images"]} images at {args.img_size} px')
    return 0


if __name__ == '__main__':
    sys.exit(main())
