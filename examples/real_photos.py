"""The packaged expression model on real photos, offline: `timm.create_model('msanet_r18', pretrained=True)`.

Photos come from installed packages, never the network: scikit-image's `astronaut` (a smiling face in a
whole photo, found with `--faces`), a few of scikit-image's LFW face crops (grey, aligned, like FER2013)
and, when matplotlib is installed, its Grace Hopper portrait. Writes the inputs, an annotated copy of
each photo and `predictions.json` under OUT, and prints one line per face.

    python examples/real_photos.py --out runs/demo/photos
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import timm
from timm_msanet.utils.images import annotate_image
from timm_msanet.inference.predict import predict

# scikit-image's lfw_subset.npy: 100 LFW faces, then 100 non-faces; these are a spread of expressions
LFW_FACES = (0, 2, 3, 19, 29, 36, 51, 95)


def write_photos(out: Path):
    """(path, faces?) for every photo available from installed packages."""
    from skimage import data
    out.mkdir(parents=True, exist_ok=True)
    photos = []
    path = out / 'astronaut.jpg'
    Image.fromarray(data.astronaut()).save(path, quality=95)
    photos.append((path, True))
    try:
        import matplotlib
        hopper = Path(matplotlib.get_data_path()) / 'sample_data' / 'grace_hopper.jpg'
        if hopper.is_file():
            photos.append((hopper, True))
    except ImportError:
        pass
    lfw = data.lfw_subset()
    for i in LFW_FACES:
        path = out / f'lfw_{i:03d}.png'
        Image.fromarray(np.clip(lfw[i] * 255, 0, 255).astype(np.uint8), 'L').resize((96, 96), Image.BICUBIC).save(path)
        photos.append((path, False))  # already a face crop: classified whole
    return photos


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, default=Path('runs/demo/photos'))
    parser.add_argument('--model', default='msanet_r18', help='default: the packaged FER2013 release')
    args = parser.parse_args(argv)

    model = timm.create_model(args.model, pretrained=True).eval()
    print(f"{args.model}: tag {model.pretrained_cfg.get('tag')}, input {model.pretrained_cfg['input_size']}, "
          f"labels {', '.join(model.pretrained_cfg['label_names'])}")
    photos = write_photos(args.out / 'inputs')
    results = []
    for faces in (True, False):
        paths = [p for p, f in photos if f == faces]
        for path, r in zip(paths, predict([str(p) for p in paths], model, faces=faces, topk=2)):
            annotated = args.out / 'annotated' / f'{path.stem}.png'
            annotated.parent.mkdir(parents=True, exist_ok=True)
            annotate_image(str(path), r).save(annotated)
            r['annotated'] = str(annotated)
            results.append(r)
            for face in (r.get('faces') or [r]):
                if face.get('label'):
                    top = ', '.join(f"{t['label']} {t['probability']:.2f}" for t in face['topk'])
                    where = f" face {face['box']}" if 'box' in face else ''
                    print(f'{path.name}{where}: {top}')
                else:
                    print(f"{path.name}: {r.get('error')}")
    (args.out / 'predictions.json').write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'predictions.json'} and annotated copies in {args.out / 'annotated'}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
