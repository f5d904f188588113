"""The packaged `msanet_r18.fer2013` release (releases.py): the default `pretrained=True`, offline, on real photos."""
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
import timm
from PIL import Image
from safetensors import safe_open

import timm_msanet
from timm_msanet import FER7_LABELS
from timm_msanet.notes import GREY_INPUT_NOTE, framing_of, temperature_of
from timm_msanet.loading import CheckpointError, load_model
from timm_msanet.loading import ExpressionModel
from timm_msanet.inference.predict import predict
from timm_msanet.releases import PUBLISHED, weights_path

from conftest import run_cli

RELEASE = next(e for e in PUBLISHED if (e['arch'], e['tag']) == ('msanet_r18', 'fer2013'))
WEIGHTS = Path(weights_path(RELEASE))


def _offline_env(tmp_path):
    """No Hub at all: offline, and an empty Hugging Face home."""
    return dict(HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'empty-hf-home'))


def _cli(*argv, env):
    return run_cli(argv, timeout=300, env=dict(os.environ, **env))


@pytest.fixture(scope='module')
def astronaut_jpg(astronaut, tmp_path_factory) -> Path:
    """scikit-image's `astronaut` (a smiling face, Eileen Collins) saved as a JPEG file."""
    path = tmp_path_factory.mktemp('photos') / 'astronaut.jpg'
    Image.fromarray(astronaut).save(path, quality=95)
    return path


PACKAGED = [e for e in PUBLISHED if e.get('file')]


def test_every_release_is_one_float16_safetensors_file_installed_with_the_package():
    files = [Path(weights_path(e)) for e in PACKAGED]
    assert WEIGHTS in files and all(f.parent == Path(timm_msanet.__file__).parent / 'weights' for f in files)
    assert sorted(p.name for p in WEIGHTS.parent.iterdir()) == sorted(f.name for f in files)  # one copy each


@pytest.mark.parametrize('entry', PACKAGED, ids=lambda e: f"{e['arch']}.{e['tag']}")
def test_a_packaged_file_carries_its_training_and_its_facts(entry):
    with safe_open(weights_path(entry), framework='pt') as f:
        meta = f.metadata()
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    args = json.loads(meta['args'])
    assert meta['arch'].split('.')[0] == entry['arch'] and args['pretrained'] is True  # the ImageNet start
    assert args['img_size'] == entry['input_size'][-1] and args['num_classes'] == len(entry['label_names'])
    assert args['val_split'] == 'validation' and meta['checkpoint_weights'] == 'state_dict_ema'
    assert all(isinstance(v, float) and 0.0 < v < 1.0 for v in entry['metrics'].values())
    # the facts travel in the file: loaded by path it is preprocessed exactly as by name
    assert meta['dataset'] == entry['dataset'] and round(float(meta['temperature']), 4) == entry['temperature']
    notes = json.loads(meta['notes'])
    assert GREY_INPUT_NOTE in notes and 'face framing: eye_y={eye_y:.3f} eye_dist={eye_dist:.3f}'.format(
        **entry['face_framing']) in notes
    by_path = load_model(checkpoint=weights_path(entry))
    by_name = load_model(f"{entry['arch']}.{entry['tag']}")
    for key in ('input_size', 'mean', 'std', 'crop_pct', 'crop_mode', 'label_names'):
        assert tuple(by_path.pretrained_cfg[key]) == tuple(by_name.pretrained_cfg[key]) if isinstance(
            by_name.pretrained_cfg[key], (list, tuple)) else by_path.pretrained_cfg[key] == by_name.pretrained_cfg[key]
    assert temperature_of(by_path.pretrained_cfg) == temperature_of(by_name.pretrained_cfg) == entry['temperature']
    assert framing_of(by_path.pretrained_cfg) == framing_of(by_name.pretrained_cfg) == entry['face_framing']
    if 'prior_correction' in meta:  # calibrate --balance, fitted on the validation split (FER2013's release)
        assert 0 <= json.loads(meta['prior_correction'])['tau'] <= 2


def test_default_pretrained_is_the_packaged_fer2013_model_offline(tmp_path, run_python):
    """`timm.create_model('msanet_r18', pretrained=True)` with no Hub and an empty HF_HOME, in a fresh
    interpreter (no import of timm_msanet: the autoload hook registers the models)."""
    env = _offline_env(tmp_path)
    proc = run_python(f"""
        import json, timm, torch
        from safetensors.torch import load_file
        m = timm.create_model('msanet_r18', pretrained=True).eval()
        ref = load_file({str(WEIGHTS)!r})
        sd = m.state_dict()
        assert all(torch.equal(sd[k], v.to(sd[k].dtype)) for k, v in ref.items()), 'weights differ from the file'
        data = timm.data.resolve_data_config({{}}, model=m)
        print(json.dumps(dict(cfg=m.pretrained_cfg, data=data, default=timm.models.get_pretrained_cfg('msanet_r18').tag)))
    """, env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    cfg = out['cfg']
    assert out['default'] == 'fer2013' and cfg['tag'] == 'fer2013' and cfg['file'] == str(WEIGHTS)
    assert cfg['label_names'] == list(FER7_LABELS) and cfg['num_classes'] == 7
    assert out['data']['input_size'] == [3, 64, 64] and out['data']['crop_pct'] == 1.0
    assert out['data']['crop_mode'] == 'squash'
    assert GREY_INPUT_NOTE in cfg['notes'] and any('non-commercial' in n for n in cfg['notes'])
    assert any(f"accuracy={RELEASE['metrics']['accuracy']}" in n for n in cfg['notes'])
    assert not (tmp_path / 'empty-hf-home' / 'hub').exists()  # the Hub cache was never touched


@pytest.mark.parametrize('tag', [e['tag'] for e in PACKAGED])
def test_a_colour_photo_gets_the_same_probabilities_through_timms_transform_and_predict(tag, astronaut):
    """The grey step is in the model: timm's own resolve_data_config + create_transform on a colour photo gives
    what `predict` gives (to 1e-4), and both agree with the grey image PIL makes (as the model was trained)."""
    from timm.data import create_transform, resolve_data_config
    photo = Image.fromarray(astronaut)
    model = timm.create_model(f'msanet_r18.{tag}', pretrained=True).eval()
    assert model.grey_input and len(model.state_dict()) == len(timm.create_model('msanet_r18').state_dict())
    transform = create_transform(**resolve_data_config({}, model=model))
    T = temperature_of(model.pretrained_cfg)
    with torch.no_grad():
        timm_probs = (model(transform(photo).unsqueeze(0)) / T).softmax(-1)[0]
        pil_grey = (model(transform(photo.convert('L').convert('RGB')).unsqueeze(0)) / T).softmax(-1)[0]
    [result] = predict([photo], load_model(f'msanet_r18.{tag}'))
    predicted = torch.tensor([result['probabilities'][name] for name in model.pretrained_cfg['label_names']])
    torch.testing.assert_close(predicted, timm_probs, atol=1e-4, rtol=0)
    # PIL's grey is rounded to 8 bits before the resize, the model's is not: close, not equal
    torch.testing.assert_close(timm_probs, pil_grey, atol=5e-3, rtol=0)
    # without the step the colour photo reads differently (what timm's pipeline used to show this model)
    model.set_grey_input(False)
    with torch.no_grad():
        colour = (model(transform(photo).unsqueeze(0)) / T).softmax(-1)[0]
    assert (colour - timm_probs).abs().max() > 1e-2
    # an ONNX deployment is told the graph converts by itself
    from timm_msanet.inference.export_onnx import onnx_metadata
    model.set_grey_input(True)
    data_config = json.loads(onnx_metadata(model)['data_config'])
    assert data_config['grey_step_in_graph'] is True and data_config['grey_input'] is False
    # the ImageNet starting point is a colour model: no step, no conversion
    tv = timm.create_model('msanet_r18.tv_in1k')
    assert not tv.grey_input and not torch.equal(ExpressionModel.of(tv).transform(64)[0](photo), ExpressionModel.of(
        tv).transform(64)[0](photo.convert('L').convert('RGB')))


def test_astronaut_smiles_through_the_cli_with_faces(astronaut_jpg, tmp_path):
    proc = _cli('predict', astronaut_jpg, '--model', 'msanet_r18', '--faces', '--json', '-', env=_offline_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert 'warning' not in proc.stderr
    [result] = json.loads(proc.stdout)
    assert result['faces'], 'no face found in the astronaut photo'
    assert result['label'] == 'happiness', result['faces'][0]['probabilities']
    assert result['faces'][0]['probabilities']['happiness'] > 0.5


def test_untrained_heads_warn_and_trained_ones_do_not(astronaut_jpg, tmp_path, make_offline_hub_cache):
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the release itself: no warning
        predict([astronaut_jpg], load_model('msanet_r18'))
    with pytest.warns(UserWarning, match='random weights .* meaningless'):
        predict([astronaut_jpg], load_model('msanet_r18', pretrained=False))
    # the ImageNet starting point, through a real (offline) Hub cache of a ResNet-18 state dict
    resnet = tmp_path / 'resnet18.safetensors'
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in timm.create_model('resnet18').state_dict().items()}, str(resnet))
    hf_home = tmp_path / 'hf'
    make_offline_hub_cache(hf_home, 'timm/resnet18.tv_in1k', {'model.safetensors': resnet})
    proc = _cli('predict', astronaut_jpg, '--model', 'msanet_r18.tv_in1k',
                env=dict(HF_HUB_OFFLINE='1', HF_HOME=str(hf_home)))
    assert proc.returncode == 0, proc.stderr
    assert 'timm-msanet predict: warning:' in proc.stderr and 'tv_in1k holds only an ImageNet' in proc.stderr
    proc = _cli('explain', astronaut_jpg, '--model', 'msanet_r18', '--no-pretrained', '--out', tmp_path / 'x.png',
                env=_offline_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert 'timm-msanet explain: warning:' in proc.stderr and 'random weights' in proc.stderr


def test_offline_error_names_the_hub_repo_to_download(tmp_path, run_python):
    proc = run_python("""
        from timm_msanet.loading import load_model, CheckpointError
        try:
            load_model('msanet_r18.tv_in1k')
        except CheckpointError as e:
            print(e)
    """, _offline_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert '`hf download timm/resnet18.tv_in1k`' in proc.stdout and 'hf download msanet_r18' not in proc.stdout


RELEASE_DOCS = Path(__file__).resolve().parent.parent / 'docs' / 'releases' / 'msanet_r18_fer2013'


def test_the_hub_release_regenerates_from_the_packaged_weights(tmp_path):
    """The documented command: the packaged file + the committed PrivateTest eval -> the Hub folder."""
    out = tmp_path / 'release'
    proc = _cli('publish', WEIGHTS, '--repo-id', 'someorg/msanet-r18-fer2013', '--dataset', 'fer2013',
                '--eval-json', RELEASE_DOCS / 'eval' / 'test' / 'metrics.json', '--dry-run', out,
                env=_offline_env(tmp_path))  # the face framing comes from the file
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        'README.md', 'config.json', 'confusion_matrix.png', 'eval.json', 'model.safetensors', 'reliability.png']
    ev = json.loads((out / 'eval.json').read_text())
    assert ev['split'] == 'test' and ev['num_samples'] == 3589
    assert round(ev['accuracy'], 4) == RELEASE['metrics']['accuracy']
    assert round(ev['mean_class_accuracy'], 4) == RELEASE['metrics']['mean_class_accuracy']
    card = (out / 'README.md').read_text()
    assert f"| accuracy | {ev['accuracy'] * 100:.2f} |" in card and 'byte-identical' in card
    assert '| `img_size` | `64` |' in card and '| `pretrained` | `True` |' in card  # the ImageNet start
    assert 'measured with `dlib` on 907 training faces' in card
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == 'msanet_r18' and cfg['pretrained_cfg']['input_size'] == [3, 64, 64]
    assert GREY_INPUT_NOTE in cfg['pretrained_cfg']['notes'] and cfg['label_names'] == list(FER7_LABELS)
    # the temperature: fitted on PublicTest, in the packaged file, the registered cfg, config.json and the card
    t = RELEASE['temperature']
    with safe_open(WEIGHTS, framework='pt') as f:
        assert round(float(f.metadata()['temperature']), 4) == t
    assert temperature_of(cfg['pretrained_cfg']) == pytest.approx(t, abs=1e-4)
    assert temperature_of(timm.create_model('msanet_r18', pretrained=True).pretrained_cfg) == t
    assert f'(logits / {t:.4f}).softmax(-1)' in card
    assert f"| before (T = 1) | {ev['uncalibrated']['ece'] * 100:.2f}% |" in card
    assert round(ev['ece'], 4) == RELEASE['metrics']['ece']
    assert ev['uncalibrated']['ece'] > ev['ece']
    released = timm.create_model(f'local-dir:{out}', pretrained=True).eval()
    packaged = timm.create_model('msanet_r18', pretrained=True).eval()
    assert framing_of(released.pretrained_cfg) == framing_of(packaged.pretrained_cfg) == RELEASE['face_framing']
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(released(x), packaged(x))


def test_eval_shows_colour_images_to_the_grey_model_as_grey(tmp_path):
    """`evaluate` on a colour ImageFolder gives the grey-trained release the same results as the grey copy."""
    from timm_msanet.evaluation.evaluate import evaluate
    for tree, mode in (('colour', 'RGB'), ('grey', 'L')):
        for i, label in enumerate(FER7_LABELS[:3]):
            (tmp_path / tree / 'test' / label).mkdir(parents=True)
            for j in range(2):
                px = (torch.rand(40, 40, 3, generator=torch.Generator().manual_seed(i * 10 + j)) * 255).byte().numpy()
                Image.fromarray(px, 'RGB').convert(mode).save(tmp_path / tree / 'test' / label / f'{j}.png')
    model = load_model('msanet_r18')
    colour = evaluate(model, str(tmp_path / 'colour'), 'test', workers=0)
    grey = evaluate(model, str(tmp_path / 'grey'), 'test', workers=0)
    assert colour['confusion_matrix'] == grey['confusion_matrix'] and colour['num_samples'] == 6


def test_a_surprised_face_is_surprise():
    """scikit-image's LFW face 29 (mouth open, brows raised: labelled surprise by eye before the model saw it),
    a grey aligned crop like FER2013's, classified whole. The other LFW crops of examples/real_photos.py are
    printed by the demo, not asserted: several are not clear expressions."""
    import numpy as np
    from skimage import data
    face = Image.fromarray(np.clip(data.lfw_subset()[29] * 255, 0, 255).astype(np.uint8), 'L').resize((96, 96), Image.BICUBIC)
    [result] = predict([face], load_model('msanet_r18'), topk=2)
    assert result['label'] == 'surprise', result['topk']


def test_a_photo_classified_whole_gets_a_hint_to_use_faces(astronaut_jpg, tmp_path):
    pytest.importorskip('cv2')
    proc = _cli('predict', astronaut_jpg, env=_offline_env(tmp_path))
    assert proc.returncode == 0 and 'classified whole' in proc.stderr and 'add --faces' in proc.stderr
    proc = _cli('predict', astronaut_jpg, '--faces', env=_offline_env(tmp_path))
    assert proc.returncode == 0 and 'classified whole' not in proc.stderr


def test_the_ferplus_release_is_one_tag_away_with_eight_classes(astronaut):
    """`msanet_r18.ferplus`: installed, offline, 8 classes with contempt at index 1, the smiling astronaut is
    happiness, and the default `msanet_r18` stays the 7-class FER2013 model (its class indices never shift)."""
    from timm_msanet.labels import FER8_LABELS
    model = timm.create_model('msanet_r18.ferplus', pretrained=True).eval()
    assert tuple(model.pretrained_cfg['label_names']) == tuple(FER8_LABELS) and FER8_LABELS[1] == 'contempt'
    assert temperature_of(model.pretrained_cfg) == 0.7927
    (res,) = predict([Image.fromarray(astronaut)], model, faces=True)
    assert res['label'] == 'happiness' and res['probabilities']['happiness'] > 0.5
    default = timm.create_model('msanet_r18', pretrained=True)
    assert tuple(default.pretrained_cfg['label_names']) == tuple(FER7_LABELS)


@pytest.mark.parametrize('dataset', ['fer2013', 'ferplus'])
def test_the_readme_tables_quote_the_recorded_test_metrics(dataset):
    """README's model tables (the FER2013 one first, then FERPlus) give the test figures that the release's own
    eval records say: the msanet release row and its same-recipe ResNet-18 row."""
    docs = Path(__file__).resolve().parent.parent / 'docs' / 'releases' / f'msanet_r18_{dataset}'
    readme = (Path(__file__).resolve().parent.parent / 'README.md').read_text()
    [msanet_row] = [line for line in readme.splitlines() if line.startswith(f'| **`msanet_r18.{dataset}`**')]
    resnet_rows = [line for line in readme.splitlines() if line.startswith('| `resnet18`, same recipe')]
    assert len(resnet_rows) == 2, resnet_rows
    for row, record in ((msanet_row, docs / 'eval' / 'test' / 'metrics.json'),
                        (resnet_rows[['fer2013', 'ferplus'].index(dataset)], docs / 'resnet18' / 'test_metrics.json')):
        metrics = json.loads(record.read_text())
        assert metrics['split'] == 'test' and metrics['dataset'] == dataset, record
        for key in ('accuracy', 'mean_class_accuracy'):
            assert f"{metrics[key] * 100:.2f}%" in row, (row, key)


def test_the_readme_224px_rows_quote_their_recorded_test_metrics():
    """Every 224 px run recorded beside a release (docs/releases/msanet_r18_*/MODEL_224px/) has its README row
    ("| `MODEL` at 224 px ...") in that dataset's table, giving the test figures of its own eval record."""
    root = Path(__file__).resolve().parent.parent
    lines = (root / 'README.md').read_text().splitlines()
    records = sorted(root.glob('docs/releases/msanet_r18_*/*_224px/test_metrics.json'))
    assert records, 'no 224 px run recorded under docs/releases'
    for record in records:
        model = record.parent.name[:-len('_224px')]
        metrics = json.loads(record.read_text())
        assert metrics['split'] == 'test', record
        assert metrics['dataset'] == record.parent.parent.name.rsplit('_', 1)[1], record
        rows = [line for line in lines if line.startswith(f'| `{model}` at 224 px')
                and f"{metrics['accuracy'] * 100:.2f}%" in line]
        assert len(rows) == 1, (record, rows)
        assert f"{metrics['mean_class_accuracy'] * 100:.2f}%" in rows[0], rows[0]
        assert rows[0].split('|')[2].strip().startswith('224 px'), rows[0]


def test_the_model_file_stands_alone_and_its_release_cfgs_are_releases_py():
    """msanet.py imports nothing of the package but the label list (a model file timm could take as it is), so its
    packaged release cfgs are literal data: they must be what releases.py derives from its entries, and its grey
    note the tools' note."""
    import ast
    from timm_msanet import msanet, notes, releases
    tree = ast.parse(Path(msanet.__file__).read_text())
    own = sorted({n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level})
    assert own == ['labels'], own
    assert msanet.GREY_INPUT_NOTE == notes.GREY_INPUT_NOTE
    expected = releases.published_cfgs(msanet._cfg)
    for name, cfg in expected.items():
        registered = timm.models.get_pretrained_cfg(name).to_dict()
        for key, value in cfg.items():
            assert registered.get(key) == value, f'msanet.py default_cfgs[{name!r}][{key!r}] should be {value!r}'
    registered_tags = {n for n in timm.list_pretrained('msanet_*') if not n.endswith('.tv_in1k')}
    assert registered_tags == set(expected)
