"""How the leak check's perceptual threshold was chosen: the figures of docs/datasets.md ("Choosing the threshold").

Not a test: a few minutes on 2 cores. DIR is a FER2013 folder layout (train/ and test/ class folders).

    PYTHONPATH=. python examples/measure_leak_threshold.py changes DIR     # bits moved by re-encoding and resizing
    PYTHONPATH=. python examples/measure_leak_threshold.py nearest DIR     # test -> nearest train image, by distance
    PYTHONPATH=. python examples/measure_leak_threshold.py pairs EXPORT    # pixel correlation of an export's pairs
"""
import argparse
import glob
import io
import json
import os

import numpy as np
from PIL import Image

from timm_msanet.data.leakage import _popcount, hamming, perceptual_hash


def _jpeg(img, quality):
    buf = io.BytesIO()
    img.convert('RGB').save(buf, 'JPEG', quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def _changes(img):
    w, h = img.size
    return {
        'JPEG q90': _jpeg(img, 90), 'JPEG q50': _jpeg(img, 50),
        'resize 0.75x': img.resize((int(w * .75), int(h * .75)), Image.BICUBIC),
        'resize 2x': img.resize((w * 2, h * 2), Image.BICUBIC),
        'resize 0.5x + JPEG q75': _jpeg(img.resize((w // 2, h // 2), Image.BICUBIC), 75),
        'crop 1 px off each side': img.crop((1, 1, w - 1, h - 1)),
    }


def changes(root):
    from skimage import data
    fer = [Image.open(f) for f in sorted(glob.glob(f'{root}/test/*/*'))[::7]]
    photos = [Image.fromarray(getattr(data, n)()) for n in (
        'astronaut', 'camera', 'coffee', 'chelsea', 'rocket', 'coins', 'moon', 'page', 'text', 'horse', 'brick',
        'grass', 'gravel', 'retina', 'colorwheel', 'logo', 'clock', 'immunohistochemistry', 'hubble_deep_field')]
    for name, images in ((f'{len(fer)} FER2013 faces', fer), (f'{len(photos)} scikit-image photos', photos)):
        worst = {}
        for img in images:
            base = perceptual_hash(img)
            for change, moved in _changes(img).items():
                worst[change] = max(worst.get(change, 0), hamming(base, perceptual_hash(moved)))
        print(name, 'max bits moved:', worst)


def _hashes(files):
    return np.array([perceptual_hash(Image.open(f)) for f in files], dtype=np.uint64)


def nearest(root):
    train, test = sorted(glob.glob(f'{root}/train/*/*')), sorted(glob.glob(f'{root}/test/*/*'))
    ht, hs = _hashes(train), _hashes(test)
    dist = np.concatenate([_popcount(hs[i:i + 256, None] ^ ht[None, :]).min(1) for i in range(0, len(hs), 256)])
    arr = lambda f: np.asarray(Image.open(f).convert('L'), dtype=np.float64).ravel()  # noqa: E731
    for t in (0, 2, 4, 6, 8, 10):
        cors = []
        for i in np.nonzero(dist == t)[0]:
            j = int(np.argmin(_popcount(hs[i] ^ ht)))
            cors.append(np.corrcoef(arr(test[i]), arr(train[j]))[0, 1])
        print(f'within {t} bits: {(dist <= t).sum()} test images; nearest pairs at exactly {t}: median correlation '
              f'{np.median(cors) if cors else float("nan"):.2f}, above 0.9: {np.mean(np.array(cors) > 0.9) if cors else 0:.0%}')


def pairs(export):
    manifest = json.load(open(os.path.join(export, 'manifest.json')))
    arr = lambda p: np.asarray(Image.open(os.path.join(export, p['file'])).convert('L'), dtype=np.float64).ravel()  # noqa: E731
    cors = np.array([np.corrcoef(arr(p['a']), arr(p['b']))[0, 1] for p in manifest['leak_check']['pairs']
                     if not p['identical']])
    print(f'{len(cors)} pairs not byte-identical: median correlation {np.median(cors):.2f}, '
          f'{np.mean(cors > 0.9):.0%} above 0.9, {np.mean(cors < 0.8):.1%} below 0.8')


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('what', choices=('changes', 'nearest', 'pairs'))
    parser.add_argument('root')
    args = parser.parse_args()
    {'changes': changes, 'nearest': nearest, 'pairs': pairs}[args.what](args.root)
