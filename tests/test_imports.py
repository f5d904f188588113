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
    assert graph['inference.predict'] >= {'utils.images', 'evaluation.scores'} and 'utils.safe_json' in graph['data.staging']
    cycle = find_cycle(graph)
    assert cycle is None, ' -> '.join(cycle)


# What each room may not import (docs/design.md, "A map of the package"): the dataset exporter knows no model,
# loading knows no tool, evaluation does not reach into inference, nothing below the command modules imports them.
FORBIDDEN = {
    'utils': ('loading', 'data', 'evaluation', 'inference', 'hub', 'cli', 'bench', 'info'),
    'loading': ('data', 'evaluation', 'inference', 'hub', 'cli', 'bench', 'info'),
    'data': ('loading', 'evaluation', 'inference', 'hub', 'msanet', 'releases', 'cli', 'bench', 'info'),
    'evaluation': ('data', 'inference', 'hub', 'cli', 'bench', 'info'),
    'inference': ('data', 'hub', 'cli', 'bench', 'info'),
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
