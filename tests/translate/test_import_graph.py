"""The translate package has no import cycle: the interface (`plugin.py`) imports no
feature, the built-in list (`builtin.py`) sits above the features, and callers outside
the engine go through `routing_engine.plugins`. Function-level imports count (grimp
reads them too), so a list of lazy imports inside `plugin.py` would fail here."""

from __future__ import annotations

import grimp

TRANSLATE = "routing_engine.translate"


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("routing_engine", "modelroute", cache_dir=None)


def test_no_module_of_translate_takes_part_in_an_import_cycle() -> None:
    graph = _graph()
    cycles = []
    for module in sorted(graph.find_descendants(TRANSLATE)):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported.startswith("routing_engine") and (back := graph.find_shortest_chain(imported, module)):
                cycles.append(" -> ".join((module, *back)))
    assert not cycles, "\n".join(cycles)


def test_the_interface_imports_no_feature_and_callers_use_the_public_surface() -> None:
    graph = _graph()
    assert not graph.chain_exists(f"{TRANSLATE}.plugin", f"{TRANSLATE}.builtin")
    internal = {f"{TRANSLATE}.plugin", f"{TRANSLATE}.builtin"}
    outside = sorted((module, imported) for module in graph.find_descendants("modelroute")
                     for imported in graph.find_modules_directly_imported_by(module) & internal)
    assert not outside, f"import routing_engine.plugins instead: {outside}"
