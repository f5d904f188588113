"""The README's end-to-end demo, shrunk: real images, timm's loaders and optimizers, save and reload."""
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from timm_msanet import FER7_LABELS

from conftest import run_cli

DEMO = Path(__file__).resolve().parent.parent / 'examples' / 'demo.py'


def test_demo_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, str(DEMO), '--out', str(tmp_path), '--steps', '4', '--per-class', '4',
                           '--img-size', '64', '--batch-size', '8'], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['train_images'] == 7 * 4 and summary['val_images'] == 7 * 4
    assert summary['reload_max_abs_diff'] == 0.0
    assert summary['label_names'] == list(FER7_LABELS)
    assert 0.0 <= summary['val_mean_class_accuracy'] <= 1.0
    assert sorted(p.name for p in (tmp_path / 'data' / 'train').iterdir()) == list(FER7_LABELS)
    with Image.open(next((tmp_path / 'data' / 'train' / 'happiness').glob('*.jpg'))) as im:
        assert im.format == 'JPEG' and im.size == (96, 96)
    assert (tmp_path / 'model.safetensors').stat().st_size > 1_000_000
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / 'model.safetensors').stat().st_mode & 0o777 == 0o666 & ~umask  # not safetensors' 0600


def test_real_photos_example_runs_the_packaged_model_offline(tmp_path):
    """examples/real_photos.py (first half of demo.sh): installed photos, the default pretrained model, no Hub."""
    import os
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'no-hf'))
    proc = subprocess.run([sys.executable, str(DEMO.with_name('real_photos.py')), '--out', str(tmp_path / 'photos')],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'msanet_r18: tag fer2013, input (3, 64, 64)' in proc.stdout
    results = json.loads((tmp_path / 'photos' / 'predictions.json').read_text())
    by_name = {Path(r['input']).name: r for r in results}
    assert by_name['astronaut.jpg']['label'] == 'happiness'
    lfw = [r for name, r in by_name.items() if name.startswith('lfw_')]
    assert len(lfw) == 8 and all(r['label'] in FER7_LABELS for r in lfw)
    for r in results:
        with Image.open(r['annotated']) as im:
            assert im.size == (r['width'], r['height'])


def test_demo_weights_reproduce_their_score_through_eval(tmp_path):
    # the weights are saved with their config: eval of the bare file path finds the demo's resolution, class
    # names and colour input beside it and reports the accuracy the demo printed
    proc = subprocess.run([sys.executable, str(DEMO), '--out', str(tmp_path), '--steps', '6', '--per-class', '4',
                           '--img-size', '80', '--batch-size', '8'], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / 'summary.json').read_text())
    config = json.loads((tmp_path / 'config.json').read_text())
    assert config['pretrained_cfg']['input_size'] == [3, 80, 80] and config['pretrained_cfg']['notes'] == []
    proc = run_cli(['eval', '--checkpoint', tmp_path / 'model.safetensors', '--data-dir', tmp_path / 'data',
                    '--split', 'validation', '--out', tmp_path / 'eval', '--workers', '0'], timeout=600)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
    assert metrics['input_size'] == [3, 80, 80]
    assert abs(metrics['accuracy'] - summary['val_accuracy']) < 1e-4
    assert abs(metrics['mean_class_accuracy'] - summary['val_mean_class_accuracy']) < 1e-4
    assert metrics['temperature'] == 1.0
