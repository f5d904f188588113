"""`timm-msanet bench`: rows with the documented fields, measured by a real subprocess of the CLI."""
import json

from timm_msanet.bench import SPREAD_WARN, noisy_rows, ratio_table, spread_pct

from conftest import run_cli


def test_bench_cpu_rows(tmp_path):
    out = tmp_path / 'bench.json'
    proc = run_cli(['bench', '--models', 'msanet_r18', 'resnet18', '--device', 'cpu', '--mode', 'train', 'infer',
                    '--batch-size', '2', '--img-size', '64', '--steps', '2', '--repeats', '3', '--warmup', '1',
                    '--json', out], timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert [(r['model'], r['mode']) for r in rows] == [
        ('msanet_r18', 'train'), ('resnet18', 'train'), ('msanet_r18', 'infer'), ('resnet18', 'infer')]
    for r in rows:
        assert {'model', 'device', 'mode', 'batch_size', 'compiled', 'img_s', 'tflops', 'peak_mem_mb',
                'img_s_min', 'img_s_max', 'spread_pct', 'repeats', 'round_img_s'} <= set(r)
        assert r['device'] == 'cpu' and r['batch_size'] == 2 and r['compiled'] is False
        assert r['img_s'] > 0 and r['tflops'] > 0 and r['peak_mem_mb'] >= 0
        assert r['repeats'] == 3 and len(r['round_img_s']) == 3
        assert r['img_s_min'] <= r['img_s'] <= r['img_s_max']
        assert abs(r['spread_pct'] - spread_pct(r['round_img_s'])) < 0.1
    train = {r['model']: r['gflops_per_step'] for r in rows if r['mode'] == 'train'}
    infer = {r['model']: r['gflops_per_step'] for r in rows if r['mode'] == 'infer'}
    # forward + backward is about three forwards; FLOPs are counted, not timed, so this is exact-ish
    assert 2.5 < train['resnet18'] / infer['resnet18'] < 3.5
    assert infer['msanet_r18'] < infer['resnet18']
    assert 'TFLOP/s' in proc.stdout and 'x resnet18 (rounds' in proc.stdout
    assert f'wrote 4 rows to {out}' in proc.stdout  # the absolute path, whatever the working directory


def _row(model, rounds, gflops=1.0):
    return dict(model=model, mode='infer', compiled=False, round_img_s=rounds, gflops_per_step=gflops,
                spread_pct=spread_pct(rounds), tflops=1.0)


def test_ratios_are_taken_round_by_round():
    # a load burst in round 2 slows both models alike: the per-round ratio stays 0.5 where the medians of the
    # two rows alone would not line up
    rows = [_row('resnet18', [100.0, 40.0, 100.0, 98.0]), _row('msanet_r18', [50.0, 20.0, 50.0, 49.0], 0.5)]
    (line,) = ratio_table(rows)
    assert 'img/s 0.50x resnet18 (rounds 0.50-0.50)' in line and 'TFLOP/s 0.25x' in line


def test_noisy_rows_are_named():
    quiet, busy = _row('a', [100.0, 101.0, 99.0]), _row('b', [100.0, 60.0, 100.0])
    assert quiet['spread_pct'] < SPREAD_WARN < busy['spread_pct']
    assert noisy_rows([quiet, busy]) == [busy]


def test_bench_cpu_precisions_and_formats_side_by_side(tmp_path):
    """--amp fp32 bf16 --channels-last both: every model at the four settings in one interleaved group, each row
    saying how it ran, and ratios taken against the baseline at the same setting."""
    out = tmp_path / 'bench.json'
    proc = run_cli(['bench', '--models', 'msanet_r18', 'resnet18', '--device', 'cpu', '--mode', 'train',
                    '--amp', 'fp32', 'bf16', '--channels-last', 'both', '--batch-size', '2', '--img-size', '32',
                    '--steps', '1', '--repeats', '2', '--warmup', '1', '--json', out], timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert [(r['model'], r['amp'], r['channels_last']) for r in rows] == [
        (m, amp, cl) for amp in ('fp32', 'bf16') for cl in (False, True) for m in ('msanet_r18', 'resnet18')]
    assert {r['dtype'] for r in rows if r['amp'] == 'bf16'} == {'bfloat16'}
    for label in ('eager fp32 ', 'eager fp32+cl', 'eager bf16 ', 'eager bf16+cl'):
        assert sum(line.startswith('msanet_r18') and label in line and 'x resnet18' in line
                   for line in proc.stdout.splitlines()) == 1, (label, proc.stdout)
