"""Issue 13, item 5: long equations are shown on several lines (explorer/app/equations.py), each line valid
on its own (balanced braces and \\left..\\right), none of them lost."""
import re

import pytest

from explorer.app.equations import WIDTH, equation_lines, split_equation, visible_length
from explorer.kd import get_method, list_methods
from explorer.schemes import get_scheme, list_schemes

EQUATIONS = {**{f"method {k}": get_method(k).equation for k in list_methods()},
             **{f"scheme {k}": get_scheme(k).equation for k in list_schemes() if get_scheme(k).equation}}


def test_short_equations_are_left_alone():
    kd = get_method("kd").equation
    assert split_equation(kd) == kd


def test_rkd_is_split_before_its_angle_term():
    lines = equation_lines(get_method("rkd").equation)
    assert len(lines) == 2 and lines[1].startswith("{} + \\lambda_A")
    assert split_equation(get_method("rkd").equation).startswith(r"\begin{gathered}")


@pytest.mark.parametrize("name", sorted(EQUATIONS))
def test_every_line_is_balanced_and_nothing_is_lost(name):
    tex = EQUATIONS[name]
    lines = equation_lines(tex)
    for line in lines:
        assert line.count("{") - line.count(r"\{") == line.count("}") - line.count(r"\}"), line
        assert len(re.findall(r"\\left(?![a-z])", line)) == len(re.findall(r"\\right(?![a-z])", line)), line
    squash = lambda s: re.sub(r"\s|,\\\s|,\\quad|\{\}", "", s)
    assert squash("".join(lines)).replace(",", "") == squash(tex).replace(",", "")
    if visible_length(tex) > 2 * WIDTH:
        assert len(lines) >= 2, f"{name}: {visible_length(tex)} glyphs on one line"
