"""The package's module graph: no import cycle, counting imports inside functions too (a deferred import that
only dodges a cycle is still a cycle), read from the source with ast."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / 'timm_msanet'


def module_graph():
    modules = {p.stem for p in PACKAGE.glob('*.py')}
    graph = {m: set() for m in modules}
    for m in modules:
        for node in ast.walk(ast.parse((PACKAGE / f'{m}.py').read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or '').startswith('timm_msanet.')):
                module = node.module[len('timm_msanet.'):] if node.level == 0 else node.module
                names = [module.split('.')[0]] if module else [a.name for a in node.names]
                graph[m] |= {n for n in names if n in modules and n != m}
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
    assert len(graph) > 20 and graph['predict'] >= {'loading', 'video'}  # the graph is really read
    cycle = find_cycle(graph)
    assert cycle is None, ' -> '.join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None
