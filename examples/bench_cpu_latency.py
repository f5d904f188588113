"""CPU inference speed of MSA-Net models next to timm's resnet18, in PyTorch and in onnxruntime, side by side.

One run reports, per model and backend: batch-1 latency (median ms per image) and batched throughput
(images/s at `--batch`, default 32), each with its ratio to resnet18 on the same backend. The ONNX
models are exported to a temporary folder with `timm_msanet.inference.export_onnx.export_onnx` (dynamic batch) and run
with onnxruntime's CPU provider, `--threads` intra-op threads like torch.

Rounds interleave every (model, backend, batch) measurement so machine noise hits all of them alike; the
median over rounds is reported.

    python examples/bench_cpu_latency.py [--models ...] [--batch-models ...] [--onnx-models ...]
        [--img-size 224] [--batch 32] [--rounds 20] [--iters 5] [--threads N] [--no-onnx]
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import timm
import timm_msanet  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--models', nargs='+', default=['resnet18', 'msanet_r18_ms', 'msanet_r18_as', 'msanet_r18'],
                        help='batch-1 latency in torch (the first is the reference)')
    parser.add_argument('--batch-models', nargs='+', default=['resnet18', 'msanet_r18'],
                        help='batched throughput in torch')
    parser.add_argument('--onnx-models', nargs='+', default=['resnet18', 'msanet_r18'],
                        help='batch-1 latency and batched throughput in onnxruntime')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--rounds', type=int, default=20)
    parser.add_argument('--iters', type=int, default=5, help='batch-1 forward passes timed per model per round')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--no-onnx', action='store_true')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ref_name = args.models[0]
    names = list(dict.fromkeys(args.models + args.batch_models + ([] if args.no_onnx else args.onnx_models)))
    models = {name: timm.create_model(name).eval() for name in names}
    x1 = torch.randn(1, 3, args.img_size, args.img_size)
    xb = torch.randn(args.batch, 3, args.img_size, args.img_size)

    # (name, backend, batch) -> (callable, iterations per round)
    runs = {}
    for name in args.models:
        runs[(name, 'torch', 1)] = (lambda m=models[name]: m(x1), args.iters)
    for name in args.batch_models:
        runs[(name, 'torch', args.batch)] = (lambda m=models[name]: m(xb), 1)
    tmp = tempfile.TemporaryDirectory()
    if not args.no_onnx:
        import onnxruntime as ort
        from timm_msanet.inference.export_onnx import export_onnx

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        for name in args.onnx_models:
            path = export_onnx(models[name], Path(tmp.name) / f'{name}.onnx', img_size=args.img_size)
            sess = ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
            a1, ab = x1.numpy(), xb.numpy()
            runs[(name, 'onnxruntime', 1)] = (lambda s=sess: s.run(None, {'input': a1}), args.iters)
            runs[(name, 'onnxruntime', args.batch)] = (lambda s=sess: s.run(None, {'input': ab}), 1)

    times = {key: [] for key in runs}
    with torch.inference_mode():
        for fn, _ in runs.values():  # warm-up
            for _ in range(2):
                fn()
        for _ in range(args.rounds):
            for key, (fn, iters) in runs.items():
                t0 = time.perf_counter()
                for _ in range(iters):
                    fn()
                times[key].append((time.perf_counter() - t0) / iters)
    tmp.cleanup()

    print(f'torch {torch.__version__}, timm {timm.__version__}'
          + ('' if args.no_onnx else f', onnxruntime {__import__("onnxruntime").__version__}')
          + f', {args.threads} threads, {args.img_size}px, medians of {args.rounds} interleaved rounds')
    print(f"{'model':16s} {'backend':12s} {'batch-1 ms':>10s} {'ratio':>6s} {f'batch-{args.batch} img/s':>14s} "
          f"{'ratio':>6s}")
    for backend in ('torch', 'onnxruntime'):
        ref1 = times.get((ref_name, backend, 1))
        refb = times.get((ref_name, backend, args.batch))
        for name in names:
            t1, tb = times.get((name, backend, 1)), times.get((name, backend, args.batch))
            if t1 is None and tb is None:
                continue
            ms = statistics.median(t1) * 1e3 if t1 else None
            ips = args.batch / statistics.median(tb) if tb else None
            r1 = f'{ms / (statistics.median(ref1) * 1e3):6.2f}' if ms and ref1 else f"{'':6s}"
            rb = f'{ips / (args.batch / statistics.median(refb)):6.2f}' if ips and refb else f"{'':6s}"
            print(f"{name:16s} {backend:12s} {f'{ms:.1f}' if ms else '-':>10s} {r1} "
                  f"{f'{ips:.1f}' if ips else '-':>14s} {rb}")


if __name__ == '__main__':
    main()
