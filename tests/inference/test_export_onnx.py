"""ONNX export with metadata, checked against onnxruntime on real images; torch.export with a dynamic batch."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import timm
from PIL import Image
from safetensors.torch import save_file

import timm_msanet  # noqa: F401
from timm_msanet.inference.export_onnx import check_onnx, export_onnx, read_metadata
from timm_msanet.loading import load_model
from timm_msanet.utils.images import load_image
from timm_msanet.loading import ExpressionModel

from conftest import run_cli

ort = pytest.importorskip('onnxruntime')
SIZE = 96


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    torch.manual_seed(0)
    # no zero-initialised residual branches, a head with spread: every layer contributes to the logits
    m = timm.create_model('msanet_r18', pretrained=False, zero_init_last=False)
    torch.nn.init.normal_(m.head.fc.weight, std=0.05)
    path = tmp_path_factory.mktemp('ckpt') / 'msanet.safetensors'
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return load_model(model_name='msanet_r18', checkpoint=path)


@pytest.fixture(scope='module')
def onnx_path(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp('onnx') / 'msanet.onnx', img_size=SIZE)


@pytest.fixture(scope='module')
def real_batch(model, tmp_path_factory):
    """Three real image files decoded by PIL and preprocessed by the model's own transform."""
    d = tmp_path_factory.mktemp('imgs')
    skdata = pytest.importorskip('skimage.data')
    Image.fromarray(skdata.astronaut()).save(d / 'astronaut.jpg', quality=90)
    Image.fromarray(skdata.chelsea()).save(d / 'chelsea.png')
    Image.fromarray(skdata.coffee()).resize((120, 80)).save(d / 'coffee.jpg')
    transform, cfg = ExpressionModel.of(model).transform(SIZE)
    assert cfg['crop_mode'] == 'squash' and cfg['input_size'] == (3, SIZE, SIZE)
    return torch.stack([transform(load_image(d / n)) for n in ('astronaut.jpg', 'chelsea.png', 'coffee.jpg')])


def test_onnx_matches_torch_on_real_images_dynamic_batch(model, onnx_path, real_batch):
    sess = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    assert sess.get_inputs()[0].name == 'input' and sess.get_outputs()[0].name == 'logits'
    assert isinstance(sess.get_inputs()[0].shape[0], str)  # symbolic batch dimension
    for x in (real_batch[:1], real_batch):  # batch 1 and 3 from one file
        (got,) = sess.run(None, {'input': x.numpy()})
        with torch.inference_mode():
            ref = model(x).numpy()
        assert got.shape == (x.shape[0], 7)
        assert np.abs(got - ref).max() <= 1e-4, (np.abs(got - ref).max(), np.abs(ref).max())
        assert ref.std() > 0.5  # logits that actually differ between classes and images
    assert check_onnx(onnx_path, model, inputs=[real_batch[:1], real_batch]) <= 1e-4


def test_onnx_metadata(model, onnx_path):
    meta = read_metadata(onnx_path)
    assert meta['label_names'] == list(model.pretrained_cfg['label_names'])
    assert meta['label_names'] == ['anger', 'disgust', 'fear', 'happiness', 'neutral', 'sadness', 'surprise']
    dc = meta['data_config']
    assert dc['input_size'] == [3, SIZE, SIZE] and dc['crop_mode'] == 'squash' and dc['crop_pct'] == 1.0
    assert dc['mean'] == pytest.approx([0.485, 0.456, 0.406]) and dc['std'] == pytest.approx([0.229, 0.224, 0.225])
    assert meta['model_name'] == 'msanet_r18' and meta['num_classes'] == 7
    assert dc['grey_input'] is False  # a checkpoint says nothing of grey training
    # the same through onnxruntime, as a deployment reads it
    custom = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider']).get_modelmeta()
    assert json.loads(custom.custom_metadata_map['label_names']) == meta['label_names']


def test_torch_export_dynamic_batch(model, real_batch):
    batch = torch.export.Dim('batch', min=1)
    ep = torch.export.export(model, (real_batch[:2],), dynamic_shapes=({0: batch},))
    for x in (real_batch[:1], real_batch):
        with torch.inference_mode():
            torch.testing.assert_close(ep.module()(x), model(x), rtol=1e-5, atol=1e-5)


def test_cli_export_onnx_check(tmp_path):
    out = tmp_path / 'sub' / 'ms.onnx'
    proc = run_cli(['export-onnx', '--model', 'msanet_r18_ms', '--no-pretrained', '--img-size', '64', '--output', out,
                    '--check'], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'onnxruntime check: max abs logit diff' in proc.stdout and '(ok,' in proc.stdout
    meta = read_metadata(out)
    assert meta['data_config']['input_size'] == [3, 64, 64] and len(meta['label_names']) == 7
    sess = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    for b in (1, 3):
        assert sess.run(None, {'input': np.zeros((b, 3, 64, 64), np.float32)})[0].shape == (b, 7)


def test_missing_onnx_packages_are_one_line_naming_the_extra(tmp_path):
    # a user without the optional ONNX packages: imports of onnxscript fail as if it were not installed
    code = ("import sys; sys.modules['onnxscript'] = None\n"
            "from timm_msanet.cli import main\n"
            f"sys.exit(main(['export-onnx', '--output', {str(tmp_path / 'm.onnx')!r}]))")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    assert 'export-onnx needs onnxscript' in proc.stderr and 'timm-msanet[onnx]' in proc.stderr
    assert not (tmp_path / 'm.onnx').exists()


def test_onnx_of_the_grey_release_takes_a_colour_photo_as_predict_does(tmp_path, real_batch):
    """The packaged FER2013 release carries its grey step into the graph: onnxruntime fed timm's transform of a
    colour photo gives `predict`'s probabilities (to 1e-4), with no conversion by the deployment."""
    from timm_msanet.inference.predict import predict
    grey_release = load_model('msanet_r18')
    path = export_onnx(grey_release, tmp_path / 'fer2013.onnx')
    meta = read_metadata(path)
    assert meta['data_config']['grey_step_in_graph'] is True and meta['data_config']['grey_input'] is False
    photo = Image.fromarray(pytest.importorskip('skimage.data').astronaut())
    from timm.data import create_transform
    cfg = {k: v for k, v in meta['data_config'].items() if not k.startswith('grey')}
    x = create_transform(**cfg)(photo).unsqueeze(0).numpy()  # what a deployment builds from the metadata alone
    (logits,) = ort.InferenceSession(str(path), providers=['CPUExecutionProvider']).run(None, {'input': x})
    probs = torch.from_numpy(logits).softmax(-1)[0]  # the graph divides by T itself
    [result] = predict([photo], grey_release)
    expected = torch.tensor([result['probabilities'][n] for n in meta['label_names']])
    torch.testing.assert_close(probs, expected, atol=1e-4, rtol=0)
