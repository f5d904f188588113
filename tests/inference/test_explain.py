"""timm-msanet explain: CBAM spatial attention maps per branch and an exact CAM, drawn with PIL."""

import numpy as np
import pytest
import torch
import timm
from PIL import Image

import timm_msanet  # noqa: F401
from timm_msanet.inference.explain import PANEL, explain, render
from timm_msanet.loading import ExpressionModel

from conftest import run_cli

SIZE = 96


@pytest.fixture(scope='module')
def face(astronaut, tmp_path_factory):
    path = tmp_path_factory.mktemp('img') / 'astronaut.jpg'
    Image.fromarray(astronaut[30:230, 130:330]).save(path, quality=95)  # the face region
    return path


def _model(name):
    torch.manual_seed(0)
    m = timm.create_model(name, pretrained=False, zero_init_last=False,
                          pretrained_cfg_overlay=dict(input_size=(3, SIZE, SIZE)))
    torch.nn.init.normal_(m.head.fc.weight, std=0.05)
    return m.eval()


def test_attention_maps_and_exact_cam(face):
    model = _model('msanet_r18')
    r = explain(str(face), model)
    assert [name for name, _ in r['attention']] == ['branch 0 (7x7)', 'branch 1 (5x5)', 'branch 2 (3x3)']
    x = ExpressionModel.of(model).transform()[0](Image.open(face).convert('RGB')).unsqueeze(0)
    with torch.no_grad():
        h = model.layer2(model.layer1(model.maxpool(model.act1(model.bn1(model.conv1(x))))))
        logits = model(x)[0]
        for (name, amap), branch in zip(r['attention'], model.branches):
            y = branch.attn.channel(branch.blocks(h))
            pooled = torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)
            gate = torch.sigmoid(branch.attn.spatial.conv(pooled))[0, 0].numpy()
            assert amap.shape == (SIZE // 32, SIZE // 32)
            np.testing.assert_allclose(amap, gate, atol=1e-6)
            assert ((amap >= 0) & (amap <= 1)).all()
    pred = int(logits.argmax())
    assert r['label'] == model.pretrained_cfg['label_names'][pred] == r['target']
    # GAP + linear head: the CAM's mean plus the class bias is the logit, exactly
    assert abs(float(r['cam'].mean()) + r['cam_bias'] - float(logits[pred])) < 1e-4
    assert abs(sum(r['probabilities'].values()) - 1) < 1e-5
    img = render(r)
    assert img.mode == 'RGB' and img.width > 5 * PANEL and img.height > PANEL
    # another target class gives another CAM
    other = explain(str(face), model, target=(pred + 1) % 7)
    assert other['target'] != r['target'] and not np.allclose(other['cam'], r['cam'])


def test_model_without_attention_shows_cam_only(face):
    r = explain(Image.open(face), _model('msanet_r18_ms'))
    assert r['attention'] == [] and r['cam'].shape == (3, 3)
    assert render(r).width < 3 * PANEL  # input + CAM


def test_cli_explain(face, tmp_path):
    out = tmp_path / 'out' / 'explained.png'
    proc = run_cli(['explain', face, '--model', 'msanet_r18_as', '--no-pretrained', '--img-size', SIZE, '--out', out],
                   timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    side = SIZE // 32  # the last block's map: what the attention and the CAM act on, stretched over each panel
    assert f'attention maps: branch 0 (3x3) {side}x{side}; CAM {side}x{side}' in proc.stdout
    with Image.open(out) as img:
        assert img.format == 'PNG' and img.width > 3 * PANEL
    # refuses to overwrite its input
    proc = run_cli(['explain', out, '--model', 'msanet_r18_as', '--no-pretrained', '--out', out], timeout=240)
    assert proc.returncode == 2 and 'is one of the inputs' in proc.stderr


def test_colour_bar_reads_max_at_the_top(face):
    img = render(explain(str(face), _model('msanet_r18_as')))
    px = img.load()
    x = img.width - 8  # inside the bar, clear of its 'max' / 'min' words
    top, bottom = px[x, PANEL // 8 + 30], px[x, PANEL // 8 + PANEL - 30]
    assert top[0] > 150 and top[2] < 100      # red: the map's maximum
    assert bottom[2] > 150 and bottom[0] < 100  # blue: its minimum


def test_cli_explain_faces_on_a_photo(astronaut, tmp_path):
    pytest.importorskip('cv2')
    photo = tmp_path / 'astronaut.png'
    Image.fromarray(astronaut).save(photo)
    blank = tmp_path / 'blank.png'
    Image.new('RGB', (200, 160), (120, 130, 140)).save(blank)
    out = tmp_path / 'faces.png'
    base = ['explain', '--model', 'msanet_r18_as', '--no-pretrained',
            '--img-size', str(SIZE), '--faces']
    proc = run_cli(base + [str(photo), '--out', str(out)], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    face_lines = [ln for ln in proc.stdout.splitlines() if ' face 0 [' in ln or ' face 1 [' in ln]
    assert len(face_lines) >= 1 and f'wrote {out}: {len(face_lines)} row(s)' in proc.stdout
    with Image.open(out) as img:
        whole = run_cli(base[:-1] + [str(photo), '--out', str(tmp_path / 'whole.png')], timeout=240)
        assert whole.returncode == 0, whole.stderr[-3000:]
        with Image.open(tmp_path / 'whole.png') as one_row:
            assert img.height == len(face_lines) * one_row.height and img.width == one_row.width
    proc = run_cli(base + [str(blank), '--out', str(tmp_path / 'none.png')], timeout=240)
    assert proc.returncode == 1 and 'no face detected' in proc.stderr and not (tmp_path / 'none.png').exists()


def test_cli_explain_faces_aligns_with_a_landmark_detector(astronaut, tmp_path):
    """--detector dlib: the face is explained as predict classifies it, aligned (eyes level); --no-align gives
    the square crop of the box, as with the Haar cascade."""
    pytest.importorskip('dlib')
    tilted = tmp_path / 'tilted.png'
    Image.fromarray(astronaut).rotate(25, resample=Image.Resampling.BICUBIC).save(tilted)
    base = ['explain', str(tilted), '--faces', '--detector', 'dlib']
    proc = run_cli(base + ['--out', str(tmp_path / 'aligned.png')], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ' face 0 [' in ln]
    rotation = float(line.split('aligned (rotated ')[1].split(' degrees')[0])
    assert -30 < rotation < -18, line  # the 25 degree tilt undone, less the photo's own 3.5 degrees
    square = run_cli(base + ['--no-align', '--out', str(tmp_path / 'square.png')], timeout=240)
    assert square.returncode == 0 and 'aligned' not in square.stdout, square.stderr[-3000:]
    from timm_msanet.inference.explain import explain_faces
    from timm_msanet.loading import load_model
    model = load_model('msanet_r18')
    (aligned,) = explain_faces(str(tilted), model, detector='dlib')
    (crop,) = explain_faces(str(tilted), model, detector='dlib', align=False)
    assert aligned['aligned']['eye_dist'] == 0.362 and 'crop' not in aligned and len(aligned['landmarks']) == 5
    assert 'aligned' not in crop and crop['box'] == aligned['box']
    assert aligned['label'] == 'happiness'  # her smile, once the face is upright
