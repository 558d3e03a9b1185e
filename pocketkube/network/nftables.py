"""Pure rendering of the nftables scripts the data planes share: a table replaced atomically, and its removal."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

# A base chain: its name, its "type ... hook ... priority ..." (empty for a regular chain) and its rules.
BaseChain = tuple[str, str, Sequence[str]]


def chain(name: str, rules: Iterable[str], *, hook: str = "") -> list[str]:
    """One chain's lines, indented as inside a table block."""
    out = [f"\tchain {name} {{"]
    if hook:
        out.append(f"\t\ttype {hook}; policy accept;")
    out += [f"\t\t{r}" for r in rules]
    out.append("\t}")
    return out


def table_script(table: str, *, base: Sequence[BaseChain], chains: Mapping[str, Sequence[str]],
                 sets: Sequence[str] = ()) -> str:
    """An `nft -f` script replacing the whole table in one transaction: sets, base chains, then chains by name.

    Declaring the table before deleting it makes the delete succeed whether or not the table existed."""
    out = [f"table ip {table}", f"delete table ip {table}", f"table ip {table} {{"]
    out += [f"\t{s}" for s in sets]
    for name, hook, rules in base:
        out += chain(name, rules, hook=hook)
    for name in sorted(chains):
        out += chain(name, chains[name])
    out.append("}")
    return "\n".join(out) + "\n"


def cleanup_script(table: str) -> str:
    """An `nft -f` script removing the table if it exists."""
    return f"table ip {table}\ndelete table ip {table}\n"
