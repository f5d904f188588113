"""Reading weights files safely (train.py checkpoints, state dicts, safetensors, a config.json beside them) and
building the model they describe; writing float16 safetensors with their facts.
"""
import argparse
import pickle
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from ..utils import safe_json
from ..notes import check_temperature
from ..utils.outputs import atomic_path, printable
from .checks import (COMMON_MODEL_ARGS, CheckpointError, check_data_cfg, check_model_size, check_release_config,
                     checked_model_args, checkpoint_cfg, msanet_archs)


DEFAULT_MODEL = 'msanet_r18'  # its default tag is the packaged FER2013 release (offline, no download)
WEIGHT_KEYS = ('state_dict', 'model')  # where a training checkpoint keeps the (non-EMA) weights
EMA_KEY = 'state_dict_ema'

# ---------------------------------------------------------------------------------------------- reading
class Checkpoint:
    """A checkpoint's weights and what it records about its training."""

    def __init__(self, state_dict, args: Dict[str, Any], arch: Optional[str], weights: str, has_ema: bool,
                 extra: Dict[str, Any], source: str = ''):
        self.state_dict = state_dict
        self.source = source  # the file it was read from, for messages
        self.args = args
        self.arch = arch
        self.weights = weights  # 'state_dict', 'state_dict_ema', 'model' or 'file'
        self.has_ema = has_ema
        self.extra = extra  # epoch, metric

    @property
    def num_classes(self) -> Optional[int]:
        """The class count the checkpoint records (train.py's args), else its classifier's output rows."""
        if self.args.get('num_classes'):
            return self.args['num_classes']
        head = self.state_dict.get('head.fc.weight', self.state_dict.get('fc.weight'))
        return int(head.shape[0]) if head is not None else None


_NOT_CHECKPOINTS = ((b'\x89PNG', 'a PNG image'), (b'\xff\xd8\xff', 'a JPEG image'), (b'GIF8', 'a GIF image'),
                    (b'{', 'JSON text'), (b'%PDF', 'a PDF'))


def _not_a_checkpoint(path: Path) -> Optional[str]:
    """What a file is when it is plainly not a torch checkpoint (a zip archive, or a pickle starting with its
    protocol byte), else None."""
    with open(path, 'rb') as f:
        head = f.read(8)
    if head.startswith(b'PK\x03\x04') or (head[:1] == b'\x80' and head[1:2] in (b'\x02', b'\x03', b'\x04', b'\x05')):
        return None
    for magic, what in _NOT_CHECKPOINTS:
        if head.startswith(magic):
            return what
    if not head:
        return 'an empty file'
    return 'text' if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else 'another kind of file'


MAX_UNPACKED_BYTES = 2 * 2**30  # a 40 M-parameter model with its EMA and optimizer state is under 1 GiB


def _check_unpacked_size(path: Path) -> None:
    """Refuse a zip-format torch file whose storages would unpack to more than MAX_UNPACKED_BYTES, or to more
    than twice its size on disk (torch.save stores them uncompressed: a deflated 3 GiB storage in a 3 MB file is
    a bomb), from the zip's central directory, before a byte of it is unpacked."""
    import zipfile
    try:
        if not zipfile.is_zipfile(path):
            return  # the legacy (pre-1.6) format: read by torch.load as it is
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f'cannot read {path} as a PyTorch checkpoint: {type(e).__name__}: {e}') from None
    on_disk = path.stat().st_size
    if unpacked > MAX_UNPACKED_BYTES or unpacked > 2 * on_disk + 2**24:
        raise CheckpointError(f'{path} would unpack to {unpacked:,} bytes from {on_disk:,} on disk (at most '
                              f'{MAX_UNPACKED_BYTES:,}, and about its own size: torch.save does not compress): '
                              f'not loaded')


def _torch_load_safely(path: Path):
    import torch
    what = _not_a_checkpoint(path)
    if what is not None:
        raise CheckpointError(f'{path} is not a checkpoint or safetensors file (it is {what}); expected a train.py '
                              f'checkpoint (.pth.tar), a state dict (.pth) or weights (.safetensors)')
    _check_unpacked_size(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((ln.strip() for ln in str(e).splitlines() if 'Unsupported' in ln or 'global' in ln.lower()),
                      str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise CheckpointError(
            f'refused to load {path}: it contains pickled objects other than tensors and plain data '
            f'({detail}). Unpickling them could run arbitrary code, so timm-msanet only reads checkpoints '
            f'with torch.load(weights_only=True) and ran none of it. If the file comes from a source you '
            f'trust, load it yourself and save just its state dict (torch.save(sd, "weights.pth") or '
            f'safetensors), then publish that file.') from None
    except Exception as e:  # corrupt zip, truncated file, not a torch file at all
        raise CheckpointError(f'cannot read {path} as a PyTorch checkpoint: {type(e).__name__}: {e}') from None


MAX_ARG_DEPTH = 8  # train.py settings are flat values, lists of numbers, or a dict of such (model_kwargs)


def nesting_depth(value: Any, limit: int) -> int:
    """How deep lists, tuples and dicts nest in `value` (0 for a plain value), counted without recursion and
    no further than limit + 1: a 100,000-deep list from a crafted pickle costs no more than a flat one."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, dict)):
            if depth + 1 > limit:
                return limit + 1
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _is_state_dict(obj) -> bool:
    import torch
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_module(sd: Mapping[str, Any]) -> Dict[str, Any]:
    """Keys without DDP (`module.`) and torch.compile (`_orig_mod.`) wrapper prefixes, as timm strips them."""
    from timm.models import clean_state_dict
    return clean_state_dict(dict(sd))


# What a weights file may say about its training (safetensors metadata written by `timm-msanet publish
# --weights-only`): the architecture and train.py settings that describe it. Never model kwargs or weight
# sources: a file must not choose what the loader builds beyond the architecture, or where it connects.
RECORD_ARG_KEYS = ('model', 'pretrained', 'initial_checkpoint', 'num_classes', 'in_chans', 'img_size', 'input_size',
                   'mean', 'std', 'epochs', 'batch_size', 'grad_accum_steps', 'opt', 'lr', 'weight_decay',
                   'layer_decay', 'sched', 'warmup_epochs', 'warmup_lr', 'min_lr', 'smoothing', 'drop',
                   'drop_path', 'aa', 'reprob', 'mixup', 'cutmix', 'hflip', 'scale', 'ratio', 'color_jitter',
                   'class_map', 'model_ema', 'model_ema_decay', 'amp', 'amp_dtype', 'seed', 'train_split',
                   'val_split', 'channels_last')


def _training_record(meta: Mapping[str, str], path: Path):
    """(args, arch) from a safetensors file's metadata; ({}, None) when it records nothing."""
    args: Dict[str, Any] = {}
    if meta.get('args'):
        try:
            raw = safe_json.loads(meta['args'])
        except ValueError:
            raise CheckpointError(f'{path}: its metadata "args" is not JSON; re-save the weights with '
                                  f'`timm-msanet publish CHECKPOINT --weights-only OUT.safetensors`') from None
        if not isinstance(raw, dict):
            raise CheckpointError(f'{path}: its metadata "args" must be a JSON object, got {type(raw).__name__}')
        args = {k: raw[k] for k in RECORD_ARG_KEYS if k in raw}
    arch = meta.get('arch') if isinstance(meta.get('arch'), str) else None
    return args, arch


def _recorded_facts(meta: Mapping[str, str], path: Path) -> Dict[str, Any]:
    """The dataset and cfg notes (grey input, face framing) a weights file carries in its metadata, checked as a
    config's notes are, so the file alone is preprocessed as its release is."""
    facts: Dict[str, Any] = {}
    if meta.get('dataset') is not None:
        if not re.fullmatch(r'[a-z0-9]{2,32}', str(meta['dataset'])):
            raise CheckpointError(f'{path}: metadata "dataset" {str(meta["dataset"])[:40]!r} is not a dataset name')
        facts['dataset'] = meta['dataset']
    if meta.get('notes') is not None:
        try:
            notes = safe_json.loads(meta['notes'])
        except ValueError:
            raise CheckpointError(f'{path}: its metadata "notes" is not JSON') from None
        check_data_cfg({'notes': notes}, f'{path} (metadata)')
        facts['notes'] = tuple([notes] if isinstance(notes, str) else notes)
    if isinstance(meta.get('face_framing_source'), str):
        facts['face_framing_source'] = printable(meta['face_framing_source'][:200])
    return facts


def training_record(ckpt: 'Checkpoint') -> Dict[str, str]:
    """safetensors metadata (str -> str) holding a checkpoint's architecture and training settings."""
    import json
    args = {k: ckpt.args[k] for k in RECORD_ARG_KEYS if ckpt.args.get(k) not in (None, '', {})}
    meta = {'format': 'pt', 'args': json.dumps(args, sort_keys=True, default=str)}
    arch = ckpt.args.get('model') or ckpt.arch
    if arch:
        meta['arch'] = str(arch)
    meta.update({f'checkpoint_{k}': str(v) for k, v in ckpt.extra.items() if k in ('epoch', 'metric')})
    if 'temperature' in ckpt.extra:
        meta['temperature'] = f"{ckpt.extra['temperature']:.6f}"
        meta['temperature_fit_split'] = str(ckpt.extra.get('temperature_fit_split', 'validation'))
    meta['checkpoint_weights'] = ckpt.extra.get('weights_origin') or ckpt.weights
    if ckpt.extra.get('dataset'):
        meta['dataset'] = str(ckpt.extra['dataset'])
    if ckpt.extra.get('notes'):  # grey input and face framing: they travel with the weights (see read_checkpoint)
        meta['notes'] = json.dumps(list(ckpt.extra['notes']))
    if ckpt.extra.get('face_framing_source'):
        meta['face_framing_source'] = str(ckpt.extra['face_framing_source'])[:200]
    return meta


def write_weights(state_dict: Mapping[str, Any], out_file: Union[str, Path], metadata: Mapping[str, str],
                  half: bool = True, inputs: Sequence[Union[str, Path]] = (), overwrite: bool = False) -> Path:
    """Write weights as one safetensors file (floating tensors as float16 unless `half=False`) with `metadata`,
    as timm_msanet.utils.outputs writes files: never over one of `inputs`, an existing file only with `overwrite`,
    through a temporary name in the same folder (a reader never sees a half-written file under the real name)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file
    tensors = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in state_dict.items()}
    with atomic_path(out_file, inputs, overwrite, 'weights') as tmp:
        try:
            save_file(tensors, str(tmp), metadata=dict(metadata))
        except SafetensorError as e:  # its I/O errors (a full disk) are not OSErrors: atomic_path's one line
            raise OSError(str(e).splitlines()[0] if str(e) else 'write failed') from None
    return Path(out_file)


def read_checkpoint(path: Union[str, Path], use_ema: Optional[bool] = None) -> Checkpoint:
    """Read a timm train.py checkpoint, a plain state dict (.pth) or a .safetensors file, safely."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist (or is not a file)')
    if path.suffix == '.safetensors':
        return _read_safetensors(path, use_ema)
    obj: Any = _torch_load_safely(path)
    if isinstance(obj, Mapping) and any(k in obj for k in WEIGHT_KEYS + (EMA_KEY,)) and not _is_state_dict(obj):
        return _read_train_checkpoint(obj, path, use_ema)
    if _is_state_dict(obj):
        if use_ema is True:
            raise CheckpointError(f'--ema asked for EMA weights but {path} is a plain state dict without any '
                               f'(drop --ema)')
        return Checkpoint(_strip_module(obj), {}, None, 'file', False, {}, str(path))
    what = type(obj).__name__ if not isinstance(obj, Mapping) else f'dict with keys {sorted(map(str, obj))[:12]}'
    raise CheckpointError(f'{path} is not a model checkpoint: expected a state dict of tensors or a timm train.py '
                       f'checkpoint (with "state_dict"), found a {what}')


def _read_safetensors(path: Path, use_ema: Optional[bool]) -> Checkpoint:
    """A .safetensors weights file and what its metadata records (training args, weights origin, temperature,
    dataset, notes)."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    try:
        sd = load_file(str(path), device='cpu')
        with safe_open(str(path), framework='pt') as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f'cannot read {path} as safetensors: {type(e).__name__}: {e}') from None
    if use_ema is True:
        raise CheckpointError(f'--ema asked for EMA weights but {path} is a plain weights file without any '
                              f'(drop --ema)')
    args, arch = _training_record(meta, path)
    extra: Dict[str, Any] = {}
    for key in ('epoch', 'metric'):  # what train.py recorded about the checkpoint the file came from
        try:
            extra[key] = (int if key == 'epoch' else float)(meta[f'checkpoint_{key}'])
        except (KeyError, ValueError):
            pass
    if meta.get('checkpoint_weights') in (EMA_KEY,) + WEIGHT_KEYS:  # which weights of the train.py checkpoint
        extra['weights_origin'] = meta['checkpoint_weights']
    if meta.get('temperature') is not None:  # written by `timm-msanet calibrate --save`
        try:
            extra['temperature'] = check_temperature(meta['temperature'], f'{path}: metadata "temperature"')
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        extra['temperature_fit_split'] = str(meta.get('temperature_fit_split') or 'validation')
    extra.update(_recorded_facts(meta, path))
    if use_ema is False and extra.get('weights_origin') == EMA_KEY:
        raise CheckpointError(f'{path} holds one set of weights, the EMA of its train.py checkpoint: there are '
                              f'no raw weights for --no-ema. Drop --no-ema, or give the train.py checkpoint '
                              f'(or a file from publish --weights-only --no-ema)')
    return Checkpoint(_strip_module(sd), args, arch, 'file', False, extra, str(path))


def _read_train_checkpoint(obj: Mapping[str, Any], path: Path, use_ema: Optional[bool]) -> Checkpoint:
    """A timm train.py checkpoint: its EMA or raw weights (`use_ema`), args, arch, epoch and metric."""
    raw_args = obj.get('args')
    if isinstance(raw_args, argparse.Namespace):
        args = dict(vars(raw_args))
    elif isinstance(raw_args, Mapping):
        args = dict(raw_args)
    else:
        args = {}
    for key, value in args.items():  # before anything prints, compares or serialises them (all recursive)
        if nesting_depth(value, MAX_ARG_DEPTH) > MAX_ARG_DEPTH:
            raise CheckpointError(f'{path}: its train.py args.{key} nests lists or dicts more than '
                                  f'{MAX_ARG_DEPTH} levels deep; no train.py setting does: not loaded')
    has_ema = _is_state_dict(obj.get(EMA_KEY))
    plain_key = next((k for k in WEIGHT_KEYS if _is_state_dict(obj.get(k))), None)
    if use_ema is True and not has_ema:
        raise CheckpointError(f'--ema asked for EMA weights but {path} has no "{EMA_KEY}" (train without '
                              f'--model-ema, or publish with --no-ema / without --ema)')
    if use_ema is False or not has_ema:
        if plain_key is None:
            raise CheckpointError(f'{path} is a training checkpoint without a usable "state_dict"; '
                                  f'keys: {sorted(map(str, obj))[:12]}' + (' (it has EMA weights: use --ema)'
                                                                           if has_ema else ''))
        key = plain_key
    else:
        key = EMA_KEY
    arch = obj.get('arch') if isinstance(obj.get('arch'), str) else None
    extra = {k: obj[k] for k in ('epoch', 'metric') if isinstance(obj.get(k), (int, float))}
    return Checkpoint(_strip_module(obj[key]), args, arch, key, has_ema, extra, str(path))


def describe_mismatch(model, sd: Mapping[str, Any]) -> str:
    """How a state dict differs from a model's, in a few words, or '' when it fits."""
    ref = model.state_dict()
    missing = [k for k in ref if k not in sd]
    unexpected = [k for k in sd if k not in ref]
    shapes = [f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(ref[k].shape)}'
              for k in ref if k in sd and tuple(sd[k].shape) != tuple(ref[k].shape)]
    parts = []
    if shapes:
        parts.append(f'{len(shapes)} shapes differ, e.g. {shapes[:3]}')
    if missing:
        parts.append(f'{len(missing)} model keys are missing from the checkpoint, e.g. {missing[:3]}')
    if unexpected:
        parts.append(f'{len(unexpected)} checkpoint keys are not in the model, e.g. {unexpected[:3]}')
    return '; '.join(parts)


def _guess_arch(sd, model_kwargs) -> str:
    import timm
    fits = []
    if any(k.startswith('branches.') for k in sd):
        fits = [name for name in msanet_archs() if not describe_mismatch(timm.create_model(name, **model_kwargs), sd)]
    if len(fits) != 1:
        raise CheckpointError(
            'the checkpoint does not record its architecture (no train.py args) and '
            + (f'it fits several ({fits})' if fits else 'its weights fit none of the registered msanet '
               f'architectures ({msanet_archs()})') + '; pass --model ARCH')
    return fits[0]


# The data config of a weights file's own config.json (timm's `save_for_hf` layout: DIR/model.safetensors
# beside DIR/config.json); the caller's pretrained_cfg_overlay still wins.
CONFIG_DATA_KEYS = ('input_size', 'test_input_size', 'min_input_size', 'mean', 'std', 'crop_pct', 'test_crop_pct',
                    'crop_mode', 'interpolation', 'pool_size', 'notes')  # notes: grey-input handling
WEIGHTS_BESIDE_CONFIG = 'model.safetensors'


def config_beside(path: Union[str, Path]) -> Optional[Tuple[Path, Dict[str, Any], Dict[str, Any]]]:
    """(config path, raw config, checked model_args) of the config.json that describes a weights file, or None.

    Only `model.safetensors` is paired with the `config.json` in its folder: that is the layout timm's
    `save_for_hf` (and so the demo, `timm-msanet publish --dry-run` and every Hub release) writes, whereas any
    other file name may share its folder with an unrelated config. The config is checked like a release's
    (`check_release_config`) before anything in it is used.
    """
    path = Path(path)
    cfg_path = path.with_name('config.json')
    if path.name != WEIGHTS_BESIDE_CONFIG or not cfg_path.is_file():
        return None
    try:
        config = safe_json.read(cfg_path)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f'{cfg_path} (the config beside {path.name}) is not valid JSON ({e}); expected the '
                              f'config.json timm\'s save_for_hf writes, or remove it to load the bare weights') from None
    model_args = check_release_config(config, str(cfg_path))
    return cfg_path, config, model_args


def with_config(ckpt: 'Checkpoint', cfg_path: Path, config: Mapping[str, Any], model_args: Mapping[str, Any]):
    """The checkpoint's record with what its config.json says: architecture, class count, constructor args."""
    args = dict(ckpt.args)
    arch = config['architecture'].split('.')[0]
    recorded = args.get('model') or ckpt.arch
    if isinstance(recorded, str) and recorded.split('.')[0] != arch and ':' not in recorded:
        raise CheckpointError(f'{cfg_path} says {arch} but the weights beside it record {recorded}: the two files '
                              f'do not belong together')
    args['model'] = arch
    if config.get('num_classes') is not None:
        args['num_classes'] = config['num_classes']
    args['model_kwargs'] = dict(args.get('model_kwargs') or {}, **model_args)
    return Checkpoint(ckpt.state_dict, args, arch, ckpt.weights, ckpt.has_ema, ckpt.extra, ckpt.source)

def _class_count(ckpt: Checkpoint, num_classes: Optional[int]) -> int:
    """The checkpoint's class count, which a given `num_classes` must agree with."""
    recorded = ckpt.num_classes
    if num_classes is not None and recorded is not None and num_classes != recorded:
        raise CheckpointError(f'wrong class count: the checkpoint has {recorded} classes, not {num_classes}')
    if (recorded or num_classes) is None:
        raise CheckpointError('cannot tell the number of classes: the checkpoint has no args.num_classes and no '
                              'classifier weight; pass num_classes (--num-classes)')
    return recorded or num_classes


def model_from_checkpoint(ckpt: Checkpoint, model_name: Optional[str] = None, num_classes: Optional[int] = None,
                          caller_kwargs: Optional[Mapping[str, Any]] = None):
    """Create the timm model a checkpoint describes and load its weights strictly. Returns (model, arch).

    `caller_kwargs`: the caller's own constructor arguments (e.g. drop_rate); they override the file's, and the
    weights must still fit."""
    import timm
    sd = ckpt.state_dict
    where = ckpt.source or 'the checkpoint'
    for key in ('num_classes', 'in_chans'):
        if ckpt.args.get(key) is not None and not COMMON_MODEL_ARGS[key][0](ckpt.args[key]):
            raise CheckpointError(f'{where}: its args.{key} {ckpt.args[key]!r} is not valid; expected '
                                  f'{COMMON_MODEL_ARGS[key][1]}')
    num_classes = _class_count(ckpt, num_classes)
    model_kwargs: Dict[str, Any] = dict(num_classes=num_classes)
    in_chans = ckpt.args.get('in_chans') or (int(sd['conv1.weight'].shape[1]) if 'conv1.weight' in sd else None)
    if in_chans and in_chans != 3:
        model_kwargs['in_chans'] = in_chans

    def base_name(name):  # 'msanet_r18.tv_in1k' -> 'msanet_r18'; hub / folder sources say nothing here
        return None if not isinstance(name, str) or ':' in name else name.split('.')[0]

    # train.py without args writes the class name (`msanet`) as arch: only registered names count
    recorded = next((base_name(a) for a in (ckpt.args.get('model'), ckpt.arch) if base_name(a) and
                     timm.is_model(base_name(a))), None)
    file_args = checked_model_args(base_name(model_name) or recorded, ckpt.args.get('model_kwargs'),
                                   f'{ckpt.source or "the checkpoint"} (train.py args.model_kwargs)')
    model_kwargs.update({k: v for k, v in file_args.items() if k not in model_kwargs})
    model_kwargs.update(caller_kwargs or {})
    if ckpt.args.get('model') and recorded is None and model_name is None:
        raise CheckpointError(f'the checkpoint was trained as {ckpt.args["model"]!r}, which is not a registered '
                              f'model; pass --model ARCH')
    if model_name is not None:
        model_name = base_name(model_name) or model_name
        if not timm.is_model(model_name):
            raise CheckpointError(f'--model {model_name!r} is not a registered model (msanet: {msanet_archs()})')
        if recorded is not None and recorded != model_name:
            raise CheckpointError(f'architecture mismatch: --model {model_name} but the checkpoint was trained as '
                                  f'{recorded}; drop --model (the checkpoint says which) or pick the right file')
    for candidate in ([model_name or recorded] if (model_name or recorded) else msanet_archs()):
        check_model_size(candidate, model_kwargs, where)
    arch = model_name or recorded or _guess_arch(sd, model_kwargs)

    model = timm.create_model(arch, pretrained_cfg=checkpoint_cfg(arch, ckpt.args, where), **model_kwargs)
    problems = describe_mismatch(model, sd)
    if problems:
        raise CheckpointError(
            f'architecture mismatch: the weights do not fit {arch} with {model_kwargs}: {problems}. '
            f'Pass the architecture it was trained as with --model (msanet: {msanet_archs()}).')
    own = model.state_dict()
    ints = [k for k, v in sd.items() if own[k].is_floating_point() and not v.is_floating_point()]
    if ints:  # load_state_dict would cast int8 codes to float silently: scores from quantised codes are garbage
        raise CheckpointError(f'{where}: {ints[0]} is {sd[ints[0]].dtype}, not floating point ({len(ints)} such '
                              f'tensors): quantised or corrupt weights are not loaded')
    model.load_state_dict(sd, strict=True)
    return model.eval(), arch
