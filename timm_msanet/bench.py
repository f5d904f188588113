"""Training and inference throughput of the MSA-Net models next to timm's CNNs, in one process and one run.

For each model, mode (train / infer), precision, memory format and eager or `torch.compile`d execution:
images per second, achieved TFLOP/s (FLOPs of one step counted with torch's FlopCounterMode, forward for
infer, forward plus backward for train, divided by the measured step time) and peak memory. `--amp` picks
the precision (fp32, or bf16 autocast; several are measured side by side), `--channels-last` the memory
format (on, off or both). Defaults: on CUDA bf16 autocast with channels_last (the settings users train
with), on CPU float32 in the contiguous format. Peak memory on CUDA is the growth of
`torch.cuda.max_memory_allocated` while that model was built and warmed up; on CPU the growth of the
process's peak resident set then (0 when an earlier model already reached a higher peak).

    timm-msanet bench [--models ...] [--device cpu|cuda] [--mode train infer] [--batch-size N] [--compile]
                      [--amp fp32 bf16] [--channels-last [on|off|both]]
                      [--img-size 224] [--steps 10] [--repeats 5] [--json OUT]

Timing is interleaved: every model and setting of a mode is built and warmed up first, then each of
`--repeats` rounds times `--steps` steps of every one in turn, so a burst of load elsewhere on the machine
hits all of a round alike. A row reports the median round and the spread (max - min over median) of its rounds;
ratios to the baseline are taken per round, between neighbours in time, and their median is printed. A
spread over `SPREAD_WARN` percent gets a warning: the machine was busy and the figures are not to be
quoted. Compare ratios within a run; quote absolute times from a GPU.
"""
import argparse
import json
import os
import resource
import statistics
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .utils.errors import ToolError
from .utils.options import device, non_negative_int, positive_int
from .utils.outputs import add_overwrite_argument, check_output, write_output

DEFAULT_MODELS = ('msanet_r18', 'msanet_r18_ms', 'msanet_r18_as', 'resnet18', 'resnet50', 'res2net50_26w_4s')
SPREAD_WARN = 10.0  # percent; quieter machines stay within a few percent between rounds


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def count_step_flops(model, x, train: bool) -> int:
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        if train:
            F.cross_entropy(model(x), torch.zeros(x.shape[0], dtype=torch.long, device=x.device)).backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                model(x)
    return counter.get_total_flops()


AMPS = ('fp32', 'bf16')


def prepare_step(name: str, device: str, mode: str, batch_size: int, compiled: bool, img_size: int = 224,
                 warmup: int = 5, amp: Optional[str] = None, channels_last: Optional[bool] = None):
    """Build one model with its input (and optimizer when training), warm it up; returns (step, info).
    `amp` 'bf16' (autocast) or 'fp32', `channels_last`; None: bf16 with channels_last on CUDA, fp32 contiguous
    elsewhere."""
    import torch
    import torch.nn.functional as F
    import timm

    dev = torch.device(device)
    cuda = dev.type == 'cuda'
    train = mode == 'train'
    rss0 = _peak_rss_mb()
    if cuda:
        torch.cuda.synchronize()
        mem0 = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    amp = amp or ('bf16' if cuda else 'fp32')
    channels_last = cuda if channels_last is None else channels_last
    model = timm.create_model(name, num_classes=7).to(dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train(train)
    x = torch.randn(batch_size, 3, img_size, img_size, device=dev).to(memory_format=fmt)
    y = torch.randint(0, 7, (batch_size,), device=dev)
    flops = count_step_flops(model, x, train)
    step_model = torch.compile(model) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9) if train else None
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp == 'bf16')

    def step():
        if train:
            with autocast:
                loss = F.cross_entropy(step_model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode(), autocast:
                step_model(x)

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - mem0) / 2**20
    else:
        peak = max(0.0, _peak_rss_mb() - rss0)
    info = dict(model=name, device=device, mode=mode, batch_size=batch_size, compiled=compiled, img_size=img_size,
                amp=amp, channels_last=channels_last, dtype='bfloat16' if amp == 'bf16' else 'float32',
                gflops_per_step=round(flops / 1e9, 2),
                peak_mem_mb=round(peak, 1))
    return step, info, flops


def time_steps(step: Callable[[], None], steps: int, device: str) -> float:
    import torch
    cuda = device.startswith('cuda')
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def spread_pct(values: Sequence[float]) -> float:
    mid = statistics.median(values)
    return 100.0 * (max(values) - min(values)) / mid if mid > 0 else 0.0


def bench_group(models: Sequence[str], device: str, mode: str, batch_size: int, compiled: bool, img_size: int,
                steps: int, warmup: int, repeats: int,
                settings: Sequence[Tuple[Optional[str], Optional[bool]]] = ((None, None),)) -> List[Dict]:
    """One mode and execution: every model at every (amp, channels_last) setting prepared, then `repeats`
    interleaved timing rounds."""
    prepared = [prepare_step(name, device, mode, batch_size, compiled, img_size, warmup, amp, cl)
                for amp, cl in settings for name in models]
    seconds = [[] for _ in prepared]
    for _ in range(repeats):
        for i, (step, _, _) in enumerate(prepared):
            seconds[i].append(time_steps(step, steps, device))
    rows = []
    for (_, info, flops), secs in zip(prepared, seconds):
        img_s = [batch_size * steps / s for s in secs]
        mid = statistics.median(secs)
        rows.append(dict(info, repeats=repeats, steps=steps, img_s=round(statistics.median(img_s), 1),
                         img_s_min=round(min(img_s), 1), img_s_max=round(max(img_s), 1),
                         spread_pct=round(spread_pct(img_s), 1), tflops=round(flops * steps / mid / 1e12, 4),
                         step_ms=round(mid / steps * 1e3, 2), round_img_s=[round(v, 4) for v in img_s]))
    return rows


def run_bench(models: Sequence[str] = DEFAULT_MODELS, device: Optional[str] = None, modes=('train', 'infer'),
              batch_size: Optional[int] = None, compile_modes=(False,), img_size: int = 224, steps: int = 10,
              warmup: int = 5, repeats: int = 5, log=print, amps: Sequence[Optional[str]] = (None,),
              channels_last: Sequence[Optional[bool]] = (None,)) -> List[Dict]:
    import torch
    import importlib
    importlib.import_module('timm_msanet')  # registers the models when the autoload hook is off
    if repeats < 1 or steps < 1:
        raise ToolError(f'--repeats and --steps must be at least 1, got {repeats} and {steps}')
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    batch_size = batch_size or (256 if device.startswith('cuda') else 8)
    rows = []
    for compiled in compile_modes:
        for mode in modes:
            settings = [(amp, cl) for amp in amps for cl in channels_last]
            for row in bench_group(models, device, mode, batch_size, compiled, img_size, steps, warmup, repeats,
                                   settings):
                rows.append(row)
                log(format_row(row))
    return rows


def setting(r: Dict) -> str:
    """'eager fp32', 'compiled bf16+cl', ...: how a row ran, besides its model and mode."""
    return (f"{'compiled' if r['compiled'] else 'eager'} {r.get('amp', 'fp32')}"
            f"{'+cl' if r.get('channels_last') else ''}")


def format_row(r: Dict) -> str:
    return (f"{r['model']:18s} {r['device']:5s} {r['mode']:5s} {setting(r):17s} "
            f"b{r['batch_size']:<4d} {r['img_s']:10.1f} img/s (spread {r['spread_pct']:4.1f}%) "
            f"{r['tflops']:8.3f} TFLOP/s {r['peak_mem_mb']:9.1f} MB")


def ratio_table(rows: List[Dict], baseline: str = 'resnet18') -> List[str]:
    """Each model's TFLOP/s and img/s as a ratio to the baseline's in the same mode, execution, precision and
    memory format.

    Ratios are taken round by round (the two models ran next to each other in time) and the median ratio is
    reported with the range over rounds.
    """
    out = []
    base = {(r['mode'], setting(r)): r for r in rows if r['model'] == baseline}
    for r in rows:
        b = base.get((r['mode'], setting(r)))
        if not b or r['model'] == baseline or b['tflops'] <= 0:
            continue
        img = [a / c for a, c in zip(r['round_img_s'], b['round_img_s'])]
        flop_scale = r['gflops_per_step'] / b['gflops_per_step'] if b['gflops_per_step'] else 0.0
        mid = statistics.median(img)
        out.append(f"{r['model']:18s} {r['mode']:5s} {setting(r):17s} "
                   f"img/s {mid:.2f}x {baseline} (rounds {min(img):.2f}-{max(img):.2f}), "
                   f"TFLOP/s {mid * flop_scale:.2f}x")
    return out


def noisy_rows(rows: List[Dict], limit: float = SPREAD_WARN) -> List[Dict]:
    return [r for r in rows if r['spread_pct'] > limit]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS))
    parser.add_argument('--device', type=device, default=None, help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--mode', nargs='+', choices=('train', 'infer'), default=['train', 'infer'])
    parser.add_argument('--batch-size', type=positive_int, default=None, help='default 256 on CUDA, 8 on CPU')
    parser.add_argument('--img-size', type=positive_int, default=224)
    parser.add_argument('--steps', type=positive_int, default=10, help='timed steps per model in each round')
    parser.add_argument('--repeats', type=positive_int, default=5,
                        help='timing rounds; the models take turns within each round, rows report the median')
    parser.add_argument('--warmup', type=non_negative_int, default=5)
    parser.add_argument('--compile', action='store_true', help='also measure torch.compile (eager rows always run)')
    parser.add_argument('--amp', nargs='+', choices=AMPS, default=None,
                        help='precision: fp32, or bf16 autocast; several are timed side by side (default: bf16 on '
                             'CUDA, fp32 on CPU)')
    parser.add_argument('--channels-last', nargs='?', const='on', choices=('on', 'off', 'both'), default=None,
                        help='memory format: channels_last on, off, or both side by side (default: on for CUDA, '
                             'off on CPU)')
    parser.add_argument('--json', dest='json_out', default=None, help='write the rows as a JSON list here')
    add_overwrite_argument(parser, 'the --json file')


def run(args: argparse.Namespace) -> int:
    if args.json_out:  # before the work
        check_output(args.json_out, (), args.overwrite, '--json')
    import torch
    import timm
    on_cuda = (args.device or '').startswith('cuda') or (args.device is None and torch.cuda.is_available())
    where = torch.cuda.get_device_name(0) if on_cuda else f'cpu, {torch.get_num_threads()} threads'
    if not on_cuda and 'bf16' in (args.amp or ()):
        from .utils.precision import native_bf16
        if not native_bf16('cpu'):
            warnings.warn('this CPU has no native bf16 (no AVX-512 BF16 / AMX): bf16 autocast is emulated here, '
                          'about 9x slower than fp32 (docs/speed.md)')
    print(f'torch {torch.__version__}, timm {timm.__version__}, {where}; '
          f'{args.repeats} rounds of {args.steps} steps per model, interleaved', flush=True)
    try:
        rows = run_bench(args.models, args.device, args.mode, args.batch_size,
                         (False, True) if args.compile else (False,), args.img_size, args.steps, args.warmup,
                         args.repeats, log=lambda line: print(line, flush=True), amps=args.amp or (None,),
                         channels_last={None: (None,), 'on': (True,), 'off': (False,),
                                        'both': (False, True)}[args.channels_last])
    except RuntimeError as e:  # an unknown model name, CUDA asked for where there is none, out of memory
        if isinstance(e, ToolError):
            raise
        raise ToolError(str(e).splitlines()[0]) from None
    for line in ratio_table(rows):
        print(line)
    noisy = noisy_rows(rows)
    if noisy:
        worst = max(noisy, key=lambda r: r['spread_pct'])
        warnings.warn(f'{len(noisy)} of {len(rows)} rows vary by more than {SPREAD_WARN:.0f}% between rounds '
                      f'(worst: {worst["model"]} {worst["mode"]}, {worst["spread_pct"]:.0f}%): the machine was '
                      f'busy; rerun when it is idle or with more --repeats before quoting these figures')
    if args.json_out:
        write_output(args.json_out, json.dumps(rows, indent=2), (), args.overwrite, '--json')
        print(f'wrote {len(rows)} rows to {os.path.abspath(args.json_out)}')
    return 0
