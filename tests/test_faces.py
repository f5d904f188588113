"""timm_msanet.faces: the OpenCV detector on a real photo, and the square crop kept inside the image."""
import pytest
from PIL import Image

from timm_msanet.faces import detect_faces, face_crop_box, require_detector


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
