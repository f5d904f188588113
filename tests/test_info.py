"""`timm-msanet info`: the README's params/GMACs table comes from here (real subprocess of the CLI)."""
import json
import shutil
import subprocess
import sys


def test_info_json_counts_params_and_macs():
    exe = shutil.which('timm-msanet')
    cmd = [exe] if exe else [sys.executable, '-m', 'timm_msanet.cli']
    proc = subprocess.run(cmd + ['info', '--models', 'resnet18', 'msanet_r18', '--json'], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {r['model']: r for r in json.loads(proc.stdout)}
    assert rows['resnet18']['params_m'] == 11.69 and rows['resnet18']['gmacs'] == 1.81  # timm's published figures
    ours = rows['msanet_r18']
    assert ours['label_names'] == ['anger', 'disgust', 'fear', 'happiness', 'neutral', 'sadness', 'surprise']
    assert ours['pretrained_tags'] == ['msanet_r18.fer2013', 'msanet_r18.ferplus', 'msanet_r18.tv_in1k']  # fer2013: default
    assert 0 < ours['gmacs'] < rows['resnet18']['gmacs'] and ours['num_features'] == 1536
    # one input size for the whole GMACs column; each model's own default size beside it
    assert rows['resnet18']['img_size'] == ours['img_size'] == 224 and ours['default_size'] == 64
