"""The README's Python snippets run as pasted (issue #26 item 16), on every
backend: each indented block that imports keras_quadratic, in a fresh
directory (they write files such as relinear.png)."""

import os
import re

import pytest

from examples_util import ROOT


def _snippets():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    blocks = re.findall(r"\n\n((?:    .*\n|\n)+)", text)
    code = [re.sub(r"(?m)^    ", "", block).strip() for block in blocks]
    return [c for c in code if "import keras_quadratic as kq" in c]


SNIPPETS = _snippets()


def test_the_readme_has_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("code", SNIPPETS,
                         ids=[c.splitlines()[-1][:40] for c in SNIPPETS])
def test_readme_snippet_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
