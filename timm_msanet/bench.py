"""Training and inference throughput of the MSA-Net models next to timm's CNNs, in one process and one run.

For each model, mode (train / infer) and eager or `torch.compile`d execution: images per second,
achieved TFLOP/s (FLOPs of one step counted with torch's FlopCounterMode, forward for infer, forward
plus backward for train, divided by the measured step time) and peak memory. On CUDA the models run in
bf16 autocast with channels_last (the settings users train with) and peak memory is
`torch.cuda.max_memory_allocated`; on CPU in float32, and peak memory is the growth of the process's
peak resident set during that row (0 when an earlier row already reached a higher peak).

    timm-msanet bench [--models ...] [--device cpu|cuda] [--mode train infer] [--batch-size N] [--compile]
                      [--img-size 224] [--steps 20] [--json OUT]

Rows of one run share the machine state, so compare ratios within a run; quote absolute times from a GPU.
"""
import argparse
import json
import resource
import sys
import time
from typing import Dict, List, Optional, Sequence

DEFAULT_MODELS = ('msanet_r18', 'msanet_r18_ms', 'msanet_r18_as', 'resnet18', 'resnet50', 'res2net50_26w_4s')


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


def bench_one(name: str, device: str, mode: str, batch_size: int, compiled: bool, img_size: int = 224,
              steps: int = 20, warmup: int = 5) -> Dict:
    import torch
    import torch.nn.functional as F
    import timm
    import timm_msanet  # noqa: F401

    dev = torch.device(device)
    cuda = dev.type == 'cuda'
    train = mode == 'train'
    model = timm.create_model(name, num_classes=7).to(dev)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(memory_format=fmt).train(train)
    x = torch.randn(batch_size, 3, img_size, img_size, device=dev).to(memory_format=fmt)
    y = torch.randint(0, 7, (batch_size,), device=dev)
    flops = count_step_flops(model, x, train)
    step_model = torch.compile(model) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9) if train else None
    autocast = torch.autocast('cuda', dtype=torch.bfloat16, enabled=cuda)

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

    rss0 = _peak_rss_mb()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else max(0.0, _peak_rss_mb() - rss0)
    return dict(model=name, device=device, mode=mode, batch_size=batch_size, compiled=compiled,
                img_s=round(batch_size * steps / elapsed, 1), tflops=round(flops * steps / elapsed / 1e12, 4),
                peak_mem_mb=round(peak, 1), img_size=img_size, dtype='bfloat16' if cuda else 'float32',
                gflops_per_step=round(flops / 1e9, 2), step_ms=round(elapsed / steps * 1e3, 2))


def run_bench(models: Sequence[str] = DEFAULT_MODELS, device: Optional[str] = None, modes=('train', 'infer'),
              batch_size: Optional[int] = None, compile_modes=(False,), img_size: int = 224, steps: int = 20,
              warmup: int = 5, log=print) -> List[Dict]:
    import torch
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    batch_size = batch_size or (256 if device.startswith('cuda') else 8)
    rows = []
    for compiled in compile_modes:
        for mode in modes:
            for name in models:
                row = bench_one(name, device, mode, batch_size, compiled, img_size, steps, warmup)
                rows.append(row)
                log(format_row(row))
    return rows


def format_row(r: Dict) -> str:
    return (f"{r['model']:18s} {r['device']:5s} {r['mode']:5s} {'compiled' if r['compiled'] else 'eager':8s} "
            f"b{r['batch_size']:<4d} {r['img_s']:10.1f} img/s {r['tflops']:8.3f} TFLOP/s {r['peak_mem_mb']:9.1f} MB")


def ratio_table(rows: List[Dict], baseline: str = 'resnet18') -> List[str]:
    """Each model's TFLOP/s and img/s as a ratio to the baseline's in the same mode / execution."""
    out = []
    base = {(r['mode'], r['compiled']): r for r in rows if r['model'] == baseline}
    for r in rows:
        b = base.get((r['mode'], r['compiled']))
        if b and r['model'] != baseline and b['tflops'] > 0:
            out.append(f"{r['model']:18s} {r['mode']:5s} {'compiled' if r['compiled'] else 'eager':8s} "
                       f"TFLOP/s {r['tflops'] / b['tflops']:.2f}x {baseline}, img/s {r['img_s'] / b['img_s']:.2f}x")
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS))
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--mode', nargs='+', choices=('train', 'infer'), default=['train', 'infer'])
    parser.add_argument('--batch-size', type=int, default=None, help='default 256 on CUDA, 8 on CPU')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--compile', action='store_true', help='also measure torch.compile (eager rows always run)')
    parser.add_argument('--json', dest='json_out', default=None, help='write the rows as a JSON list here')


def run(args: argparse.Namespace) -> int:
    import torch
    import timm
    print(f'torch {torch.__version__}, timm {timm.__version__}, '
          f'{torch.cuda.get_device_name(0) if (args.device or "").startswith("cuda") or (args.device is None and torch.cuda.is_available()) else "cpu, " + str(torch.get_num_threads()) + " threads"}',
          flush=True)
    try:
        rows = run_bench(args.models, args.device, args.mode, args.batch_size,
                         (False, True) if args.compile else (False,), args.img_size, args.steps, args.warmup,
                         log=lambda line: print(line, flush=True))
    except RuntimeError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    for line in ratio_table(rows):
        print(line)
    if args.json_out:
        with open(args.json_out, 'w') as f:
            json.dump(rows, f, indent=2)
    return 0
