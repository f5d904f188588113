"""timm_msanet.inference.faces: the OpenCV detector on a real photo, and the square crop kept inside the image."""
import pytest
from PIL import Image

from timm_msanet.inference.faces import detect_faces, face_crop_box, require_detector

from conftest import run_cli


def test_face_crop_box_stays_inside():
    assert face_crop_box((0, 0, 10, 10), (100, 100), 0.2) == (0, 0, 14, 14)
    assert face_crop_box((90, 90, 100, 100), (100, 100), 0.2) == (86, 86, 100, 100)
    assert face_crop_box((0, 0, 100, 50), (100, 50), 0.2) == (0, 0, 100, 50)  # larger than the image: clipped
    assert face_crop_box((40, 40, 60, 60), (100, 100), 0.5) == (30, 30, 70, 70)  # square, grown on every side


def test_detector_finds_the_astronauts_face_and_nothing_in_a_blank(astronaut):
    pytest.importorskip('cv2')
    require_detector()
    boxes = detect_faces(Image.fromarray(astronaut))
    assert boxes, 'no face found in the astronaut photo'
    x0, y0, x1, y1 = boxes[0]
    assert 120 < (x0 + x1) / 2 < 330 and 40 < (y0 + y1) / 2 < 220, boxes[0]  # upper middle of the 512 px photo
    # the same photo at 4x is scaled down for the detector; boxes come back in the original pixels
    big = detect_faces(Image.fromarray(astronaut).resize((2048, 2048)))
    assert big and abs((big[0][0] + big[0][2]) / 2 - 2 * (x0 + x1)) < 60
    assert detect_faces(Image.new('RGB', (300, 200), (120, 130, 140))) == []


# ------------------------------------------------------------------- dlib: scores, landmarks, alignment
def _dlib():
    pytest.importorskip('dlib')
    pytest.importorskip('timm_msanet.inference.faces').require_detector('dlib')


def test_dlib_gives_one_scored_face_with_five_landmarks_in_place(astronaut):
    _dlib()
    from timm_msanet.inference.faces import LANDMARK_NAMES, locate_faces
    faces = locate_faces(Image.fromarray(astronaut), 'dlib')
    assert len(faces) == 1, faces  # her badge and suit score below DLIB_MIN_SCORE
    face = faces[0]
    assert face.score > 0.5 and tuple(face.landmarks) == LANDMARK_NAMES
    lm = face.landmarks
    assert lm['right_eye'][0] < lm['nose'][0] < lm['left_eye'][0]  # the subject's right eye is on the image's left
    assert lm['mouth_right'][0] < lm['mouth_left'][0]
    assert max(lm['right_eye'][1], lm['left_eye'][1]) < lm['nose'][1] < min(lm['mouth_right'][1], lm['mouth_left'][1])
    x0, y0, x1, y1 = face.box
    assert all(x0 - 5 <= x <= x1 + 5 and y0 - 5 <= y <= y1 + 5 for x, y in lm.values())
    haar = detect_faces(Image.fromarray(astronaut))[0]
    assert abs((x0 + x1) - (haar[0] + haar[2])) / 2 < 20  # the same face as the Haar cascade's


def test_aligned_crop_is_framed_as_the_model_was_trained(astronaut):
    _dlib()
    import timm
    from timm_msanet.inference.faces import aligned_face, locate_faces
    from timm_msanet.notes import DEFAULT_FRAMING, framing_of
    framing = framing_of(timm.create_model('msanet_r18', pretrained=False).pretrained_cfg)
    assert framing == dict(eye_y=0.396, eye_dist=0.362) and framing_of({}) == DEFAULT_FRAMING
    tilted = Image.fromarray(astronaut).rotate(25, resample=Image.Resampling.BICUBIC)
    crop, rotation = aligned_face(tilted, locate_faces(tilted, 'dlib')[0].landmarks, framing)
    side = crop.size[0]
    again = locate_faces(crop.resize((3 * side, 3 * side), Image.Resampling.BICUBIC), 'dlib')
    assert again, 'no face found in the aligned crop'
    (rx, ry), (lx, ly) = again[0].landmarks['right_eye'], again[0].landmarks['left_eye']
    assert abs(ly - ry) / (3 * side) < 0.02  # eyes level
    assert abs((ry + ly) / 2 / (3 * side) - framing['eye_y']) < 0.03
    assert abs((lx - rx) / (3 * side) - framing['eye_dist']) < 0.03
    assert -30 < rotation < -18  # the 25 degree tilt, less the photo's own 3.5 degrees


def test_aligned_crops_bring_tilted_faces_back_to_the_upright_prediction(astronaut):
    """The packaged model on the astronaut tilted by +-15..35 degrees: over all angles the aligned face's
    probabilities are closer to the upright face's than the square crop's are, and every aligned face keeps the
    upright label (docs/inference.md has the figures)."""
    _dlib()
    import numpy as np
    from timm_msanet.loading import load_model
    from timm_msanet.inference.predict import predict
    model = load_model('msanet_r18')
    photo = Image.fromarray(astronaut)

    def probs(img, align):
        (res,) = predict([img], model, faces=True, detector='dlib', align=align)
        return np.array(list(res['probabilities'].values()))  # the largest face's (faces are left to right)

    upright = {a: probs(photo, a) for a in (True, False)}
    aligned_total = square_total = 0.0
    for angle in (-35, -25, -15, 15, 25, 35):
        tilted = photo.rotate(angle, resample=Image.Resampling.BICUBIC)
        aligned = probs(tilted, True)
        assert aligned.argmax() == upright[True].argmax(), angle
        aligned_total += np.abs(aligned - upright[True]).sum()
        square_total += np.abs(probs(tilted, False) - upright[False]).sum()
    assert aligned_total < square_total, (aligned_total, square_total)


def test_predict_cli_reports_landmarks_and_draws_them(astronaut, tmp_path):
    _dlib()
    import json
    Image.fromarray(astronaut).save(tmp_path / 'a.png')
    proc = run_cli(['predict', tmp_path / 'a.png', '--faces', '--detector', 'dlib', '--json', tmp_path / 'r.json',
                    '--annotate', tmp_path / 'o'], timeout=300)
    assert proc.returncode == 0, proc.stderr
    (res,) = json.loads((tmp_path / 'r.json').read_text())
    face = res['faces'][0]
    assert res['label'] == face['label'] == 'happiness'
    assert face['detector_score'] > 0.5 and len(face['landmarks']) == 5 and 'crop' not in face
    assert face['aligned']['eye_dist'] == 0.362 and abs(face['aligned']['rotation']) < 10
    with Image.open(res['annotated']) as drawn:
        x, y = face['landmarks']['nose']
        assert drawn.convert('RGB').getpixel((round(x), round(y))) == (40, 220, 60)  # a landmark dot


def test_dlib_missing_is_one_line_saying_what_to_install(run_python, tmp_path):
    proc = run_python("""
        import sys
        sys.modules['dlib'] = None  # as if dlib-bin were not installed
        from timm_msanet.cli import main
        sys.exit(main(['predict', 'x.jpg', '--faces', '--detector', 'dlib']))
    """, {})
    assert proc.returncode == 2, proc.stderr
    assert 'pip install dlib-bin face_recognition_models' in proc.stderr and './timm-msanet[landmarks]' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_dlib_cnn_finds_a_face_the_hog_detector_misses(astronaut):
    """dlib's CNN detector: the same face and landmarks as HOG on the upright photo, and the face rotated by
    45 degrees, which HOG loses (docs/inference.md compares the three detectors on real photos)."""
    _dlib()
    from timm_msanet.inference.faces import LANDMARK_NAMES, locate_faces
    photo = Image.fromarray(astronaut).resize((256, 256), Image.Resampling.BICUBIC)
    (cnn,) = locate_faces(photo, 'dlib-cnn')
    (hog,) = locate_faces(photo, 'dlib')
    assert cnn.score > 0.5 and tuple(cnn.landmarks) == LANDMARK_NAMES
    for name in LANDMARK_NAMES:
        assert abs(cnn.landmarks[name][0] - hog.landmarks[name][0]) < 8, name
        assert abs(cnn.landmarks[name][1] - hog.landmarks[name][1]) < 8, name
    turned = photo.rotate(45, resample=Image.Resampling.BICUBIC)
    assert locate_faces(turned, 'dlib') == []
    (face,) = locate_faces(turned, 'dlib-cnn')
    (_, ry), (_, ly) = face.landmarks['right_eye'], face.landmarks['left_eye']
    assert ly < ry - 10  # the eye line follows the 45 degree turn (counter-clockwise: the left eye rises)


def test_measure_framing_recovers_how_the_faces_were_cropped(framed_faces, tmp_path):
    from timm_msanet.inference.faces import FramingError, measure_framing
    for eye_y, eye_dist in ((0.42, 0.33), (0.36, 0.40)):
        files = framed_faces(tmp_path / f'{eye_y}', dict(eye_y=eye_y, eye_dist=eye_dist), 6)
        (tmp_path / f'{eye_y}' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
        m = measure_framing(files + [tmp_path / f'{eye_y}' / 'broken.png'], min_faces=5)
        assert abs(m['eye_y'] - eye_y) < 0.02 and abs(m['eye_dist'] - eye_dist) < 0.02, m
        assert (m['faces'], m['images'], m['unreadable'], m['detector']) == (6, 6, 1, 'dlib')
    blanks = []
    for i in range(4):
        blanks.append(tmp_path / f'blank{i}.png')
        Image.new('RGB', (64, 64), (40 * i, 90, 120)).save(blanks[-1])
    with pytest.raises(FramingError, match=r'found a face in 6 of 10 images .*at least 50 faces'):
        measure_framing(files + blanks)
    with pytest.raises(FramingError, match='in a quarter of the images or more'):
        measure_framing(files[:1] + blanks, min_faces=1)


def test_parse_framing_takes_two_fractions_and_says_what_it_expected():
    from timm_msanet.notes import FramingError, parse_framing
    assert parse_framing('0.4,0.35') == dict(eye_y=0.4, eye_dist=0.35)
    for bad in ('0.4', 'a,b', '0.4,0.35,1', '40,35', '0.05,0.3'):
        with pytest.raises(FramingError, match='EYE_Y,EYE_DIST|between 0.1 and 0.9'):
            parse_framing(bad)


def test_a_model_without_a_recorded_framing_says_which_framing_it_gets(astronaut, tmp_path):
    """Aligning for a model whose cfg records no framing (a local checkpoint, an unpublished architecture) uses
    FER2013's and says so on stderr; the packaged release records its own and says nothing."""
    _dlib()
    from timm_msanet.inference.faces import framing_notice
    from timm_msanet.notes import DEFAULT_FRAMING, FramingError, recorded_framing
    Image.fromarray(astronaut).save(tmp_path / 'a.png')
    base = ['predict', str(tmp_path / 'a.png'), '--faces', '--detector', 'dlib']
    bare = run_cli(base + ['--model', 'msanet_r18_ms', '--no-pretrained'], timeout=300)
    assert bare.returncode == 0, bare.stderr
    assert 'records no face framing' in bare.stderr and f"eye_y {DEFAULT_FRAMING['eye_y']}" in bare.stderr
    packaged = run_cli(base, timeout=300)
    assert packaged.returncode == 0 and 'face framing' not in packaged.stderr, packaged.stderr
    square = run_cli(base + ['--model', 'msanet_r18_ms', '--no-pretrained', '--no-align'], timeout=300)
    assert square.returncode == 0 and 'face framing' not in square.stderr, square.stderr
    # a malformed or out-of-bounds note is an error, never silently another framing (configs are refused at load)
    for note in ('face framing: eye_y=0.41 eye_dist=x', 'face framing: eye_y=0.41 eye_dist=0.0015', 'face framing:'):
        with pytest.raises(FramingError):
            recorded_framing({'notes': (note,)})
    assert framing_notice(False, 'haar') is None and framing_notice(True, 'dlib') is None
    assert 'records no face framing' in framing_notice(False, 'dlib')


def test_auto_is_dlib_with_the_landmarks_extra_and_haar_without(astronaut, run_python, tmp_path):
    """The default detector: dlib when dlib and its model files are installed, the Haar cascade otherwise (the
    fallback that needs only OpenCV); results name the one used."""
    _dlib()
    from timm_msanet.inference.faces import resolve_detector
    from timm_msanet.loading import load_model
    from timm_msanet.inference.predict import predict
    assert resolve_detector() == resolve_detector('auto') == 'dlib' and resolve_detector('haar') == 'haar'
    (res,) = predict([astronaut], load_model('msanet_r18'), faces=True)
    assert res['detector'] == 'dlib' and 'aligned' in res['faces'][0] and res['label'] == 'happiness'
    Image.fromarray(astronaut).save(tmp_path / 'a.png')
    proc = run_python(f"""
        import json, sys
        sys.modules['dlib'] = None  # as if the landmarks extra were not installed
        from timm_msanet.cli import main
        code = main(['predict', {str(tmp_path / 'a.png')!r}, '--faces', '--json', {str(tmp_path / 'r.json')!r}])
        sys.exit(code)
    """, {})
    assert proc.returncode == 0, proc.stderr
    import json
    (res,) = json.loads((tmp_path / 'r.json').read_text())
    assert res['detector'] == 'haar' and 'crop' in res['faces'][0] and 'landmarks' not in res['faces'][0]


def _phone_photo(astronaut, face_px: int):
    """The astronaut scaled so her face is about `face_px` wide, on a grey 4032 x 3024 canvas (a 12 MP photo)."""
    photo = Image.fromarray(astronaut)  # her face is about 90 px wide in the 512 px photo
    scale = face_px / 90
    photo = photo.resize((round(512 * scale),) * 2, Image.BICUBIC)
    canvas = Image.new('RGB', (4032, 3024), (128, 124, 118))
    canvas.paste(photo, (2600, 700))
    return canvas


def test_a_180_px_face_in_a_12_megapixel_photo_is_found(astronaut, tmp_path):
    """A phone photo is seen at full resolution (detect_max_side 4096): a 180 px face and an 80 px one are found
    (the old 1024 px limit lost the first); with --detect-max-side 1024 the 80 px face is missed and stderr
    says why."""
    _dlib()
    import json
    for face_px in (180, 80):
        big = tmp_path / f'big{face_px}.jpg'
        _phone_photo(astronaut, face_px).save(big, quality=90)
        proc = run_cli(['predict', big, '--faces', '--json', tmp_path / 'r.json', '--overwrite'], timeout=600)
        assert proc.returncode == 0, proc.stderr
        (res,) = json.loads((tmp_path / 'r.json').read_text())
        assert res['detector'] == 'dlib' and len(res['faces']) == 1, res
        x0, y0, x1, y1 = res['faces'][0]['box']
        side = round(512 * face_px / 90)
        assert 2600 < x0 < x1 < 2600 + side and 700 < y0 < y1 < 700 + side and x1 - x0 > face_px / 2
    small = run_cli(['predict', big, '--faces', '--detect-max-side', '1024', '--json', tmp_path / 's.json'],
                    timeout=600)
    assert small.returncode == 1
    (res,) = json.loads((tmp_path / 's.json').read_text())
    assert res['error'] == 'no face detected' and res['faces'] == []
    said = ' '.join(small.stderr.split())
    assert 'big80.jpg: note: the detector saw this 4032x3024 image scaled to 1024 px' in said
    assert 'faces under about 158 px are missed; raise --detect-max-side' in said


def test_a_face_crop_with_faces_is_classified_whole_with_a_note(tmp_path):
    """A 48 px grey face crop (FER2013-like) in which no face is found is classified whole, with a note."""
    from timm_msanet.inference.predict import predict
    from timm_msanet.loading import load_model
    crop = Image.new('L', (48, 48), 128)  # no detector finds a face here: the crop is taken for one
    [res] = predict([crop], load_model('msanet_r18'), faces=True, detector='haar')
    assert res['faces'] == [] and res['label'] in res['probabilities'] and 'error' not in res
    assert res['note'] == 'no face detected in this 48x48 image: classified whole, as a face crop'
    [whole] = predict([crop], load_model('msanet_r18'))
    assert whole['probabilities'] == res['probabilities']


def test_faces_are_listed_left_to_right_and_the_legend_says_what_the_colours_mean(astronaut):
    """Two copies of the astronaut, the smaller on the left: faces come left to right, the image's label is the
    larger face's (drawn red), the legend names both colours."""
    from timm_msanet.inference.predict import predict
    from timm_msanet.loading import load_model
    from timm_msanet.utils.images import MAIN_FACE_COLOUR, OTHER_FACE_COLOUR, annotate_image
    _dlib()
    photo = Image.fromarray(astronaut)
    scene = Image.new('RGB', (1400, 800), (128, 124, 118))
    scene.paste(photo.resize((384, 384)), (40, 200))   # left, smaller
    scene.paste(photo, (800, 150))                      # right, larger
    [res] = predict([scene], load_model('msanet_r18'), faces=True, detector='dlib')
    boxes = [f['box'] for f in res['faces']]
    assert len(boxes) == 2 and boxes[0][0] < 600 < boxes[1][0]
    larger = res['faces'][1]
    assert res['label'] == larger['label'] and res['probabilities'] == larger['probabilities']
    drawn = annotate_image(scene, res)
    assert drawn.getpixel((boxes[1][0], (boxes[1][1] + boxes[1][3]) // 2)) == MAIN_FACE_COLOUR
    assert drawn.getpixel((boxes[0][0], (boxes[0][1] + boxes[0][3]) // 2)) == OTHER_FACE_COLOUR
    legend = {drawn.getpixel((x, y)) for x in range(0, 80) for y in range(500, 800)}  # the bottom-left corner
    assert MAIN_FACE_COLOUR in legend and OTHER_FACE_COLOUR in legend
