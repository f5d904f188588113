"""The paper's Table 3 as a runnable study: resnet18 vs MS vs AS vs MSA-Net, same recipe, same start, same data.

Trains each model with timm's own train.py (from a checkout of the timm repository) on an ImageFolder tree (e.g.
from `timm-msanet export ferplus`), once per seed, scores each `model_best.pth.tar` (chosen by train.py on the
validation split; EMA weights when the recipe keeps them) on the test split with
`timm_msanet.evaluation.evaluate`, and writes `table3.md` and `table3.json`: per row both seeds and their mean,
top-1 and mean class accuracy, parameters and GMACs at the recipe's size, and train.py's training images/s.

    python examples/table3_study.py --timm-repo ~/pytorch-image-models --data-dir data/ferplus \\
        --recipe examples/recipes/ferplus_table3_short.yaml --seeds 0 1 \\
        --variants msanet_r18:hierarchy=post --out runs/table3 -- --pretrained-path START.safetensors
    # anything after `--` goes to every train.py run, e.g.  -- --epochs 5 --amp

Every architecture is trained as ARCH.tv_in1k: ImageNet ResNet-18 conv1..layer2 in all four (the paper's
baseline is an ImageNet ResNet-18; the msanet default tag is a finished FER2013 model, not a start).
`--variants ARCH:key=value[,key=value]` adds rows with train.py `--model-kwargs` (the paper's two readings of the
multi-scale hierarchy: hierarchy=pre, the default, and hierarchy=post), trained with the first seed only.
Resumable: a finished run (RUN/.complete with its scores in RUN/result.json) is not repeated, an unfinished one
resumes from its last.pth.tar. The images/s are train.py's own logged rates, run after run on one machine: a
ratio between rows is only as good as the machine was quiet; `timm-msanet bench` measures them side by side.
`--precision` (default auto): where the recipe's bf16 autocast would be emulated (a CPU without AVX-512 BF16/AMX,
0.11x of fp32, docs/speed.md) every run trains in fp32 from OUT/recipe_NAME_fp32.yaml; each row records it, and
a resumed study keeps the precision its runs started with.

The paper's own numbers (RAF-DB accuracy, %) are printed beside ours for reference: Baseline 82.59,
MS 84.33, AS 85.36, MSA-Net 86.32.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from timm_msanet.utils.precision import PRECISIONS, PrecisionError, recipe_for_precision, resumed_precision

MODELS = ('resnet18', 'msanet_r18_ms', 'msanet_r18_as', 'msanet_r18')
PAPER_RAFDB = {'resnet18': 82.59, 'msanet_r18_ms': 84.33, 'msanet_r18_as': 85.36, 'msanet_r18': 86.32}
PAPER_NAMES = {'resnet18': 'Baseline', 'msanet_r18_ms': 'MS', 'msanet_r18_as': 'AS', 'msanet_r18': 'MSA-Net'}
RATE = re.compile(r'^Train: \d+ \[\s*(\d+)/\d+ .*?Time: [\d.]+s,\s+([\d.]+)/s')


def parse_variant(spec: str) -> Tuple[str, Dict[str, str]]:
    """'msanet_r18:hierarchy=post,scale=4' -> ('msanet_r18', {'hierarchy': 'post', 'scale': '4'})."""
    arch, _, rest = spec.partition(':')
    pairs = [p.split('=', 1) for p in rest.split(',') if p]
    if not arch or not pairs or any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise argparse.ArgumentTypeError(f"--variants wants ARCH:key=value[,key=value], got '{spec}'")
    return arch, dict(pairs)


def run_name(arch: str, kwargs: Dict[str, str], seed: Optional[int]) -> str:
    return arch + ''.join(f'-{k}-{v}' for k, v in kwargs.items()) + ('' if seed is None else f'-seed{seed}')


def train_images_per_s(log: str) -> Optional[float]:
    """Median of train.py's per-interval images/s, without each epoch's first line (start-up and loader fill)."""
    rates = [float(m.group(2)) for m in map(RATE.match, log.splitlines()) if m and int(m.group(1)) > 0]
    return round(statistics.median(rates), 1) if rates else None


def run_train(timm_repo: Path, data_dir: Path, arch: str, kwargs: Dict[str, str], seed: Optional[int],
              out_dir: Path, recipe: Optional[Path], device: str, extra: Sequence[str]) -> Dict:
    """One train.py run (resumed from its last checkpoint when there is one); returns what the table needs."""
    name = run_name(arch, kwargs, seed)
    run_dir = out_dir / name
    cmd = [sys.executable, str(Path(timm_repo) / 'train.py'), str(data_dir)]
    if recipe:
        cmd += ['--config', str(recipe)]
    cmd += ['--model', f'{arch}.tv_in1k', '--output', str(out_dir), '--experiment', name, '--device', device]
    if seed is not None:
        cmd += ['--seed', str(seed)]
    if kwargs:
        cmd += ['--model-kwargs', *(f'{k}={v}' for k, v in kwargs.items())]
    cmd += list(extra)
    if (run_dir / 'last.pth.tar').is_file():
        cmd += ['--resume', str(run_dir / 'last.pth.tar')]
    t0 = time.time()
    log_path = out_dir / f'{name}.log'
    # PYTHONSAFEPATH (python -P): the checkout's own timm/ folder must not shadow the installed timm
    env = dict(os.environ, PYTHONSAFEPATH='1')
    with open(log_path, 'a', encoding='utf-8') as log:  # appended: a resumed run keeps its first part's lines
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    seconds = time.time() - t0
    if proc.returncode != 0:
        tail = log_path.read_text(encoding='utf-8', errors='replace')[-2000:]
        raise RuntimeError(f'train.py failed for {name} (see {log_path}):\n{tail}')
    summary = (run_dir / 'summary.csv').read_text().strip().splitlines()
    header = summary[0].split(',')
    epochs = [dict(zip(header, line.split(','))) for line in summary[1:] if line != summary[0]]  # resumed: header again
    return dict(command=cmd, seconds=round(seconds, 1), checkpoint=str(run_dir / 'model_best.pth.tar'),
                epochs=epochs, last_epoch=epochs[-1] if epochs else {}, train_images_per_s=train_images_per_s(log_path.read_text(encoding='utf-8')))


def evaluate_checkpoint(checkpoint: str, arch: str, kwargs: Dict[str, str], data_dir: Path, split: str,
                        device: str) -> Dict:
    from timm_msanet.evaluation.evaluate import evaluate
    from timm_msanet.loading import load_model
    net = load_model(model_name=arch, checkpoint=checkpoint)  # model kwargs come from the checkpoint's args
    for key, value in kwargs.items():  # ... and must be the ones trained, or the row would score another model
        built = {str(getattr(m, key)) for m in net.modules() if hasattr(m, key)}
        if built != {value}:
            raise RuntimeError(f'{checkpoint} loaded with {key}={built}, not {value}')
    return evaluate(net, str(data_dir), split=split, device=device, workers=2)


def costs(arch: str, kwargs: Dict[str, str], img_size: Optional[int], num_classes: Optional[int]) -> Dict:
    from timm_msanet.info import model_costs
    (row,) = model_costs([arch], img_size=img_size, num_classes=num_classes, **kwargs)
    return dict(params_m=row['params_m'], gmacs=row['gmacs'], img_size=row['img_size'])


def _pct(values: List[float]) -> str:
    return ' / '.join(f'{v * 100:.2f}' for v in values)


def write_table(rows: List[Dict], out_dir: Path, dataset: str, split: str) -> str:
    """One line per architecture (and variant): every seed, their mean, costs and the paper's RAF-DB figure."""
    groups: Dict[Tuple[str, str], List[Dict]] = {}
    for r in rows:
        groups.setdefault((r['model'], r['variant']), []).append(r)
    seeds = ' / '.join('recipe' if r['seed'] is None else str(r['seed']) for r in max(groups.values(), key=len)) \
        if groups else ''
    lines = [f'| model | paper name | top-1 (%), seed {seeds} | mean | mean class acc. (%) | mean | params (M) | '
             f'GMACs | train img/s | paper RAF-DB acc. (%) |', '|---|---|---|---|---|---|---|---|---|---|']
    for (model, variant), runs in groups.items():
        acc = [r['accuracy'] for r in runs]
        mca = [r['mean_class_accuracy'] for r in runs]
        rates = [r['train_images_per_s'] for r in runs if r.get('train_images_per_s')]
        label = model + (f' ({variant})' if variant else '')
        lines.append(f"| {label} | {PAPER_NAMES.get(model, '')} | {_pct(acc)} | {statistics.mean(acc) * 100:.2f} | "
                     f"{_pct(mca)} | {statistics.mean(mca) * 100:.2f} | {runs[0]['params_m']} | {runs[0]['gmacs']} | "
                     f"{round(statistics.median(rates)) if rates else ''} | {PAPER_RAFDB.get(model, '')} |")
    table = (f'Table 3 study on {dataset}, {split} split, GMACs at {rows[0]["img_size"]} px\n\n' if rows else '') + \
        '\n'.join(lines) + '\n'
    (out_dir / 'table3.md').write_text(table)
    (out_dir / 'table3.json').write_text(json.dumps(rows, indent=2))
    return table


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index('--') + 1:] if '--' in argv else []
    argv = argv[:argv.index('--')] if '--' in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--timm-repo', type=Path, required=True, help='checkout of the timm repository (train.py)')
    parser.add_argument('--data-dir', type=Path, required=True)
    parser.add_argument('--recipe', type=Path, help='train.py --config YAML (examples/recipes/...)')
    parser.add_argument('--out', type=Path, default=Path('runs/table3'))
    parser.add_argument('--models', nargs='+', default=list(MODELS), help='architectures, each trained at every seed')
    parser.add_argument('--variants', nargs='*', type=parse_variant, default=[],
                        help='ARCH:key=value[,key=value] rows (train.py --model-kwargs), first seed only')
    parser.add_argument('--seeds', nargs='+', type=int, default=None, help="default: the recipe's seed, one run")
    parser.add_argument('--eval-split', default='test')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--precision', default='auto', choices=PRECISIONS,
                        help="with --recipe: auto (default) trains in fp32 where the recipe's bf16 would be emulated")
    args = parser.parse_args(argv)
    if not (args.timm_repo / 'train.py').is_file():
        parser.error(f'{args.timm_repo}/train.py not found: --timm-repo must be a checkout of the timm repository')
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = args.seeds or [None]
    # seed by seed, the variants after the first: an interrupted study has whole seeds to show
    plan = [(m, {}, seeds[0]) for m in args.models] + [(a, kw, seeds[0]) for a, kw in args.variants] + \
        [(m, {}, s) for s in seeds[1:] for m in args.models]
    recipe = {}
    precision, train_recipe = 'recipe', args.recipe
    if args.recipe:
        # reads the recipe: a file that is not one is refused here, before any training. Runs already started
        # (train.py's RUN/args.yaml) keep their precision, on any machine, and every row shares it.
        started = [args.out / run_name(*job) / 'args.yaml' for job in plan
                   if (args.out / run_name(*job) / 'last.pth.tar').is_file()]
        try:
            precision = args.precision
            for run_args in started:
                precision = resumed_precision(run_args, args.recipe, precision)
            precision, train_recipe = recipe_for_precision(args.recipe, precision, args.device, args.out)
        except PrecisionError as e:
            parser.error(str(e))
        if precision != 'recipe':
            print(f'== training in {precision} from {train_recipe} (the recipe but for amp)', flush=True)
        import yaml
        recipe = yaml.safe_load(args.recipe.read_text())
    img_size = int(extra[extra.index('--img-size') + 1]) if '--img-size' in extra else recipe.get('img_size')
    num_classes = int(extra[extra.index('--num-classes') + 1]) if '--num-classes' in extra else recipe.get('num_classes')

    rows = []
    for arch, kwargs, seed in plan:
        name = run_name(arch, kwargs, seed)
        run_dir = args.out / name
        done = run_dir / 'result.json'
        if (run_dir / '.complete').is_file() and done.is_file():
            print(f'== {name}: done before, {done}', flush=True)
            rows.append(json.loads(done.read_text()))
            continue
        print(f'== {name}', flush=True)
        run = run_train(args.timm_repo, args.data_dir, arch, kwargs, seed, args.out, train_recipe, args.device, extra)
        metrics = evaluate_checkpoint(run['checkpoint'], arch, kwargs, args.data_dir, args.eval_split, args.device)
        row = dict(model=arch, variant=','.join(f'{k}={v}' for k, v in kwargs.items()), seed=seed,
                   accuracy=metrics['accuracy'], mean_class_accuracy=metrics['mean_class_accuracy'],
                   per_class=metrics['per_class'], train_seconds=run['seconds'],
                   train_images_per_s=run['train_images_per_s'], train_command=run['command'],
                   epochs=run['epochs'], checkpoint=run['checkpoint'], precision=precision, **costs(arch, kwargs, img_size, num_classes))
        done.write_text(json.dumps(row, indent=2))
        (run_dir / '.complete').touch()
        rows.append(row)
    print(write_table(rows, args.out, str(args.data_dir), args.eval_split))
    return 0


if __name__ == '__main__':
    sys.exit(main())
