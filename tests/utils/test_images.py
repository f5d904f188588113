"""timm_msanet.utils.images: any input made 8-bit RGB, and the model's own eval transform (grey-trained models too)."""
import numpy as np
import pytest
import timm
import torch
from PIL import Image

import timm_msanet  # noqa: F401
from timm_msanet.utils.images import GreyInput, ImageFileError, as_pil, load_image, to_rgb
from timm_msanet.loading import ExpressionModel


def _photo(seed=0, size=(80, 64)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def test_every_mode_becomes_rgb(tmp_path):
    rgb = Image.fromarray(_photo())
    rgb.convert('CMYK').save(tmp_path / 'cmyk.jpg')
    Image.fromarray(_photo()[..., 0].astype(np.uint16) * 257).save(tmp_path / 'gray16.png')
    rgb.convert('P', palette=Image.ADAPTIVE).save(tmp_path / 'palette.gif')
    rgb.convert('L').save(tmp_path / 'gray.png')
    rgb.convert('1').save(tmp_path / 'bits.png')
    for name, mode in [('cmyk.jpg', 'CMYK'), ('gray16.png', 'I;16'), ('palette.gif', 'P'), ('gray.png', 'L'),
                       ('bits.png', '1')]:
        with Image.open(tmp_path / name) as img:
            assert img.mode == mode
        out = load_image(tmp_path / name)
        assert out.mode == 'RGB' and out.size == (80, 64), name
    # 16-bit values are scaled to 8 bit, not clipped: a mid-grey 16-bit image stays mid-grey
    assert np.asarray(to_rgb(Image.fromarray(np.full((4, 4), 32896, np.uint16))))[0, 0].tolist() == [128] * 3
    # transparency is composited over white
    assert np.asarray(to_rgb(Image.new('RGBA', (2, 2), (0, 0, 0, 0))))[0, 0].tolist() == [255, 255, 255]


def test_arrays_and_tensors_and_their_shape_errors():
    arr = _photo(1)
    assert np.array_equal(np.asarray(as_pil(arr)), arr)
    assert np.array_equal(np.asarray(as_pil(torch.from_numpy(arr).permute(2, 0, 1))), arr)  # CHW uint8
    assert np.array_equal(np.asarray(as_pil(arr.astype(np.float32) / 255)), arr)  # float in [0, 1]
    assert as_pil(arr[..., 0]).mode == 'RGB'  # HW grey
    with pytest.raises(ValueError, match=r'HWC \(3 or 4 channels\) or HW'):
        as_pil(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match='CHW image tensor with 1, 3 or 4 channels'):
        as_pil(torch.zeros(2, 4, 4))


def test_transform_is_the_models_data_config():
    model = timm.create_model('msanet_r18', pretrained=False, pretrained_cfg_overlay=dict(input_size=(3, 96, 96)))
    transform, cfg = ExpressionModel.of(model).transform()
    assert cfg['input_size'] == (3, 96, 96) and cfg['crop_mode'] == 'squash'
    assert transform(Image.fromarray(_photo(2, (300, 200)))).shape == (3, 96, 96)  # squash: the whole face
    assert ExpressionModel.of(model).transform(img_size=64)[1]['input_size'] == (3, 64, 64)
    # a grey-trained msanet release makes colour input grey inside its forward: its transform is timm's own
    grey_model = timm.create_model('msanet_r18', pretrained=True)  # the packaged file: offline
    assert grey_model.grey_input and not isinstance(ExpressionModel.of(grey_model).transform()[0], GreyInput)
    # a grey-trained model without such a step (timm's resnet18, cfg notes say grey) sees photos made grey first
    from timm_msanet.notes import GREY_INPUT_NOTE
    r18 = timm.create_model('resnet18', pretrained=False, pretrained_cfg_overlay=dict(notes=(GREY_INPUT_NOTE,)))
    transform, _ = ExpressionModel.of(r18).transform()
    assert isinstance(transform, GreyInput)
    x = transform(Image.fromarray(_photo(3)))
    assert torch.allclose((x[0] * 0.229 + 0.485), (x[1] * 0.224 + 0.456), atol=1e-5)
    # one input channel: an 'L' image and the mean of the RGB mean/std
    mono = timm.create_model('msanet_r18', pretrained=False, in_chans=1)
    transform, cfg = ExpressionModel.of(mono).transform()
    assert cfg['input_size'][0] == 1 and len(cfg['mean']) == 1
    assert transform(Image.fromarray(_photo(4))).shape[0] == 1


def _heic_bytes(img: Image.Image) -> bytes:
    import io
    pillow_heif = pytest.importorskip('pillow_heif')
    buf = io.BytesIO()
    pillow_heif.from_pillow(img).save(buf, quality=95, chroma=444)  # encoded by libheif's x265, as a phone does
    return buf.getvalue()


def test_heic_photos_are_read_as_rgb(astronaut, tmp_path):
    from timm_msanet.utils.images import collect_files, is_heif
    face = astronaut[:256, 100:356]
    data = _heic_bytes(Image.fromarray(face))
    assert is_heif(data) and not is_heif(b'\x00\x00\x00\x1cftypavif') and not is_heif(b'')
    (tmp_path / 'face.HEIC').write_bytes(data)
    img = load_image(tmp_path / 'face.HEIC')
    assert img.mode == 'RGB' and img.size == (256, 256)
    assert np.abs(np.asarray(img, dtype=np.float64) - face).mean() < 2  # lossy, but the same photo
    assert [f.name for f, _ in collect_files([tmp_path])] == ['face.HEIC']


def test_heic_without_pillow_heif_says_what_to_install(astronaut, tmp_path, run_python):
    (tmp_path / 'face.heic').write_bytes(_heic_bytes(Image.fromarray(astronaut[:64, 160:224])))
    Image.fromarray(astronaut[:64, 160:224]).save(tmp_path / 'face.png')
    proc = run_python(f"""
        import sys
        sys.modules['pillow_heif'] = None  # as if not installed: importing it raises ImportError
        from timm_msanet.utils.images import ImageFileError, load_image
        assert load_image({str(tmp_path / 'face.png')!r}).size == (64, 64)
        try:
            load_image({str(tmp_path / 'face.heic')!r})
        except ImageFileError as e:
            print(e.reason, e)
        """, {})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('needs_heif ')
    assert 'face.heic is a HEIF/HEIC photo' in proc.stdout and 'pip install "timm-msanet[heif]"' in proc.stdout


@pytest.mark.parametrize('kind', ['empty', 'text', 'truncated_jpeg', 'truncated_png', 'header_only'])
def test_unreadable_files_say_what_was_expected(astronaut, tmp_path, kind):
    """An empty file, a text file named .jpg and an image cut short (a broken copy) each raise ImageFileError
    (an OSError, as PIL's errors) naming the file and what was expected, not PIL's 'cannot identify image file
    <_io.BytesIO object ...>'; the file is left as it was."""
    img = Image.fromarray(astronaut)
    whole = tmp_path / 'whole.png'
    img.save(whole)
    img.save(tmp_path / 'whole.jpg', quality=90)
    data = {'empty': b'', 'text': b'a caption, not pixels\n',
            'truncated_jpeg': (tmp_path / 'whole.jpg').read_bytes()[:20000],
            'truncated_png': whole.read_bytes()[:len(whole.read_bytes()) // 2],
            'header_only': (tmp_path / 'whole.jpg').read_bytes()[:300]}[kind]
    path = tmp_path / f'{kind}.jpg'
    path.write_bytes(data)
    with pytest.raises(ImageFileError) as info:
        load_image(path)
    reason, text = info.value.reason, str(info.value)
    assert str(path) in text and isinstance(info.value, OSError)
    expected = {'empty': ('empty_file', 'is empty (0 bytes): expected an image file'),
                'text': ('unidentified_image', 'expected JPEG, PNG, WebP'),
                }.get(kind, ('undecodable_image', 'truncated or corrupt'))
    assert reason == expected[0] and expected[1] in text, text
    assert 'BytesIO' not in text
    assert path.read_bytes() == data
