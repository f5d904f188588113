"""Batch-1 CPU inference latency of MSA-Net models next to timm's resnet18, measured side by side.

Rounds interleave the models so machine noise hits all of them alike; the median per model is reported
with its ratio to resnet18.

    python examples/bench_cpu_latency.py [--models ...] [--img-size 224] [--rounds 20] [--threads N]
"""
import argparse
import statistics
import time

import torch
import timm
import timm_msanet  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--models', nargs='+', default=['resnet18', 'msanet_r18_ms', 'msanet_r18_as', 'msanet_r18'])
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--rounds', type=int, default=20)
    parser.add_argument('--iters', type=int, default=5, help='forward passes timed per model per round')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 3, args.img_size, args.img_size)
    models = {name: timm.create_model(name).eval() for name in args.models}
    times = {name: [] for name in models}
    with torch.inference_mode():
        for m in models.values():
            for _ in range(3):
                m(x)
        for _ in range(args.rounds):
            for name, m in models.items():
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    m(x)
                times[name].append((time.perf_counter() - t0) / args.iters * 1e3)
    base = statistics.median(times[args.models[0]])
    print(f'torch {torch.__version__}, timm {timm.__version__}, {args.threads} threads, batch 1, {args.img_size}px')
    print(f"{'model':16s} {'median ms':>10s} {'ratio':>6s}")
    for name in models:
        med = statistics.median(times[name])
        print(f'{name:16s} {med:10.1f} {med / base:6.2f}')


if __name__ == '__main__':
    main()
