"""The README's Python snippet ("Use it") runs as written on real photos: it is the public API's acceptance test."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / 'README.md'


def test_the_readme_use_it_snippet_runs(astronaut, tmp_path, monkeypatch):
    from PIL import Image
    section = README.read_text().split('## Use it', 1)[1]
    code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
    photo = Image.fromarray(astronaut)
    face = photo.crop((150, 40, 300, 190))  # the astronaut's face, colour
    for name in ('group.jpg', 'party.jpg'):
        photo.save(tmp_path / name)
    for name in ('face1.png', 'face2.png'):
        face.save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    scope = dict(face=face)
    exec(compile(code, str(README), 'exec'), scope)
    assert [len(r['faces']) for r in scope['results']] == [1, 1] and scope['results'][0]['label'] == 'happiness'
    assert [c['label'] for c in scope['crops']] == ['happiness', 'happiness']
    probs = scope['probs'][0]
    assert len(probs) == 7 and abs(sum(probs) - 1) < 1e-5
    assert scope['record'].label_names == tuple(scope['model'].pretrained_cfg['label_names'])
    assert max(range(7), key=probs.__getitem__) == scope['record'].label_names.index('happiness')
