"""A release's model card (README.md) and what it is built from: the eval JSON, checked against the weights
and dataset it claims to describe, the training recipe the file records, its face framing and data config."""
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ..utils import safe_json
from ..evaluation.evaluate import weights_sha256
from ..loading import RECORD_ARG_KEYS, Checkpoint, CheckpointError, ExpressionModel, checkpoint_cfg
from ..notes import DEFAULT_FRAMING
from ..releases import DATASETS, export_name
from ..version import __version__


PAPER_TITLE = 'Multi-branch Multi-Scale Attention Network for Facial Expression Recognition (FER) in-the-Wild'
CITATION = """@misc{ghadai2022msanet,
  title  = {Multi-branch Multi-Scale Attention Network for Facial Expression Recognition ({FER}) in-the-Wild},
  author = {Ghadai, Chakrapani and Patra, Dipti},
  note   = {National Institute of Technology Rourkela},
  year   = {2022}
}"""

# train.py args shown on the card as the recipe, in this order, when present and set: what a weights file
# records of its training (loading.RECORD_ARG_KEYS), plus the model's constructor arguments
RECIPE_KEYS = (*RECORD_ARG_KEYS, 'model_kwargs')


class PublishError(CheckpointError):
    """A problem with the inputs to publish, with what to do about it in the message."""


# ------------------------------------------------------------------------------------------- the card
def _pct(v) -> str:
    if not isinstance(v, (int, float)):
        return str(v)
    return f'{v * 100:.2f}' if v <= 1 else f'{v:.2f}'


def _is_fraction(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1


def _is_finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_eval_json(path: Union[str, Path], label_names: Sequence[str]) -> Dict[str, Any]:
    """The metrics.json of `timm-msanet eval`, checked field by field before any of it goes on a card: a partial
    or hand-edited file is one PublishError line naming the field, never a traceback or a card with holes."""
    path = Path(path)
    try:
        ev = safe_json.read(path)
    except FileNotFoundError:
        raise PublishError(f'--eval-json {path} does not exist') from None
    except (ValueError, OSError) as e:  # malformed, too deep, not UTF-8, unreadable
        raise PublishError(f'--eval-json {path} is not valid JSON: {e}') from None
    if not isinstance(ev, dict):
        raise PublishError(f'--eval-json {path} must hold a JSON object')

    def bad(field: str, expected: str):
        what = f'{field} {str(ev[field])[:80]!r} is not valid' if field in ev else f'{field} is missing'
        return PublishError(f'--eval-json {path}: {what}; expected {expected} (the metrics.json '
                            f'`timm-msanet eval --out` writes)')
    n = len(label_names)
    for key in ('accuracy', 'mean_class_accuracy'):
        if not _is_fraction(ev.get(key)):
            raise bad(key, 'a fraction from 0 to 1')
    for key in ('ece',):
        if key in ev and not _is_fraction(ev[key]):
            raise bad(key, 'a fraction from 0 to 1')
    for key in ('nll', 'brier', 'temperature'):
        if key in ev and not _is_finite(ev[key]):
            raise bad(key, 'a finite number')
    if 'ece' in ev and not all(_is_finite(ev.get(k)) for k in ('nll', 'brier')):
        raise bad('nll', 'nll and brier beside ece')
    if 'label_names' in ev:
        if not (isinstance(ev['label_names'], list) and all(isinstance(x, str) for x in ev['label_names'])):
            raise bad('label_names', 'a list of class names')
        if list(ev['label_names']) != list(label_names):
            raise PublishError(f'--eval-json label_names {list(ev["label_names"])} differ from the model\'s class '
                               f'order {list(label_names)}: was it made with another model or class set?')
    cm = ev.get('confusion_matrix')
    if cm is not None and not (isinstance(cm, list) and len(cm) == n and all(
            isinstance(r, list) and len(r) == n and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                         for v in r) for r in cm)):
        raise PublishError(f'--eval-json confusion_matrix is not {n}x{n} counts')
    per_class = ev.get('per_class')
    if per_class is not None and not (isinstance(per_class, dict) and all(
            isinstance(m, dict) and all(_is_finite(v) for v in m.values()) for m in per_class.values())):
        raise bad('per_class', 'class name -> {precision, recall, f1, support}')
    for key, kind in (('split', str), ('dataset', str), ('model', str), ('num_samples', int),
                      ('uncalibrated', dict), ('protocol', dict), ('calibration_bins', int)):
        if ev.get(key) is not None and (not isinstance(ev[key], kind) or isinstance(ev[key], bool)):
            raise bad(key, f'a {kind.__name__}')
    if isinstance(ev.get('uncalibrated'), dict) and not all(
            _is_finite(ev['uncalibrated'].get(k)) for k in ('ece', 'nll', 'brier')):
        raise bad('uncalibrated', 'its ece, nll and brier')
    return ev


def check_eval_describes(ev: Mapping[str, Any], model, dataset: str, where: str, temperature: float = 1.0,
                         grey_input: Optional[bool] = None) -> None:
    """The eval JSON must be of this file and this dataset, in every fact the card states: its protocol's weights
    hash is the published model's, its dataset (from the export's manifest) the one the card will name, its
    calibration temperature the file's (the card quotes its ECE and says scores are softmax(logits / T)), and its
    grey-input preprocessing the card's. (The face framing is not part of an evaluation on aligned crops.)"""
    scored_t = ev.get('temperature')
    if isinstance(scored_t, (int, float)) and abs(float(scored_t) - temperature) > 5e-5:
        raise PublishError(f'--eval-json {where} scored probabilities with T = {float(scored_t):.4g}, but the file you '
                           f'publish carries T = {temperature:.4g} (same tensors, another calibration): the card would '
                           f'quote calibration figures its config does not give. Publish the file that was evaluated '
                           f'(after calibrate, the calibrated one), or evaluate this one')
    scored_grey = ((ev.get('protocol') or {}).get('preprocessing') or {}).get('grey_input')
    if grey_input is not None and isinstance(scored_grey, bool) and scored_grey != grey_input:
        raise PublishError(f'--eval-json {where} was scored on {"grey" if scored_grey else "colour"} input, but the '
                           f'card will say the model takes {"grey" if grey_input else "colour"} input: evaluate the '
                           f'published file as it will be used')
    measured_on = ev.get('dataset') or (ev.get('protocol') or {}).get('dataset')
    if isinstance(measured_on, str) and measured_on and measured_on != export_name(dataset):
        raise PublishError(f'--eval-json {where} was measured on {measured_on}, but --dataset is {dataset}: the card '
                           f'would give {measured_on} figures as {DATASETS[dataset]["title"]} ones (and its licence)')
    recorded = (ev.get('protocol') or {}).get('weights_sha256')
    if recorded and recorded != weights_sha256(model):
        raise PublishError(f'--eval-json {where} scored other weights (weights_sha256 {str(recorded)[:12]}, these are '
                           f'{weights_sha256(model)[:12]}): evaluate the file you publish (after calibrate, the '
                           f'calibrated one) and publish that file with its eval JSON')


def _recipe_lines(args: Mapping[str, Any], ckpt: Checkpoint) -> List[str]:
    lines = []
    for k in RECIPE_KEYS:
        v = args.get(k)
        if v is None or (v is False and k != 'pretrained') or v == '' or v == {}:  # from scratch is worth saying
            continue
        lines.append(f'| `{k}` | `{json.dumps(v) if isinstance(v, (list, tuple, dict)) else v}` |')
    for k, v in ckpt.extra.items():
        if k not in ('notes', 'face_framing_source'):  # on the card in their own lines
            lines.append(f'| checkpoint `{k}` | `{v}` |')
    return lines


def _framing_line(framing: Optional[Mapping[str, Any]]) -> str:
    if framing is None:
        return (f'- **Face framing:** not recorded; `timm-msanet predict --faces --detector dlib` aligns faces '
                f'in photos as FER2013\'s training faces are framed (eye_y {DEFAULT_FRAMING["eye_y"]}, eye_dist '
                f'{DEFAULT_FRAMING["eye_dist"]})')
    how = (f'measured with `{framing["detector"]}` on {framing["faces"]:,} training faces (of {framing["images"]:,} '
           f'images)' if 'faces' in framing else framing.get('source') or 'as given at publishing')
    return (f'- **Face framing:** eye midpoint at {framing["eye_y"]:.3f} of the crop height, eyes '
            f'{framing["eye_dist"]:.3f} of its width apart ({how}); in the cfg notes, so `timm-msanet predict '
            f'--faces --detector dlib` aligns faces in photos the same way')


CARD_TEMPLATE = Path(__file__).with_name('model_card.md')
WEIGHTS_TEXT = {'state_dict_ema': 'the EMA (exponential moving average) weights of the checkpoint',
                'state_dict': 'the raw (non-EMA) weights of the checkpoint',
                'model': 'the raw weights of the checkpoint', 'file': 'the weights file as given'}


def build_model_card(*, repo_id: str, arch: str, dataset: str, label_names: Sequence[str], ckpt: Checkpoint,
                     model, data_config: Mapping[str, Any], eval_results: Optional[Mapping[str, Any]] = None,
                     has_cm_png: bool = False, has_reliability_png: bool = False,
                     face_framing: Optional[Mapping[str, Any]] = None) -> str:
    """The README.md of a release: `model_card.md` with its named fields filled in. `model`: an
    `ExpressionModel` or a timm model."""
    record = ExpressionModel.of(model)
    ds = DATASETS[dataset]
    size = data_config['input_size']
    weights = WEIGHTS_TEXT[ckpt.weights]
    if ckpt.weights == 'file' and ckpt.extra.get('weights_origin') == 'state_dict_ema':  # publish --weights-only
        weights = 'the EMA (exponential moving average) weights of the training checkpoint, as a weights file'
    grey_step = arch.startswith('msanet')  # msanet models loaded with grey notes convert colour input themselves
    grey = bool(ds.get('grey')) and size[0] != 1
    fields = dict(
        repo_name=repo_id.split('/')[-1], repo_id=repo_id, arch=arch, num_classes=len(label_names),
        dataset=dataset, dataset_title=ds['title'], paper_title=PAPER_TITLE, version=__version__,
        params_m=sum(p.numel() for p in record.module.parameters()) / 1e6, weights=weights,
        usage_image=_usage_image_line(size[0], bool(ds.get('grey')), grey_step),
        usage_probs=_usage_probs_lines(record.temperature),
        input_line=(f'{size[0]} x {size[1]} x {size[2]}; the whole face crop is resized (crop_pct '
                    f'{data_config["crop_pct"]}, crop_mode `{data_config["crop_mode"]}`, '
                    f'{data_config["interpolation"]}), mean {tuple(round(m, 4) for m in data_config["mean"])}, '
                    f'std {tuple(round(s, 4) for s in data_config["std"])}{_branch_maps_text(record.module, size)}'),
        grey_line=_grey_line(grey, grey_step), framing_line=_framing_line(face_framing),
        class_rows='\n'.join(f'| {i} | {name} |' for i, name in enumerate(label_names)),
        training=_training_section(ckpt),
        evaluation=(_evaluation_section(eval_results, label_names, repo_id, has_cm_png, has_reliability_png)
                    if eval_results else 'No evaluation results were supplied with this release.\n'),
        caveat=f"**Known property of the data:** {ds['caveat']}\n\n" if ds.get('caveat') else '',
        licence=ds['licence'], citation=CITATION)
    return CARD_TEMPLATE.read_text(encoding='utf-8').format_map(fields)


def _branch_maps_text(module, size: Sequence[int]) -> str:
    """The map sizes an MSA-Net's branches work on at this input size (empty for other models): the kernels and the
    attention need room (64 px leaves the blocks 4 x 4 and 2 x 2), so a reader of the card should see it."""
    info = getattr(module, 'feature_info', None)
    if not getattr(module, 'branch_kernels', None) or not info:
        return ''
    first = next(i for i, f in enumerate(info) if f['module'].startswith('branches'))
    h, w = size[1], size[2]
    maps = [f'{-(-h // f["reduction"])} x {-(-w // f["reduction"])}' for f in info[first - 1:]]
    paper = "the paper's size" if (h, w) == (224, 224) else "the paper's 224 px: 28 x 28; 14 x 14, 7 x 7"
    blocks = ', '.join(maps[1:])
    return f'; at this size the multi-scale branches see {maps[0]} maps and their blocks {blocks} ({paper})'


def _usage_image_line(chans: int, grey_data: bool, grey_step: bool) -> str:
    if chans == 1:
        return "img = Image.open('face.jpg').convert('L')   # an aligned face crop"
    if grey_data and grey_step:
        return "img = Image.open('face.jpg').convert('RGB')   # colour is fine: the model makes it grey, as it was trained"
    if grey_data:
        return "img = Image.open('face.jpg').convert('L').convert('RGB')   # trained on grey faces: grey, 3 channels"
    return "img = Image.open('face.jpg').convert('RGB')   # an aligned face crop"


def _usage_probs_lines(temperature: float) -> str:
    if temperature == 1.0:
        return '    probs = model(transform(img).unsqueeze(0)).softmax(-1)[0]'
    return ('    logits = model(transform(img).unsqueeze(0))\n'
            f'    probs = (logits / {temperature:.4f}).softmax(-1)[0]   # calibrated (temperature from its notes)')


def _grey_line(grey: bool, grey_step: bool) -> str:
    if grey and grey_step:
        return ('- **Grey input:** trained on greyscale faces; the model turns colour input into its grey image '
                'itself (`grey_input`, the first step of its forward), in timm\'s pipeline, ONNX and `timm-msanet '
                'predict` alike\n')
    if grey:
        return ('- **Grey input:** trained on greyscale faces; convert colour images to grey (3 equal channels) '
                'first, as `timm-msanet predict` does\n')
    return ''


def _training_section(ckpt: Checkpoint) -> str:
    recipe = _recipe_lines(ckpt.args, ckpt)
    if not recipe:
        return 'The checkpoint records no training arguments.\n'
    return '\n'.join(['Recorded in the checkpoint (timm `train.py` arguments):', '', '| setting | value |',
                      '|---|---|', *recipe, ''])


def _evaluation_section(ev: Mapping[str, Any], label_names: Sequence[str], repo_id: str, has_cm_png: bool,
                        has_reliability_png: bool) -> str:
    where = ', '.join(f'{k}: {ev[k]}' for k in ('dataset', 'split', 'num_samples') if k in ev)
    out = [f'Accuracy in %{" (" + where + ")" if where else ""}.', '', '| metric | value |', '|---|---|']
    for key, title in (('accuracy', 'accuracy'), ('mean_class_accuracy', 'mean class accuracy')):
        if key in ev:
            out.append(f'| {title} | {_pct(ev[key])} |')
    out += _per_class_lines(ev, label_names)
    if has_cm_png:
        out += ['', '![confusion matrix](confusion_matrix.png)']
    if isinstance(ev.get('ece'), (int, float)):
        out += _calibration_lines(ev, has_reliability_png)
    protocol = ev.get('protocol') if isinstance(ev.get('protocol'), Mapping) else None
    if protocol and isinstance(protocol.get('sha256'), str):
        out += ['', f'Evaluation protocol `{protocol["sha256"][:16]}` ({protocol.get("num_images", "?")} images; '
                    f'the hash covers the split\'s file names and labels, class order, preprocessing and TTA; '
                    f'`eval.json` also has the hash of the files\' bytes and of the weights). Check these '
                    f'figures on your own copy of the data:', '', '```bash',
                f'timm-msanet verify hf-hub:{repo_id} --data-dir YOUR_EXPORT', '```']
    out += ['', 'The full results are in `eval.json`.', '']
    return '\n'.join(out)


def _per_class_lines(ev: Mapping[str, Any], label_names: Sequence[str]) -> List[str]:
    out: List[str] = []
    per_class = ev.get('per_class') or {}
    if per_class:
        out += ['', '| class | precision | recall | F1 | support |', '|---|---|---|---|---|']
        for name in label_names:
            row = per_class.get(name)
            if isinstance(row, Mapping):
                out.append(f'| {name} | {_pct(row.get("precision", "-"))} | {_pct(row.get("recall", "-"))} | '
                           f'{_pct(row.get("f1", "-"))} | {row.get("support", "-")} |')
    cm = ev.get('confusion_matrix')
    if cm:
        out += ['', 'Confusion matrix (rows: true class, columns: predicted class):', '',
                '| true \\ predicted | ' + ' | '.join(label_names) + ' |',
                '|---|' + '---|' * len(label_names),
                *[f'| {label_names[i]} | ' + ' | '.join(str(c) for c in row) + ' |' for i, row in enumerate(cm)]]
    return out


def _calibration_lines(ev: Mapping[str, Any], has_reliability_png: bool) -> List[str]:
    t = ev.get('temperature', 1.0)
    raw = ev.get('uncalibrated') if isinstance(ev.get('uncalibrated'), Mapping) else None
    out = ['', f'Calibration on the same split (expected calibration error over {ev.get("calibration_bins", 15)} '
               f'confidence bins, negative log-likelihood, Brier score; lower is better). '
               + (f'The scores are softmax(logits / {t:.4f}): the temperature was fitted on the validation '
                  f'split with `timm-msanet calibrate` and is applied by predict, eval and the ONNX export; '
                  f'`model(x)` itself returns the raw logits.' if t != 1.0 else
                  'No temperature was fitted: the scores are softmax(logits).'),
           '', '| | ECE | NLL | Brier |', '|---|---|---|---|']
    if raw:
        out.append(f'| before (T = 1) | {raw["ece"] * 100:.2f}% | {raw["nll"]:.4f} | {raw["brier"]:.4f} |')
    after = f'after (T = {t:.4f})' if raw else 'as published'
    out.append(f'| {after} | {ev["ece"] * 100:.2f}% | {ev["nll"]:.4f} | {ev["brier"]:.4f} |')
    if has_reliability_png:
        out += ['', '![reliability diagram](reliability.png)']
    return out


# ---------------------------------------------------------------------------------------- the release
def release_data_config(arch: str, args: Mapping[str, Any], in_chans: int) -> Dict[str, Any]:
    """The release's data config: the architecture's (squash resize of the whole face) at the resolution and
    mean/std the checkpoint records, as `loading.checkpoint_cfg` reads them back."""
    cfg = checkpoint_cfg(arch, args)
    mean, std = tuple(cfg['mean']), tuple(cfg['std'])
    if len(mean) != in_chans:  # e.g. grayscale FER2013: one value, the channel average (as timm adapts it)
        mean = (round(sum(mean) / len(mean), 4),)
    if len(std) != in_chans:
        std = (round(sum(std) / len(std), 4),)
    return dict(input_size=(in_chans, *tuple(cfg['input_size'])[1:]), crop_pct=cfg['crop_pct'],
                crop_mode=cfg['crop_mode'], interpolation=cfg['interpolation'], mean=mean, std=std)
