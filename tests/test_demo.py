"""The README's end-to-end demo, shrunk: real images, timm's loaders and optimizers, save and reload."""
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from timm_msanet import FER7_LABELS

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
