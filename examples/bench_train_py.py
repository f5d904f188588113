"""timm's train.py images/s on this machine: fp32 vs bf16 autocast, 1 vs 2 loader workers, side by side.

Runs train.py on a real ImageFolder tree with a recipe, once per setting, each for a fixed number of
seconds (the run is stopped there; no checkpoint is kept), and reads the images/s that train.py itself logs
(`Time: ..s, N/s`), dropping the first log line (start-up, first batches). Settings run in turn, twice
over by default, so a slow minute on a shared machine hits each of them alike; the table gives each
setting's median and its ratio to the first setting.

    python examples/bench_train_py.py --timm-repo ~/pytorch-image-models --data-dir data/fer2013 \
        --recipe examples/recipes/fer2013_in1k.yaml --model msanet_r18 --seconds 75
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {  # name -> recipe keys replaced (train.py's --amp cannot be switched off once a recipe sets it)
    'fp32, 1 worker': {'amp': False, 'workers': 1},
    'fp32, 2 workers': {'amp': False, 'workers': 2},
    'bf16, 1 worker': {'amp': True, 'amp_dtype': 'bfloat16', 'workers': 1},
    'bf16, 2 workers': {'amp': True, 'amp_dtype': 'bfloat16', 'workers': 2},
}
RATE = re.compile(r'Time:\s*[\d.]+s,\s*([\d.]+)/s')


def run_once(args, overrides, log_dir: Path) -> list:
    import yaml
    recipe = yaml.safe_load(args.recipe.read_text())
    recipe.update(overrides, channels_last=True, log_interval=args.log_interval, epochs=1)
    setting = log_dir / 'recipe.yaml'
    setting.write_text(yaml.safe_dump(recipe))
    cmd = [sys.executable, str(args.timm_repo / 'train.py'), str(args.data_dir), '--config', str(setting),
           '--model', args.model, '--output', str(log_dir), '--device', args.device]
    if args.pretrained_path:
        cmd += ['--pretrained-path', str(args.pretrained_path)]
    else:
        cmd += ['--no-pretrained']
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        buf, _ = proc.communicate(timeout=args.seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        buf, _ = proc.communicate()
    rates = [float(r) for r in RATE.findall(buf)]
    if len(rates) < 2:
        raise SystemExit(f'train.py logged {len(rates)} rates in {args.seconds} s; its output ends:\n{buf[-2000:]}')
    return rates[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--timm-repo', type=Path, required=True)
    parser.add_argument('--data-dir', type=Path, required=True)
    parser.add_argument('--recipe', type=Path, required=True)
    parser.add_argument('--model', default='msanet_r18')
    parser.add_argument('--pretrained-path', type=Path, help='start file; random init without it (same speed)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--seconds', type=float, default=75)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--log-interval', type=int, default=20,
                        help='batches between train.py\'s rate lines (fewer where bf16 is emulated and slow)')
    args = parser.parse_args()
    found = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, overrides in SETTINGS.items():
                found[name] += run_once(args, overrides, Path(tmp))
                print(f'{name}: {statistics.median(found[name]):.0f} images/s so far', file=sys.stderr)
    base = statistics.median(found[next(iter(SETTINGS))])
    from timm_msanet.utils.precision import native_bf16
    print(f'bf16 autocast on {args.device}: {"native" if native_bf16(args.device) else "emulated"}')
    print(f'| setting ({args.model}, {args.recipe.name}) | train images/s (median) | vs first |')
    print('|---|---|---|')
    for name, rates in found.items():
        med = statistics.median(rates)
        print(f'| {name} | {med:.0f} | {med / base:.2f}x |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
