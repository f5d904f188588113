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
