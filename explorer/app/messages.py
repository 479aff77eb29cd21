"""Messages that name the Train page's widgets, with no Streamlit in it: a ConfigError's field becomes the
widget it belongs to (its key and its label from FIELD_SPECS), and CLI flags in a message ("lower --lr")
become widget names ("lower “Learning rate”"), so the browser never tells a user to type a flag."""
from __future__ import annotations

import re
from typing import Any, Mapping

from ..config import FIELD_SPECS

K = "train."   # every Train-page widget key starts with this
# the RunConfig fields the Train page shows as widgets (W.field_widget); other fields keep their defaults
FORM_FIELDS = ("dataset", "data_root", "teacher", "teacher_epochs", "student", "scheme", "methods", "ce_weight",
               "epochs", "n_train", "device", "batch_size", "lr", "seed", "name", "defaults")


def widget_key(field: str | None, state: Mapping[str, Any]) -> str | None:
    """The Train page's widget key for a ConfigError's field ("methods[1].params.p" -> "train.hp.at.p")."""
    if not field:
        return None
    methods = list(state.get(K + "methods") or [])
    m = re.fullmatch(r"methods\[(\d+)\](?:\.(key|weight|params)(?:\.(\w+))?)?", field)
    if m:
        i, part, name = int(m.group(1)), m.group(2), m.group(3)
        if i < len(methods) and part == "params" and name:
            return f"{K}hp.{methods[i]}.{name}"
        if i < len(methods) and part == "weight":
            return f"{K}w.{methods[i]}"
        return K + "methods"
    if field.startswith("scheme_params."):
        return f"{K}sp.{state.get(K + 'scheme', 'offline')}.{field.split('.', 1)[1]}"
    if field == "teacher_ckpt":
        return K + "teacher_source"
    return K + field if field in FORM_FIELDS else None


def widget_label(key: str | None) -> str | None:
    """What the widget with `key` is called on the page."""
    if not key or not key.startswith(K):
        return None
    rest = key[len(K):]
    if rest == "teacher_source":
        return "Teacher"
    if rest in FIELD_SPECS:
        return FIELD_SPECS[rest].label or rest
    kind, _, tail = rest.partition(".")
    owner, _, name = tail.partition(".")
    return {"hp": f"{owner} {name}", "sp": f"{owner} {name}", "w": f"{owner} weight"}.get(kind)


_FLAG = re.compile(r"(?:\b(pass|give|use) )?--([a-z][a-z0-9-]*)(?: ([A-Z][A-Z_]+\b|[a-z0-9:]+(?=[\s.,;)]|$)))?")


def name_widgets(text: str) -> str:
    """A message for the browser: CLI flags become the Train form's widget names ("lower --lr" -> "lower
    “Learning rate”", "use --device cpu" -> "use “Device” = cpu"), and advice about a setting the form has
    no widget for names it as a config setting ("turn off AMP" is dropped: there is no AMP switch).
    Text in `backticks` (a command to run) is left as it is."""
    def flag(m: re.Match) -> str:
        verb, field, value = m.group(1), m.group(2).replace("-", "_"), m.group(3)
        lead = f"{verb} " if verb else ""
        if field in FORM_FIELDS:
            label = FIELD_SPECS[field].label or field
            if value and value.isupper():          # a placeholder: --data-root FOLDER
                return f"set “{label}” to a {value.lower()}" if verb else f"“{label}” (a {value.lower()})"
            if value and field == "device":
                return f"{lead}“{label}” = {value}"
            return f"{lead}“{label}”" + (f" {value}" if value else "")
        if field in FIELD_SPECS:
            return f"{lead}the config setting `{field}`" + (f" {value}" if value else "")
        return m.group(0)

    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):      # outside backticks
        p = _FLAG.sub(flag, parts[i])
        if "amp" not in FORM_FIELDS:
            p = re.sub(r",? or turn off AMP(?=[.;)]|$)", "", p)
            p = re.sub(r"(?i)\bturn off AMP\b", "turn off the config setting `amp`", p)
        parts[i] = p
    return "".join(parts)


def browser_message(e: BaseException, state: Mapping[str, Any] | None = None) -> str:
    """An error as the Train page shows it, naming the widget first (and, for a config field of its own,
    the key the config below it uses): "Epochs (`epochs`): must be a whole number from 1 to 10000, got 0"."""
    field = getattr(e, "field", None)
    detail = name_widgets(getattr(e, "detail", None) or str(e))
    key = widget_key(field, state or {})
    label = widget_label(key)
    if label and key == K + field:
        return f"{label} (`{field}`): {detail}"
    if label:
        return f"{label}: {detail}"
    return f"`{field}`: {detail}" if field else detail
