"""examples/convert_tv_in1k.py: a BN-folded ResNet-18 export becomes conv1..layer2 of a timm ResNet-18 whose
eval-mode output is the folded network's, with BN statistics measured on the training images."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import timm
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import write_folded_resnet18

SCRIPT = Path(__file__).resolve().parent.parent / 'examples' / 'convert_tv_in1k.py'
BLOCKS = [('layer1', 0, 1), ('layer1', 1, 1), ('layer2', 0, 2), ('layer2', 1, 1)]


@pytest.fixture(scope='module')
def folded(tmp_path_factory):
    out = tmp_path_factory.mktemp('folded')
    return out, write_folded_resnet18(out)


@pytest.fixture(scope='module')
def faces(tmp_path_factory):
    """A small ImageFolder train/ split of real grey PNG files (decoded by PIL in the converter)."""
    root = tmp_path_factory.mktemp('faces') / 'train'
    rng = np.random.default_rng(0)
    for label in ('anger', 'happiness'):
        (root / label).mkdir(parents=True)
        for i in range(12):
            yy, xx = np.mgrid[0:48, 0:48]
            img = 128 + 60 * np.sin(xx / (3 + i)) * np.cos(yy / (4 + i)) + rng.normal(0, 10, (48, 48))
            Image.fromarray(img.clip(0, 255).astype(np.uint8), 'L').save(root / label / f'{i:02d}.png')
    return root


def _folded_forward(weights: Path, x: torch.Tensor) -> torch.Tensor:
    def conv(t, name, stride, pad):
        return F.conv2d(t, torch.from_numpy(np.load(weights / f'{name}.weight.npy')),
                        torch.from_numpy(np.load(weights / f'{name}.bias.npy')), stride=stride, padding=pad)
    x = F.max_pool2d(F.relu(conv(x, 'conv1', 2, 3)), 3, 2, 1)
    for stage, block, stride in BLOCKS:
        y = conv(F.relu(conv(x, f'{stage}.{block}.conv1', stride, 1)), f'{stage}.{block}.conv2', 1, 1)
        shortcut = conv(x, 'layer2.0.downsample.0', 2, 0) if (stage, block) == ('layer2', 0) else x
        x = F.relu(y + shortcut)
    return x


def _convert(folded_dir, faces, out, images=24):
    return subprocess.run([sys.executable, str(SCRIPT), str(folded_dir), str(faces), str(out), '--img-size', '32',
                           '--images', str(images)], capture_output=True, text=True, timeout=300)


def test_eval_output_is_the_folded_network_and_statistics_are_the_faces(folded, faces, tmp_path):
    folded_dir, original = folded
    out = tmp_path / 'start.safetensors'
    proc = _convert(folded_dir, faces, out)
    assert proc.returncode == 0, proc.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # readable as the umask allows, not safetensors' 0600
    state = load_file(str(out))
    assert sorted({k.split('.')[0] for k in state}) == ['bn1', 'conv1', 'layer1', 'layer2']
    model = timm.create_model('resnet18', num_classes=0).eval()
    assert model.load_state_dict(state, strict=False).unexpected_keys == []

    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ours = model.layer2(model.layer1(model.maxpool(model.act1(model.bn1(model.conv1(x))))))
        reference = _folded_forward(folded_dir, x)
        # ...which is the network the export was folded from
        net_out = original.layer2(original.layer1(original.maxpool(original.act1(original.bn1(original.conv1(x))))))
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(reference, net_out, rtol=1e-4, atol=1e-4)

    # the statistics are the faces': bn1's running mean and variance are those of conv1's output over all 24
    # images, measured at 32 px with the FER data config (a plain resize)
    with safe_open(str(out), 'pt') as f:
        meta = f.metadata()
    assert '"images": 24' in meta['bn_statistics'] and '"crop_mode": "squash"' in meta['bn_statistics']
    assert 'conv1.weight.npy' in meta['source_sha256']
    cfg = timm.data.resolve_data_config({'input_size': (3, 32, 32), 'crop_pct': 1.0, 'crop_mode': 'squash',
                                         'interpolation': 'bilinear'}, model=model)
    transform = timm.data.create_transform(**cfg)
    images = torch.stack([transform(Image.open(p).convert('RGB')) for p in sorted(faces.rglob('*.png'))])
    with torch.no_grad():
        z = F.conv2d(images, model.conv1.weight, stride=2, padding=3)
    torch.testing.assert_close(model.bn1.running_mean, z.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.bn1.running_var, z.var((0, 2, 3), unbiased=False), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.bn1.weight, torch.sqrt(model.bn1.running_var + model.bn1.eps))
    # a sample of the images gives other statistics: the file records how many were used
    fewer = tmp_path / 'fewer.safetensors'
    assert _convert(folded_dir, faces, fewer, images=8).returncode == 0
    assert not torch.allclose(load_file(str(fewer))['bn1.running_mean'], model.bn1.running_mean)


def test_start_file_loads_into_msanet_and_resnet18_as_train_py_loads_it(folded, faces, tmp_path):
    folded_dir, _ = folded
    out = tmp_path / 'start.safetensors'
    assert _convert(folded_dir, faces, out).returncode == 0
    state = load_file(str(out))
    # train.py --pretrained --pretrained-path FILE is timm's pretrained_cfg_overlay=dict(file=FILE)
    for name in ('msanet_r18.tv_in1k', 'resnet18.tv_in1k'):
        fresh = timm.create_model(name, pretrained=False, num_classes=7)
        model = timm.create_model(name, pretrained=True, num_classes=7, pretrained_cfg_overlay=dict(file=str(out)))
        for k, v in state.items():
            assert torch.equal(model.state_dict()[k], v), (name, k)
        # nothing after layer2 is in the file: layer3, layer4 and the head keep their fresh init (the fair baseline)
        after = [k for k in fresh.state_dict() if not k.startswith(('conv1.', 'bn1.', 'layer1.', 'layer2.'))]
        assert after and all(k not in state for k in after)


def test_bad_inputs_are_one_line_errors_and_nothing_is_overwritten(folded, faces, tmp_path):
    folded_dir, _ = folded
    partial = tmp_path / 'partial'
    partial.mkdir()
    for f in folded_dir.iterdir():
        if not f.name.startswith('layer2.1'):
            (partial / f.name).write_bytes(f.read_bytes())
    proc = _convert(partial, faces, tmp_path / 'x.safetensors')
    assert proc.returncode != 0 and 'lacks 4 of the folded ResNet-18 tensors' in proc.stderr
    assert 'Traceback' not in proc.stderr and not (tmp_path / 'x.safetensors').exists()

    empty = tmp_path / 'empty'
    empty.mkdir()
    proc = _convert(folded_dir, empty, tmp_path / 'y.safetensors')
    assert proc.returncode != 0 and 'no images' in proc.stderr and 'Traceback' not in proc.stderr

    existing = tmp_path / 'mine.safetensors'
    existing.write_bytes(b'user data')
    proc = _convert(folded_dir, faces, existing)
    assert proc.returncode == 2 and 'exists' in proc.stderr and existing.read_bytes() == b'user data'
