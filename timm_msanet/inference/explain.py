"""Explain one prediction: each branch's CBAM spatial attention map and the class activation map, as a PNG.

    timm-msanet explain face.jpg --checkpoint model_best.pth.tar --model msanet_r18 --out face_explain.png
    timm-msanet explain group.jpg --faces --out group_explain.png      # one row per detected face

The PNG is a row of panels of the preprocessed input (the squash-resized image the model sees, so every
map lines up with it): the input with the predicted label, one panel per branch with its spatial
attention gate overlaid (`branches[i].attn.spatial`, the sigmoid of its conv output, captured with a
forward hook: the map CBAM multiplies the branch features with), and the class activation map of the
predicted class (or `--target`). Models without attention (`msanet_r18_ms`) show the CAM only.

* CAM (Zhou et al., 2016): the head is global average pooling + linear, so for class c
  `CAM_c(h, w) = sum_k W[c, k] * F[k, h, w]` over the fused features F (`forward_features`), and the
  logit is exactly `mean(CAM_c) + b_c` (a test checks it). Any other pooling makes it approximate.
* Colours: each map is min-max normalised on its own (the caption gives its raw range), drawn with a
  jet-like colormap at 50% over the input; a colour bar at the right end of the row reads blue = the
  map's minimum, red = its maximum. Drawing is PIL only.
* `--faces`: on a photo rather than an aligned face, detect faces as `predict --faces` does (the same
  `--detector`; with a landmark detector each face is aligned to the framing the model was trained with,
  `--no-align` for the square crop with `--margin`) and explain each face image, one row per face, left to
  right (the `--max-faces` largest): the maps are of what the model saw, so they line up with the aligned face.
  Without it the whole image is explained, as the model would see it.
* A low-resolution map (7x7 at 224 px, 2x2 at 64 px) is upsampled bilinearly to the panel size; each panel's
  caption and the command's last line give the map's own size.
"""
import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..utils.errors import ToolError
from .faces import DEFAULT_MARGIN, DETECTORS, box_area, face_slot, framing_notice, locate_faces, require_detector
from ..utils.images import as_pil, font
from ..loading import ExpressionModel, add_model_args, calibrated, model_from_args, model_input_paths
from ..utils.options import device, face_margin, positive_int
from ..utils.outputs import add_overwrite_argument, atomic_path, check_output, printable

PANEL = 224


class ExplainError(ToolError):
    """The image could not be explained (unreadable, or no face in it with --faces)."""

    exit_status = 1



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
        image: Path, PIL image, numpy array or CHW tensor (as `timm_msanet.inference.predict.predict` takes).
        model: An `ExpressionModel` or a timm classifier with `forward_features` and a linear classifier
            (MSA-Net or others).
        img_size: Override the model cfg's input size.
        target: Class index for the CAM (default: the predicted class).

    Returns:
        dict with 'label', 'probabilities' ({name: p}), 'target' (CAM class name), 'image' (the
        preprocessed input as an RGB PIL image), 'attention' ([(name, H x W numpy array in [0, 1])]),
        'cam' (h x w numpy array, raw), 'logits' (list) and 'cam_bias' (the class's fc bias).
    """
    import torch

    record = ExpressionModel.of(model)
    record.warn_if_untrained()
    engine = record.engine(device=_device_of(record.module), batch_size=1, img_size=img_size)
    x = engine.transform(as_pil(image)).unsqueeze(0)
    maps: Dict[str, Any] = {}
    spatial = _spatial_modules(record.module)
    hooks = []
    for name, module in spatial:
        def hook(mod, _inp, out, name=name, parent=module):
            maps[name] = parent.gate(out.detach().float())[0, 0].cpu().numpy()
        hooks.append(module.conv.register_forward_hook(hook))
    try:
        feats, logits = engine.run(x, lambda m, x: _features_and_logits(m, x))
    finally:
        for h in hooks:
            h.remove()
    logits = logits[0].float().cpu()
    names = record.label_names
    probs = calibrated(logits, record.temperature).tolist()
    pred = int(logits.argmax())
    c = pred if target is None else int(target)
    fc = record.module.get_classifier()
    weight = fc.weight.detach().float().reshape(fc.weight.shape[0], -1)[c]
    cam = torch.einsum('k,khw->hw', weight.cpu(), feats[0].detach().float().cpu()).numpy()
    bias = float(fc.bias.detach()[c]) if getattr(fc, 'bias', None) is not None else 0.0
    return dict(label=names[pred], probabilities=dict(zip(names, probs)), target=names[c],
                image=_model_view(engine, x), attention=[(name, maps[name]) for name, _ in spatial if name in maps],
                cam=cam, logits=logits.tolist(), cam_bias=bias)


def _device_of(module):
    param = next(module.parameters(), None)
    return param.device if param is not None else 'cpu'


def _features_and_logits(module, x):
    feats = module.forward_features(x)
    return feats, module.forward_head(feats)


def _model_view(engine, x):
    """The input as the model sees it (its own grey step applied): the transformed tensor, normalisation undone."""
    import numpy as np
    from PIL import Image
    from timm.data import IMAGENET_DEFAULT_MEAN

    cfg = engine.data_config
    mean = np.array(cfg.get('mean', IMAGENET_DEFAULT_MEAN), np.float32).reshape(-1, 1, 1)
    std = np.array(cfg['std'], np.float32).reshape(-1, 1, 1)
    grey_step = getattr(engine.record.module, 'input_grey', None)
    seen = engine.run(x, lambda m, x: grey_step(x)) if grey_step is not None else x
    view = np.clip((seen[0].float().cpu().numpy() * std + mean) * 255, 0, 255).round().astype(np.uint8)
    return Image.fromarray(view.transpose(1, 2, 0) if view.shape[0] == 3 else view[0]).convert('RGB')


def explain_faces(image, model, margin: Optional[float] = None, max_faces: int = 8, img_size: Optional[int] = None,
                  target: Optional[int] = None, detector: str = 'auto', align: bool = True) -> List[Dict[str, Any]]:
    """Detect faces in a photo (as `predict --faces`) and `explain` each one (the `max_faces` largest), left to
    right.

    Each result also has 'face' (its index) and what `predict` reports of the face: 'box' (the detection,
    x0, y0, x1, y1), and either 'crop' (the square region explained) or, with a landmark detector
    ('dlib', 'dlib-cnn') and `align`, 'aligned' (rotation, side, framing), plus 'detector_score' and
    'landmarks'. An empty list when no face is found. Needs the `faces` extra (Haar) or the `landmarks`
    extra (dlib)."""
    record = ExpressionModel.of(model)
    img = as_pil(image)
    framing = record.framing if align else None
    results = []
    found = locate_faces(img, detector)
    keep = sorted(range(len(found)), key=lambda i: -box_area(found[i].box))[:max_faces]  # the largest, in order
    for face in [found[i] for i in sorted(keep)]:
        slot, face_img = face_slot(img, face, DEFAULT_MARGIN if margin is None else margin, framing)
        r = explain(face_img, record, img_size=img_size, target=target)
        results.append(dict(r, face=len(results), **slot))
    return results


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


def colour_bar(height: int, width: int, label_font):
    """A vertical jet colour bar (maximum at the top) with 'max' / 'min' written on it."""
    import numpy as np
    from PIL import Image, ImageDraw

    ramp = np.linspace(1, 0, height, dtype=np.float32)[:, None].repeat(width, 1)
    bar = Image.fromarray(_jet(ramp), 'RGB')
    draw = ImageDraw.Draw(bar)
    for text, y in (('max', 2), ('min', height - 2)):
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=label_font)
        draw.text(((width - (x1 - x0)) // 2, y if y < height // 2 else y - (y1 - y0) - 4), text, fill='white',
                  font=label_font)
    return bar


def _size(amap) -> str:
    return f'{amap.shape[0]}x{amap.shape[1]}'


def render(result: Dict[str, Any], panel: int = PANEL):
    """The explanation as one RGB PIL image: input, attention panels, CAM, colour bar; a caption above each."""
    from PIL import Image, ImageDraw


    base = result['image'].resize((panel, panel), Image.BILINEAR)
    face = f"face {result['face']}: " if 'face' in result else 'input: '  # its box is in the printed lines
    panels = [(base, f"{face}{result['label']} {result['probabilities'][result['label']]:.2f}")]
    for name, amap in result['attention']:
        # the map's own size: at 64 px the last block's maps are 2x2, stretched over the whole panel
        panels.append((overlay(base, amap), f'{name} {_size(amap)} [{amap.min():.2f}, {amap.max():.2f}]'))
    cam = result['cam']
    panels.append((overlay(base, cam), f"CAM {_size(cam)}: {result['target']} [{cam.min():.1f}, {cam.max():.1f}]"))
    caption_font = font(max(11, panel // 17))
    caption_h = panel // 8
    pad = 4
    bar_w = max(24, panel // 7)
    canvas = Image.new('RGB', (len(panels) * (panel + pad) + bar_w + 2 * pad, panel + caption_h + 2 * pad), 'white')
    draw = ImageDraw.Draw(canvas)
    for i, (im, text) in enumerate(panels):
        x = pad + i * (panel + pad)
        canvas.paste(im, (x, caption_h + pad))
        draw.text((x, pad), text, fill='black', font=caption_font)
    canvas.paste(colour_bar(panel, bar_w, font(max(9, panel // 22))), (canvas.width - bar_w - pad, caption_h + pad))
    return canvas


def render_rows(results: Sequence[Dict[str, Any]], panel: int = PANEL):
    """Several explanations (e.g. one per face) stacked as rows of one image."""
    from PIL import Image

    rows = [render(r, panel) for r in results]
    canvas = Image.new('RGB', (max(r.width for r in rows), sum(r.height for r in rows)), 'white')
    y = 0
    for row in rows:
        canvas.paste(row, (0, y))
        y += row.height
    return canvas


def configure_parser(parser: argparse.ArgumentParser) -> None:

    parser.add_argument('image', metavar='IMAGE', help='an image file: an aligned face, as the model was trained on, '
                        'or a photo with --faces')
    add_model_args(parser)
    parser.add_argument('--faces', action='store_true',
                        help='detect faces (as predict --faces) and explain each one, a row per face')
    parser.add_argument('--detector', choices=DETECTORS, default='auto',
                        help='with --faces: the face detector, as for predict (auto: dlib when installed, else haar; '
                             'dlib and dlib-cnn give landmarks: faces are aligned as the model was trained)')
    parser.add_argument('--no-align', action='store_true',
                        help='with landmarks: explain the square crop of the box instead of the aligned face')
    parser.add_argument('--margin', type=face_margin, default=None,
                        help='with --faces: crop margin, a fraction of the face side on every side (default 0.2)')
    parser.add_argument('--max-faces', type=positive_int, default=8,
                        help='with --faces: explain at most this many (largest)')
    parser.add_argument('--out', default=None, metavar='PNG', help='output PNG (default: IMAGE_STEM_explain.png '
                        'in the current folder)')
    parser.add_argument('--target', default=None, help='class name or index for the CAM (default: predicted)')
    parser.add_argument('--device', type=device, default='cpu')
    add_overwrite_argument(parser, 'the output PNG')


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    image = Path(args.image)
    out = Path(args.out) if args.out else Path(f'{image.stem}_explain.png')
    if out.suffix.lower() != '.png':
        out = out.with_suffix(out.suffix + '.png')
    check_output(out, [image, *model_input_paths(args)], args.overwrite, '--out')
    if args.faces:
        require_detector(args.detector)
    model = model_from_args(args)
    model.module.to(args.device)
    note = framing_notice(model.framing_recorded, args.detector, not args.no_align) if args.faces else None
    if note:
        print(note, file=sys.stderr)
    target = args.target
    if target is not None:
        names = list(model.label_names)
        if target in names:
            target = names.index(target)
        elif target.isdigit() and int(target) < len(names):
            target = int(target)
        else:
            raise ToolError(f'--target {target!r} is not a class of this model: give a name '
                               f'({", ".join(names)}) or an index from 0 to {len(names) - 1}')
    try:
        if args.faces:
            results = explain_faces(str(image), model, margin=args.margin, max_faces=args.max_faces,
                                    target=target, detector=args.detector, align=not args.no_align)
        else:
            results = [explain(str(image), model, target=target)]
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # unreadable, truncated, not an image
        raise ExplainError(f'cannot explain {image}: {type(e).__name__}: {e}') from None
    if not results:
        raise ExplainError(f'no face detected in {image}; without --faces the whole image is explained')
    with atomic_path(out, [image, *model_input_paths(args)], args.overwrite, '--out') as tmp:
        render_rows(results).save(tmp, format='PNG')
    maps = ', '.join(f'{name} {_size(amap)}' for name, amap in results[0]['attention']) or \
        'none (model without attention)'
    for r in results:
        where = f" face {r['face']} {r['box']}" if 'box' in r else ''
        if 'aligned' in r:
            where += f" aligned (rotated {r['aligned']['rotation']:+.1f} degrees)"
        print(f"{printable(image)}{where}: {r['label']} {r['probabilities'][r['label']]:.3f} (CAM of {r['target']})")
    print(f"wrote {out}: {len(results)} row(s); attention maps: {maps}; CAM {_size(results[0]['cam'])}")
    return 0
