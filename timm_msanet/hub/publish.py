"""Publish a trained MSA-Net checkpoint to the Hugging Face Hub as a timm model repo (or write it to a folder).

    timm-msanet publish CHECKPOINT --repo-id ORG/NAME --dataset {rafdb,affectnet7,affectnet8,fer2013,ferplus}
        [--model ARCH] [--eval-json FILE] [--face-framing TRAIN_DIR | EYE_Y,EYE_DIST] [--private]
        [--revision REV] [--dry-run OUTDIR] [--ema | --no-ema]

The repo holds `model.safetensors` (no pickle), `config.json` (architecture, num_classes, label_names, the
FER data config, the model's reconstruction arguments) written by timm's own `save_for_hf`, and a model card
`README.md`; with `--eval-json`, also that file as `eval.json`, and the `confusion_matrix.png` and
`reliability.png` found beside it.
`timm.create_model('hf-hub:ORG/NAME', pretrained=True)` then loads it wherever timm-msanet is installed, and
`timm.create_model('local-dir:OUTDIR', pretrained=True)` loads a `--dry-run` folder.
`timm_msanet.loading.create_published()` does the same with errors that say what to do (offline, repo not
found, architecture, class count).

Decisions where the Hub and timm leave room:

* CHECKPOINT is read by `timm_msanet.loading.read_checkpoint`: `torch.load(weights_only=True)` only, with
  train.py's `argparse.Namespace` args allow-listed; anything else that needs unpickling is refused.
* EMA: by default (`use_ema=None`) the EMA weights are published when the checkpoint has `state_dict_ema`
  (timm's train.py ranks checkpoints by the EMA model's metric when EMA is on), else `state_dict`.
  `--ema` insists on EMA weights (error if absent), `--no-ema` takes `state_dict`. The card says which.
* Architecture: train.py records `args.model` (and copies it to `arch`); a checkpoint's `arch` that is not a
  registered model name (train.py without args writes the class name, `msanet`) is ignored. `--model`
  must agree with a recorded architecture (a disagreement is an error rather than a silent override);
  with neither, the one registered msanet architecture whose keys and shapes fit the weights is used.
  num_classes comes from `args.num_classes`, else the `head.fc.weight` shape; in_chans from
  `args.in_chans`, else `conv1.weight`; of train.py's `args.model_kwargs` only checked architecture
  arguments are used (`loading.checked_model_args`).
* Class count per dataset: rafdb, fer2013 and affectnet7 are 7 classes, affectnet8 is 8, ferplus is 7 or 8
  (`timm-msanet export ferplus --classes`). A checkpoint with another class count is refused, as is an
  eval JSON whose `label_names` differ from the canonical order (`timm_msanet.labels`).
* Input size: the FER data config (crop_pct 1.0, squash, bilinear, ImageNet mean/std) at the training
  resolution recorded in the checkpoint args (`input_size` / `img_size`), else 224.
* Eval JSON metrics in [0, 1] are shown as percentages; values above 1 are taken as percentages already.
* The card is generated from the checkpoint and eval JSON on every publish and replaces a README.md
  already in the repo (timm's `push_to_hf_hub` keeps an existing one; a new release needs a new card), so
  this uploads the folder `save_for_hf` + card wrote with `HfApi.upload_folder` in one commit instead of
  calling `push_to_hf_hub`. The token comes from huggingface_hub's usual sources (`hf auth login`,
  `HF_TOKEN`); nothing here reads or stores it.
* Face framing (`--face-framing`): where the training faces had their eyes, recorded in the cfg notes
  (`face framing: eye_y=... eye_dist=...`), so `predict --faces --detector dlib` aligns faces in photos
  the way this model was trained. Given a folder (the exported train split), it is measured there with
  dlib (`faces.measure_framing`: 1,500 random images at most, medians, about a minute on 2 cores; the
  `landmarks` extra); given `EYE_Y,EYE_DIST`, those are recorded. Without it nothing is recorded and
  aligned faces get FER2013's framing; the card says which.
* `--dry-run OUTDIR` must be a new or empty folder, so no stale file can pass for part of the upload.
* `load_model(..., num_classes=N)` with N different from the release is an error (timm itself would
  silently replace the head, which is fine-tuning: call `timm.create_model` directly for that).
"""
import argparse
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from ..utils import safe_json
from ..inference.faces import measure_framing
from ..labels import labels_for
from ..loading import (Checkpoint, CheckpointError, ExpressionModel, WeightsSource, model_from_checkpoint,
    msanet_archs, read_checkpoint, training_record, write_weights)
from ..notes import FRAMING_NOTE, GREY_INPUT_NOTE, parse_framing, recorded_framing
from ..utils.outputs import add_overwrite_argument, check_output, finish_permissions, replace_folder
from ..utils.images import collect_files
from ..releases import DATASETS
from ..version import __version__
from .card import PublishError, build_model_card, release_data_config, check_eval_describes, read_eval_json


__all__ = ['DATASETS', 'PublishError', 'build_model', 'build_model_card', 'stage_release', 'publish',
           'resolve_face_framing', 'configure_parser', 'run']


def build_model(ckpt: Checkpoint, dataset: str, model_name: Optional[str] = None):
    """The MSA-Net model of a checkpoint, checked against the dataset's class count. Returns (model, arch)."""
    num_classes = ckpt.num_classes
    allowed = DATASETS[dataset]['classes']
    if num_classes is not None and num_classes not in allowed:
        raise PublishError(
            f'wrong class count: the checkpoint has {num_classes} classes but --dataset {dataset} models have '
            f'{" or ".join(map(str, allowed))} ({", ".join(labels_for(allowed[0]))}'
            f'{" (+ contempt)" if 8 in allowed and 7 in allowed else ""}). Check --dataset, or retrain with '
            f'--num-classes {allowed[0]} on a `timm-msanet export` of that dataset.')
    trained_as = str(ckpt.args.get('model') or '').split('.')[0]
    archs = msanet_archs()
    if trained_as and trained_as not in archs:
        raise PublishError(f'the checkpoint was trained as {ckpt.args["model"]!r}, not a registered msanet '
                           f'architecture ({archs}); only MSA-Net models are published with this command')
    if model_name is not None and model_name not in archs:
        raise PublishError(f'--model {model_name!r} is not an msanet architecture; choose one of {archs}')
    try:
        return model_from_checkpoint(ckpt, model_name=model_name)
    except PublishError:
        raise
    except CheckpointError as e:
        raise PublishError(str(e)) from e


def _valid_repo_id(repo_id: Optional[str]) -> bool:
    """ORG/NAME as the Hub spells them: letters, digits, '-', '_', '.', neither starting nor ending with '-' or
    '.', no '--' or '..' (so never a path such as ../..)."""
    part = r'[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?'
    return bool(re.fullmatch(f'{part}/{part}', repo_id or '')) and '..' not in repo_id and '--' not in repo_id


RELEASE_FILES = ('README.md', 'config.json', 'model.safetensors', 'eval.json', 'confusion_matrix.png',
                 'reliability.png')


def is_release_folder(folder: Path) -> bool:
    """A folder `stage_release` wrote: its config.json and release files, nothing else."""
    names = {p.name for p in Path(folder).iterdir()}
    return 'config.json' in names and names <= set(RELEASE_FILES)


def stage_release(checkpoint: Union[str, Path], repo_id: str, dataset: str, out_dir: Union[str, Path],
                  model_name: Optional[str] = None, eval_json: Optional[Union[str, Path]] = None,
                  use_ema: Optional[bool] = None, face_framing: Optional[Mapping[str, Any]] = None,
                  overwrite: bool = False) -> Dict[str, Any]:
    """Write every file of the release into `out_dir` (new or empty; with `overwrite` also an earlier release
    folder). Returns a summary.

    The files are made in a folder beside `out_dir`, which takes its name only once all of them are written
    (timm_msanet.utils.outputs.replace_folder): a failure leaves no half-written release behind.
    `face_framing`: {'eye_y', 'eye_dist'} (and how it was measured: `faces.measure_framing`'s result),
    recorded in the cfg notes and on the card; None records none."""
    if dataset not in DATASETS:
        raise PublishError(f'--dataset must be one of {list(DATASETS)}, got {dataset!r}')
    if not _valid_repo_id(repo_id):
        raise PublishError(f'--repo-id must be ORG/NAME (e.g. my-org/msanet-r18-rafdb), got {repo_id!r}')
    if face_framing is not None:
        face_framing = dict(face_framing, **parse_framing(f'{face_framing["eye_y"]},{face_framing["eye_dist"]}'))
    out_dir = Path(out_dir)
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise PublishError(f'{out_dir} exists and is not a folder; give a new or empty folder')
    if out_dir.exists() and any(out_dir.iterdir()) and not (overwrite and is_release_folder(out_dir)):
        raise PublishError(f'{out_dir} exists and is not an empty folder; give a new or empty folder so that '
                           f'nothing stale ends up looking like part of the release'
                           + ('' if overwrite else ' (--overwrite replaces an earlier release folder)'))
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.partial-', dir=out_dir.parent))
    except OSError as e:
        raise PublishError(f'cannot write {out_dir}: {e.strerror or e}') from None
    try:
        summary = _write_release(checkpoint, repo_id, dataset, staging, model_name, eval_json, use_ema,
                                 face_framing)
        finish_permissions(staging)
        replace_folder(staging, out_dir, overwrite, is_release_folder, 'release folder')
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dict(summary, files=sorted(p.name for p in out_dir.iterdir()), folder=str(out_dir))


def _as_published(model, ckpt: Checkpoint, repo_id: str, dataset: str, label_names, face_framing):
    """The model with the published weights' own cfg (no source: tv_in1k's hub id, licence and url do not describe
    them), its facts in the notes, the file's temperature, and float16 when it was given float16."""
    import torch
    in_chans = model.conv1.in_channels
    model.pretrained_cfg = dict(
        {k: v for k, v in model.pretrained_cfg.items()
         if k not in ('hf_hub_id', 'url', 'file', 'source', 'license', 'origin_url', 'tag', 'notes')},
        num_classes=model.num_classes, label_names=tuple(label_names), tag=dataset, license='other',
        origin_url=f'https://huggingface.co/{repo_id}',
        description=f'MSA-Net trained on {DATASETS[dataset]["title"]} ({len(label_names)} classes)',
        notes=(f'trained on {DATASETS[dataset]["title"]}: research / non-commercial dataset licence',
               *((GREY_INPUT_NOTE,) if DATASETS[dataset].get('grey') and in_chans == 3 else ()),
               *((FRAMING_NOTE.format(**face_framing),) if face_framing else ())),
    )
    if 'temperature' in ckpt.extra:  # from `timm-msanet calibrate --save`: travels in config.json's notes
        ExpressionModel.from_module(model, WeightsSource(kind='checkpoint', name=ckpt.source, checkpoint=ckpt.source,
                                                         entry=ckpt.weights)).set_temperature(
            ckpt.extra['temperature'], ckpt.extra.get('temperature_fit_split', 'validation'))
    if {t.dtype for t in ckpt.state_dict.values() if t.is_floating_point()} == {torch.float16}:
        model = model.half()  # a float16 weights file is published as float16: the dtype it was given
    return model


def _write_release(checkpoint, repo_id: str, dataset: str, out_dir: Path, model_name: Optional[str],
                   eval_json, use_ema: Optional[bool], face_framing: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    from timm.models import save_for_hf

    try:
        ckpt = read_checkpoint(checkpoint, use_ema=use_ema)
    except CheckpointError as e:
        raise PublishError(str(e)) from e
    model, arch = build_model(ckpt, dataset, model_name)
    if face_framing is None:  # the framing `--weights-only --face-framing` recorded in the file
        face_framing = recorded_framing({'notes': ckpt.extra.get('notes') or ()})
        if face_framing is not None and ckpt.extra.get('face_framing_source'):
            face_framing['source'] = ckpt.extra['face_framing_source']
    if ckpt.extra.get('dataset') and ckpt.extra['dataset'] != dataset:
        raise PublishError(f'the weights record that they were trained on {ckpt.extra["dataset"]}, but --dataset is '
                           f'{dataset}')
    label_names = list(labels_for(model.num_classes))
    in_chans = model.conv1.in_channels
    eval_results = read_eval_json(eval_json, label_names) if eval_json else None
    if eval_results is not None:
        check_eval_describes(eval_results, model, dataset, str(eval_json),
                             temperature=float(ckpt.extra.get('temperature', 1.0)),
                             grey_input=bool(DATASETS[dataset].get('grey')) and in_chans == 3)
    cm_png = Path(eval_json).with_name('confusion_matrix.png') if eval_json else None
    has_png = bool(cm_png and cm_png.is_file())
    rel_png = Path(eval_json).with_name('reliability.png') if eval_json else None
    has_rel_png = bool(rel_png and rel_png.is_file())

    data_config = release_data_config(arch, ckpt.args, in_chans)
    model = _as_published(model, ckpt, repo_id, dataset, label_names, face_framing)
    from safetensors import SafetensorError
    try:
        save_for_hf(model, str(out_dir), model_config=dict(label_names=label_names), safe_serialization=True,
                    data_config=data_config)
    except ValueError as e:  # e.g. a train.py --model-kwargs value that JSON cannot hold
        raise PublishError(f'cannot write config.json: {e}') from None
    except (OSError, SafetensorError) as e:  # a full disk: nothing partial is left (the staging folder goes)
        raise PublishError(f'cannot write the release into {out_dir.parent}: {str(e).splitlines()[0]}') from None
    if eval_results is not None:
        shutil.copyfile(eval_json, out_dir / 'eval.json')
    if has_png:
        shutil.copyfile(cm_png, out_dir / 'confusion_matrix.png')
    if has_rel_png:
        shutil.copyfile(rel_png, out_dir / 'reliability.png')
    card = build_model_card(repo_id=repo_id, arch=arch, dataset=dataset, label_names=label_names, ckpt=ckpt,
                            model=model, data_config=data_config, eval_results=eval_results, has_cm_png=has_png,
                            has_reliability_png=has_rel_png, face_framing=face_framing)
    (out_dir / 'README.md').write_text(card, encoding='utf-8')
    return dict(arch=arch, num_classes=model.num_classes, label_names=label_names, weights=ckpt.weights,
                face_framing=face_framing)


def trained_on(ckpt: Checkpoint, num_classes: int) -> Optional[str]:
    """The dataset (a DATASETS key) a checkpoint was trained on: what a weights file records, else the
    `timm-msanet export` manifest of train.py's data folder when it is still there; None when neither tells."""
    if ckpt.extra.get('dataset') in DATASETS:
        return ckpt.extra['dataset']
    data_dir = ckpt.args.get('data_dir') or ckpt.args.get('data')
    if not isinstance(data_dir, str):
        return None
    try:
        manifest = safe_json.read(Path(data_dir) / 'manifest.json')
        name = str(manifest.get('dataset'))
    except (OSError, ValueError, AttributeError):
        return None
    if name == 'affectnet':
        name = f'affectnet{num_classes}'
    return name if name in DATASETS and num_classes in DATASETS[name]['classes'] else None


def save_weights(checkpoint: Union[str, Path], out_file: Union[str, Path], model_name: Optional[str] = None,
                 use_ema: Optional[bool] = None, half: bool = True, overwrite: bool = False,
                 dataset: Optional[str] = None, face_framing: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Write a checkpoint's weights (EMA by default when present) as one safetensors file, float16 unless
    `half=False`, with its architecture and train.py settings in the file's metadata, so that eval, predict
    and publish rebuild it at its training resolution from the file alone. This is the format of the
    weights installed with the package (`timm_msanet/weights/`). Returns a summary.

    The model's facts travel in the same metadata from here on (calibrate keeps them, load_model applies
    them): the dataset (`dataset`, else what `trained_on` finds), its grey-input note for a grey dataset, and
    the face framing (`face_framing`, as for `stage_release`)."""
    out_file = Path(out_file)
    if out_file.suffix != '.safetensors':
        raise PublishError(f'--weights-only writes a .safetensors file, got {out_file}')
    check_output(out_file, [checkpoint], overwrite, '--weights-only')
    try:
        ckpt = read_checkpoint(checkpoint, use_ema=use_ema)
        model, arch = model_from_checkpoint(ckpt, model_name=model_name)  # the weights must fit their architecture
    except CheckpointError as e:
        raise PublishError(str(e)) from e
    ckpt.args.setdefault('model', arch)
    if dataset is not None and dataset not in DATASETS:
        raise PublishError(f'--dataset must be one of {list(DATASETS)}, got {dataset!r}')
    dataset = dataset or trained_on(ckpt, model.num_classes)
    notes = list(ckpt.extra.get('notes') or ())
    if dataset is not None:
        if model.num_classes not in DATASETS[dataset]['classes']:
            raise PublishError(f'{DATASETS[dataset]["title"]} has {DATASETS[dataset]["classes"]} classes; the '
                               f'checkpoint has {model.num_classes}')
        ckpt.extra['dataset'] = dataset
        if DATASETS[dataset].get('grey') and model.conv1.in_channels == 3 and GREY_INPUT_NOTE not in notes:
            notes.append(GREY_INPUT_NOTE)
    if face_framing is not None:
        framing = parse_framing(f'{face_framing["eye_y"]},{face_framing["eye_dist"]}')
        notes = [n for n in notes if not n.startswith(FRAMING_NOTE.split(':')[0])] + [FRAMING_NOTE.format(**framing)]
        ckpt.extra['face_framing_source'] = (
            f'measured with `{face_framing["detector"]}` on {face_framing["faces"]:,} training faces (of '
            f'{face_framing["images"]:,} images)' if 'faces' in face_framing else 'as given')
    ckpt.extra['notes'] = notes
    write_weights(ckpt.state_dict, out_file, training_record(ckpt), half=half, inputs=[checkpoint], overwrite=overwrite)
    return dict(arch=arch, num_classes=model.num_classes, weights=ckpt.weights, file=str(out_file),
                dtype='float16' if half else 'float32', bytes=out_file.stat().st_size, dataset=dataset, notes=notes)


def publish(checkpoint: Union[str, Path], repo_id: str, dataset: str, model_name: Optional[str] = None,
            eval_json: Optional[Union[str, Path]] = None, private: bool = False, revision: Optional[str] = None,
            dry_run_dir: Optional[Union[str, Path]] = None, use_ema: Optional[bool] = None,
            face_framing: Optional[Mapping[str, Any]] = None, overwrite: bool = False) -> Dict[str, Any]:
    """Publish a checkpoint as the Hub model repo `repo_id`, or with `dry_run_dir` write the files only
    (`overwrite`: replace an earlier release folder there).

    `use_ema`: None (default) publishes EMA weights when the checkpoint has them, True requires them,
    False takes the raw weights. `face_framing`: as for `stage_release`. Returns a summary dict (files, arch,
    ... and `url` after an upload).
    """
    if dry_run_dir is not None:
        return dict(stage_release(checkpoint, repo_id, dataset, dry_run_dir, model_name, eval_json, use_ema,
                                  face_framing, overwrite), uploaded=False)

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError
    with tempfile.TemporaryDirectory(prefix='timm-msanet-publish-') as tmp:
        summary = stage_release(checkpoint, repo_id, dataset, Path(tmp) / 'release', model_name, eval_json, use_ema,
                                face_framing)
        api = HfApi(library_name='timm-msanet', library_version=__version__)
        try:
            repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
            repo_id = getattr(repo_url, 'repo_id', None) or repo_id
            if revision and revision != 'main':
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=summary['folder'], revision=revision,
                                     commit_message=f'timm-msanet {__version__}: {summary["arch"]} on {dataset}')
        except LocalTokenNotFoundError:
            raise PublishError('no Hugging Face token found: log in with `hf auth login` or set HF_TOKEN, '
                               'then run publish again (or use --dry-run OUTDIR to write the files only)') from None
        except HfHubHTTPError as e:
            raise PublishError(f'upload to {repo_id} failed: {str(e).rstrip(".")}. Check that your token has write access to '
                               f'{repo_id.split("/")[0]} (`hf auth whoami`), then run publish again.') from None
        except OSError as e:  # no network
            raise PublishError(f'cannot reach the Hugging Face Hub to upload {repo_id}: {str(e).rstrip(".")}. Check the network '
                               f'(and that HF_HUB_OFFLINE is not set), or use --dry-run OUTDIR.') from None
    summary = dict(summary, folder=None, uploaded=True, repo_id=repo_id,
                   url=getattr(info, 'commit_url', None) or f'https://huggingface.co/{repo_id}')
    return summary


def resolve_face_framing(source: Union[str, Path]) -> Dict[str, Any]:
    """`--face-framing`'s value: a folder of training images (measured there) or 'EYE_Y,EYE_DIST'."""
    path = Path(source)
    if path.is_dir():
        files = [f for f, _ in collect_files([str(path)])]
        if not files:
            raise PublishError(f'--face-framing {path}: no image files in it; expected the training images (e.g. '
                               f'the train/ folder of an export) or EYE_Y,EYE_DIST')
        return measure_framing(files)
    if path.exists() or ',' not in str(source):
        raise PublishError(f'--face-framing {path}: {"a file" if path.exists() else "no such folder"}; expected a '
                           f'folder of training images or EYE_Y,EYE_DIST')
    return parse_framing(str(source))


# ----------------------------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', metavar='CHECKPOINT',
                        help='timm train.py checkpoint (.pth.tar), plain state dict (.pth) or .safetensors')
    parser.add_argument('--repo-id', default=None, metavar='ORG/NAME', help='Hugging Face Hub model repo (required '
                        'unless --weights-only)')
    parser.add_argument('--dataset', default=None, choices=list(DATASETS), help='what the model was trained on '
                        '(required unless --weights-only; with it, recorded in the file, else read from the '
                        'export manifest of train.py\'s data folder)')
    parser.add_argument('--weights-only', default=None, metavar='OUT.safetensors',
                        help='only write the weights as one float16 safetensors file carrying the architecture and '
                             'training settings in its metadata (the format the package installs), then stop')
    parser.add_argument('--float32', action='store_true', help='with --weights-only: keep float32 weights')
    parser.add_argument('--model', dest='model_name', metavar='ARCH', default=None,
                        help='architecture, when the checkpoint does not record it (must agree if it does)')
    parser.add_argument('--eval-json', default=None, metavar='FILE',
                        help='evaluation results for the model card (a confusion_matrix.png beside it is added)')
    parser.add_argument('--face-framing', default=None, metavar='TRAIN_DIR | EYE_Y,EYE_DIST',
                        help='where the training faces have their eyes, recorded so that predict --detector dlib '
                             'aligns faces as trained: measured on a folder of training images (dlib, the landmarks '
                             'extra), or given as two fractions of the crop side')
    parser.add_argument('--private', action='store_true', help='create the repo as private')
    parser.add_argument('--revision', default=None, metavar='REV', help='branch to upload to (created if needed)')
    parser.add_argument('--dry-run', dest='dry_run_dir', default=None, metavar='OUTDIR',
                        help='write exactly what would be uploaded into OUTDIR (new or empty) and upload nothing')
    ema = parser.add_mutually_exclusive_group()
    ema.add_argument('--ema', dest='use_ema', action='store_const', const=True, default=None,
                     help='publish the EMA weights (error if the checkpoint has none)')
    ema.add_argument('--no-ema', dest='use_ema', action='store_const', const=False,
                     help='publish the raw weights (default: EMA when present)')
    add_overwrite_argument(parser, 'the --weights-only file or an earlier --dry-run release folder')


def _framing_of_args(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    if args.face_framing is None:
        return None
    framing = resolve_face_framing(args.face_framing)
    how = (f"measured on {framing['faces']:,} faces of {framing['images']:,} images in {args.face_framing}"
           if 'faces' in framing else 'as given')
    print(f"face framing: eye_y={framing['eye_y']:.3f} eye_dist={framing['eye_dist']:.3f} ({how})")
    return framing


def run(args: argparse.Namespace) -> int:
    if args.weights_only:
        done = save_weights(args.checkpoint, args.weights_only, model_name=args.model_name, use_ema=args.use_ema,
                            half=not args.float32, overwrite=args.overwrite, dataset=args.dataset,
                            face_framing=_framing_of_args(args))
        weights = 'EMA' if done['weights'] == 'state_dict_ema' else 'raw'
        facts = f", trained on {done['dataset']}" if done['dataset'] else ', dataset unknown (give --dataset)'
        print(f"wrote {done['file']} ({done['arch']}, {done['num_classes']} classes, {weights} weights, "
              f"{done['dtype']}, {done['bytes'] / 2**20:.1f} MiB{facts}; {len(done['notes'])} cfg note(s) in "
              f"its metadata)")
        return 0
    missing = [f'--{k.replace("_", "-")}' for k in ('repo_id', 'dataset') if not getattr(args, k)]
    if missing:
        raise PublishError(f'{" and ".join(missing)} required (or --weights-only OUT.safetensors)')
    framing = _framing_of_args(args)
    summary = publish(args.checkpoint, args.repo_id, args.dataset, model_name=args.model_name,
                      eval_json=args.eval_json, private=args.private, revision=args.revision,
                      dry_run_dir=args.dry_run_dir, use_ema=args.use_ema, face_framing=framing,
                      overwrite=args.overwrite)
    weights = {'state_dict_ema': 'EMA', 'file': "the file's"}.get(summary['weights'], 'raw')
    what = f"{summary['arch']}, {summary['num_classes']} classes, {weights} weights"
    if summary['uploaded']:
        print(f"published {what} to {summary['url']}")
        print(f"load with: timm.create_model('hf-hub:{summary['repo_id']}', pretrained=True)")
    else:
        print(f"dry run: wrote {', '.join(summary['files'])} ({what}) to {summary['folder']}; nothing uploaded")
        print(f"load with: timm.create_model('local-dir:{summary['folder']}', pretrained=True)")
    return 0
