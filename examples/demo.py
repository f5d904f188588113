"""End-to-end demo with no downloads: synthetic faces -> timm training components -> eval -> save -> reload.

1. Draws a small labelled dataset of cartoon faces (one mouth/brow/eye pattern per expression, random
   position, size, colour, noise) as JPEG files in an ImageFolder tree whose folders are the package's
   canonical class names, exactly like `timm-msanet export` writes.
2. Trains `msanet_r18` from scratch for a few steps with timm's own data pipeline (create_dataset,
   create_loader with the model's FER data config and timm's train augmentation), optimizer and
   scheduler factories.
3. Evaluates overall and mean class accuracy on the validation split.
4. Saves the weights with their config (timm's `save_for_hf`: `model.safetensors` beside `config.json`,
   which records the architecture, the demo resolution and the class names) and reloads the folder through
   timm's own `local-dir:` path, checking the reloaded model gives identical logits and the same data config.
   `timm-msanet eval --checkpoint OUT/model.safetensors` reads that config too, so it scores at the demo's
   resolution without being told.

    python examples/demo.py --out runs/demo
"""
import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

import timm
from timm.data import create_dataset, create_loader, resolve_data_config
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.models import save_for_hf

import timm_msanet
from timm_msanet import FER7_LABELS


def draw_face(label: str, rng: random.Random, size: int = 96) -> Image.Image:
    """A cartoon face whose brows, eyes and mouth depend on the expression."""
    bg = tuple(rng.randint(0, 255) for _ in range(3))
    img = Image.new('RGB', (size, size), bg)
    d = ImageDraw.Draw(img)
    s = size * rng.uniform(0.75, 0.95)
    cx, cy = size / 2 + rng.uniform(-4, 4), size / 2 + rng.uniform(-4, 4)
    skin = tuple(int(c) for c in np.clip(np.array([224, 172, 140]) + rng.uniform(-60, 30), 0, 255))
    d.ellipse([cx - s * 0.4, cy - s * 0.5, cx + s * 0.4, cy + s * 0.5], fill=skin)
    ink = (20, 20, 20)
    w = max(1, int(s / 40))
    eye_y, eye_dx, eye_r = cy - s * 0.12, s * 0.16, s * 0.05
    if label in ('surprise', 'fear'):
        eye_r *= 1.6
    for sx in (-1, 1):
        ex = cx + sx * eye_dx
        d.ellipse([ex - eye_r, eye_y - eye_r, ex + eye_r, eye_y + eye_r], fill=(250, 250, 250), outline=ink)
        d.ellipse([ex - eye_r / 2, eye_y - eye_r / 2, ex + eye_r / 2, eye_y + eye_r / 2], fill=ink)
        # brows: angry slope down to the centre, sad/fear slope up, surprise raised high
        by = eye_y - eye_r - s * 0.06
        inner, outer = by, by
        if label == 'anger':
            inner += s * 0.06
        elif label in ('sadness', 'fear'):
            inner -= s * 0.05
        elif label == 'surprise':
            inner -= s * 0.06
            outer -= s * 0.06
        elif label == 'disgust':
            inner += s * 0.03
            outer -= s * 0.02
        d.line([cx + sx * s * 0.06, inner, cx + sx * s * 0.24, outer], fill=ink, width=w + 1)
    my, mw = cy + s * 0.25, s * 0.18
    if label == 'happiness':
        d.arc([cx - mw, my - s * 0.12, cx + mw, my + s * 0.08], 20, 160, fill=ink, width=w + 1)
    elif label == 'sadness':
        d.arc([cx - mw, my, cx + mw, my + s * 0.16], 200, 340, fill=ink, width=w + 1)
    elif label == 'surprise':
        d.ellipse([cx - mw * 0.45, my - s * 0.08, cx + mw * 0.45, my + s * 0.1], fill=(90, 20, 20), outline=ink)
    elif label == 'fear':
        d.rectangle([cx - mw * 0.8, my - s * 0.03, cx + mw * 0.8, my + s * 0.04], fill=(90, 20, 20), outline=ink)
    elif label == 'disgust':
        pts = [(cx - mw + i * mw / 3, my + (s * 0.03 if i % 2 else -s * 0.03)) for i in range(7)]
        d.line(pts, fill=ink, width=w + 1)
    elif label == 'anger':
        d.line([cx - mw, my + s * 0.02, cx + mw, my + s * 0.02], fill=ink, width=w + 2)
    else:  # neutral
        d.line([cx - mw * 0.8, my, cx + mw * 0.8, my], fill=ink, width=w)
    img = img.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR, fillcolor=bg)
    noise = np.asarray(img, dtype=np.float32) + np.random.default_rng(rng.randint(0, 2**31)).normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.5))


def make_dataset(root: Path, per_class_train: int, per_class_val: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    for split, n in (('train', per_class_train), ('validation', per_class_val)):
        for label in FER7_LABELS:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw_face(label, rng).save(folder / f'{label}_{i:04d}.jpg', quality=90)


@torch.no_grad()
def evaluate(model, loader, num_classes: int):
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    logits_all = []
    for x, y in loader:
        logits = model(x)
        logits_all.append(logits)
        confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes ** 2).view(
            num_classes, num_classes)
    acc = confusion.diag().sum().item() / confusion.sum().item()
    support = confusion.sum(1)
    recall = confusion.diag()[support > 0].float() / support[support > 0].float()
    return acc, recall.mean().item(), torch.cat(logits_all)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, default=Path('runs/demo'))
    parser.add_argument('--model', default='msanet_r18')
    parser.add_argument('--img-size', type=int, default=112, help='train/eval resolution (224 is the cfg default)')
    parser.add_argument('--per-class', type=int, default=40, help='training images per class')
    parser.add_argument('--steps', type=int, default=80)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    device = torch.device('cpu')  # a demo that runs anywhere; timm's train.py is the path for GPUs
    data_root = args.out / 'data'
    if not (data_root / 'train').is_dir():
        make_dataset(data_root, args.per_class, max(4, args.per_class // 4), seed=args.seed)
    model = timm.create_model(args.model, pretrained=False, num_classes=len(FER7_LABELS))
    # the model's own FER data config (squash resize, ImageNet stats) at the demo resolution
    data_cfg = resolve_data_config(dict(input_size=(3, args.img_size, args.img_size)), model=model)

    train_set = create_dataset('', root=str(data_root / 'train'), is_training=True)
    val_set = create_dataset('', root=str(data_root / 'validation'))
    assert train_set.reader.class_to_idx == {name: i for i, name in enumerate(FER7_LABELS)}
    train_loader = create_loader(train_set, batch_size=args.batch_size, is_training=True, num_workers=0,
                                 hflip=0.5, scale=(0.8, 1.0), device=device, use_prefetcher=False, **data_cfg)
    val_loader = create_loader(val_set, batch_size=32, is_training=False, num_workers=0, device=device,
                               use_prefetcher=False, **data_cfg)

    optimizer = create_optimizer_v2(model, 'adamw', lr=args.lr, weight_decay=0.05)
    scheduler, _ = create_scheduler_v2(optimizer, sched='cosine', num_epochs=args.steps, warmup_epochs=0)
    model.train()
    step, losses, t0 = 0, [], time.time()
    while step < args.steps:
        for x, y in train_loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            losses.append(loss.item())
            if step % 10 == 0 or step == args.steps:
                print(f'step {step:4d}/{args.steps}  loss {sum(losses[-10:]) / len(losses[-10:]):.3f}', flush=True)
            if step >= args.steps:
                break
            model.train()
    train_s = time.time() - t0

    acc, mean_class_acc, logits = evaluate(model, val_loader, len(FER7_LABELS))
    weights = args.out / 'model.safetensors'
    # the architecture's default cfg describes the packaged FER2013 release (grey input, its temperature and
    # metrics in `notes`); this model was trained here, on colour drawings, so its config must say so instead
    own_cfg = dict(tag='demo', notes=(), license='apache-2.0',
                   description=f'{args.model} trained from scratch by examples/demo.py on drawn faces')
    save_for_hf(model, str(args.out), model_config=dict(label_names=list(FER7_LABELS), pretrained_cfg=own_cfg),
                data_config=data_cfg, safe_serialization=True)
    from timm_msanet.utils.outputs import usual_permissions
    usual_permissions(args.out / 'model.safetensors')  # safetensors writes 0600: readable as the umask allows
    reloaded = timm.create_model(f'local-dir:{args.out.resolve()}', pretrained=True)
    if resolve_data_config({}, model=reloaded)['input_size'] != data_cfg['input_size']:
        print(f'ERROR: the saved config does not give back the demo resolution {data_cfg["input_size"]}',
              file=sys.stderr)
        return 1
    _, _, logits_reloaded = evaluate(reloaded, val_loader, len(FER7_LABELS))
    reload_diff = (logits - logits_reloaded).abs().max().item()

    summary = dict(
        model=args.model, timm_msanet=timm_msanet.__version__, timm=timm.__version__, torch=torch.__version__,
        img_size=args.img_size, train_images=len(train_set), val_images=len(val_set), steps=args.steps,
        loss_first10=round(sum(losses[:10]) / len(losses[:10]), 4),
        loss_last10=round(sum(losses[-10:]) / len(losses[-10:]), 4),
        val_accuracy=round(acc, 4), val_mean_class_accuracy=round(mean_class_acc, 4),
        train_seconds=round(train_s, 1), weights=str(weights), reload_max_abs_diff=reload_diff,
        label_names=list(reloaded.pretrained_cfg.get('label_names') or []), config=str(args.out / 'config.json'),
    )
    (args.out / 'summary.json').write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    if reload_diff != 0.0:
        print('ERROR: reloaded weights give different logits', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
