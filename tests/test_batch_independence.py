"""Batch independence: in eval mode, every registered msanet model gives an image the same logits alone and
inside batches of other sizes and other companions (real photo crops, a blank image, noise), in torch and in
its ONNX export. A model whose prediction depends on its batch (batch statistics, cross-sample attention,
per-batch normalisation) fails here."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image

import timm_msanet  # noqa: F401
from timm_msanet.notes import temperature_of
from timm_msanet.loading import ExpressionModel

SIZE = 64
ATOL = 1e-4  # float32, different batch sizes may take different kernels


def _models():
    names = timm.list_models('msanet*')
    assert names == sorted(['msanet_r18', 'msanet_r18_as', 'msanet_r18_ms']), names
    return names


def _trained_like(name: str):
    """Random weights with every branch and the head active (zero-init residuals would hide a batch effect), and
    BatchNorm running statistics that are not the identity."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, zero_init_last=False, num_classes=7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        torch.nn.init.normal_(model.head.fc.weight, std=0.05)
    return model.eval()


@pytest.fixture(scope='module')
def images():
    """8 preprocessed inputs: 6 real photo crops, a blank image and noise."""
    skdata = pytest.importorskip('skimage.data')
    pil = []
    for name in ('astronaut', 'coffee', 'chelsea'):
        im = Image.fromarray(np.asarray(getattr(skdata, name)(), dtype=np.uint8)).convert('RGB')
        w, h = im.size
        pil += [im.crop((0, 0, w // 2, h // 2)), im.crop((w // 2, h // 2, w, h))]
    pil.append(Image.new('RGB', (80, 80), (128, 128, 128)))
    pil.append(Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)))
    transform, _ = ExpressionModel.of(timm.create_model('msanet_r18', pretrained=False)).transform(SIZE)
    return torch.stack([transform(im) for im in pil])


def _batches(n: int):
    """(indices) batches that hold image 0 at different positions, with different sizes and companions."""
    return [[0], [0, 1], [7, 0], [3, 6, 0, 2, 5], [0, 1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize('name', _models())
def test_torch_logits_do_not_depend_on_the_batch(name, images):
    model = _trained_like(name)
    with torch.inference_mode():
        alone = torch.cat([model(images[i:i + 1]) for i in range(len(images))])
        assert alone.abs().max() > 1e-3 and alone.std(0).max() > 1e-4  # the images do give different logits
        for batch in _batches(len(images)):
            out = model(images[batch])
            torch.testing.assert_close(out, alone[batch], atol=ATOL, rtol=1e-4,
                                       msg=lambda m: f'{name}, batch {batch}: {m}')


@pytest.mark.parametrize('name', _models())
def test_onnx_logits_do_not_depend_on_the_batch(name, images, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    pytest.importorskip('onnx')
    from timm_msanet.inference.export_onnx import export_onnx
    model = _trained_like(name)
    model.pretrained_cfg = dict(model.pretrained_cfg, label_names=tuple(f'c{i}' for i in range(7)))
    path = export_onnx(model, tmp_path / f'{name}.onnx', img_size=SIZE)
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    x = images.numpy()
    alone = np.concatenate([sess.run(None, {'input': x[i:i + 1]})[0] for i in range(len(x))])
    with torch.inference_mode():  # the export divides by the cfg's calibration temperature (export_onnx.py)
        ref = model(images).numpy() / temperature_of(model.pretrained_cfg)
    np.testing.assert_allclose(alone, ref, atol=ATOL, rtol=1e-4)
    for batch in _batches(len(x)):
        (out,) = sess.run(None, {'input': x[batch]})
        np.testing.assert_allclose(out, alone[batch], atol=ATOL, rtol=1e-4, err_msg=f'{name}, batch {batch}')
