"""`timm-msanet bench`: rows with the documented fields, measured by a real subprocess of the CLI."""
import json
import subprocess
import sys


def test_bench_cpu_rows(tmp_path):
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, '-m', 'timm_msanet.cli', 'bench', '--models', 'msanet_r18', 'resnet18',
                           '--device', 'cpu', '--mode', 'train', 'infer', '--batch-size', '2', '--img-size', '64',
                           '--steps', '2', '--warmup', '1', '--json', str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert [(r['model'], r['mode']) for r in rows] == [
        ('msanet_r18', 'train'), ('resnet18', 'train'), ('msanet_r18', 'infer'), ('resnet18', 'infer')]
    for r in rows:
        assert {'model', 'device', 'mode', 'batch_size', 'compiled', 'img_s', 'tflops', 'peak_mem_mb'} <= set(r)
        assert r['device'] == 'cpu' and r['batch_size'] == 2 and r['compiled'] is False
        assert r['img_s'] > 0 and r['tflops'] > 0 and r['peak_mem_mb'] >= 0
    train = {r['model']: r['gflops_per_step'] for r in rows if r['mode'] == 'train'}
    infer = {r['model']: r['gflops_per_step'] for r in rows if r['mode'] == 'infer'}
    # forward + backward is about three forwards; FLOPs are counted, not timed, so this is exact-ish
    assert 2.5 < train['resnet18'] / infer['resnet18'] < 3.5
    assert infer['msanet_r18'] < infer['resnet18']
    assert 'TFLOP/s' in proc.stdout and 'x resnet18' in proc.stdout
