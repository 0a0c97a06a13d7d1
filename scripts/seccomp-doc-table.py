#!/usr/bin/env python3
"""Rewrites the seccomp table in docs/sandbox.md from sandbox/policy/worker-seccomp.toml.

The table sits between the markers <!-- seccomp-table --> and <!-- /seccomp-table -->; a unit
test (docs_list_every_syscall_of_the_policy) fails when the two disagree.
"""
import pathlib
import re
import tomllib

root = pathlib.Path(__file__).resolve().parent.parent
policy = tomllib.loads((root / "sandbox/policy/worker-seccomp.toml").read_text())
rows = ["| syscall | stage | allowed when | why |", "|---|---|---|---|"]
for e in policy["syscall"]:
    conds = []
    for c in e.get("allow_if", []):
        v = f"{c['eq']:#x}" if c["eq"] > 9 else str(c["eq"])
        if c.get("mask") is not None:
            conds.append(f"arg{c['arg']} & {c['mask']:#x} == {v}")
        else:
            conds.append(f"arg{c['arg']} == {v}")
    rows.append(f"| `{e['name']}` | {e['stage']} | {' or '.join(conds) or 'any'} | {e['reason']} |")
doc = root / "docs/sandbox.md"
text = doc.read_text()
new = "<!-- seccomp-table -->\n" + "\n".join(rows) + "\n<!-- /seccomp-table -->"
text, n = re.subn(r"<!-- seccomp-table -->.*?<!-- /seccomp-table -->", new, text, flags=re.S)
if n != 1:
    raise SystemExit("docs/sandbox.md lacks the seccomp-table markers")
doc.write_text(text)
