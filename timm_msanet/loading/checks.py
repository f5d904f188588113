"""What a file may say about its model: checked model arguments, sizes, data configs, label names and release
configs, each refused with a CheckpointError that says what was expected.
"""
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..utils.errors import ToolError
from ..notes import recorded_framing, temperature_of
from ..releases import pool_size_for


class CheckpointError(ToolError):
    """A model source that cannot be used, with what was expected and what to do in the message."""


def msanet_archs() -> List[str]:
    import timm
    import importlib
    importlib.import_module('timm_msanet')  # registers the models when the autoload hook is off
    return timm.list_models('msanet_*')


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
    'grey_input': (lambda v: isinstance(v, bool), 'true or false'),
    'fuse_branch_entry': (lambda v: v is None or isinstance(v, bool), 'null, true or false'),
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
    try:
        with torch.device('meta'):
            model = timm.create_model(arch, pretrained=False, **model_kwargs)
    except (ValueError, TypeError) as e:  # values each within bounds that do not fit together (one branch, two strides)
        raise CheckpointError(f'{where}: its model arguments {dict(model_kwargs)} do not build {arch}: {e}') from None
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMS:
        raise CheckpointError(f'{where}: its model arguments {dict(model_kwargs)} make {arch} a model of '
                              f'{count / 1e6:,.0f} M parameters, more than the {MAX_PARAMS / 1e6:.0f} M allowed for an '
                              f'expression model (msanet_r18 has 3.7 M); refused before building it')
    return count


def activation_bytes(model, input_size: Tuple[int, int, int]) -> int:
    """An upper bound of the activation memory of one image at `input_size` in inference: the bytes of every
    module's output, summed as if none were freed, from a forward on the meta device (nothing allocated)."""
    import copy
    import torch
    meta = copy.deepcopy(model).to('meta').eval()
    total = [0]

    def count(_module, _inputs, output):
        for t in (output if isinstance(output, (list, tuple)) else (output,)):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()
    hooks = [m.register_forward_hook(count) for m in meta.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            meta(torch.empty((1, *input_size), device='meta', dtype=next(meta.parameters()).dtype))
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def memory_budget() -> int:
    """Half the memory this machine has available now (MemAvailable), 8 GiB where that cannot be read."""
    try:
        with open('/proc/meminfo', encoding='ascii') as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith('MemAvailable:'))
        return kib * 1024 // 2
    except (OSError, StopIteration, ValueError, IndexError):
        return 8 * 2**30


def fit_batch(model, input_size: Tuple[int, int, int], batch_size: int, budget: Optional[int] = None,
              per_image: Optional[int] = None) -> int:
    """The batch size, shrunk so that one batch's activations (`activation_bytes`) fit the memory budget
    (`memory_budget`); a ToolError when not even one image fits: a config's allowed 2048 px input or a wide
    model is refused in one line before anything is allocated, instead of a multi-GB allocation traceback."""
    per_image = activation_bytes(model, tuple(input_size)) if per_image is None else per_image
    budget = memory_budget() if budget is None else budget
    fits = budget // max(per_image, 1)
    if fits < 1:
        raise ToolError(f'one image at {input_size[1]}x{input_size[2]} px needs about {per_image / 2**30:.1f} GiB of '
                        f'activations in this model, more than the {budget / 2**30:.1f} GiB budget (half the '
                        f'memory available): use a smaller --img-size')
    if fits < batch_size:
        import warnings
        warnings.warn(f'batch size {batch_size} shrunk to {int(fits)}: at {input_size[1]}x{input_size[2]} px a batch of '
                      f'{batch_size} would need about {batch_size * per_image / 2**30:.1f} GiB of activations, more '
                      f'than the {budget / 2**30:.1f} GiB budget', UserWarning, stacklevel=3)
    return int(min(batch_size, fits))


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
