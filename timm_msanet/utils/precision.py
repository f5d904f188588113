"""Training precision that suits the machine: is bf16 autocast native here, and which recipe train.py reads.

The release recipes train with bf16 autocast: 1.3x the fp32 images/s on a CPU with AVX-512 BF16 / AMX
(docs/speed.md). On a CPU without native bf16 (AVX2 only) oneDNN has no fast bf16 kernels and the same training
step runs about 9x slower than in fp32, so `examples/release.sh` asks here first. oneDNN's own answer is used
when torch exposes it (it also says yes for AVX-512 CPUs without the BF16 extension, whose bf16 speed against
fp32 is not measured here); otherwise the CPU flags in /proc/cpuinfo.

timm's train.py cannot switch off an `amp: true` that a recipe sets (`--amp` only turns it on), so another
precision means another recipe: `recipe_for_precision` writes a copy beside the run that differs only in `amp`
and `amp_dtype`. A resumed run keeps the precision it started with: train.py writes its settings to
`RUN/args.yaml`, and `started_precision` reads the precision back from there, so nothing else records it.

    python -m timm_msanet.utils.precision [--device cpu]             # prints "native" or "emulated"
    python -m timm_msanet.utils.precision --recipe R.yaml --precision auto --out-dir WORKDIR [--resume RUN/args.yaml]
                                                                      # prints "PRECISION RECIPE_TO_TRAIN_WITH"
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Tuple

from .errors import ToolError
from .outputs import PathLike, write_output

PRECISIONS = ('auto', 'recipe', 'fp32', 'bf16')
_BF16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')


class PrecisionError(ToolError):
    """A precision or recipe that cannot be used."""


def _cpu_flags() -> set:
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith('flags'):
            return set(line.partition(':')[2].split())
    return set()


def native_bf16(device: str = 'cpu') -> bool:
    """True when bf16 autocast on `device` runs on native bf16 kernels (CUDA with bf16 support, or a CPU whose
    oneDNN has bf16 kernels); False where it would be emulated or the device is absent or of another type."""
    import torch

    dev = torch.device(device)
    if dev.type == 'cuda':
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type != 'cpu':
        return False
    # a private torch op: used when present, the CPU flags when a torch release drops it
    onednn_says = getattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', None)
    if onednn_says is not None:
        try:
            return bool(onednn_says())
        except RuntimeError:
            pass
    return bool(_cpu_flags() & set(_BF16_CPU_FLAGS))


def _read_recipe(recipe: PathLike, what: str = 'recipe') -> dict:
    import yaml
    try:
        loaded = yaml.safe_load(Path(recipe).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise PrecisionError(f"cannot read the {what} {recipe} as YAML: {' '.join(str(e).split())}") from None
    if not isinstance(loaded, dict):
        raise PrecisionError(f'{recipe} is not a train.py {what}: expected a YAML mapping of train.py options')
    return loaded


def _autocast(settings: dict) -> Tuple[bool, Optional[str]]:
    """(amp on, its dtype) as train.py reads them: amp_dtype is float16 unless set, and unused without amp."""
    if settings.get('amp') is not True:
        return False, None
    return True, settings.get('amp_dtype') or 'float16'


_FORCED = {'fp32': (False, None), 'bf16': (True, 'bfloat16')}


def _started(ran: Tuple[bool, Optional[str]], as_recipe: Tuple[bool, Optional[str]], run_args: PathLike,
             recipe: PathLike) -> str:
    if ran == as_recipe:
        return 'recipe'
    for precision, autocast in _FORCED.items():
        if ran == autocast:
            return precision
    raise PrecisionError(f'{run_args} says the run trained with {ran[1]} autocast, which neither {recipe} nor '
                         "--precision fp32/bf16 gives: resume it with train.py --resume, or use a new work folder")


def started_precision(run_args: PathLike, recipe: PathLike) -> str:
    """The precision a train.py run trained with, read from the `args.yaml` train.py wrote into the run's folder:
    'recipe' when its autocast settings are the recipe's, else 'fp32' or 'bf16'. Autocast this module does not
    choose (float16 from extra train.py options) is refused: resuming through here could not keep it."""
    ran = _autocast(_read_recipe(run_args, what="run's args.yaml"))
    return _started(ran, _autocast(_read_recipe(recipe)), run_args, recipe)


def resumed_precision(run_args: PathLike, recipe: PathLike, precision: str = 'auto') -> str:
    """The precision to resume a run with: the one it started with (`started_precision`). `precision` other than
    'auto' is accepted only when it gives the same autocast (a run trained half in one precision and half in
    another is neither), and the started name is returned, so the run goes on from the recipe file it began with."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    ran = _autocast(_read_recipe(run_args, what="run's args.yaml"))
    as_recipe = _autocast(_read_recipe(recipe))
    started = _started(ran, as_recipe, run_args, recipe)
    if precision not in ('auto', started) and _FORCED.get(precision, as_recipe) != ran:
        raise PrecisionError(f'{Path(run_args).parent} started with --precision {started}; resuming it with '
                             f'{precision} would mix the two (a new work folder starts afresh)')
    return started  # also for the same autocast by another name: the recipe file the run started from


def recipe_for_precision(recipe: PathLike, precision: str = 'auto', device: str = 'cpu',
                         out_dir: PathLike = '.') -> Tuple[str, Path]:
    """The precision to train with and the recipe file that gives it.

    `precision`: 'recipe' trains as the recipe says; 'fp32' or 'bf16' force one; 'auto' is 'recipe' unless the
    recipe asks for bf16 autocast and it would be emulated on `device`, then 'fp32'. Returns ('recipe', recipe)
    or (precision, OUT_DIR/recipe_NAME_PRECISION.yaml), a copy that differs only in `amp`/`amp_dtype`. An
    existing copy is kept when it says the same and refused when it does not (a run resumed from it would
    otherwise change its settings underneath)."""
    import yaml
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    settings = _read_recipe(recipe)
    if precision == 'auto':
        emulated = settings.get('amp') is True and not native_bf16(device)
        precision = 'fp32' if emulated else 'recipe'
    if precision == 'recipe':
        return precision, Path(recipe)
    settings.pop('amp_dtype', None)
    settings['amp'] = precision == 'bf16'
    if precision == 'bf16':
        settings['amp_dtype'] = 'bfloat16'
    text = (f'# {Path(recipe).name} with {precision} training (timm_msanet.utils.precision), all else as it is\n'
            + yaml.safe_dump(settings, sort_keys=False))
    out = Path(out_dir) / f'recipe_{Path(recipe).stem}_{precision}.yaml'
    if out.exists() and not out.is_symlink() and out.is_file():
        if _read_recipe(out) == settings:
            return precision, out
        raise PrecisionError(f'{out} exists and differs from {recipe} with {precision} training; a run resumed '
                             'from it would change settings: move it away or use a new work folder')
    write_output(out, text, inputs=[recipe], what='recipe')
    return precision, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m timm_msanet.utils.precision', description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', help='torch device (default cpu)')
    parser.add_argument('--recipe', help="a train.py YAML recipe: print the precision and the recipe to train with")
    parser.add_argument('--precision', default='auto', choices=PRECISIONS, help='with --recipe (default auto)')
    parser.add_argument('--out-dir', default='.', help='with --recipe: where a changed copy is written')
    parser.add_argument('--resume', metavar='ARGS_YAML',
                        help="with --recipe: the args.yaml of the run to resume, whose precision is kept")
    args = parser.parse_args(argv)
    if args.recipe is None:
        print('native' if native_bf16(args.device) else 'emulated')
        return 0
    try:
        precision = args.precision
        if args.resume is not None:
            precision = resumed_precision(args.resume, args.recipe, precision)
        precision, path = recipe_for_precision(args.recipe, precision, args.device, args.out_dir)
    except ToolError as e:
        print(f'error: {e}', file=sys.stderr)
        return e.exit_status
    print(precision, path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
