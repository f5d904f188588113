"""Build a model from a name, a checkpoint file or a Hub repo, for the tools (eval, predict, export, publish).

Checkpoints are read with `torch.load(weights_only=True)` only: timm train.py checkpoints
(`model_best.pth.tar`, with `state_dict`, optional `state_dict_ema`, `arch` and `args`), plain state dicts
and `.safetensors` files. train.py pickles its `args` as an `argparse.Namespace`; that one class is
allow-listed (it holds only data). Anything else that needs unpickling is refused and nothing in it runs.

EMA: `use_ema=None` (default) takes `state_dict_ema` when the checkpoint has one (train.py ranks its
checkpoints by the EMA model when EMA is on), `True` insists on it, `False` takes `state_dict`.

Architecture: train.py's `args.model` (copied to `arch`), else the one msanet architecture whose keys
and shapes fit the weights; an explicit `model_name` must agree with what the checkpoint records.
num_classes from `args.num_classes`, else the classifier's shape; in_chans from `args.in_chans`, else
`conv1.weight`. Of train.py's `args.model_kwargs` only the architecture's own constructor arguments are
used, each value checked (`allowed_model_args`); keys that name a weight source or loader option
(`STEERING_KEYS`: pretrained, pretrained_cfg_overlay, url, hf_hub_id, checkpoint_path, ...) are refused,
so a file can never decide where the loader connects; other keys are ignored with a warning.

Releases (`hf-hub:` / `local-dir:`): their config.json is read and checked (`check_release_config`) before
timm acts on it: a registered architecture, allow-listed model_args, no weight source in pretrained_cfg,
unique label names one per class, input sizes of MIN_SIDE..MAX_SIDE px, mean/std per channel. When the Hub
does not answer a HUB_PROBE_TIMEOUT_S connection test, loading runs in huggingface_hub's offline mode:
cached files load, missing ones fail at once instead of after half a minute of retries.

Class names: the model's `pretrained_cfg['label_names']`. A checkpoint of a 7- or 8-class model
trained on a `timm-msanet export` tree gets the package's canonical names (the sorted folder order
train.py used); other class counts need `label_names` given explicitly.
"""
import argparse
import contextlib
import os
import pickle
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import safe_json
from .errors import ToolError
from .labels import labels_for
from .notes import check_temperature, recorded_framing, set_temperature, temperature_of
from .options import positive_int
from .outputs import atomic_path, printable
from .releases import pool_size_for

DEFAULT_MODEL = 'msanet_r18'  # its default tag is the packaged FER2013 release (offline, no download)
WEIGHT_KEYS = ('state_dict', 'model')  # where a training checkpoint keeps the (non-EMA) weights
EMA_KEY = 'state_dict_ema'


class CheckpointError(ToolError):
    """A model source that cannot be used, with what was expected and what to do in the message."""


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


def _torch_load_safely(path: Path):
    import torch
    what = _not_a_checkpoint(path)
    if what is not None:
        raise CheckpointError(f'{path} is not a checkpoint or safetensors file (it is {what}); expected a train.py '
                              f'checkpoint (.pth.tar), a state dict (.pth) or weights (.safetensors)')
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
    as timm_msanet.outputs writes files: never over one of `inputs`, an existing file only with `overwrite`,
    through a temporary name in the same folder (a reader never sees a half-written file under the real name)."""
    from safetensors.torch import save_file
    tensors = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in state_dict.items()}
    with atomic_path(out_file, inputs, overwrite, 'weights') as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata))
    return Path(out_file)


def read_checkpoint(path: Union[str, Path], use_ema: Optional[bool] = None) -> Checkpoint:
    """Read a timm train.py checkpoint, a plain state dict (.pth) or a .safetensors file, safely."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist (or is not a file)')
    if path.suffix == '.safetensors':
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
        extra = {}
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
        return Checkpoint(_strip_module(sd), args, arch, 'file', False, extra, str(path))
    obj: Any = _torch_load_safely(path)

    if isinstance(obj, Mapping) and any(k in obj for k in WEIGHT_KEYS + (EMA_KEY,)) and not _is_state_dict(obj):
        raw_args = obj.get('args')
        if isinstance(raw_args, argparse.Namespace):
            args = dict(vars(raw_args))
        elif isinstance(raw_args, Mapping):
            args = dict(raw_args)
        else:
            args = {}
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

    if _is_state_dict(obj):
        if use_ema is True:
            raise CheckpointError(f'--ema asked for EMA weights but {path} is a plain state dict without any '
                               f'(drop --ema)')
        return Checkpoint(_strip_module(obj), {}, None, 'file', False, {}, str(path))
    what = type(obj).__name__ if not isinstance(obj, Mapping) else f'dict with keys {sorted(map(str, obj))[:12]}'
    raise CheckpointError(f'{path} is not a model checkpoint: expected a state dict of tensors or a timm train.py '
                       f'checkpoint (with "state_dict"), found a {what}')


def msanet_archs() -> List[str]:
    import timm
    import timm_msanet  # noqa: F401  (registration when the autoload hook is off)
    return timm.list_models('msanet_*')


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


# ------------------------------------------------------------------- what a file may say about its model
# A checkpoint's `args.model_kwargs` and a release's config.json `model_args` may only describe the
# architecture: its own constructor arguments, each with a checked value. Weight sources and loader options
# are refused outright (a file that names them is trying to steer the loader or the network), anything
# else unknown is ignored in a checkpoint (with a warning) and refused in a release config (timm reads that
# config itself, so it cannot be partly ignored). Sizes outside MIN_SIDE..MAX_SIDE px are refused: FER
# models run at 48-448 px, and a config asking for 100000 px would make predict allocate without bound.
MIN_SIDE, MAX_SIDE = 16, 2048
MAX_CHANS = 16
# A file's model arguments may not ask for more parameters than this (10x msanet_r18's 3.73 M; counted on the
# meta device before anything is allocated): 8 branches of 8192 channels would be 1.4 G parameters, 6 GB.
MAX_PARAMS = 40_000_000
# The data-config fields a file may set besides the sizes, and their checks; crop_pct sets the resize before the
# crop (input / crop_pct), so its bound also bounds the effective resize to 2 * MAX_SIDE.
INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic', 'box', 'hamming', 'lanczos', 'random')
CROP_MODES = ('center', 'squash', 'border')
MAX_NOTE_CHARS = 1000
STEERING_KEYS = ('pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay', 'pretrained_strict', 'pretrained_model_args',
                 'url', 'file', 'hf_hub_id', 'hf_hub_filename', 'checkpoint_path', 'cache_dir', 'state_dict',
                 'source', 'features_only', 'scriptable', 'exportable', 'no_jit', 'device', 'dtype')


def _is_int(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_number(v, lo: float, hi: float) -> bool:
    import math
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi


def _int_seq(lo: int, hi: int, min_len: int = 1, max_len: int = 8, odd: bool = False):
    def check(v) -> bool:
        return (isinstance(v, (list, tuple)) and min_len <= len(v) <= max_len
                and all(_is_int(x, lo, hi) and (not odd or x % 2 == 1) for x in v))
    return check


# key -> (check, what is expected); the arguments every timm classifier takes
COMMON_MODEL_ARGS = {
    'num_classes': (lambda v: _is_int(v, 1, 100_000), 'an int from 1 to 100000'),
    'in_chans': (lambda v: _is_int(v, 1, MAX_CHANS), f'an int from 1 to {MAX_CHANS}'),
    'global_pool': (lambda v: v in ('', 'avg', 'max', 'avgmax', 'catavgmax', 'fast'),
                    "one of '', avg, max, avgmax, catavgmax, fast"),
    'drop_rate': (lambda v: _is_number(v, 0, 1), 'a number from 0 to 1'),
    'drop_path_rate': (lambda v: _is_number(v, 0, 1), 'a number from 0 to 1'),
}
# MSANet's own constructor arguments (act_layer / norm_layer are classes: never from a file)
MSANET_MODEL_ARGS = {
    'branch_kernels': (_int_seq(1, 15, odd=True), 'a list of 1-8 odd ints from 1 to 15'),
    'branch_chs': (_int_seq(1, 8192), 'a list of 1-8 ints from 1 to 8192'),
    'branch_strides': (_int_seq(1, 4), 'a list of 1-8 ints from 1 to 4'),
    'scale': (lambda v: _is_int(v, 1, 64), 'an int from 1 to 64'),
    'bottle_ratio': (lambda v: _is_number(v, 0.01, 8), 'a number from 0.01 to 8'),
    'hierarchy': (lambda v: v in ('pre', 'post'), "'pre' or 'post'"),
    'attn_layer': (lambda v: v is None or v in ('cbam', 'lcbam', 'se', 'ese', 'eca', 'ceca', 'ge', 'gc', 'gca', 'sk',
                                                 'splat', 'coord', 'ca'),
                   'null or the name of a timm attention layer (cbam, se, eca, ...)'),
    'pre_chs': (_int_seq(1, 4096, 2, 2), 'two ints from 1 to 4096'),
    'pre_depths': (_int_seq(1, 16, 2, 2), 'two ints from 1 to 16'),
    'zero_init_last': (lambda v: isinstance(v, bool), 'true or false'),
}


def allowed_model_args(arch: Optional[str]) -> Dict[str, Any]:
    """The constructor arguments a file may set for `arch`, with their checks."""
    allowed = dict(COMMON_MODEL_ARGS)
    if arch is None or arch.split('.')[0].startswith('msanet'):
        allowed.update(MSANET_MODEL_ARGS)
    return allowed


def checked_model_args(arch: Optional[str], model_args: Any, where: str, unknown: str = 'ignore') -> Dict[str, Any]:
    """The architecture arguments of `model_args` (from `where`, a file) that may be used, values checked.

    Weight-source and loader keys raise CheckpointError; so does a value outside its range. Other keys
    are ignored with a warning (`unknown='ignore'`) or raise (`unknown='refuse'`).
    """
    import warnings
    if model_args is None:
        return {}
    if not isinstance(model_args, Mapping):
        raise CheckpointError(f'{where}: model arguments must be a mapping of name to value, got '
                              f'{type(model_args).__name__}')
    allowed = allowed_model_args(arch)
    steering = sorted(str(k) for k in model_args if k in STEERING_KEYS)
    if steering:
        raise CheckpointError(
            f'{where} sets {", ".join(steering)} among its model arguments: a weights file or release config may '
            f'only describe the architecture, never where weights come from or how the loader works. Refused '
            f'(nothing was downloaded). Allowed: {", ".join(allowed)}.')
    out: Dict[str, Any] = {}
    ignored = []
    for key, value in model_args.items():
        if key not in allowed:
            ignored.append(str(key))
            continue
        check, expected = allowed[key]
        if not check(value):
            raise CheckpointError(f'{where}: model argument {key}={value!r} is not valid; expected {expected}')
        out[key] = tuple(value) if isinstance(value, list) else value
    if ignored:
        msg = (f'{where} sets model arguments that are not architecture arguments of {arch or "an msanet model"}: '
               f'{", ".join(sorted(ignored))}; allowed: {", ".join(allowed)}')
        if unknown == 'refuse':
            raise CheckpointError(msg + '. Refused: remove them from the config.')
        warnings.warn(msg + '. Ignored.', UserWarning, stacklevel=3)
    return out


def check_input_size(value: Any, where: str, key: str = 'input_size') -> Tuple[int, int, int]:
    """A (C, H, W) data-config size, or CheckpointError naming what was expected."""
    ok = (isinstance(value, (list, tuple)) and len(value) == 3 and _is_int(value[0], 1, MAX_CHANS)
          and all(_is_int(v, MIN_SIDE, MAX_SIDE) for v in value[1:]))
    if not ok:
        raise CheckpointError(f'{where}: {key} {value!r} is not a sane input size; expected [channels, height, '
                              f'width] with 1-{MAX_CHANS} channels and sides of {MIN_SIDE}-{MAX_SIDE} px')
    return int(value[0]), int(value[1]), int(value[2])


def check_model_size(arch: str, model_kwargs: Mapping[str, Any], where: str) -> int:
    """The parameter count of `arch` built with `model_kwargs`, counted on the meta device (nothing allocated);
    CheckpointError above MAX_PARAMS."""
    import timm
    import torch
    with torch.device('meta'):
        model = timm.create_model(arch, pretrained=False, **model_kwargs)
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMS:
        raise CheckpointError(f'{where}: its model arguments {dict(model_kwargs)} make {arch} a model of '
                              f'{count / 1e6:,.0f} M parameters, more than the {MAX_PARAMS / 1e6:.0f} M allowed for an '
                              f'expression model (msanet_r18 has 3.7 M); refused before building it')
    return count


def check_data_cfg(pcfg: Mapping[str, Any], where: str) -> None:
    """The data-config fields of a file's pretrained_cfg other than sizes, mean and std: crop_pct in (0.5, 1],
    a known interpolation and crop mode, notes that are short strings, and a recorded face framing within
    publish's bounds. CheckpointError naming the field otherwise."""
    for key in ('crop_pct', 'test_crop_pct'):
        v = pcfg.get(key)
        if v is not None and not (_is_number(v, 0.5, 1.0) and v > 0.5):
            raise CheckpointError(f'{where}: {key} {v!r} is not valid; expected a number in (0.5, 1] (1.0: the whole '
                                  f'face, as FER models are evaluated)')
    if pcfg.get('interpolation') is not None and pcfg['interpolation'] not in INTERPOLATIONS:
        raise CheckpointError(f"{where}: interpolation {pcfg['interpolation']!r} is not valid; expected one of "
                              f"{', '.join(INTERPOLATIONS)}")
    if pcfg.get('crop_mode') is not None and pcfg['crop_mode'] not in CROP_MODES:
        raise CheckpointError(f"{where}: crop_mode {pcfg['crop_mode']!r} is not valid; expected one of "
                              f"{', '.join(CROP_MODES)}")
    notes = pcfg.get('notes')
    if notes is not None:
        if isinstance(notes, str):
            notes = (notes,)
        if not (isinstance(notes, (list, tuple)) and len(notes) <= 32
                and all(isinstance(n, str) and len(n) <= MAX_NOTE_CHARS for n in notes)):
            raise CheckpointError(f'{where}: notes must be a list of at most 32 strings of up to {MAX_NOTE_CHARS} '
                                  f'characters; got {type(pcfg.get("notes")).__name__}')
        try:
            recorded_framing({'notes': notes})
        except ToolError as e:
            raise CheckpointError(f'{where}: {e}') from None
    pool = pcfg.get('pool_size')
    if pool is not None and not _int_seq(1, MAX_SIDE, 2, 2)(pool):
        raise CheckpointError(f'{where}: pool_size {pool!r} is not valid; expected two ints from 1 to {MAX_SIDE}')


def check_label_names(names: Any, num_classes: Optional[int], where: str) -> Tuple[str, ...]:
    """Class names that are one non-empty, unique string per class, or CheckpointError."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n.strip() for n in names):
        raise CheckpointError(f'{where}: label_names must be a list of non-empty strings, one per class in output '
                              f'order; got {names!r}'[:400])
    bad = [n for n in names if len(n) > 64 or re.search(r'[\x00-\x1f\x7f-\x9f/\\,]', n)]
    if bad:  # names go to terminals, CSV headers, ONNX metadata and --target: plain words only
        raise CheckpointError(f'{where}: label name {bad[0]!r} is not a plain name; expected at most 64 characters '
                              f'without control characters, path separators or commas'[:400])
    dups = sorted({n for n in names if list(names).count(n) > 1})
    if dups:
        raise CheckpointError(f'{where}: label_names must be unique, one name per class; {", ".join(dups)} '
                              f'appear(s) more than once in {list(names)}')
    if num_classes is not None and len(names) != num_classes:
        raise CheckpointError(f'{where}: {len(names)} label_names for a {num_classes}-class model; expected one name '
                              f'per class in output order')
    return tuple(names)


def check_release_config(config: Any, where: str) -> Dict[str, Any]:
    """Validate a release's raw config.json (as timm's `save_for_hf` writes it) before timm acts on it.

    Returns the checked model arguments. Refuses: no registered `architecture`; steering or unknown
    `model_args`; weight-source keys in `pretrained_cfg`; label names that are not unique or not one per
    class; an input size outside MIN_SIDE..MAX_SIDE; mean/std that do not fit the channels.
    """
    import timm
    if not isinstance(config, Mapping):
        raise CheckpointError(f'{where} must hold a JSON object, got {type(config).__name__}')
    legacy = 'pretrained_cfg' not in config  # timm's older single-dict layout
    pcfg = config if legacy else config.get('pretrained_cfg')
    if not isinstance(pcfg, Mapping):
        raise CheckpointError(f'{where}: "pretrained_cfg" must be a JSON object')
    arch = config.get('architecture')
    if not isinstance(arch, str) or not arch:
        raise CheckpointError(f'{where} has no "architecture": expected the timm model name the weights are for '
                              f'(e.g. "msanet_r18"), as `timm-msanet publish` writes it')
    if not timm.is_model(arch):
        raise CheckpointError(f'{where}: architecture {arch!r} is not a registered model (msanet: {msanet_archs()}); '
                              f'install or upgrade the package that registers it')
    model_args = checked_model_args(arch, config.get('model_args'), where, unknown='refuse')
    sources = sorted(k for k in pcfg if k in STEERING_KEYS)
    if sources:
        raise CheckpointError(f'{where}: pretrained_cfg sets {", ".join(sources)}: a release config must not say '
                              f'where weights come from (they are the model.safetensors beside it). Refused.')
    check_data_cfg(pcfg, where)
    num_classes = next((v for v in (config.get('num_classes'), pcfg.get('num_classes'), model_args.get('num_classes'))
                        if v is not None), None)
    if num_classes is not None and not COMMON_MODEL_ARGS['num_classes'][0](num_classes):
        raise CheckpointError(f'{where}: num_classes {num_classes!r} is not valid; expected an int from 1 to 100000')
    for key in ('label_names', 'labels'):
        for holder in (config, pcfg):
            if holder.get(key) is not None:
                check_label_names(holder[key], num_classes, f'{where} ({key})')
    chans = None
    for key in ('input_size', 'test_input_size', 'min_input_size'):
        if pcfg.get(key) is not None:
            c = check_input_size(pcfg[key], where, key)[0]
            chans = chans or c
    try:
        temperature_of(pcfg)
    except ValueError as e:
        raise CheckpointError(f'{where}: {e}') from None
    for key in ('mean', 'std'):
        v = pcfg.get(key)
        if v is None:
            continue
        ok = (isinstance(v, (list, tuple)) and len(v) in ({chans} if chans else set(range(1, MAX_CHANS + 1)))
              and all(_is_number(x, 1e-6 if key == 'std' else -10, 10) for x in v))
        if not ok:
            raise CheckpointError(f'{where}: {key} {v!r} is not valid; expected one finite number per input channel'
                                  + (' (std > 0)' if key == 'std' else ''))
    check_model_size(arch, model_args, where)
    return model_args


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
        config = safe_json.loads(cfg_path.read_text(encoding='utf-8'))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f'{cfg_path} (the config beside {path.name}) is not valid JSON ({e}); expected the '
                              f'config.json timm\'s save_for_hf writes, or remove it to load the bare weights') from None
    model_args = check_release_config(config, str(cfg_path))
    return cfg_path, config, model_args


def _with_config(ckpt: 'Checkpoint', cfg_path: Path, config: Mapping[str, Any], model_args: Mapping[str, Any]):
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


SOURCE_CFG_KEYS = ('url', 'file', 'state_dict', 'hf_hub_id', 'hf_hub_filename', 'source', 'tag', 'license',
                   'origin_url', 'description', 'notes')


def _given(value: Any) -> bool:
    """Whether a train.py arg is set: not None, '' or an empty list (never `bool()` of the value: a file may hold
    a tensor there, whose truth value is an error)."""
    return value is not None and not (isinstance(value, (str, list, tuple)) and len(value) == 0)


def checkpoint_cfg(arch: str, args: Mapping[str, Any], where: str = 'the checkpoint') -> Dict[str, Any]:
    """The pretrained_cfg of a model rebuilt from a checkpoint: the architecture's data config at the
    resolution (and mean/std) the checkpoint records, without any release's weight source, licence or notes
    (the default tag of msanet_r18 is the packaged FER2013 release, which does not describe this file)."""
    from timm.models import get_pretrained_cfg
    base = None
    name = args.get('model')
    if isinstance(name, str) and '.' in name and name.split('.')[0] == arch:
        try:  # train.py took its data config from the tag it started from (msanet_r18.tv_in1k: 224 px)
            base = get_pretrained_cfg(name)
        except RuntimeError:  # a tag this install does not know
            base = None
    base = base or get_pretrained_cfg(arch)
    cfg = {k: v for k, v in (base.to_dict() if base is not None else {}).items() if k not in SOURCE_CFG_KEYS}
    cfg['architecture'] = arch
    chans = int(args.get('in_chans') or tuple(cfg.get('input_size') or (3,))[0])
    size = None
    if _given(args.get('input_size')):
        size = check_input_size(args['input_size'], f'{where}: args', 'input_size')[1:]
    elif _given(args.get('img_size')):
        size = check_input_size((chans, args['img_size'], args['img_size']), f'{where}: args', 'img_size')[1:]
    if size is not None:
        cfg['input_size'] = (chans, *size)
        if cfg.get('pool_size'):
            cfg['pool_size'] = pool_size_for(size)
    for key in ('mean', 'std'):
        v = args.get(key)
        if _given(v):
            if not (isinstance(v, (list, tuple)) and len(v) in (1, chans)
                    and all(_is_number(x, 1e-6 if key == 'std' else -10, 10) for x in v)):
                raise CheckpointError(f'{where}: args.{key} {v!r} is not valid; expected one finite number per '
                                      f'input channel' + (' (std > 0)' if key == 'std' else ''))
            cfg[key] = tuple(float(x) for x in v)
    return cfg


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
    recorded_classes = ckpt.num_classes
    if num_classes is not None and recorded_classes is not None and num_classes != recorded_classes:
        raise CheckpointError(f'wrong class count: the checkpoint has {recorded_classes} classes, not {num_classes}')
    num_classes = recorded_classes or num_classes
    if num_classes is None:
        raise CheckpointError('cannot tell the number of classes: the checkpoint has no args.num_classes and no '
                              'classifier weight; pass num_classes (--num-classes)')
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
    model.load_state_dict(sd, strict=True)
    return model.eval(), arch


def _hf_cache_hint() -> str:
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def _why_offline() -> str:
    from huggingface_hub import constants
    if os.environ.get('HF_HUB_OFFLINE'):
        return f'HF_HUB_OFFLINE={os.environ["HF_HUB_OFFLINE"]}'
    return f'no connection to {constants.ENDPOINT} within {HUB_PROBE_TIMEOUT_S:g} s; HF_HUB_OFFLINE is unset'


def _hub_repo_of(name: str) -> str:
    """The Hub repo holding a registered model tag's weights (`msanet_r18.tv_in1k` -> `timm/resnet18.tv_in1k`)."""
    from timm.models import get_pretrained_cfg
    try:
        cfg = get_pretrained_cfg(name, allow_unregistered=True)
    except Exception:
        cfg = None
    hub_id = getattr(cfg, 'hf_hub_id', None)
    return hub_id.split('@')[0] if hub_id else name


def create_published(name_or_path: str, pretrained: bool = True, num_classes: Optional[int] = None, **kwargs):
    """`timm.create_model` for a published release, with errors that say what to do.

    `name_or_path`: `hf-hub:ORG/NAME`, `local-dir:PATH`, a folder path, `ORG/NAME`, or a registered tag
    such as `msanet_r18.rafdb`. `num_classes`, if given, must match the release: replacing the head is
    fine-tuning, done with `timm.create_model(..., num_classes=N)` directly.
    """
    import timm
    import timm_msanet  # noqa: F401
    from huggingface_hub import errors as hf_errors

    name = str(name_or_path)
    if ':' not in name or re.match(r'^[A-Za-z]:[\\/]', name):  # no source prefix (a Windows drive is not one)
        if Path(name).is_dir():
            name = f'local-dir:{name}'
        elif re.fullmatch(r'[\w.-]+/[\w.-]+(@[\w./-]+)?', name):
            name = f'hf-hub:{name}'
    source, _, ident = name.partition(':') if name.startswith(('hf-hub:', 'local-dir:')) else (None, '', name)

    def explain(e: BaseException) -> CheckpointError:
        if isinstance(e, hf_errors.LocalEntryNotFoundError) or (
                isinstance(e, OSError) and 'offline' in str(e).lower()):
            repo = ident if source == 'hf-hub' else _hub_repo_of(ident)
            what = ident if repo == ident else f'{ident} (its weights are the Hub repo {repo})'
            return CheckpointError(
                f'{what} is not in the local Hugging Face cache ({_hf_cache_hint()}) and the Hub cannot be '
                f'reached ({_why_offline()}). '
                f'Connect and unset HF_HUB_OFFLINE, download it once while online (`hf download {repo}`), '
                f'or load a local copy with local-dir:PATH.')
        if isinstance(e, hf_errors.GatedRepoError):
            return CheckpointError(f'{ident} is gated on the Hub: accept its terms on https://huggingface.co/{ident} '
                                f'and log in (`hf auth login` or HF_TOKEN).')
        if isinstance(e, hf_errors.RepositoryNotFoundError):
            return CheckpointError(f'repo {ident} was not found on the Hugging Face Hub (or it is private and you are '
                                f'not logged in). Check ORG/NAME; for a private repo run `hf auth login` or set '
                                f'HF_TOKEN.')
        if isinstance(e, hf_errors.RevisionNotFoundError):
            return CheckpointError(f'{ident}: that revision does not exist on the Hub; check the part after "@".')
        if source == 'local-dir' and isinstance(e, FileNotFoundError):
            return CheckpointError(f'folder {ident} has no config.json (or does not exist): give a folder written '
                                f'by `timm-msanet publish --dry-run` or downloaded from a model repo. ({e})')
        if isinstance(e, (hf_errors.EntryNotFoundError, FileNotFoundError)):
            return CheckpointError(f'{ident} has no config.json / model.safetensors: it is not a timm model repo '
                                f'(publish one with `timm-msanet publish`). ({e})')
        msg = str(e)
        if 'Invalid pretrained tag' in msg:
            arch = ident.split('.')[0]
            return CheckpointError(f'{msg} Registered tags: {timm.list_pretrained(arch + ".*")}; FER-trained '
                                f'releases are listed in timm_msanet/releases.py.')
        if 'Unknown model' in msg:
            import difflib
            arch = ident.split('.')[0]
            near = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.75)
            return CheckpointError(f'{arch!r} is not a registered model'
                                   + (f'; did you mean {" or ".join(near)}?' if near else '')
                                   + f' The msanet models: {", ".join(msanet_archs())}; their pretrained tags: '
                                   f'{", ".join(timm.list_pretrained("msanet_*"))}')
        if 'Error(s) in loading state_dict' in msg or 'size mismatch' in msg or 'Missing key' in msg:
            return CheckpointError(f'architecture mismatch: the weights of {ident} do not fit the architecture '
                                f'its config (or your arguments) asks for; do not override model arguments, or '
                                f're-publish the checkpoint with the right --model. ({msg.splitlines()[0]})')
        return CheckpointError(f'cannot load {ident}: {type(e).__name__}: {e}')

    expected = None
    if source in ('hf-hub', 'local-dir'):
        config = _read_release_config(source, ident, explain)
        check_release_config(config, f'{ident}/config.json')
        expected = config.get('num_classes')
        if expected is None and isinstance(config.get('pretrained_cfg'), Mapping):
            expected = config['pretrained_cfg'].get('num_classes')
    if expected is None and pretrained and source is None:
        from timm.models import get_pretrained_cfg
        try:
            pcfg = get_pretrained_cfg(ident, allow_unregistered=True) if '.' in ident else None
        except Exception as e:
            raise explain(e) from e
        expected = getattr(pcfg, 'num_classes', None)
    if num_classes is not None and expected is not None and num_classes != expected:
        raise CheckpointError(
            f'wrong class count: {ident} has {expected} classes ({", ".join(labels_for(expected)) if expected in (7, 8) else "?"}), '
            f'not {num_classes}. Drop num_classes to use it as published; to fine-tune on another class set '
            f'call timm.create_model({name!r}, pretrained=True, num_classes={num_classes}), which replaces the head.')
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    try:
        with _offline_when_hub_unreachable(needs_hub(name, pretrained)):
            return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as e:
        raise explain(e) from e


def needs_hub(name: str, pretrained: bool = True) -> bool:
    """Whether loading `name` can touch the Hub: an `hf-hub:` source, or a registered tag whose weights are a
    Hub repo rather than a packaged file (the default `msanet_r18` loads offline and is never probed)."""
    if not pretrained or name.startswith('local-dir:'):
        return False
    if name.startswith('hf-hub:'):
        return True
    from timm.models import get_pretrained_cfg
    try:
        cfg = get_pretrained_cfg(name, allow_unregistered=True)
    except Exception:
        return True
    return cfg is not None and not getattr(cfg, 'file', None) and bool(getattr(cfg, 'hf_hub_id', None))


def _read_release_config(source: str, ident: str, explain) -> Any:
    """The raw config.json of a Hub repo or folder, read before timm acts on any of it."""
    try:
        if source == 'hf-hub':
            from huggingface_hub import hf_hub_download
            repo_id, _, revision = ident.partition('@')
            with _offline_when_hub_unreachable(True):
                path = Path(hf_hub_download(repo_id, 'config.json', revision=revision or None))
        else:
            path = Path(ident) / 'config.json'
            if not path.is_file():
                raise FileNotFoundError(f'Config file not found: {path}')
        text = path.read_text(encoding='utf-8')
    except Exception as e:
        raise explain(e) from e
    try:
        return safe_json.loads(text)
    except ValueError as e:
        raise CheckpointError(f'{ident}/config.json is not valid JSON ({e}); expected the config.json that '
                              f'`timm-msanet publish` (timm save_for_hf) writes') from None


HUB_PROBE_TIMEOUT_S = 3.0


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub endpoint (HF_ENDPOINT) opens within `timeout` seconds."""
    import socket
    from urllib.parse import urlsplit
    from huggingface_hub import constants
    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == 'https' else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_when_hub_unreachable(needed: bool = True):
    """Without a network huggingface_hub retries each request with backoff (about half a minute per file here)
    before it falls back to its cache. One short probe instead: when the Hub endpoint does not answer within
    HUB_PROBE_TIMEOUT_S, run the block in huggingface_hub's offline mode, so cached files load at once and a
    missing one fails at once with the offline error. Its module flag is what HF_HUB_OFFLINE=1 sets."""
    from huggingface_hub import constants
    if not needed or constants.HF_HUB_OFFLINE or hub_reachable():
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def load_model(
        model_name: Optional[str] = None,
        checkpoint: Optional[Union[str, Path]] = None,
        hf_hub: Optional[str] = None,
        num_classes: Optional[int] = None,
        label_names: Optional[Sequence[str]] = None,
        use_ema: Optional[bool] = None,
        pretrained: bool = True,
        **kwargs: Any,
):
    """Create an eval-mode model from one source, with `pretrained_cfg['label_names']` set.

    Args:
        model_name: A registered name (`msanet_r18`, `msanet_r18.tv_in1k`, `hf-hub:org/repo`,
            `local-dir:path`); with `checkpoint`, the architecture when the checkpoint does not name it.
        checkpoint: A train.py checkpoint, state dict or safetensors file.
        hf_hub: A Hub repo id (`org/name`) published with `timm-msanet publish`.
        num_classes: Class count when it cannot be read from the checkpoint (must agree when it can).
        label_names: Class names in output order (default: from the model cfg, else canonical FER names).
        use_ema: None prefers EMA weights of a train.py checkpoint, True requires them, False skips them.
        pretrained: Load pretrained weights for a plain model name.
    """
    if checkpoint is not None and hf_hub is not None or (model_name is None and checkpoint is None and hf_hub is None):
        raise ValueError('give one model source: a model name, a checkpoint file (with --model if it does not '
                         'name its architecture) or a Hub repo id')
    if checkpoint is not None:
        refused = sorted(k for k in kwargs if k in STEERING_KEYS and k != 'pretrained_cfg_overlay')
        if refused or not pretrained:
            raise ValueError(f'{", ".join(refused) or "pretrained=False"} cannot apply with a checkpoint: its '
                             f'weights are the checkpoint\'s. Drop it, or load a model name instead.')
        caller_overlay = dict(kwargs.pop('pretrained_cfg_overlay', None) or {})
        overlay = dict(caller_overlay)
        if Path(checkpoint).is_dir():  # a save_for_hf / publish --dry-run folder
            if not (Path(checkpoint) / WEIGHTS_BESIDE_CONFIG).is_file():
                raise CheckpointError(f'checkpoint {checkpoint} is a folder without {WEIGHTS_BESIDE_CONFIG}: expected '
                                      f'a weights file, or a folder as timm\'s save_for_hf writes it')
            checkpoint = Path(checkpoint) / WEIGHTS_BESIDE_CONFIG
        ckpt = read_checkpoint(checkpoint, use_ema=use_ema)
        beside = config_beside(checkpoint)
        if beside is not None:
            ckpt = _with_config(ckpt, *beside)
            pcfg = beside[1].get('pretrained_cfg', beside[1])
            names = beside[1].get('label_names') or pcfg.get('label_names')
            if label_names is None and names:
                label_names = list(names)
            data = {k: pcfg[k] for k in CONFIG_DATA_KEYS if pcfg.get(k) is not None}
            overlay = dict(data, **overlay, config=str(beside[0]))
            if pcfg.get('temperature') is not None and 'temperature' not in ckpt.extra:
                ckpt.extra = dict(ckpt.extra, temperature=temperature_of(pcfg),
                                  temperature_fit_split=pcfg.get('temperature_fit_split', 'validation'))
        model, _ = model_from_checkpoint(ckpt, model_name=model_name, num_classes=num_classes, caller_kwargs=kwargs)
        if overlay.get('input_size') is not None:  # the caller's resolution, with the pool size that goes with it
            size = check_input_size(tuple(overlay['input_size']), 'pretrained_cfg_overlay')
            overlay['input_size'] = size
            if model.pretrained_cfg.get('pool_size') and 'pool_size' not in caller_overlay:
                overlay['pool_size'] = pool_size_for(size[1:])
        model.pretrained_cfg = dict(model.pretrained_cfg, **overlay, checkpoint=str(checkpoint),
                                    checkpoint_weights=ckpt.weights,
                                    checkpoint_weights_origin=ckpt.extra.get('weights_origin'))
        if ckpt.extra.get('notes') and 'notes' not in caller_overlay:  # the file's own grey input and framing
            notes = tuple(model.pretrained_cfg.get('notes') or ())
            model.pretrained_cfg['notes'] = notes + tuple(n for n in ckpt.extra['notes'] if n not in notes)
        if 'temperature' in ckpt.extra:
            set_temperature(model, ckpt.extra['temperature'], ckpt.extra.get('temperature_fit_split', 'validation'))
    else:
        name = f'hf-hub:{hf_hub}' if hf_hub is not None else model_name
        model = create_published(name, pretrained=pretrained, num_classes=num_classes, **kwargs).eval()
        if not pretrained:
            model.pretrained_cfg = dict(model.pretrained_cfg, random_weights=True)

    n_out = model.num_classes
    names = list(label_names) if label_names is not None else list(model.pretrained_cfg.get('label_names') or [])
    if len(names) != n_out:
        if label_names is not None:
            raise CheckpointError(f'{len(names)} label names given for a {n_out}-class model; expected one name '
                                  f'per class in output order')
        if model.pretrained_cfg.get('source') in ('hf-hub', 'local-dir'):  # a release's own names: never guess
            raise CheckpointError(f'{model_name or hf_hub}: its config has {len(names)} label_names for a '
                                  f'{n_out}-class model; expected one name per class in output order')
        try:
            names = list(labels_for(n_out))
        except ValueError:
            raise CheckpointError(
                f'the model has {n_out} outputs and no label names: give them in output order '
                f'(--label-names a,b,c on the command line, label_names=[...] in Python)') from None
    model.pretrained_cfg = dict(model.pretrained_cfg, label_names=tuple(names), num_classes=n_out)
    check_finite(model, str(checkpoint or hf_hub or model_name))
    return model


def check_finite(model, where: str) -> None:
    """CheckpointError when a weight or BN statistic is NaN or infinite: such a model's scores are not
    numbers, and the tools would print 'nan' as a probability or score nothing at all."""
    import torch
    bad = [name for name, t in (*model.named_parameters(), *model.named_buffers())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f'{where}: {len(bad)} weight tensor(s) hold NaN or infinite values (e.g. {bad[0]}), '
                              f'so every output would be NaN; the file is damaged or came from a diverged training '
                              f'run. Use another checkpoint (an earlier epoch, or model_best)')


def label_names_of(model) -> List[str]:
    """The model's class names in output order: `pretrained_cfg['label_names']` when it names every output
    (as `load_model` guarantees), else the canonical FER names for 7 or 8 outputs, else the output indices."""
    n = int(getattr(model, 'num_classes', 0) or 0)
    names = list((getattr(model, 'pretrained_cfg', None) or {}).get('label_names') or [])
    if len(names) == n:
        return [str(x) for x in names]
    try:
        return list(labels_for(n))
    except ValueError:
        return [str(i) for i in range(n)]


@contextlib.contextmanager
def eval_mode(model):
    """Switch `model` to eval mode for the block, then restore the mode it had, also when the block fails."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The one-model-source options shared by eval, predict, explain and export-onnx."""
    g = parser.add_argument_group('model (one source)')
    g.add_argument('--model', default=None, help=f'model name (msanet_r18, msanet_r18.tv_in1k, hf-hub:org/repo); '
                   f'with --checkpoint: its architecture when the checkpoint does not name it. Without any source: '
                   f'{DEFAULT_MODEL}, the FER2013 model installed with the package')
    g.add_argument('--checkpoint', default=None, help='train.py checkpoint, state dict or .safetensors file')
    g.add_argument('--hf-hub', default=None, metavar='ORG/REPO', help='Hub repo published with timm-msanet publish')
    g.add_argument('--num-classes', type=positive_int, default=None, help='class count if the checkpoint does not tell')
    g.add_argument('--label-names', default=None, metavar='A,B,...',
                   help='class names in output order, comma-separated (for a class count without canonical names)')
    g.add_argument('--no-ema', action='store_true', help="use a train.py checkpoint's raw weights, not its EMA ones")
    g.add_argument('--img-size', type=positive_int, default=None, metavar='N',
                   help='input height and width (default: the size the model was trained at, from its config)')
    g.add_argument('--no-pretrained', action='store_true',
                   help='with a plain --model name: random weights, no download (for smoke tests)')


def model_input_paths(args: argparse.Namespace) -> List[str]:
    """The files a command's model comes from (a --checkpoint file or folder's files, a local-dir: folder's
    files): outputs may never be one of them (timm_msanet.outputs)."""
    paths = []
    for source in (args.checkpoint, args.model[len('local-dir:'):] if (args.model or '').startswith('local-dir:')
                   else None):
        if not source:
            continue
        if os.path.isdir(source):
            paths += [os.path.join(source, name) for name in sorted(os.listdir(source))]
        else:
            paths.append(source)
    return paths


def model_from_args(args: argparse.Namespace):
    model_name = args.model
    if not (args.model or args.checkpoint or args.hf_hub):
        model_name = DEFAULT_MODEL  # the packaged expression model: the commands work out of the box
    names = getattr(args, 'label_names', None)
    if names is not None:
        names = [n.strip() for n in names.split(',')]
        check_label_names(names, None, '--label-names')
    source = dict(model_name=model_name, checkpoint=args.checkpoint, hf_hub=args.hf_hub, num_classes=args.num_classes,
                  use_ema=False if args.no_ema else None, pretrained=not args.no_pretrained)
    try:
        try:
            model = load_model(**source)  # with its own names, when it has them (its record, or canonical)
        except CheckpointError as e:
            if names is None or 'no label names' not in str(e):
                raise
            model = load_model(**source, label_names=names)
    except ValueError as e:  # options that contradict each other (two sources, --no-pretrained with a checkpoint)
        raise CheckpointError(str(e)) from None
    own = list(model.pretrained_cfg.get('label_names') or [])
    if names is not None and names != own:
        if len(names) != model.num_classes:
            raise CheckpointError(f'{len(names)} label names given for a {model.num_classes}-class model; expected one '
                                  f'name per class in output order')
        import warnings
        warnings.warn('--label-names renames the outputs of a model that has its own names: '
                      + ', '.join(f'{a} -> {b}' for a, b in zip(own, names) if a != b)
                      + '. Drop --label-names unless the model really was trained with that class order',
                      UserWarning, stacklevel=2)
        model.pretrained_cfg = dict(model.pretrained_cfg, label_names=tuple(names))
    if getattr(args, 'img_size', None):
        set_input_size(model, args.img_size)
    return model


def set_input_size(model, img_size: int):
    """Make `img_size` the model's data-config resolution (square), with the pool size that goes with it."""
    chans = tuple(model.pretrained_cfg.get('input_size') or (3,))[0]
    size = check_input_size((chans, img_size, img_size), '--img-size')
    cfg = dict(model.pretrained_cfg, input_size=size)
    cfg.pop('test_input_size', None)  # the caller's size is the one to evaluate at
    if cfg.get('pool_size'):
        cfg['pool_size'] = pool_size_for(size[1:])
    model.pretrained_cfg = cfg
    return model


def untrained_head_reason(model) -> Optional[str]:
    """Why a model's classifier has never learned expressions (None when it has, or when it cannot be told).

    `load_model` records random weights (`pretrained=False`); the `tv_in1k` tags hold only an ImageNet
    pre-extractor. Checkpoints, Hub / folder releases and FER-trained tags count as trained.
    """
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    if cfg.get('checkpoint'):
        return None
    if cfg.get('random_weights'):
        return 'it has random weights (no pretrained weights were loaded)'
    if cfg.get('tag') == 'tv_in1k':
        return ('its pretrained tag tv_in1k holds only an ImageNet ResNet-18 pre-extractor; the branches and '
                'the classifier were never trained on expressions')
    return None


def warn_if_untrained(model) -> Optional[str]:
    """Warn (UserWarning) when the model's labels would be guesses; returns the message, if any."""
    import warnings
    reason = untrained_head_reason(model)
    if reason is None:
        return None
    name = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture') or type(model).__name__
    msg = (f'{name}: {reason}, so its labels and probabilities are meaningless. For a real expression model '
           f'use the default tag (--model msanet_r18, i.e. msanet_r18.fer2013), a trained checkpoint or a release.')
    warnings.warn(msg, UserWarning, stacklevel=3)
    return msg
