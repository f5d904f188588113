"""FER-grade evaluation: overall and mean class accuracy, per-class precision/recall/F1, confusion matrix,
and calibration (ECE over 15 bins, NLL, Brier score, reliability diagram; see calibration.py).

timm's validate.py reports top-1/top-5; FER papers report overall accuracy, mean class accuracy
(balanced accuracy over the whole split: the mean over classes of per-class recall, counted on the
whole split, never averaged per batch) and confusion matrices.

Label alignment: the model's `label_names` and the split's class folder names are matched by name, so
a checkpoint trained with one class order is scored correctly on a tree exported with another. Common
spellings are folded onto the canonical names first (`angry`->`anger`, `happy`->`happiness`, `sad`->
`sadness`, `surprised`->`surprise`, `fearful`->`fear`, `disgusted`->`disgust`, case-insensitive), so
the FER2013 folder redistribution evaluates as it is. Every dataset class must exist among the model's
classes; a model class absent from the data (e.g. `contempt` of an 8-class model on 7-class data) is
allowed: predicting it counts as an error. The confusion matrix is in the model's label order, rows are
true classes, columns predictions; classes with no samples are left out of the mean class accuracy.

Unreadable images: every image of the split is scored. An image that cannot be decoded (empty, truncated, not
an image) stops the evaluation with an error naming it, where timm's ImageDataset would log it and score the
next file in its place (counting that one twice, under its own class); export with `--verify` to leave such
files out of a tree. A photo timm's reader would pass over without a word (a format other than its .png, .jpg,
.jpeg, such as .webp, .bmp, .tif, .heic; or an image lying in the split folder instead of a class folder) stops
it too, with the count by extension: the scores would otherwise leave those faces out.

Protocol: `metrics.json` records what was evaluated (`evaluation_protocol`: the split's file list and labels,
the files' bytes, class order, preprocessing, TTA, the weights), so two people can tell whether they
evaluated the same thing; `timm-msanet verify` compares a release's numbers on that basis.

    timm-msanet eval --model msanet_r18 --checkpoint model_best.pth.tar --data-dir OUT --split test --out eval/
"""
import argparse
import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ..utils import safe_json
from ..utils.errors import ToolError
from ..utils.options import device, non_negative_int, positive_int
from ..utils.images import GreyInput, readable_image_extensions
from ..loading import ExpressionModel, add_model_args, calibrated, model_from_args, model_input_paths
from ..utils.outputs import add_overwrite_argument, check_folder_outputs, csv_text, save_figure, write_output
from .scores import calibration_metrics, plot_reliability
from ..version import __version__

LABEL_ALIASES = {
    'angry': 'anger', 'happy': 'happiness', 'sad': 'sadness', 'surprised': 'surprise', 'fearful': 'fear',
    'disgusted': 'disgust', 'contemptuous': 'contempt', 'neutrality': 'neutral',
}


class EvalError(ToolError):
    """Evaluation cannot run as asked; the message says what was expected."""


def canonical_label(name: str) -> str:
    key = name.strip().lower()
    return LABEL_ALIASES.get(key, key)


def align_labels(dataset_classes: Sequence[str], model_labels: Sequence[str]) -> List[int]:
    """Model output index for each dataset class index, matched by (canonicalised) name."""
    model_index = {canonical_label(n): i for i, n in enumerate(model_labels)}
    mapping, unknown = [], []
    for name in dataset_classes:
        idx = model_index.get(canonical_label(name))
        if idx is None:
            unknown.append(name)
        mapping.append(idx)
    if unknown:
        raise EvalError(
            f'dataset classes {unknown} have no match among the model classes. Dataset classes: '
            f'{list(dataset_classes)}; model label_names: {list(model_labels)}')
    return mapping


def metrics_from_confusion(confusion: List[List[int]], label_names: Sequence[str]) -> Dict[str, Any]:
    """Overall and mean class accuracy, per-class precision/recall/F1/support from a confusion matrix."""
    n = len(label_names)
    total = sum(sum(row) for row in confusion)
    if total == 0:
        raise EvalError('no samples were evaluated')
    correct = sum(confusion[i][i] for i in range(n))
    per_class, recalls = {}, []
    for i, name in enumerate(label_names):
        support = sum(confusion[i])
        predicted = sum(confusion[r][i] for r in range(n))
        tp = confusion[i][i]
        recall = tp / support if support else 0.0
        precision = tp / predicted if predicted else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = dict(precision=precision, recall=recall, f1=f1, support=support)
        if support:
            recalls.append(recall)
    return dict(
        accuracy=correct / total,
        mean_class_accuracy=sum(recalls) / len(recalls),
        num_samples=total,
        per_class=per_class,
        confusion_matrix=confusion,
        label_names=list(label_names),
    )


def collect_logits(
        model,
        data_dir: str,
        split: str = 'test',
        batch_size: int = 64,
        workers: int = 2,
        device: str = 'cpu',
        amp: bool = False,
        hflip_tta: bool = False,
        progress: bool = False,
) -> Dict[str, Any]:
    """Raw logits of every image of `data_dir/split` (and of its mirror with `hflip_tta`), with the true class
    as a model output index. `model`: an `ExpressionModel` or a timm model. Returns dict(logits, flipped (or
    None), targets, classes, data_cfg, root, samples, grey_input)."""
    import torch
    from timm.data import create_loader

    record = ExpressionModel.of(model)
    root = Path(data_dir) / split
    dataset = _split_dataset(root, data_dir, split)
    classes = sorted(dataset.reader.class_to_idx, key=dataset.reader.class_to_idx.get)
    to_model = torch.tensor(align_labels(classes, record.label_names))
    engine = record.engine(device=device, batch_size=batch_size, amp=amp)
    loader = create_loader(dataset, batch_size=engine.batch_size, is_training=False, num_workers=workers,
                           use_prefetcher=False, device=engine.device, **engine.data_config)
    if record.needs_grey_transform:  # as predict shows photos to a grey-trained model without a grey step
        dataset.transform = GreyInput(dataset.transform)
    iterator = loader
    if progress:
        from tqdm import tqdm
        iterator = tqdm(loader, desc=f'eval {split}', unit='batch', file=sys.stderr)
    logits, flipped, targets = [], [], []
    try:
        for x, y in iterator:
            logits.append(engine.logits(x))
            if hflip_tta:
                flipped.append(engine.logits(x.flip(-1)))
            targets.append(to_model[y.cpu()])
    except EvalError as e:  # an unreadable image, raised in this process or in a loader worker
        raise EvalError(_worker_error_message(e)) from None
    return dict(logits=torch.cat(logits), flipped=torch.cat(flipped) if hflip_tta else None,
                targets=torch.cat(targets), classes=classes, data_cfg=engine.data_config, root=str(root),
                samples=list(dataset.reader.samples), grey_input=record.grey_input)


def _strict_image_dataset_class():
    """StrictImageDataset, made on first use: `timm-msanet --help` imports neither torch nor timm."""
    from timm.data import ImageDataset

    class StrictImageDataset(ImageDataset):
        """timm's ImageDataset of an ImageFolder tree, decoding as timm's does (PIL, `convert('RGB')`), except
        that an image that cannot be read stops the run with EvalError naming it. timm's own skips the file with a
        logged warning and returns the *next* sample in its place, so a split with one broken file would be scored
        with a neighbour counted twice, under the neighbour's class: figures that look valid and are not. Reached
        as the module attribute `StrictImageDataset`, so spawned loader workers can unpickle it."""

        def __getitem__(self, index):
            from PIL import Image
            path, target = self.reader.samples[index]
            try:
                with Image.open(path) as im:
                    img = im.convert(self.input_img_mode or 'RGB')
            except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as e:
                raise EvalError(f'{path} cannot be read as an image ({type(e).__name__}: {e}); every image of a '
                                f'split is scored and none is skipped or replaced: replace or remove the file '
                                f'(`timm-msanet export --verify` leaves undecodable images out)') from None
            if self.transform is not None:
                img = self.transform(img)
            return img, -1 if target is None else target

    StrictImageDataset.__qualname__ = 'StrictImageDataset'  # pickled by this module-level name (__getattr__)
    return StrictImageDataset


def __getattr__(name: str):
    if name == 'StrictImageDataset':  # loader workers started by spawn or forkserver unpickle it by this name
        globals()[name] = _strict_image_dataset_class()
        return globals()[name]
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def _worker_error_message(e: BaseException) -> str:
    """The message of an EvalError raised in a DataLoader worker: torch re-raises it in this process with the
    worker's traceback around it, and the CLI reports one line."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    for line in reversed(lines):
        head, sep, tail = line.partition('EvalError: ')
        if sep and not head.strip(' .').startswith('Caught'):
            return tail
    return lines[-1] if lines else str(e)


def _check_split_files(root: Path) -> None:
    """Refuse a split whose images timm's reader would not all score: photos in a format it does not read (it reads
    the extensions of `timm.data.readers.img_extensions`, .png/.jpg/.jpeg by default, and passes over the rest
    without a word, so a .webp face would be left out of the scores, and out of train.py's and validate.py's
    too), and images lying in the split folder itself (timm files them under a class named '')."""
    from timm.data.readers.img_extensions import get_img_extensions

    read = get_img_extensions(as_set=True)
    photos = readable_image_extensions()  # what predict reads from a folder
    unread: Dict[str, List[str]] = {}
    loose: List[str] = []
    for folder, _, files in os.walk(root, followlinks=True):  # as timm's find_images_and_targets walks
        for name in sorted(files):
            ext = os.path.splitext(name)[1].lower()
            if ext in read and Path(folder) == root:
                loose.append(os.path.join(folder, name))
            elif ext in photos and ext not in read:
                unread.setdefault(ext, []).append(os.path.join(folder, name))
    if unread:
        count = sum(len(v) for v in unread.values())
        kinds = ', '.join(f'{len(v)} {ext}' for ext, v in sorted(unread.items()))
        first = min(min(v) for v in unread.values())
        raise EvalError(f'{root} holds {count} image(s) that timm\'s ImageFolder reader does not read ({kinds}; '
                        f'e.g. {first}): it reads {", ".join(sorted(read))} only, so they would be left out of the '
                        f'scores (and out of train.py and validate.py); convert them to PNG or JPEG')
    if loose:
        raise EvalError(f'{loose[0]} lies in the split folder itself ({len(loose)} image(s) there): a split holds '
                        f'one folder per class ({root}/<class>/<image>); move it into its class folder')


def _split_dataset(root: Path, data_dir, split: str):
    """The ImageFolder dataset of one split (`StrictImageDataset`), every file checked to be a regular file
    before any is opened, and every photo in it one that timm's reader scores (`_check_split_files`)."""
    if not root.is_dir():
        found = sorted(p.name for p in Path(data_dir).iterdir() if p.is_dir()) if Path(data_dir).is_dir() else []
        raise EvalError(f'split folder {root} not found (expected DATA_DIR/{split}/<class>/...; '
                        f'folders in {data_dir}: {found or "none"})')
    _check_split_files(root)
    try:
        dataset = __getattr__('StrictImageDataset')(str(root))
    except RuntimeError as e:  # timm refuses a folder tree without images
        raise EvalError(f'{root} has no images in class folders ({e})') from None
    for path, _ in dataset.reader.samples:  # before any is opened: a FIFO blocks the open, /dev/zero never ends
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            raise EvalError(f'{path}: cannot be read ({e.strerror}); a split holds image files only') from None
        if not stat.S_ISREG(mode):
            raise EvalError(f'{path} is not a regular file (a FIFO, device or a link to one): a split holds image '
                            f'files only; remove it')
    return dataset


def exported_dataset(data_dir: Union[str, Path]) -> Optional[str]:
    """The dataset a `timm-msanet export` tree was made from (its manifest.json), or None for other trees."""
    manifest = Path(data_dir) / 'manifest.json'
    try:
        dataset = safe_json.read(manifest).get('dataset') if os.path.lexists(manifest) else None
    except (OSError, ValueError, AttributeError):
        return None  # the tree itself is read by evaluate, which says what is wrong with it
    return dataset if isinstance(dataset, str) else None


def evaluate(
        model,
        data_dir: str,
        split: str = 'test',
        batch_size: int = 64,
        workers: int = 2,
        device: str = 'cpu',
        amp: bool = False,
        hflip_tta: bool = False,
        progress: bool = False,
) -> Dict[str, Any]:
    """Score a model on `data_dir/split` (an ImageFolder tree, e.g. from `timm-msanet export`).

    Accuracy and mean class accuracy from the argmax; calibration (ECE, NLL, Brier, reliability bins) from
    softmax(logits / T) with the model's temperature T (`ExpressionModel.temperature`, 1.0 when it has
    none), and, when T is not 1, the same at T = 1 under `uncalibrated`."""
    import torch

    record = ExpressionModel.of(model)
    got = collect_logits(record, data_dir, split, batch_size=batch_size, workers=workers, device=device, amp=amp,
                         hflip_tta=hflip_tta, progress=progress)
    label_names = record.label_names
    temperature = record.temperature

    def probs_at(t: float):
        p = calibrated(got['logits'], t)
        if hflip_tta:  # average the probabilities of the image and its mirror
            p = (p + calibrated(got['flipped'], t)) / 2
        return p

    probs = probs_at(temperature)
    n = len(label_names)
    pred, true = probs.argmax(-1), got['targets']
    confusion = torch.bincount(true * n + pred, minlength=n * n).view(n, n)
    metrics = metrics_from_confusion(confusion.tolist(), label_names)
    calib = calibration_metrics(probs, true)
    metrics.update(ece=calib['ece'], nll=calib['nll'], brier=calib['brier'], temperature=temperature,
                   calibration_bins=calib['n_bins'], reliability=calib['reliability'])
    if temperature != 1.0:
        raw = calibration_metrics(probs_at(1.0), true)
        metrics['uncalibrated'] = {k: raw[k] for k in ('ece', 'nll', 'brier', 'reliability')}
    metrics.update(
        model=record.architecture, model_source=model_source(record),
        weights=None if record.source.ema is None else 'ema' if record.source.ema else 'raw',
        weights_file=record.source.entry == 'file',
        data_dir=str(Path(data_dir).resolve()), split=split, dataset_classes=got['classes'],
        input_size=list(got['data_cfg']['input_size']), hflip_tta=hflip_tta, amp=amp, timm_msanet=__version__,
    )
    metrics['dataset'] = exported_dataset(data_dir)
    metrics['protocol'] = evaluation_protocol(got, split=split, hflip_tta=hflip_tta, dataset=metrics.get('dataset'),
                                              model=record)
    return metrics


# ------------------------------------------------------------------------------------------ the protocol
PROTOCOL_FORMAT = 'timm-msanet-eval-protocol/1'
PREPROCESSING_KEYS = ('input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode')
# what makes two evaluations comparable; the weights are recorded beside it, not in it
PROTOCOL_HASHED_KEYS = ('format', 'split', 'class_order', 'num_images', 'files_sha256', 'preprocessing', 'tta')


def _sha256_lines(lines: Sequence[str]) -> str:
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode('utf-8', 'surrogateescape') + b'\n')
    return h.hexdigest()


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def weights_sha256(model) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes, bytes, in name order): the same for the same
    weights whatever file format or precision they were stored in (float16 weights load exactly into float32)."""
    import torch
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        if t.is_floating_point():
            t = t.float()
        h.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


def weights_file(model) -> Optional[str]:
    """The file the model's weights were read from, when it can be told (checkpoint, packaged release,
    local-dir or Hub cache). `model`: an `ExpressionModel` or a timm model."""
    record = ExpressionModel.of(model)
    cfg = record.pretrained_cfg
    if record.source.kind == 'random':  # load_model(pretrained=False): the cfg still names the tag's file
        return None
    if record.source.checkpoint and Path(record.source.checkpoint).is_file():
        return record.source.checkpoint
    if cfg.get('file') and Path(cfg['file']).is_file():
        return str(cfg['file'])
    hub_id = cfg.get('hf_hub_id')
    if hub_id and cfg.get('source') == 'local-dir':
        path = Path(hub_id) / 'model.safetensors'
        return str(path) if path.is_file() else None
    if hub_id:
        from huggingface_hub import try_to_load_from_cache
        repo, _, revision = str(hub_id).partition('@')
        found = try_to_load_from_cache(repo, cfg.get('hf_hub_filename') or 'model.safetensors',
                                       revision=revision or None)
        return found if isinstance(found, str) else None
    return None


def evaluation_protocol(got: Mapping[str, Any], *, split: str, hflip_tta: bool, dataset: Optional[str],
                        model) -> Dict[str, Any]:
    """What was evaluated, so two people can tell whether they evaluated the same thing: the split's file list
    and labels (`files_sha256`: sorted `relative/path<TAB>class` lines), the bytes of those files
    (`content_sha256`: the same lines with each file's sha256), class order, preprocessing, TTA, and the
    weights. `sha256` covers `PROTOCOL_HASHED_KEYS`: the data as named and labelled and how it was fed, not the
    file bytes (an export re-encoded by another PIL version has other bytes but the same faces) and not the
    weights (the point is to compare weights on one protocol)."""
    root, classes = got['root'], got['classes']
    named, content = [], []
    for path, target in got['samples']:
        rel = Path(os.path.relpath(path, root)).as_posix()
        named.append(f'{rel}\t{classes[target]}')
        content.append(f'{rel}\t{classes[target]}\t{file_sha256(path)}')
    data_cfg = got['data_cfg']
    preprocessing = {k: (list(data_cfg[k]) if isinstance(data_cfg[k], (tuple, list)) else data_cfg[k])
                     for k in PREPROCESSING_KEYS if k in data_cfg}
    for k in ('mean', 'std'):
        if k in preprocessing:
            preprocessing[k] = [round(float(v), 6) for v in preprocessing[k]]
    preprocessing['grey_input'] = bool(got.get('grey_input'))
    protocol: Dict[str, Any] = {
        'format': PROTOCOL_FORMAT, 'dataset': dataset, 'split': split, 'class_order': list(classes),
        'num_images': len(named), 'files_sha256': _sha256_lines(named), 'content_sha256': _sha256_lines(content),
        'preprocessing': preprocessing, 'tta': 'hflip' if hflip_tta else None,
    }
    protocol['sha256'] = protocol_sha256(protocol)
    ckpt = weights_file(model)
    protocol['checkpoint'] = {'file': ckpt and os.path.basename(ckpt), 'sha256': ckpt and file_sha256(ckpt)}
    protocol['weights_sha256'] = weights_sha256(ExpressionModel.of(model).module)
    return protocol


def protocol_sha256(protocol: Mapping[str, Any]) -> str:
    core = {k: protocol.get(k) for k in PROTOCOL_HASHED_KEYS}
    return hashlib.sha256(json.dumps(core, sort_keys=True, separators=(',', ':')).encode()).hexdigest()


def model_source(record) -> Optional[str]:
    """Where the weights came from: a checkpoint path, a Hub repo or folder, or a registered tag."""
    cfg = record.pretrained_cfg
    if record.source.checkpoint or cfg.get('hf_hub_id'):
        return record.source.checkpoint or cfg.get('hf_hub_id')
    if record.source.kind == 'random':
        return None
    return f"{cfg['architecture']}.{cfg['tag']}" if cfg.get('architecture') and cfg.get('tag') else None


def format_table(metrics: Dict[str, Any]) -> str:
    lines = [f"{'class':12s} {'precision':>9s} {'recall':>7s} {'f1':>6s} {'support':>8s}"]
    for name, m in metrics['per_class'].items():
        lines.append(f"{name:12s} {m['precision']:9.4f} {m['recall']:7.4f} {m['f1']:6.4f} {m['support']:8d}")
    lines.append(f"accuracy {metrics['accuracy'] * 100:.2f}%   mean class accuracy "
                 f"{metrics['mean_class_accuracy'] * 100:.2f}%   samples {metrics['num_samples']}")
    if metrics.get('weights'):
        made = ', as a weights file (its only weights)' if metrics.get('weights_file') else ''
        lines.append({'ema': f"weights: the EMA of the train.py checkpoint{made}"
                             + ('' if made else ' (--no-ema scores its raw weights)'),
                      'raw': f"weights: the raw weights of the train.py checkpoint (not its EMA){made}"}[metrics['weights']]
                     + (f"; from {metrics['model_source']}" if metrics.get('model_source') else ''))
    if 'ece' in metrics:
        line = (f"calibration (T={metrics.get('temperature', 1.0):.4g}): ECE {metrics['ece'] * 100:.2f}%   "
                f"NLL {metrics['nll']:.4f}   Brier {metrics['brier']:.4f}")
        raw = metrics.get('uncalibrated')
        if raw:
            line += f"   (T=1: ECE {raw['ece'] * 100:.2f}%, NLL {raw['nll']:.4f}, Brier {raw['brier']:.4f})"
        lines.append(line)
    protocol = metrics.get('protocol')
    if protocol:
        lines.append(f"protocol {protocol['sha256'][:16]} ({protocol['num_images']} images of "
                     f"{protocol.get('dataset') or 'the data'} {protocol['split']}, "
                     f"files {protocol['files_sha256'][:12]}, content {protocol['content_sha256'][:12]}; "
                     f"weights {protocol['weights_sha256'][:12]})")
    return '\n'.join(lines)


def write_confusion_csv(metrics: Dict[str, Any], path: Path, overwrite: bool = False) -> None:
    rows = [['true \\ predicted'] + metrics['label_names']]
    rows += [[name] + row for name, row in zip(metrics['label_names'], metrics['confusion_matrix'])]
    write_output(path, csv_text(rows), (), overwrite, '--out')


OUTPUT_FILES = ('metrics.json', 'confusion_matrix.csv', 'confusion_matrix.png', 'reliability.png')


def plot_confusion(metrics: Dict[str, Any], path: Path, overwrite: bool = False) -> bool:
    """Row-normalised confusion matrix like the paper's Fig. 3. Needs matplotlib (the `plot` extra)."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = metrics['label_names']
    cm = metrics['confusion_matrix']
    norm = [[v / sum(row) if sum(row) else 0.0 for v in row] for row in cm]
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 1.1 * len(names) + 1.5))
    ax.imshow(norm, cmap='Blues', vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha='right')
    ax.set_yticks(range(len(names)), names)
    for i, row in enumerate(norm):
        for j, v in enumerate(row):
            ax.text(j, i, f'{v:.2f}', ha='center', va='center', color='white' if v > 0.5 else 'black', fontsize=9)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(f"{metrics.get('model') or ''} {metrics.get('split', '')}: acc {metrics['accuracy'] * 100:.2f}%, "
                 f"mean class acc {metrics['mean_class_accuracy'] * 100:.2f}%", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, overwrite)
    return True


def write_outputs(metrics: Dict[str, Any], out_dir: Path, overwrite: bool = False,
                  inputs: Sequence[str] = ()) -> List[Path]:
    """metrics.json, confusion_matrix.csv/.png and reliability.png in `out_dir`, as timm_msanet.utils.outputs writes
    files: all checked first, an existing one replaced only with `overwrite`."""
    check_folder_outputs(out_dir, OUTPUT_FILES, inputs, overwrite)
    written = [out_dir / 'metrics.json', out_dir / 'confusion_matrix.csv']
    write_output(written[0], json.dumps(metrics, indent=2), inputs, overwrite, '--out')
    write_confusion_csv(metrics, written[1], overwrite)
    if plot_confusion(metrics, out_dir / 'confusion_matrix.png', overwrite):
        written.append(out_dir / 'confusion_matrix.png')
    if metrics.get('reliability'):
        t = metrics.get('temperature', 1.0)
        curves = {f'T={t:.3g}' if t != 1.0 else 'model': metrics['reliability']}
        if metrics.get('uncalibrated'):
            curves = {'T=1 (uncalibrated)': metrics['uncalibrated']['reliability'], **curves}
        title = (f"{metrics.get('model') or ''} {metrics.get('split', '')}: ECE {metrics['ece'] * 100:.2f}%, "
                 f"NLL {metrics['nll']:.3f}, Brier {metrics['brier']:.3f}")
        if plot_reliability(curves, out_dir / 'reliability.png', title, overwrite):
            written.append(out_dir / 'reliability.png')
    return written


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument('--data-dir', required=True, help='ImageFolder root with split folders (timm-msanet export)')
    parser.add_argument('--split', default='test', help='split folder to score (default: test)')
    parser.add_argument('--out', type=Path, help='folder for metrics.json, confusion_matrix.csv/.png')
    parser.add_argument('--batch-size', type=positive_int, default=64)
    parser.add_argument('--workers', type=non_negative_int, default=2)
    parser.add_argument('--device', type=device, default='cpu')
    parser.add_argument('--amp', action='store_true', help='mixed precision (bf16 on CPU, fp16 on CUDA); slower than fp32 on a CPU without native bf16')
    parser.add_argument('--tta-hflip', action='store_true', help='average probabilities with the mirrored image')
    add_overwrite_argument(parser, 'the --out files')


def run(args: argparse.Namespace) -> int:
    inputs = model_input_paths(args)
    if args.out:  # before the work
        check_folder_outputs(args.out, OUTPUT_FILES, inputs, args.overwrite, input_dirs=[args.data_dir])
    model = model_from_args(args)
    if args.amp and args.device.startswith('cpu'):
        from ..utils.precision import native_bf16
        if not native_bf16('cpu'):  # a warning, not a refusal: the figures are the same, only slower
            print('warning: bf16 is emulated on this CPU (no AVX-512 BF16/AMX): --amp is slower here than without it',
                  file=sys.stderr)
    metrics = evaluate(model, args.data_dir, split=args.split, batch_size=args.batch_size, workers=args.workers,
                       device=args.device, amp=args.amp, hflip_tta=args.tta_hflip, progress=sys.stderr.isatty())
    print(format_table(metrics))
    if args.out:
        for path in write_outputs(metrics, args.out, args.overwrite, inputs):
            print(f'wrote {path}')
    return 0
