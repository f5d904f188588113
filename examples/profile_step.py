"""Where one training step of msanet_r18 (and resnet18 beside it) spends its time, by kind of operator.

torch.profiler over `--steps` SGD steps (forward, cross-entropy, backward, update) at `--img-size`, in bf16
autocast with channels_last by default (the recipes' settings), after `--warmup` steps. Operators are grouped
so that the groups answer "what holds the step back": convolutions by kernel size (forward and backward, from
the weight shape the profiler records), batch norm, CBAM's pieces (sigmoid, channel mean / max, the gating
multiply), split / cat / copies (memory-format and dtype conversions show up here: `copy_`, `contiguous`,
`to`, `clone`), elementwise (relu, add), pooling, the optimizer, everything else. Self CPU time, summed over
the profiled steps, as a share of the step; a group's figure counts each operator's own time once.

    python examples/profile_step.py --img-size 224 --batch-size 32 --steps 3 [--models msanet_r18 resnet18]
        [--fp32] [--no-channels-last] [--json OUT]

Run it on an otherwise idle machine: shares, not absolute times, are what it is for (docs/speed.md).
"""
import argparse
import json
import re
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

CONV_OPS = ('aten::mkldnn_convolution', 'aten::_convolution', 'aten::convolution_backward',
            'aten::_slow_conv2d_forward', 'aten::thnn_conv2d', 'aten::_nnpack_spatial_convolution',
            'aten::convolution_backward_overrideable', 'aten::cudnn_convolution')
BN_OPS = ('batch_norm', 'native_batch_norm')
CBAM_OPS = ('aten::sigmoid', 'aten::sigmoid_backward', 'aten::amax', 'aten::max', 'aten::mean')
LAYOUT_OPS = ('aten::cat', 'aten::split', 'aten::split_with_sizes', 'aten::copy_', 'aten::contiguous', 'aten::to',
              'aten::_to_copy', 'aten::clone', 'aten::narrow', 'aten::slice', 'aten::empty_like', 'aten::as_strided')
ELEMENTWISE_OPS = ('aten::relu', 'aten::relu_', 'aten::threshold_backward', 'aten::add', 'aten::add_', 'aten::mul',
                   'aten::mul_', 'aten::fill_', 'aten::zero_', 'aten::div', 'aten::sum')
POOL_OPS = ('pool', 'aten::avg_pool2d', 'aten::max_pool2d')
OPTIM_OPS = ('Optimizer', '_foreach', 'aten::sgd')


def conv_weight(name: str, shapes: Sequence) -> Optional[Sequence[int]]:
    """The weight shape among a convolution's recorded inputs: (input, weight, ...) forward,
    (grad_output, input, weight, ...) backward."""
    i = 2 if 'backward' in name else 1
    w = shapes[i] if len(shapes) > i else None
    return w if isinstance(w, (list, tuple)) and len(w) == 4 else None


def group_of(name: str, shapes: Sequence) -> str:
    if name in CONV_OPS or 'convolution' in name:
        w = conv_weight(name, shapes)
        return f'conv {w[2]}x{w[3]}' if w else 'conv (shape not recorded)'
    if any(k in name for k in BN_OPS):
        return 'batch norm'
    if name in CBAM_OPS:
        return 'attention pieces (sigmoid, channel mean / max)'
    if name in LAYOUT_OPS:
        return 'split / cat / copies and conversions'
    if name in ELEMENTWISE_OPS:
        return 'elementwise (relu, add, mul)'
    if any(k in name for k in POOL_OPS):
        return 'pooling'
    if any(k in name for k in OPTIM_OPS):
        return 'optimizer'
    return 'other'


def profile(name: str, img_size: int, batch_size: int, steps: int, warmup: int, bf16: bool,
            channels_last: bool) -> Dict:
    import torch
    import torch.nn.functional as F
    import timm
    import timm_msanet  # noqa: F401  (registers the models)
    from torch.profiler import ProfilerActivity, profile as torch_profile

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = timm.create_model(name, num_classes=7).to(memory_format=fmt).train()
    x = torch.randn(batch_size, 3, img_size, img_size).to(memory_format=fmt)
    y = torch.randint(0, 7, (batch_size,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    groups: Dict[str, float] = defaultdict(float)
    convs: Dict[str, float] = defaultdict(float)
    total = 0.0
    for evt in prof.key_averages(group_by_input_shape=True):
        t = evt.self_cpu_time_total / 1e3  # ms
        total += t
        g = group_of(evt.key, evt.input_shapes)
        groups[g] += t
        if g.startswith('conv'):
            w = conv_weight(evt.key, evt.input_shapes)
            if w:
                convs[f'{w[2]}x{w[3]}, {w[1]}->{w[0]} ch'] += t
    per_step = total / steps
    return dict(model=name, img_size=img_size, batch_size=batch_size, steps=steps, bf16=bf16,
                channels_last=channels_last, ms_per_step=round(per_step, 1),
                images_per_s=round(batch_size * 1e3 / per_step, 1) if per_step else None,
                groups={g: round(100 * t / total, 1) for g, t in sorted(groups.items(), key=lambda kv: -kv[1])},
                top_convs={c: round(100 * t / total, 1)
                           for c, t in sorted(convs.items(), key=lambda kv: -kv[1])[:10]},
                format_conversions=sum(1 for e in prof.events() if re.fullmatch(
                    r'aten::(contiguous|_to_copy)', e.name)) // steps)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', nargs='+', default=['msanet_r18', 'resnet18'])
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--fp32', action='store_true', help='no bf16 autocast')
    parser.add_argument('--no-channels-last', action='store_true')
    parser.add_argument('--json', dest='json_out')
    args = parser.parse_args(argv)
    rows = []
    for name in args.models:
        r = profile(name, args.img_size, args.batch_size, args.steps, args.warmup, not args.fp32,
                    not args.no_channels_last)
        rows.append(r)
        print(f"== {name}: {r['ms_per_step']} ms a step (profiled, self CPU time), {r['images_per_s']} images/s, "
              f"{r['format_conversions']} contiguous/_to_copy calls a step")
        for g, pct in r['groups'].items():
            print(f'   {pct:5.1f}%  {g}')
        print('   top convolutions (kernel, channels): ' + '; '.join(f'{c} {p}%' for c, p in r['top_convs'].items()))
    if args.json_out:
        with open(args.json_out, 'w', encoding='utf-8') as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
