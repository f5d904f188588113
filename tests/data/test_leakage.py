"""Content and perceptual hashes on real photos: copies (identical, re-encoded, resized) pair up, unrelated
images do not. The unrelated set is 4 corner crops of each of 19 distinct scikit-image photos (76 images,
2,850 pairs); docs/datasets.md quotes the false-positive rate this test measures."""
import io
import itertools

import numpy as np
import pytest
from PIL import Image

from timm_msanet.data.leakage import (DEFAULT_THRESHOLD, HashedImage, content_hash, cross_split_pairs, hamming,
                                 iter_pairs, leak_report, perceptual_hash, train_copies)

PHOTOS = ('astronaut', 'camera', 'coffee', 'chelsea', 'rocket', 'coins', 'moon', 'page', 'text',
          'hubble_deep_field', 'immunohistochemistry', 'horse', 'brick', 'grass', 'gravel', 'retina', 'colorwheel',
          'logo', 'clock')


def _photo(name: str) -> Image.Image:
    skdata = pytest.importorskip('skimage.data')
    a = getattr(skdata, name)()
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    return Image.fromarray(a.astype(np.uint8))


@pytest.fixture(scope='module')
def unrelated():
    out = []
    for name in PHOTOS:
        im = _photo(name)
        w, h = im.size
        s = min(w, h) // 2
        for fx, fy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            x, y = fx * (w - s), fy * (h - s)
            out.append(im.crop((x, y, x + s, y + s)).resize((64, 64), Image.Resampling.BICUBIC))
    return out


def _jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.convert('RGB').save(buf, 'JPEG', quality=quality)
    return buf.getvalue()


def _decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_copies_pair_and_unrelated_images_do_not(unrelated):
    photo = _photo('astronaut').resize((128, 128), Image.Resampling.BICUBIC)
    original = _jpeg(photo, 95)
    base = perceptual_hash(_decoded(original))
    assert base.bit_length() <= 64
    assert content_hash(original) == content_hash(bytes(original)) and len(content_hash(original)) == 64
    copies = {
        're-encoded JPEG q50': _decoded(_jpeg(_decoded(original), 50)),
        're-encoded PNG': _decoded(original).copy(),
        'resized to 0.5x, JPEG q75': _decoded(_jpeg(_decoded(original).resize((64, 64), Image.Resampling.BICUBIC), 75)),
        'resized to 2x': _decoded(original).resize((256, 256), Image.Resampling.BICUBIC),
        'grey': _decoded(original).convert('L'),
    }
    for what, im in copies.items():
        d = hamming(base, perceptual_hash(im))
        assert d <= DEFAULT_THRESHOLD, f'{what}: {d} bits apart'
    assert content_hash(_jpeg(_decoded(original), 50)) != content_hash(original)

    hashes = [perceptual_hash(im) for im in unrelated]
    distances = [hamming(a, b) for a, b in itertools.combinations(hashes, 2)]
    assert len(distances) == 2850
    false_pairs = sum(d <= DEFAULT_THRESHOLD for d in distances)
    assert false_pairs == 0, f'{false_pairs} of {len(distances)} unrelated pairs within {DEFAULT_THRESHOLD} bits'
    assert min(distances) > DEFAULT_THRESHOLD + 2  # a margin, not a knife edge


def _hashed(split, label, name, data: bytes) -> HashedImage:
    return HashedImage(split, label, f'{split}/{label}/{name}', name, content_hash(data),
                       perceptual_hash(_decoded(data)) if data[:2] == b'\xff\xd8' else None)


def test_pairs_cross_splits_only_and_count_label_disagreements(unrelated):
    a, b, c, d = (_jpeg(im, 90) for im in unrelated[:4])
    images = [
        _hashed('train', 'happiness', 'a.jpg', a),
        _hashed('test', 'happiness', 'a_copy.jpg', a),  # byte-identical, same label
        _hashed('train', 'anger', 'b.jpg', b),
        _hashed('test', 'sadness', 'b_q40.jpg', _jpeg(_decoded(b), 40)),  # re-encoded, other label
        _hashed('train', 'fear', 'c.jpg', c),
        _hashed('train', 'fear', 'c_again.jpg', c),  # a copy inside train is not a leak
        _hashed('validation', 'neutral', 'd.jpg', d),
        _hashed('test', 'neutral', 'broken.jpg', b'not an image'),  # undecodable: only its bytes count
        _hashed('train', 'neutral', 'broken_copy.jpg', b'not an image'),
    ]
    groups = cross_split_pairs(images, ('train', 'validation', 'test'), DEFAULT_THRESHOLD)
    named = {(images[p.a].item, images[p.b].item): p for p in iter_pairs(images, groups)}
    assert set(named) == {('a.jpg', 'a_copy.jpg'), ('b.jpg', 'b_q40.jpg'), ('broken_copy.jpg', 'broken.jpg')}
    assert named[('a.jpg', 'a_copy.jpg')].identical and named[('a.jpg', 'a_copy.jpg')].distance == 0
    assert not named[('b.jpg', 'b_q40.jpg')].identical
    report = leak_report(images, groups, ('train', 'validation', 'test'), DEFAULT_THRESHOLD)
    assert report['cross_split'] == {'train~test': {
        'pairs': 3, 'identical_pairs': 2, 'label_disagreements': 1, 'identical_label_disagreements': 0,
        'images': {'train': 3, 'test': 3}}}
    assert report['not_decodable'] == 2 and report['hashed'] == len(images)
    assert sorted(images[i].item for i in train_copies(images, groups)) == ['a.jpg', 'b.jpg', 'broken_copy.jpg']


def test_many_copies_are_counted_by_group_not_pair_by_pair(unrelated):
    """2,000 training and 1,000 test copies of one photo (a blank-face or hard-link heavy dataset): two million
    pairs, counted exactly, listed up to the cap, without building them."""
    from timm_msanet.data import leakage
    data = _jpeg(unrelated[0], 90)
    one = _hashed('train', 'happiness', 'x.jpg', data)
    images = [one._replace(file=f'train/happiness/{i}.jpg', item=f'{i}.jpg', label=('happiness', 'anger')[i % 2])
              for i in range(2000)]
    images += [one._replace(split='test', file=f'test/happiness/{i}.jpg', item=f't{i}.jpg') for i in range(1000)]
    groups = cross_split_pairs(images, ('train', 'test'), DEFAULT_THRESHOLD)
    assert len(groups) == 1
    report = leak_report(images, groups, ('train', 'test'), DEFAULT_THRESHOLD)
    assert report['cross_split']['train~test'] == {
        'pairs': 2_000_000, 'identical_pairs': 2_000_000, 'label_disagreements': 1_000_000,
        'identical_label_disagreements': 1_000_000, 'images': {'train': 2000, 'test': 1000}}
    assert len(report['pairs']) == leakage.MAX_LISTED_PAIRS
    assert report['pairs_not_listed'] == 2_000_000 - leakage.MAX_LISTED_PAIRS
    copies = train_copies(images, groups)
    assert len(copies) == 2000 and all(len(v) == 5 for v in copies.values())
