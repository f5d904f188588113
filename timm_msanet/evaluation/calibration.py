"""`timm-msanet calibrate`: fit the temperature (and, with --balance, the class-prior correction) of a model.

    timm-msanet calibrate --checkpoint W.safetensors --data-dir ROOT --split validation --out calib/ \
        --save W_calibrated.safetensors

Temperature scaling and the metrics are in `scores.py`; how T is recorded in a model's cfg in `notes.py`.

Decisions:

* T is fitted on the validation split only; `calibrate` refuses a fit split that is the test split (or
  named `test`), and reports ECE / NLL / Brier before and after on the test split.
* Where T lives: in the model's pretrained_cfg `notes` (notes.CALIBRATION_NOTE); in a weights file's
  safetensors metadata as `temperature`; for a packaged release, as `temperature=` in `releases.py`. Absent
  means 1.0.
  `forward` is never changed, so training and fine-tuning see raw logits; predict, explain, eval and
  the ONNX export (a last division by T) apply it.
* `--balance` (before T): the class-prior correction of logit adjustment (Menon et al., *Long-tail learning via
  logit adjustment*, ICLR 2021): logits - tau * log(prior), the prior being the class shares of the data's
  train split, tau in 0..2 (steps of 0.05) chosen on the fit split to maximise the mean of top-1 and mean
  class accuracy (ties: the smaller tau). It changes decisions (rare classes such as disgust are predicted
  more often), so it is an explicit option, and it is folded into the classifier's bias: the saved weights
  are a plain model, and the file's metadata records tau and the prior.
"""
import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..utils.errors import ToolError
from .evaluate import collect_logits
from ..loading import (ExpressionModel, add_model_args, calibrated, model_from_args, model_input_paths,
                       read_checkpoint, training_record, write_weights)
from ..notes import check_temperature
from ..utils.options import device, non_negative_int, positive_int
from ..utils.outputs import add_overwrite_argument, check_folder_outputs, check_output, write_output
from .scores import calibration_metrics, fit_temperature, plot_reliability


class CalibrationError(ToolError):
    """Calibration cannot run as asked; the message says what was expected."""


def temperature_meaning(t: float) -> str:
    """What a temperature does to the scores, in words (probabilities are softmax(logits / T))."""
    if t > 1.0:
        return f'T > 1 flattens every score: the model was over-confident, each logit is divided by {t:.3g}'
    if t < 1.0:
        return f'T < 1 sharpens every score: the model was under-confident, each logit is multiplied by {1 / t:.3g}'
    return 'T = 1 leaves the scores as they are'


def train_prior(data_dir: str, classes: Sequence[str], split: str = 'train') -> List[float]:
    """The class shares of a data dir's train split (files per class folder, in `classes` order)."""
    root = Path(data_dir) / split
    counts = []
    for name in classes:
        folder = root / name
        counts.append(sum(1 for e in os.scandir(folder) if not e.name.startswith('.')) if folder.is_dir() else 0)
    if not all(counts):
        raise CalibrationError(f'--balance needs the class shares of {root}: expected a folder with at least one image '
                               f'per class ({", ".join(classes)}), found counts {counts}')
    return [c / sum(counts) for c in counts]


def _decision_score(logits, targets) -> Tuple[float, float]:
    pred = logits.argmax(1)
    acc = float((pred == targets).float().mean())
    recalls = [float((pred[targets == c] == c).float().mean()) for c in range(logits.shape[1]) if (targets == c).any()]
    return acc, sum(recalls) / len(recalls)


def fit_prior_correction(logits, targets, log_prior) -> Tuple[float, List[Dict[str, float]]]:
    """tau maximising (top-1 + mean class accuracy) / 2 of logits - tau * log_prior, and the curve."""
    curve = []
    for step in range(41):
        tau = step * 0.05
        acc, mca = _decision_score(logits - tau * log_prior, targets)
        curve.append(dict(tau=round(tau, 2), accuracy=acc, mean_class_accuracy=mca))
    best = max(curve, key=lambda r: (round(r['accuracy'] + r['mean_class_accuracy'], 6), -r['tau']))
    return best['tau'], curve


def apply_prior_correction(model, tau: float, prior: Sequence[float]) -> None:
    """Fold logits - tau * log(prior) into the classifier's bias (in place)."""
    import torch
    fc = model.get_classifier()
    if not isinstance(fc, torch.nn.Linear) or fc.bias is None:
        raise CalibrationError(f'--balance folds the correction into a linear classifier with a bias; '
                               f'{type(fc).__name__} has none')
    with torch.no_grad():
        fc.bias -= tau * torch.log(torch.tensor(prior, dtype=fc.bias.dtype, device=fc.bias.device))


def calibrate(model, data_dir: str, fit_split: str = 'validation', test_split: Optional[str] = 'test',
              batch_size: int = 64, workers: int = 2, device: str = 'cpu', progress: bool = False,
              balance: bool = False) -> Dict[str, Any]:
    """Fit T on `fit_split`, measure before/after on `fit_split` and `test_split`. Does not change the model,
    except with `balance`: then the class-prior correction fitted first is folded into its classifier bias."""
    if fit_split == 'test' or (test_split is not None and fit_split == test_split):
        raise CalibrationError(f'refusing to fit the temperature on the test split ({fit_split!r}): fit on a '
                               f'validation split (--split validation) and measure on the test split')
    model = ExpressionModel.of(model)
    before_t = model.temperature
    fit = collect_logits(model, data_dir, fit_split, batch_size=batch_size, workers=workers, device=device,
                         progress=progress)
    test = (collect_logits(model, data_dir, test_split, batch_size=batch_size, workers=workers, device=device,
                           progress=progress) if test_split is not None else None)
    correction = None
    if balance:
        import torch
        prior = train_prior(data_dir, fit['classes'])
        log_prior = torch.log(torch.tensor(prior))
        tau, curve = fit_prior_correction(fit['logits'], fit['targets'], log_prior)
        correction = dict(tau=tau, prior=dict(zip(fit['classes'], prior)), fit_split=fit_split, curve=curve, splits={})
        for name, got in ((fit_split, fit), (test_split, test)):
            if got is None:
                continue
            before = _decision_score(got['logits'], got['targets'])
            got['logits'] = got['logits'] - tau * log_prior
            after = _decision_score(got['logits'], got['targets'])
            correction['splits'][name] = dict(before=dict(accuracy=before[0], mean_class_accuracy=before[1]),
                                              after=dict(accuracy=after[0], mean_class_accuracy=after[1]))
        apply_prior_correction(model.module, tau, prior)
    t = fit_temperature(fit['logits'], fit['targets'])
    n, classes = int(fit['targets'].numel()), int(fit['logits'].shape[1])
    accuracy = float((fit['logits'].argmax(1) == fit['targets']).float().mean()) if n else 0.0
    if n < 500 or accuracy < 1.5 / classes:
        warnings.warn(f'T = {t:.3g} was fitted on {n} images where the model is {accuracy * 100:.1f}% accurate (chance '
                      f'{100 / classes:.1f}%; {temperature_meaning(t)}): ' + (
                          'near chance level the fitted T says the model is not trained, not how far to trust its '
                          'scores' if accuracy < 1.5 / classes else 'fewer than 500 images make the fitted T noisy'),
                      UserWarning, stacklevel=2)
    result: Dict[str, Any] = dict(temperature=t, previous_temperature=before_t, fit_split=fit_split,
                                  model=model.architecture, fit_accuracy=accuracy, splits={})
    if correction is not None:
        result['prior_correction'] = correction
    splits = [(fit_split, fit)] + ([(test_split, test)] if test is not None else [])
    for name, got in splits:
        before = calibration_metrics(calibrated(got['logits'], 1.0), got['targets'])
        after = calibration_metrics(calibrated(got['logits'], t), got['targets'])
        result['splits'][name] = dict(num_samples=int(got['targets'].numel()), before=before, after=after)
    return result


def format_result(result: Mapping[str, Any]) -> str:
    lines = []
    pc = result.get('prior_correction')
    if pc:
        lines.append(f"class-prior correction tau {pc['tau']:.2f} (fitted on {pc['fit_split']}; prior from the "
                     f"train split)")
        for name, s in pc['splits'].items():
            lines.append(f"{name:12s} top-1 {s['before']['accuracy'] * 100:.2f}% -> {s['after']['accuracy'] * 100:.2f}%, "
                         f"mean class accuracy {s['before']['mean_class_accuracy'] * 100:.2f}% -> "
                         f"{s['after']['mean_class_accuracy'] * 100:.2f}%")
    lines += [f"temperature {result['temperature']:.4f} (fitted on {result['fit_split']})",
             f"{'split':12s} {'':7s} {'ECE':>7s} {'NLL':>7s} {'Brier':>7s}"]
    for name, s in result['splits'].items():
        for when in ('before', 'after'):
            m = s[when]
            lines.append(f"{name:12s} {when:7s} {m['ece'] * 100:6.2f}% {m['nll']:7.4f} {m['brier']:7.4f}")
    return '\n'.join(lines)


def save_calibrated_weights(model, out_file: Path, temperature: float, fit_split: str, source: Optional[str],
                            half: bool = True, use_ema: Optional[bool] = None, inputs: Sequence[str] = (),
                            overwrite: bool = False, prior_correction: Optional[Mapping[str, Any]] = None) -> Path:
    """The model's weights as safetensors with its architecture, training record and `temperature` in the
    metadata: what `load_model(checkpoint=...)` reads back. Written as timm_msanet.utils.outputs writes files
    (never over `source` or `inputs`; an existing file only with `overwrite`). `model`: an `ExpressionModel` or a
    timm model."""
    model = ExpressionModel.of(model).module
    out_file = Path(out_file)
    if out_file.suffix != '.safetensors':
        raise CalibrationError(f'--save writes a .safetensors file, got {out_file}')
    inputs = [*inputs, *([source] if source else [])]
    check_output(out_file, inputs, overwrite, '--save')
    if source:
        meta = training_record(read_checkpoint(source, use_ema=use_ema))
    else:
        meta = {'format': 'pt', 'args': json.dumps({}), 'arch': str(model.pretrained_cfg.get('architecture'))}
    meta['temperature'] = f'{check_temperature(temperature):.6f}'
    meta['temperature_fit_split'] = fit_split
    if prior_correction is not None:  # folded into the classifier bias of these weights
        meta['prior_correction'] = json.dumps({k: prior_correction[k] for k in ('tau', 'prior', 'fit_split')})
    return write_weights(model.state_dict(), out_file, meta, half=half, inputs=inputs, overwrite=overwrite)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument('--data-dir', required=True, help='ImageFolder root with split folders (timm-msanet export)')
    parser.add_argument('--split', default='validation', help='split to fit the temperature on (default: validation; '
                        'never the test split)')
    parser.add_argument('--test-split', default='test', help="split to report before/after on ('none': skip)")
    parser.add_argument('--out', type=Path, help='folder for calibration.json and reliability_<split>.png')
    parser.add_argument('--save', type=Path, metavar='OUT.safetensors',
                        help='write the weights with the temperature in their metadata (float16; --float32 to keep)')
    parser.add_argument('--float32', action='store_true', help='with --save: keep float32 weights')
    parser.add_argument('--balance', action='store_true',
                        help='first fit the class-prior correction (logit adjustment: logits - tau*log(train prior), '
                             'tau for the best mean of top-1 and mean class accuracy on --split) and fold it into '
                             'the classifier bias of the saved weights; changes decisions')
    parser.add_argument('--batch-size', type=positive_int, default=64)
    parser.add_argument('--workers', type=non_negative_int, default=2)
    parser.add_argument('--device', type=device, default='cpu')
    add_overwrite_argument(parser, '--out files and the --save file')


def run(args: argparse.Namespace) -> int:
    test_split = None if str(args.test_split).lower() == 'none' else args.test_split
    inputs = model_input_paths(args)
    if args.save:  # every output checked before the work
        if Path(args.save).suffix != '.safetensors':
            raise CalibrationError(f'--save writes a .safetensors file, got {args.save}')
        check_output(args.save, inputs, args.overwrite, '--save')
    if args.out:
        splits = [args.split] + ([test_split] if test_split else [])
        check_folder_outputs(args.out, ['calibration.json', *(f'reliability_{s}.png' for s in splits)], inputs,
                             args.overwrite, input_dirs=[args.data_dir])
    model = model_from_args(args)
    result = calibrate(model, args.data_dir, args.split, test_split, batch_size=args.batch_size,
                       workers=args.workers, device=args.device, progress=sys.stderr.isatty(), balance=args.balance)
    print(format_result(result))
    if args.out:
        path = write_output(args.out / 'calibration.json', json.dumps(result, indent=2), inputs, args.overwrite,
                            '--out')
        print(f'wrote {path}')
        for name, s in result['splits'].items():
            png = args.out / f'reliability_{name}.png'
            title = (f"{result.get('model') or ''} {name}: ECE {s['before']['ece'] * 100:.2f}% -> "
                     f"{s['after']['ece'] * 100:.2f}% "
                     f"(T={result['temperature']:.3f})")
            if plot_reliability({'before (T=1)': s['before']['reliability'],
                                 f"after (T={result['temperature']:.2f})": s['after']['reliability']}, png, title,
                                args.overwrite):
                print(f'wrote {png}')
    if args.save:
        saved = save_calibrated_weights(model, args.save, result['temperature'], args.split, args.checkpoint,
                                        half=not args.float32, use_ema=False if args.no_ema else None,
                                        inputs=inputs, overwrite=args.overwrite,
                                        prior_correction=result.get('prior_correction'))
        print(f'wrote {saved} (temperature {result["temperature"]:.4f} in its metadata)')
    return 0
