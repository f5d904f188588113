"""The paper's Table 3 as a runnable study: resnet18 vs MS vs AS vs MSA-Net, same recipe, same data.

Trains each model with timm's own train.py (path given, from a checkout of the timm repository) on an
ImageFolder tree (e.g. from `timm-msanet export rafdb`), scores each `model_best.pth.tar` (EMA weights
when the recipe keeps them) with `timm_msanet.evaluation.evaluate`, and writes `table3.md` and `table3.json`.

    python examples/table3_study.py --timm-repo ~/pytorch-image-models --data-dir data/rafdb \
        --recipe examples/recipes/paper_rafdb.yaml --out runs/table3 --device cuda
    # anything after `--` goes to every train.py run, e.g.  -- --epochs 5 --amp

The paper's own numbers (RAF-DB accuracy, %) are printed beside ours for reference: Baseline 82.59,
MS 84.33, AS 85.36, MSA-Net 86.32.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

MODELS = ('resnet18', 'msanet_r18_ms', 'msanet_r18_as', 'msanet_r18')
PAPER_RAFDB = {'resnet18': 82.59, 'msanet_r18_ms': 84.33, 'msanet_r18_as': 85.36, 'msanet_r18': 86.32}
PAPER_NAMES = {'resnet18': 'Baseline', 'msanet_r18_ms': 'MS', 'msanet_r18_as': 'AS', 'msanet_r18': 'MSA-Net'}


def run_train(timm_repo: Path, data_dir: Path, model: str, out_dir: Path, recipe: Optional[Path],
              device: str, extra: Sequence[str]) -> Dict:
    """One train.py run; returns the command, wall time, checkpoint path and train.py's last summary row."""
    cmd = [sys.executable, str(Path(timm_repo) / 'train.py'), str(data_dir)]
    if recipe:
        cmd += ['--config', str(recipe)]
    # every model from the same ImageNet ResNet-18 when the recipe says pretrained (the paper's baseline);
    # the msanet default tag is a finished FER2013 model, not a starting point
    cmd += ['--model', f'{model}.tv_in1k', '--output', str(out_dir), '--experiment', model, '--device', device, *extra]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.time() - t0
    (out_dir / f'{model}.log').write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f'train.py failed for {model} (see {out_dir / (model + ".log")}):\n{proc.stderr[-2000:]}')
    run_dir = out_dir / model
    summary = (run_dir / 'summary.csv').read_text().strip().splitlines()
    header, last = summary[0].split(','), summary[-1].split(',')
    return dict(command=cmd, seconds=round(seconds, 1), checkpoint=str(run_dir / 'model_best.pth.tar'),
                last_epoch=dict(zip(header, last)))


def evaluate_checkpoint(checkpoint: str, model: str, data_dir: Path, split: str, device: str) -> Dict:
    from timm_msanet.evaluation.evaluate import evaluate
    from timm_msanet.loading import load_model
    net = load_model(model_name=model, checkpoint=checkpoint)
    return evaluate(net, str(data_dir), split=split, device=device, workers=2)


def write_table(rows: List[Dict], out_dir: Path, dataset: str) -> str:
    lines = ['| model | paper name | accuracy (%) | mean class accuracy (%) | paper RAF-DB acc. (%) | train s |',
             '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['model']} | {PAPER_NAMES.get(r['model'], '')} | {r['accuracy'] * 100:.2f} | "
                     f"{r['mean_class_accuracy'] * 100:.2f} | {PAPER_RAFDB.get(r['model'], '')} | {r['train_seconds']} |")
    table = f'Table 3 study on {dataset}\n\n' + '\n'.join(lines) + '\n'
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
    parser.add_argument('--models', nargs='+', default=list(MODELS))
    parser.add_argument('--eval-split', default='test')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    if not (args.timm_repo / 'train.py').is_file():
        parser.error(f'{args.timm_repo}/train.py not found: --timm-repo must be a checkout of the timm repository')
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    for model in args.models:
        print(f'== {model}', flush=True)
        run = run_train(args.timm_repo, args.data_dir, model, args.out, args.recipe, args.device, extra)
        metrics = evaluate_checkpoint(run['checkpoint'], model, args.data_dir, args.eval_split, args.device)
        rows.append(dict(model=model, accuracy=metrics['accuracy'], mean_class_accuracy=metrics['mean_class_accuracy'],
                         per_class=metrics['per_class'], train_seconds=run['seconds'], train_command=run['command'],
                         last_epoch=run['last_epoch'], checkpoint=run['checkpoint']))
    print(write_table(rows, args.out, str(args.data_dir)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
