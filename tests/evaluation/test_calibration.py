"""timm_msanet.evaluation.calibration: temperature scaling, ECE / NLL / Brier, and T carried by weights files into
predict, eval and the ONNX export. Real timm models (the packaged FER2013 release), real PNGs decoded by
PIL, real safetensors files, the real CLI in a subprocess."""
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from timm_msanet.notes import set_temperature, temperature_of
from timm_msanet.evaluation.scores import calibration_metrics, fit_temperature
from timm_msanet.loading import calibrated
from timm_msanet.loading import CheckpointError, load_model
from timm_msanet.inference.predict import predict

from conftest import run_cli

CLASSES = ('anger', 'disgust', 'fear', 'happiness', 'neutral', 'sadness', 'surprise')
OFFLINE = dict(HF_HUB_OFFLINE='1')


def test_ece_nll_brier_match_a_hand_computed_fixture():
    probs = torch.tensor([[0.90, 0.05, 0.05],   # conf .90 -> bin 13, right
                          [0.95, 0.03, 0.02],   # conf .95 -> bin 14, wrong (true 1)
                          [0.50, 0.30, 0.20],   # conf .50 -> bin 7, right
                          [0.40, 0.35, 0.25],   # conf .40 -> bin 6, wrong (true 2)
                          [0.92, 0.04, 0.04]])  # conf .92 -> bin 13, right
    targets = torch.tensor([0, 1, 0, 2, 0])
    m = calibration_metrics(probs, targets)
    # bin 13: 2 samples, accuracy 1, confidence .91 -> 2/5 * .09; the three single-sample bins: .95, .5, .4 (x 1/5)
    assert m['ece'] == pytest.approx((2 * 0.09 + 0.95 + 0.5 + 0.4) / 5, abs=1e-6)
    assert m['nll'] == pytest.approx(-(math.log(.9) + math.log(.03) + math.log(.5) + math.log(.25) + math.log(.92)) / 5,
                                     rel=1e-5)
    # sum over classes of (p - onehot)^2, per sample: .015, 1.8438, .38, .845, .0096
    assert m['brier'] == pytest.approx((0.015 + 1.8438 + 0.38 + 0.845 + 0.0096) / 5, abs=1e-6)
    assert [b['count'] for b in m['reliability']] == [0] * 6 + [1, 1] + [0] * 5 + [2, 1]
    # a confidence of exactly 1 is in the last bin, and a perfect sure classifier has ECE 0
    sure = calibration_metrics(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    assert sure['ece'] == 0 and sure['reliability'][-1]['count'] == 2


@pytest.mark.parametrize('true_t', [0.5, 2.5])
def test_a_known_temperature_is_recovered_from_synthetic_logits(true_t):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 7, generator=g) * 3
    targets = torch.multinomial((logits / true_t).softmax(-1), 1, generator=g).squeeze(1)
    t = fit_temperature(logits, targets)
    assert t == pytest.approx(true_t, rel=0.05)
    before = calibration_metrics(calibrated(logits, 1.0), targets)
    after = calibration_metrics(calibrated(logits, t), targets)
    assert after['nll'] < before['nll'] and after['ece'] < before['ece']


def _photo(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(40, 220, 64 * 64).reshape(64, 64)
    return Image.fromarray(np.clip(base + rng.normal(0, 30, (64, 64)), 0, 255).astype(np.uint8)).convert('RGB')


def test_temperature_changes_probabilities_never_the_argmax(tmp_path):
    paths = []
    for i in range(6):
        _photo(i).save(tmp_path / f'{i}.png')
        paths.append(str(tmp_path / f'{i}.png'))
    model = set_temperature(load_model('msanet_r18'), 1.0)  # the packaged release has its own: remove it
    assert temperature_of(model.pretrained_cfg) == 1.0
    plain = predict(paths, model, batch_size=4)
    hot = predict(paths, set_temperature(load_model('msanet_r18'), 2.0), batch_size=4)
    for a, b in zip(plain, hot):
        assert a['label'] == b['label']
        assert b['score'] < a['score']  # a temperature above 1 softens every distribution
        assert sum(b['probabilities'].values()) == pytest.approx(1.0, abs=1e-5)
        pa = torch.tensor(list(a['probabilities'].values()))
        assert torch.allclose(torch.tensor(list(b['probabilities'].values())), (pa.log() / 2).softmax(-1), atol=1e-4)


def test_a_lying_temperature_is_refused():
    model = load_model('msanet_r18')
    for bad in (0.0, -1.0, float('nan'), 1e9):
        with pytest.raises(ValueError, match='not a valid temperature'):
            set_temperature(model, bad)
    model.pretrained_cfg = dict(model.pretrained_cfg, notes=('calibration: temperature=0',))
    with pytest.raises(ValueError, match='expected a number from 0.05 to 20'):
        temperature_of(model.pretrained_cfg)


def _cli(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_cli(argv, timeout=timeout, env=dict(os.environ, **OFFLINE))


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('calib_data')
    for split, n in (('validation', 5), ('test', 3)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                _photo(100 * c + i + (0 if split == 'validation' else 50)).save(root / split / name / f'{i}.png')
    return root


def test_calibrate_cli_saves_a_temperature_that_eval_predict_and_onnx_apply(data, tmp_path):
    out, saved = tmp_path / 'calib', tmp_path / 'calibrated.safetensors'
    proc = _cli('calibrate', '--model', 'msanet_r18', '--data-dir', str(data), '--split', 'validation',
                '--out', str(out), '--save', str(saved), '--workers', '0')
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / 'calibration.json').read_text())
    t = result['temperature']
    assert 0.05 <= t <= 20 and set(result['splits']) == {'validation', 'test'}
    fit = result['splits']['validation']
    assert fit['num_samples'] == 35 and fit['after']['nll'] <= fit['before']['nll'] + 1e-9
    assert (out / 'reliability_validation.png').is_file() and (out / 'reliability_test.png').is_file()
    assert f'temperature {t:.4f} (fitted on validation)' in proc.stdout
    # 35 images of an untrained model: a warning that says what this T does to the scores, the way it actually goes
    said = ' '.join(proc.stderr.split())
    assert 'T = ' in said and 'fitted on 35 images' in said
    assert ('T < 1 sharpens every score' if t < 1 else 'T > 1 flattens every score') in said, said
    with safe_open(str(saved), framework='pt') as f:
        meta = f.metadata()
    assert float(meta['temperature']) == pytest.approx(t, rel=1e-5) and meta['temperature_fit_split'] == 'validation'

    model = load_model(checkpoint=saved)
    assert temperature_of(model.pretrained_cfg) == pytest.approx(t, rel=1e-5)
    assert model.pretrained_cfg['input_size'] == (3, 64, 64)

    ev = _cli('eval', '--checkpoint', str(saved), '--data-dir', str(data), '--split', 'test', '--out',
              str(tmp_path / 'eval'), '--workers', '0')
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert metrics['temperature'] == pytest.approx(t, rel=1e-5)
    assert metrics['ece'] == pytest.approx(result['splits']['test']['after']['ece'], abs=2e-3)
    assert metrics['uncalibrated']['ece'] == pytest.approx(result['splits']['test']['before']['ece'], abs=2e-3)
    assert (tmp_path / 'eval' / 'reliability.png').is_file() and 'calibration (T=' in ev.stdout

    pytest.importorskip('onnxruntime')
    from timm_msanet.inference.export_onnx import check_onnx, export_onnx, read_metadata
    onnx_path = export_onnx(model, tmp_path / 'm.onnx')
    assert read_metadata(onnx_path)['temperature'] == pytest.approx(t, rel=1e-5)
    import onnxruntime as ort
    x = torch.randn(2, 3, 64, 64)
    (got,) = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider']).run(['logits'], {'input': x.numpy()})
    with torch.inference_mode():
        raw = model(x)
    assert np.allclose(got, (raw / t).numpy(), atol=1e-3)
    assert check_onnx(onnx_path, model) < 1e-3


def test_calibrate_refuses_the_test_split_and_its_own_input(data, tmp_path):
    proc = _cli('calibrate', '--model', 'msanet_r18', '--data-dir', str(data), '--split', 'test')
    assert proc.returncode == 2 and 'refusing to fit the temperature on the test split' in proc.stderr
    weights = tmp_path / 'w.safetensors'
    weights.write_bytes(b'not touched')
    proc = _cli('calibrate', '--checkpoint', str(weights), '--data-dir', str(data), '--save', str(weights))
    assert proc.returncode == 2 and 'is one of the inputs' in proc.stderr
    assert weights.read_bytes() == b'not touched'


def test_a_bad_temperature_in_a_weights_file_is_refused(tmp_path):
    from safetensors.torch import save_file
    model = load_model('msanet_r18')
    path = tmp_path / 'bad.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={'arch': 'msanet_r18', 'temperature': '-3'})
    with pytest.raises(CheckpointError, match='metadata "temperature".*not a valid temperature'):
        load_model(checkpoint=path)


def test_explain_and_the_packaged_release_use_its_temperature(tmp_path):
    from timm_msanet.inference.explain import explain
    from timm_msanet.releases import PUBLISHED
    model = load_model('msanet_r18')
    t = temperature_of(model.pretrained_cfg)
    assert t == next(e for e in PUBLISHED if e['tag'] == 'fer2013')['temperature'] != 1.0
    _photo(7).save(tmp_path / 'face.png')
    result = explain(str(tmp_path / 'face.png'), model)
    expected = calibrated(torch.tensor(result['logits']), t)
    assert torch.allclose(torch.tensor(list(result['probabilities'].values())), expected, atol=1e-6)
    assert result['label'] == CLASSES[int(torch.tensor(result['logits']).argmax())]


def test_prior_correction_trades_a_little_top1_for_the_rare_classes():
    """On logits of a model biased towards the frequent classes (a classic long tail), the fitted tau is positive
    and lifts mean class accuracy; tau = 0 is what it returns when correcting does not help."""
    from timm_msanet.evaluation.calibration import _decision_score, fit_prior_correction
    g = torch.Generator().manual_seed(0)
    prior = torch.tensor([0.02, 0.18, 0.3, 0.5])
    targets = torch.multinomial(prior, 4000, replacement=True, generator=g)
    evidence = torch.randn(4000, 4, generator=g)
    evidence[torch.arange(4000), targets] += 1.5
    logits = evidence + 1.5 * torch.log(prior)  # what training on the long tail does to a classifier
    tau, curve = fit_prior_correction(logits, targets, torch.log(prior))
    before, after = _decision_score(logits, targets), _decision_score(logits - tau * torch.log(prior), targets)
    assert 0.5 <= tau <= 2 and after[1] > before[1] + 0.05 and sum(after) > sum(before)
    assert [r['tau'] for r in curve] == [round(0.05 * i, 2) for i in range(41)]
    balanced = torch.randn(4000, 4, generator=g)
    balanced[torch.arange(4000), targets] += 3.0
    assert fit_prior_correction(balanced, targets, torch.log(torch.full((4,), 0.25)))[0] == 0.0  # flat prior


def test_calibrate_balance_folds_the_correction_into_the_bias_that_eval_then_scores(data, tmp_path):
    import shutil
    root = tmp_path / 'data'
    shutil.copytree(data, root)
    counts = [3, 1, 5, 12, 8, 6, 4]  # the train split only gives the prior: one tiny image per entry
    for name, n in zip(CLASSES, counts):
        (root / 'train' / name).mkdir(parents=True)
        for i in range(n):
            Image.new('L', (8, 8), 10 * i).save(root / 'train' / name / f'{i}.png')
    saved, out = tmp_path / 'balanced.safetensors', tmp_path / 'calib'
    proc = _cli('calibrate', '--data-dir', str(root), '--split', 'validation', '--balance', '--save', str(saved),
                '--out', str(out), '--workers', '0')
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / 'calibration.json').read_text())
    pc = result['prior_correction']
    tau = pc['tau']
    assert 0 <= tau <= 2 and pc['fit_split'] == 'validation' and 'class-prior correction tau' in proc.stdout
    assert pc['prior'] == pytest.approx({n: c / sum(counts) for n, c in zip(CLASSES, counts)})
    import timm
    packaged = timm.create_model('msanet_r18', pretrained=True)
    balanced = load_model(checkpoint=saved)
    expected = packaged.head.fc.bias - tau * torch.log(torch.tensor(counts, dtype=torch.float32) / sum(counts))
    torch.testing.assert_close(balanced.head.fc.bias, expected, atol=2e-3, rtol=1e-3)  # float16 file
    with safe_open(str(saved), framework='pt') as f:
        assert json.loads(f.metadata()['prior_correction'])['tau'] == tau
    ev = _cli('eval', '--checkpoint', str(saved), '--data-dir', str(root), '--split', 'test', '--out',
              str(tmp_path / 'eval'), '--workers', '0')
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert metrics['accuracy'] == pytest.approx(pc['splits']['test']['after']['accuracy'], abs=1 / 21 + 1e-6)
    proc = _cli('calibrate', '--data-dir', str(data), '--split', 'validation', '--balance', '--workers', '0')
    assert proc.returncode == 2 and '--balance needs the class shares of' in proc.stderr


def test_the_temperature_is_described_by_what_it_does():
    from timm_msanet.evaluation.calibration import temperature_meaning
    assert temperature_meaning(0.1913).startswith('T < 1 sharpens') and 'multiplied by 5.23' in temperature_meaning(0.1913)
    assert temperature_meaning(4.5).startswith('T > 1 flattens') and 'divided by 4.5' in temperature_meaning(4.5)
    assert temperature_meaning(1.0) == 'T = 1 leaves the scores as they are'
