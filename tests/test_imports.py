"""The package's module graph: no import cycle, counting imports inside functions too (a deferred import that
only dodges a cycle is still a cycle), read from the source with ast."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / 'timm_msanet'


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts) or '__init__'


def module_graph():
    """{module: modules it imports}, dotted below the package ('inference.predict'); a package stands for its
    __init__.py ('loading')."""
    files = {module_name(p): p for p in PACKAGE.rglob('*.py')}
    graph = {m: set() for m in files}
    for m, path in files.items():
        here = m.split('.') if path.name == '__init__.py' else m.split('.')[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else list(here)
                if node.level - 1 > len(here):
                    continue
            elif (node.module or '').split('.')[0] == 'timm_msanet':
                base = []
                node = ast.ImportFrom(module='.'.join(node.module.split('.')[1:]) or None, names=node.names, level=0)
            else:
                continue
            target = base + (node.module.split('.') if node.module else [])
            for alias in node.names:
                sub = '.'.join(target + [alias.name])
                found = sub if sub in files else '.'.join(target) or '__init__'
                if found in files and found != m:
                    graph[m].add(found)
    return graph


def find_cycle(graph):
    state, path = {}, []

    def visit(m):
        state[m] = 'open'
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 'open':
                return path[path.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        state[m] = 'done'
        path.pop()
        return None
    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    graph = module_graph()
    assert len(graph) > 30 and graph['inference.predict_command'] >= {'loading', 'inference.video', 'inference.predict'}
    assert graph['inference.predict'] >= {'utils.images', 'loading'} and 'utils.safe_json' in graph['data.staging']
    cycle = find_cycle(graph)
    assert cycle is None, ' -> '.join(cycle)


# What each room may not import (docs/design.md, "A map of the package"): the dataset exporter knows no model,
# loading knows no tool, evaluation and inference do not reach into each other (both run models through the
# engine in loading), nothing below the command modules imports them.
FORBIDDEN = {
    'utils': ('loading', 'data', 'evaluation', 'inference', 'hub', 'cli', 'bench', 'info'),
    'loading': ('data', 'evaluation', 'inference', 'hub', 'cli', 'bench', 'info'),
    'data': ('loading', 'evaluation', 'inference', 'hub', 'msanet', 'releases', 'cli', 'bench', 'info'),
    'evaluation': ('data', 'inference', 'hub', 'cli', 'bench', 'info'),
    'inference': ('data', 'evaluation', 'hub', 'cli', 'bench', 'info'),
}


def test_every_room_imports_only_the_rooms_below_it():
    graph = module_graph()
    wrong = sorted(f'{m} -> {n}' for m, targets in graph.items() for n in targets
                   if n.split('.')[0] in FORBIDDEN.get(m.split('.')[0], ()))
    assert wrong == []
    assert all(room in {m.split('.')[0] for m in graph} for room in FORBIDDEN)  # the rooms exist


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None


# ------------------------------------------------------------------------------------ what a module may share
def _package_sources():
    return sorted(PACKAGE.rglob('*.py'))


def test_no_private_name_crosses_a_module_and_no_reexport_shim():
    """What another module needs is public and named for what it is: no `from .x import _name` (a private
    submodule of the package itself aside), no name re-exported under `noqa: F401`."""
    crossing, shims = [], []
    for path in _package_sources():
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or '').startswith('timm_msanet')):
                crossing += [f'{path.relative_to(PACKAGE)}:{node.lineno} {a.name}' for a in node.names
                             if a.name.startswith('_') and not a.name.startswith('__') and a.name != '_autoload']
        shims += [f'{path.relative_to(PACKAGE)}:{i}' for i, line in enumerate(source.splitlines(), 1)
                  if 'noqa: F401' in line]
    assert crossing == [] and shims == []


def test_no_function_in_the_tool_layer_is_over_60_lines():
    """Only the model's constructor may be as long as timm's own (msanet.py); every tool function fits a screen."""
    long = []
    for path in _package_sources():
        if path.name == 'msanet.py':
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f'{path.relative_to(PACKAGE)}:{node.lineno} {node.name} '
                            f'({node.end_lineno - node.lineno + 1} lines)')
    assert long == []


# Runs a command in-process under sys.setprofile and prints every call chain (package frames only, by folder,
# consecutive repeats merged) in which a folder comes back after another one was entered below it. The model's
# forward (msanet.py) is a leaf: the hooks a tool puts on it run inside it.
CALL_CHAIN_TRACER = r'''
import json, os, sys
import timm_msanet
from timm_msanet import cli
root = os.path.dirname(timm_msanet.__file__) + os.sep
folders = {}

def folder(code):
    name = code.co_filename
    if name not in folders:
        parts = name[len(root):].split(os.sep) if name.startswith(root) else None
        folders[name] = None if parts is None else parts[0] if len(parts) > 1 else parts[0][:-3]
    return folders[name]

returns = {}

def profile(frame, event, arg):
    if event != 'call' or folder(frame.f_code) is None:
        return
    chain, f = [], frame
    while f is not None:
        d = folder(f.f_code)
        if d is not None and (not chain or chain[-1][0] != d):
            chain.append((d, f.f_code.co_name))
        f = f.f_back
    names = [d for d, _ in reversed(chain)]
    if 'msanet' not in names and len(names) != len(set(names)):
        returns.setdefault(' -> '.join(names), ' -> '.join(f'{d}.{n}' for d, n in reversed(chain)))

sys.setprofile(profile)
try:
    status = cli.main(sys.argv[1:])
except SystemExit as e:
    status = e.code
sys.setprofile(None)
print(json.dumps(dict(status=status, returns=sorted(returns.values()))))
'''


def test_a_predict_call_goes_down_the_rooms_and_never_back(tmp_path, astronaut, run_python):
    """`timm-msanet predict --checkpoint X photo --faces --csv --annotate`: cli -> the command (inference) -> the
    loader, record and engine (loading) -> the output writers (utils), each call chain entering every room at most
    once; and `eval` the same way (cli -> evaluation -> loading -> utils)."""
    import json
    from PIL import Image
    Image.fromarray(astronaut).save(tmp_path / 'photo.png')
    weights = PACKAGE / 'weights' / 'msanet_r18_fer2013.safetensors'
    for label in ('happiness', 'neutral'):
        (tmp_path / 'data' / 'test' / label).mkdir(parents=True)
        Image.fromarray(astronaut[:200, 150:350]).resize((64, 64)).save(tmp_path / 'data' / 'test' / label / 'a.png')
    commands = [
        ['predict', str(tmp_path / 'photo.png'), '--checkpoint', str(weights), '--faces', '--detector', 'haar',
         '--csv', str(tmp_path / 'faces.csv'), '--annotate', str(tmp_path / 'annotated')],
        ['predict', str(tmp_path / 'photo.png'), '--checkpoint', str(weights), '--json', str(tmp_path / 'p.json')],
        ['eval', '--checkpoint', str(weights), '--data-dir', str(tmp_path / 'data'), '--workers', '0'],
    ]
    for argv in commands:
        proc = run_python(f'import sys\nsys.argv = ["timm-msanet", *{argv!r}]\n' + CALL_CHAIN_TRACER,
                          dict(HF_HUB_OFFLINE='1'))
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got == dict(status=0, returns=[]), (argv[0], got)
    assert (tmp_path / 'faces.csv').is_file() and any((tmp_path / 'annotated').iterdir())
