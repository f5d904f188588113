"""Benchmark the leak check of `timm-msanet export` on a generated FER2013-size folder layout.

Not a test: it writes 35,887 small JPEGs into a scratch folder and takes a few minutes on 2 cores.

    PYTHONPATH=. python examples/bench_leak_check.py --repeat 3 [--workdir /dev/shm/blc] [--source DIR]

The layout is the FER2013 folder redistribution with the official split sizes (train 28,709, validation
3,589, test 3,589 images of 48x48 grey JPEG, in `angry disgust ... surprise` folders); 8% of the
validation and test images are byte copies of training images, as in FER2013 (`--source DIR` runs on a
real copy instead). Link-mode exports run in fresh processes, alternating `--no-leak-check` and the
default (hashing on), so both see the same machine load; the table gives the fastest and median run of
each, the ratio of their medians and the main process's peak RSS. The hashing rate is the images of the
export divided by the extra time hashing took (median minus median).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

SPLITS = (('train', 28_709), ('validation', 3_589), ('test', 3_589))
FOLDERS = ('angry', 'disgust', 'fear', 'happy', 'neutral', 'sad', 'surprise')
COPY_SHARE = 0.08


def generate(root: str, seed: int = 0) -> None:
    """Smooth random 48x48 grey images (distinct per file), with COPY_SHARE of validation/test copied from train."""
    rng = np.random.default_rng(seed)
    train_files = []
    for split, n in SPLITS:
        for folder in FOLDERS:
            os.makedirs(os.path.join(root, split, folder), exist_ok=True)
        for i in range(n):
            folder = FOLDERS[i % 7]
            path = os.path.join(root, split, folder, f'{split}_{i:05d}.jpg')
            if split != 'train' and rng.random() < COPY_SHARE:
                shutil.copyfile(train_files[int(rng.integers(len(train_files)))], path)
                continue
            small = rng.integers(0, 256, (12, 12), dtype=np.uint8)
            Image.fromarray(small).resize((48, 48), Image.Resampling.BICUBIC).save(path, quality=90)
            if split == 'train':
                train_files.append(path)


# the export command, then the main process's peak RSS (the leak check keeps one record per image there)
CHILD = '''import sys
from timm_msanet.cli import main
rc = main(sys.argv[1:])
print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
sys.exit(rc)'''


def run_export(source: str, output: str, leak_check: bool) -> dict:
    cmd = [sys.executable, '-c', CHILD, 'export', 'fer2013', source, output, '--quiet']
    if not leak_check:
        cmd.append('--no-leak-check')
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - start  # the whole command, interpreter start-up included
    peak_mib = int(proc.stdout.split()[-1]) / 1024
    with open(os.path.join(output, 'manifest.json')) as f:
        manifest = json.load(f)
    shutil.rmtree(output)
    leaks = manifest.get('leak_check') or {}
    return dict(elapsed_s=elapsed, exported=manifest['exported'], pairing_s=leaks.get('seconds'),
                pairs=leaks.get('pairs_total'), workers=manifest['options']['workers_used'], peak_rss_mib=peak_mib)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeat', type=int, default=3, help='runs of each configuration (alternating)')
    parser.add_argument('--workdir', help='scratch folder (default: a temporary folder, removed afterwards)')
    parser.add_argument('--source', help='an existing FER2013 folder layout to use instead of a generated one')
    args = parser.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix='bench_leak_')
    os.makedirs(work, exist_ok=True)
    try:
        source = args.source
        if source is None:
            source = os.path.join(work, 'fer2013')
            t = time.perf_counter()
            generate(source)
            print(f'generated the FER2013-size layout in {time.perf_counter() - t:.1f} s', flush=True)
        runs = {False: [], True: []}
        for r in range(args.repeat):
            for leak_check in (False, True):
                got = run_export(source, os.path.join(work, 'out'), leak_check)
                runs[leak_check].append(got)
                print(json.dumps(dict(round=r, leak_check=leak_check, **got)), flush=True)
        n = runs[True][0]['exported']
        med = {k: statistics.median(x['elapsed_s'] for x in v) for k, v in runs.items()}
        print(f'\n{"export (link mode)":<24}{"best s":>8}{"median s":>10}{"images/s (median)":>19}'
              f'{"peak RSS MiB":>14}  workers')
        for k, title in ((False, '--no-leak-check'), (True, 'leak check (default)')):
            best = min(x['elapsed_s'] for x in runs[k])
            peak = max(x['peak_rss_mib'] for x in runs[k])
            w = runs[k][0]['workers']
            print(f'{title:<24}{best:>8.2f}{med[k]:>10.2f}{n / med[k]:>19,.0f}{peak:>14.0f}  {w["count"]} {w["kind"]}')
        extra = med[True] - med[False]
        print(f'leak check / no leak check: {med[True] / med[False]:.2f}x the time; hashing adds {extra:.1f} s, '
              f'{n / extra:,.0f} images/s hashed; pairing (median) '
              f'{statistics.median(x["pairing_s"] for x in runs[True]):.2f} s, {runs[True][0]["pairs"]} pairs found')
        print(f'({os.cpu_count()} cores; {n} images; each run is the whole `timm-msanet export` command)')
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
