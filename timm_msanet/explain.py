"""Explain one prediction: each branch's CBAM spatial attention map and the class activation map, as a PNG.

    timm-msanet explain face.jpg --checkpoint model_best.pth.tar --model msanet_r18 --out face_explain.png

The PNG is a row of panels of the preprocessed input (the squash-resized image the model sees, so every
map lines up with it): the input with the predicted label, one panel per branch with its spatial
attention gate overlaid (`branches[i].attn.spatial`, the sigmoid of its conv output, captured with a
forward hook: the map CBAM multiplies the branch features with), and the class activation map of the
predicted class (or `--target`). Models without attention (`msanet_r18_ms`) show the CAM only.

* CAM (Zhou et al., 2016): the head is global average pooling + linear, so for class c
  `CAM_c(h, w) = sum_k W[c, k] * F[k, h, w]` over the fused features F (`forward_features`), and the
  logit is exactly `mean(CAM_c) + b_c` (a test checks it). Any other pooling makes it approximate.
* Colours: each map is min-max normalised on its own (the caption gives its raw range), drawn with a
  jet-like colormap at 50% over the input. Drawing is PIL only.
* A low-resolution map (7x7 at 224 px) is upsampled bilinearly to the panel size.
"""
import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

PANEL = 224


def _spatial_modules(model) -> List[Tuple[str, Any]]:
    out = []
    for i, branch in enumerate(getattr(model, 'branches', [])):
        spatial = getattr(getattr(branch, 'attn', None), 'spatial', None)
        if spatial is not None and hasattr(spatial, 'conv'):
            kernels = getattr(model, 'branch_kernels', None)
            k = kernels[i] if kernels else None
            out.append((f'branch {i}' + (f' ({k}x{k})' if k else ''), spatial))
    return out


def explain(image, model, img_size: Optional[int] = None, target: Optional[int] = None) -> Dict[str, Any]:
    """Run one image and return its prediction, attention maps and CAM.

    Args:
        image: Path, PIL image, numpy array or CHW tensor (as `timm_msanet.predict.predict` takes).
        model: A timm classifier with `forward_features` and a linear classifier (MSA-Net or others).
        img_size: Override the model cfg's input size.
        target: Class index for the CAM (default: the predicted class).

    Returns:
        dict with 'label', 'probabilities' ({name: p}), 'target' (CAM class name), 'image' (the
        preprocessed input as an RGB PIL image), 'attention' ([(name, H x W numpy array in [0, 1])]),
        'cam' (h x w numpy array, raw), 'logits' (list) and 'cam_bias' (the class's fc bias).
    """
    import numpy as np
    import torch
    from timm.data import IMAGENET_DEFAULT_MEAN
    from PIL import Image

    from .calibration import calibrated_probs, temperature_of
    from .loading import warn_if_untrained
    from .predict import as_pil, make_transform

    warn_if_untrained(model)
    transform, cfg = make_transform(model, img_size)
    img = as_pil(image)
    x = transform(img).unsqueeze(0)
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(param.device, param.dtype)
    names = list(model.pretrained_cfg.get('label_names') or [str(i) for i in range(model.num_classes)])

    maps: Dict[str, Any] = {}
    hooks = []
    spatial = _spatial_modules(model)
    for name, module in spatial:
        def hook(mod, _inp, out, name=name, parent=module):
            maps[name] = parent.gate(out.detach().float())[0, 0].cpu().numpy()
        hooks.append(module.conv.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            feats = model.forward_features(x)
            logits = model.forward_head(feats)[0].float()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    probs = calibrated_probs(logits, temperature_of(model.pretrained_cfg)).tolist()
    pred = int(logits.argmax())
    c = pred if target is None else int(target)
    fc = model.get_classifier()
    weight = fc.weight.detach().float().reshape(fc.weight.shape[0], -1)[c]
    cam = torch.einsum('k,khw->hw', weight.cpu(), feats[0].detach().float().cpu()).numpy()
    bias = float(fc.bias.detach()[c]) if getattr(fc, 'bias', None) is not None else 0.0

    # the input as the model sees it: undo the normalisation of the transformed tensor
    mean = np.array(cfg.get('mean', IMAGENET_DEFAULT_MEAN), np.float32).reshape(-1, 1, 1)
    std = np.array(cfg['std'], np.float32).reshape(-1, 1, 1)
    view = np.clip((x[0].float().cpu().numpy() * std + mean) * 255, 0, 255).round().astype(np.uint8)
    view = Image.fromarray(view.transpose(1, 2, 0) if view.shape[0] == 3 else view[0]).convert('RGB')
    return dict(label=names[pred], probabilities=dict(zip(names, probs)), target=names[c], image=view,
                attention=[(name, maps[name]) for name, _ in spatial if name in maps], cam=cam,
                logits=logits.tolist(), cam_bias=bias)


def _jet(v):
    """A jet-like colormap for values in [0, 1] -> uint8 RGB."""
    import numpy as np

    v = np.clip(v, 0, 1)[..., None]
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.concatenate([r, g, b], -1) * 255).astype(np.uint8)


def overlay(img, heat, alpha: float = 0.5):
    """`img` (PIL RGB) with `heat` (2-D array, any range: min-max normalised) blended over it in colour."""
    import numpy as np
    from PIL import Image

    heat = np.asarray(heat, np.float32)
    lo, hi = float(heat.min()), float(heat.max())
    norm = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    up = Image.fromarray(norm, 'F').resize(img.size, Image.BILINEAR)
    colour = Image.fromarray(_jet(np.asarray(up)), 'RGB')
    return Image.blend(img.convert('RGB'), colour, alpha)


def render(result: Dict[str, Any], panel: int = PANEL):
    """The explanation as one RGB PIL image: input, attention panels, CAM; a caption above each."""
    from PIL import Image, ImageDraw

    from .predict import _font

    base = result['image'].resize((panel, panel), Image.BILINEAR)
    panels = [(base, f"input: {result['label']} {result['probabilities'][result['label']]:.2f}")]
    for name, amap in result['attention']:
        panels.append((overlay(base, amap), f'{name} attn [{amap.min():.2f}, {amap.max():.2f}]'))
    cam = result['cam']
    panels.append((overlay(base, cam), f"CAM: {result['target']} [{cam.min():.1f}, {cam.max():.1f}]"))
    font = _font(max(11, panel // 17))
    caption_h = panel // 8
    pad = 4
    canvas = Image.new('RGB', (len(panels) * (panel + pad) + pad, panel + caption_h + 2 * pad), 'white')
    draw = ImageDraw.Draw(canvas)
    for i, (im, text) in enumerate(panels):
        x = pad + i * (panel + pad)
        canvas.paste(im, (x, caption_h + pad))
        draw.text((x, pad), text, fill='black', font=font)
    return canvas


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from .loading import add_model_args

    parser.add_argument('image', metavar='IMAGE', help='an image file (an aligned face, as the model was trained on)')
    add_model_args(parser)
    parser.add_argument('--out', default=None, metavar='PNG', help='output PNG (default: IMAGE_STEM_explain.png '
                        'in the current folder)')
    parser.add_argument('--target', default=None, help='class name or index for the CAM (default: predicted)')
    parser.add_argument('--img-size', type=int, default=None, help='override the model cfg input size')
    parser.add_argument('--device', default='cpu')


def run(args: argparse.Namespace) -> int:
    import sys

    from .loading import model_from_args

    image = Path(args.image)
    out = Path(args.out) if args.out else Path(f'{image.stem}_explain.png')
    if out.suffix.lower() != '.png':
        out = out.with_suffix(out.suffix + '.png')
    if image.exists() and out.resolve() == image.resolve():
        print(f'error: --out {out} is the input image; choose another path', file=sys.stderr)
        return 2
    model = model_from_args(args).to(args.device)
    target = args.target
    if target is not None:
        names = list(model.pretrained_cfg['label_names'])
        target = names.index(target) if target in names else int(target)
    try:
        result = explain(str(image), model, img_size=args.img_size, target=target)
    except Exception as e:
        print(f'error: cannot explain {image}: {type(e).__name__}: {e}', file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    render(result).save(out)
    maps = ', '.join(name for name, _ in result['attention']) or 'none (model without attention)'
    print(f"{image}: {result['label']} {result['probabilities'][result['label']]:.3f}; wrote {out} "
          f"(attention maps: {maps}; CAM of {result['target']})")
    return 0
