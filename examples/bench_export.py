"""Benchmark `timm-msanet export affectnet` on a generated AffectNet-size legacy CSV layout.

Not a test: it writes ~100k files into a scratch folder and takes a few minutes on 2 cores.

    PYTHONPATH=. python examples/bench_export.py         # link at 25k and 100k rows, encode on 10k, best of 3
    PYTHONPATH=. python examples/bench_export.py --rows 25000 100000 --encode-rows 10000 --workers 2 --repeat 3

The layout is the legacy release (`Manually_Annotated_file_lists/{training,validation}.csv` +
`Manually_Annotated_Images/<dir>/<hash>.jpg`), with a realistic CSV row (68 landmark points, face box,
valence/arousal) and a realistic label mix (including None/Uncertain/No-Face rows that are skipped).
To keep generation fast every image is a hard link to one 256x256 JPEG; the exporter neither knows
nor cares (runs use `--no-leak-check`: with every image one file, hashing would only find one group of
copies; examples/bench_leak_check.py measures the leak check). Each export runs in a fresh child process
so its peak memory is its own: the report
gives peak RSS above the process's RSS before the export, plus the worker processes' peak RSS. The
child imports `timm_msanet.data.export` without the package `__init__` (which imports torch for the
models and would add a few hundred MiB that have nothing to do with exporting). Link-mode runs also
time a bare loop of the same system calls (stat + symlink) right before and after the export: on a
shared machine the file system's speed varies by 10x, and that loop is the ceiling at the time. Flat memory means the 100k run
peaks no higher than the 25k run.
"""
import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

# label mix loosely following AffectNet's manually annotated training set (0..10)
LABEL_WEIGHTS = [75, 134, 25, 14, 6, 4, 25, 4, 33, 12, 82]
HEADER = 'subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal'
FILES_PER_DIR = 1000
LINKS_PER_FILE = 50_000


def _image_bytes() -> bytes:
    import io
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buf, 'JPEG', quality=90)
    return buf.getvalue()


def generate(root: str, rows: int) -> str:
    """Images (hard links) for `rows` entries; returns the image root shared by every CSV subset."""
    images = os.path.join(root, 'images', 'Manually_Annotated_Images')
    data = _image_bytes()
    for i in range(rows):
        if i % LINKS_PER_FILE == 0:  # ext4 allows 65,000 links to one inode
            master = os.path.join(root, f'master{i // LINKS_PER_FILE}.jpg')
            with open(master, 'wb') as f:
                f.write(data)
        sub = os.path.join(images, str(i // FILES_PER_DIR))
        if i % FILES_PER_DIR == 0:
            os.makedirs(sub)
        os.link(master, os.path.join(sub, hashlib.sha1(str(i).encode()).hexdigest() + '.jpg'))
    return images


def write_layout(root: str, images: str, rows: int, seed: int = 0) -> str:
    """AffectNet legacy layout with `rows` CSV rows (90% training.csv, 10% validation.csv)."""
    rng = random.Random(seed)
    layout = os.path.join(root, f'affectnet_{rows}')
    lists = os.path.join(layout, 'Manually_Annotated_file_lists')
    os.makedirs(lists)
    labels = rng.choices(range(11), weights=LABEL_WEIGHTS, k=rows)
    n_train = rows * 9 // 10
    for file_name, start, stop in (('training.csv', 0, n_train), ('validation.csv', n_train, rows)):
        with open(os.path.join(lists, file_name), 'w') as f:
            f.write(HEADER + '\n')
            for i in range(start, stop):
                landmarks = ';'.join(f'{rng.uniform(30, 220):.2f}' for _ in range(136))
                rel = f'{i // FILES_PER_DIR}/{hashlib.sha1(str(i).encode()).hexdigest()}.jpg'
                f.write(f'{rel},32,32,192,192,{landmarks},{labels[i]},{rng.uniform(-1, 1):.4f},'
                        f'{rng.uniform(-1, 1):.4f}\n')
    return layout


def _vm_kib(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    return 0


def _import_exporter():
    """Import timm_msanet.data.export without running the package __init__, which imports torch for the models.

    The exporter itself never touches torch; keeping it out makes the memory figures the exporter's own
    and keeps forked workers small.
    """
    import types
    package_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'timm_msanet')
    if 'timm_msanet' not in sys.modules:
        package = types.ModuleType('timm_msanet')
        package.__path__ = [package_dir]
        sys.modules['timm_msanet'] = package
    from timm_msanet.data.export import export_affectnet
    return export_affectnet


def _bare_link_rate(images: str, scratch_parent: str, count: int = 10_000) -> int:
    """Links/s of a bare loop doing the exporter's system calls (stat + symlink into 7 class folders).

    On a shared VM the cost of creating an inode swings by 10x from minute to minute; measured right
    before and right after an export, this is the ceiling the file system allowed at the time.
    """
    scratch = tempfile.mkdtemp(dir=scratch_parent, prefix='bare_links_')
    for k in range(7):
        os.mkdir(os.path.join(scratch, str(k)))
    folder = os.path.join(images, '0')
    targets = [os.path.join(folder, name) for name in sorted(os.listdir(folder))]
    start = time.perf_counter()
    for i in range(count):
        target = targets[i % len(targets)]
        os.path.isfile(target)
        os.symlink(target, os.path.join(scratch, str(i % 7), f'{i}.jpg'))
    rate = count / (time.perf_counter() - start)
    shutil.rmtree(scratch)
    return round(rate)


def child(args: argparse.Namespace) -> None:
    """One export in this (fresh) process; prints one JSON line."""
    export_affectnet = _import_exporter()
    extra = {'size': 112, 'crop_face': True} if args.mode == 'encode' else {}
    workers = args.workers if args.mode == 'encode' else None  # link mode: the exporter's default threads
    bare_before = _bare_link_rate(args.images, os.path.dirname(args.output)) if args.mode == 'link' else None
    rss_before = _vm_kib('VmRSS')
    times_start = os.times()
    start = time.perf_counter()
    # every image here is a link to one file: the leak check would only report one giant group of copies;
    # it is benchmarked on a FER2013-size layout of distinct images by bench_leak_check.py
    result = export_affectnet(args.layout, args.output, images_dir=args.images, mode=args.mode, workers=workers,
                              leak_check=False, **extra)
    elapsed = time.perf_counter() - start
    times = os.times()  # user and system CPU of this process plus its (joined) workers
    user = times.user + times.children_user - times_start.user - times_start.children_user
    system = times.system + times.children_system - times_start.system - times_start.children_system
    peak = _vm_kib('VmHWM')
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    rows = result.exported + result.skipped
    bare_after = _bare_link_rate(args.images, os.path.dirname(args.output)) if args.mode == 'link' else None
    print(json.dumps({
        'mode': args.mode, 'rows': rows, 'exported': result.exported, 'skipped': result.skipped,
        'elapsed_s': round(elapsed, 2), 'user_s': round(user, 2), 'sys_s': round(system, 2),
        'rows_per_s': round(rows / elapsed),
        'exported_per_s': round(result.exported / elapsed), 'bare_links_per_s': [bare_before, bare_after] if bare_before else None,
        'peak_rss_above_start_mib': round((peak - rss_before) / 1024, 1),
        'worker_peak_rss_mib': round(children / 1024, 1),
        'workers': '{count} {kind}'.format(**result.manifest['options']['workers_used']),
    }))


def run_child(layout: str, images: str, output: str, mode: str, workers: int) -> Dict:
    cmd = [sys.executable, __file__, '--_child', '--layout', layout, '--images', images, '--output', output,
           '--mode', mode, '--workers', str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rows', type=int, nargs='+', default=[25_000, 100_000], help='CSV rows per link-mode run')
    parser.add_argument('--encode-rows', type=int, default=10_000, help='CSV rows for the encode-mode run (0: skip)')
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 1, help='processes for encode mode')
    parser.add_argument('--repeat', type=int, default=3,
                        help='runs per configuration; the table shows the fastest and the median '
                             '(shared machines are noisy)')
    parser.add_argument('--workdir', help='scratch folder (default: a temporary folder, removed afterwards)')
    parser.add_argument('--_child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--layout', help=argparse.SUPPRESS)
    parser.add_argument('--images', help=argparse.SUPPRESS)
    parser.add_argument('--output', help=argparse.SUPPRESS)
    parser.add_argument('--mode', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        child(args)
        return

    work = args.workdir or tempfile.mkdtemp(prefix='bench_export_')
    os.makedirs(work, exist_ok=True)
    try:
        biggest = max(args.rows + [args.encode_rows])
        t = time.perf_counter()
        images = generate(work, biggest)
        print(f'generated {biggest} images (hard links) in {time.perf_counter() - t:.1f} s', flush=True)
        results: List[Dict] = []
        runs = [('link', n) for n in args.rows] + ([('encode', args.encode_rows)] if args.encode_rows else [])
        for mode, rows in runs:
            layout = write_layout(work, images, rows)
            tries = []
            for _ in range(args.repeat):
                output = os.path.join(work, f'out_{mode}_{rows}')
                tries.append(run_child(layout, images, output, mode, args.workers))
                print(json.dumps(tries[-1]), flush=True)
                shutil.rmtree(output)
            tries.sort(key=lambda r: r['elapsed_s'])
            best = dict(tries[0], median_rows_per_s=tries[len(tries) // 2]['rows_per_s'],
                        peak_rss_above_start_mib=max(r['peak_rss_above_start_mib'] for r in tries),
                        worker_peak_rss_mib=max(r['worker_peak_rss_mib'] for r in tries))
            results.append(best)
        print(f'\n{"mode":<7}{"rows":>8}{"exported":>10}{"best s":>8}{"user s":>8}{"sys s":>7}{"rows/s":>9}'
              f'{"median":>9}'
              f'{"exported/s":>12}{"bare links/s before,after":>28}{"peak MiB":>10}{"workers MiB":>13}')
        for r in results:
            print(f'{r["mode"]:<7}{r["rows"]:>8}{r["exported"]:>10}{r["elapsed_s"]:>8}{r["user_s"]:>8}{r["sys_s"]:>7}'
                  f'{r["rows_per_s"]:>9}'
                  f'{r["median_rows_per_s"]:>9}{r["exported_per_s"]:>12}{",".join(map(str, r["bare_links_per_s"] or ["-"])):>28}'
                  f'{r["peak_rss_above_start_mib"]:>10}{r["worker_peak_rss_mib"]:>13}')
        print(f'({os.cpu_count()} cores; best of {args.repeat}; link = {results[0]["workers"]}; encode = decode '
              f'256x256 JPEG, crop face box, resize to 112, re-encode, {args.workers} worker processes; '
              f'peak MiB = peak RSS above the RSS before the export)')
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
