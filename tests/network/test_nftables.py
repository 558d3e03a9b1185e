"""The shared nftables script rendering: chains, whole-table replacement and removal."""

from __future__ import annotations

import pytest

from pocketkube.network import nftables


@pytest.mark.parametrize(("name", "rules", "hook", "want"), [
    ("empty", [], "", ["\tchain empty {", "\t}"]),
    ("svc", ["jump a", "drop"], "", ["\tchain svc {", "\t\tjump a", "\t\tdrop", "\t}"]),
    ("forward", ["accept"], "filter hook forward priority 0",
     ["\tchain forward {", "\t\ttype filter hook forward priority 0; policy accept;", "\t\taccept", "\t}"]),
])
def test_chain_lines(name: str, rules: list[str], hook: str, want: list[str]) -> None:
    """A chain is its header, its hook line when it is a base chain, its rules and its closing brace."""
    assert nftables.chain(name, rules, hook=hook) == want


@pytest.mark.parametrize(("sets", "base", "chains", "want"), [
    ((), [], {}, "table ip t\ndelete table ip t\ntable ip t {\n}\n"),
    (("set s { type ipv4_addr; }",), [("in", "filter hook input priority 0", ["drop"])],
     {"z": ["return"], "a": ["accept"]},
     "table ip t\ndelete table ip t\ntable ip t {\n\tset s { type ipv4_addr; }\n"
     "\tchain in {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tdrop\n\t}\n"
     "\tchain a {\n\t\taccept\n\t}\n\tchain z {\n\t\treturn\n\t}\n}\n"),
])
def test_table_script(sets: tuple[str, ...], base: list[nftables.BaseChain], chains: dict[str, list[str]],
                      want: str) -> None:
    """The table is declared, deleted and rebuilt: sets, base chains in order, then other chains by name."""
    assert nftables.table_script("t", base=base, chains=chains, sets=sets) == want


def test_cleanup_script_deletes_only_the_table() -> None:
    """Removal declares the table first so deleting it succeeds even when it is already gone."""
    assert nftables.cleanup_script("pk_x") == "table ip pk_x\ndelete table ip pk_x\n"
