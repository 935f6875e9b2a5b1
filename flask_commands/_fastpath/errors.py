"""The errors of an invalid input, WTForms' own, without building the form."""

from __future__ import annotations

import typing as t

import wtforms
from werkzeug.datastructures import MultiDict
from wtforms.meta import DefaultMeta

from ..forms import NOT_A_VALID_VALUE
from ..forms import json_text
from ..forms import json_texts
from .model import FAIL
from .model import CompiledField
from .model import Values
from .model import clone
from .model import parse_ident

# --- errors: what the real form says of an invalid input, without building it -----------------


def field_errors(field: wtforms.Field, formdata: t.Any, form: t.Any) -> list[str]:
    """Process and validate ``field`` as ``Form`` does; return its errors, one type error alone.

    A value that does not parse (``"abc"`` for a number) gets its type error only: the checks
    after it (``NumberRange``...) would only say again that there is no number. ``Optional``,
    ``InputRequired`` and ``DataRequired``, which clear earlier errors, keep their word.
    """
    field.process(formdata)
    field.post_process(formdata)
    field.validate(form)
    errors = field.errors
    process_errors = list(field.process_errors)
    if process_errors and errors[: len(process_errors)] == process_errors:
        field.errors = errors = process_errors
    return list(errors)


class FieldErrors:
    """``plan.errors(data)``: each field's errors, WTForms' own, without building the form.

    A field the plan proves valid costs its generated text step; any other field is a clone of a
    bound field of the real form (its class, validators, messages and translations), processed
    and validated as ``Form.validate`` would: fields of a derived form are independent, since the
    plan exists only for forms without inline ``validate_<name>`` methods or custom validators.
    """

    #: Entries of the memo of messages, at most; it is emptied when full.
    MEMO_SIZE = 1024
    #: Only texts this short are remembered, so the memo stays small.
    MEMO_TEXT = 256

    def __init__(self, fields: list[CompiledField], ident: wtforms.Field, meta: DefaultMeta) -> None:
        self.fields = fields
        self.ident = ident
        self.meta = meta
        # (field, translations, texts) → its messages. A modelled field's messages depend on its
        # texts alone (its class and validators are WTForms' own, fixed, and none of them reads
        # anything but the field's input), so the same invalid input (an empty required field,
        # the same typo again) is worded once. An application's own field class is never
        # remembered: it may answer differently each time.
        self._memo: dict[tuple[t.Any, ...], tuple[t.Any, list[str]]] = {}

    def _clone(self, template: wtforms.Field, translations: t.Any) -> t.Any:
        return clone(template, translations)

    def _messages(
        self, template: wtforms.Field, translations: t.Any, formdata: t.Any, texts: t.Any
    ) -> list[str]:
        """``field_errors`` of a clone of ``template``, remembered by ``texts`` (short strings only).

        ``formdata`` ``None`` stands for ``Values(texts)``, made only when the memo has no entry.
        """
        key = None
        if type(texts) is list and (
            # One text (the JSON case, and most form fields) without all()'s generator.
            (len(texts) == 1 and type(texts[0]) is str and len(texts[0]) <= self.MEMO_TEXT)
            or all(type(text) is str and len(text) <= self.MEMO_TEXT for text in texts)
        ):
            # By identity: the templates live as long as the plan, and each entry keeps its
            # translations alive, so neither id is reused while its entry exists.
            key = (id(template), id(translations), *texts)
            found = self._memo.get(key)
            if found is not None and found[0] is translations:
                return list(found[1])
        if formdata is None:
            formdata = Values(texts)
        messages = field_errors(self._clone(template, translations), formdata, None)
        if key is not None:
            if len(self._memo) >= self.MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = (translations, list(messages))
        return messages

    def __call__(self, data: t.Mapping[str, t.Any]) -> dict[str, list[str]] | None:
        json = type(data) is dict
        if not json and not isinstance(data, MultiDict):
            return None
        errors: dict[str, list[str]] = {}
        translations = self.meta.get_translations(None)
        getlist = None if json else t.cast("MultiDict[str, t.Any]", data).getlist
        # The form's order: the hidden id first, then the fields as declared.
        if json:
            ident = data.get("id")
            if ident is None:
                pass
            elif type(ident) is not str:
                errors["id"] = [NOT_A_VALID_VALUE]
            elif parse_ident(ident) is FAIL:
                messages = self._messages(self.ident, translations, Values([ident]), [ident])
                if messages:
                    errors["id"] = messages
        else:
            assert getlist is not None
            raw = getlist("id")
            if raw and (type(raw[0]) is not str or parse_ident(raw[0]) is FAIL):
                messages = self._messages(self.ident, translations, data, raw)
                if messages:
                    errors["id"] = messages
        for field in self.fields:
            info = field.info
            name = info.name
            formdata: t.Any
            texts: t.Any = None  # the field's input texts, when the memo may remember its messages
            if field.custom:
                # Always worded by the clone: its class and validators are the application's.
                if not json:
                    formdata = data
                elif (value := data.get(name)) is None:
                    formdata = Values([])
                else:
                    try:
                        texts = json_texts(info, value)
                    except Exception:  # the application's from_json: the real path raises it
                        return None
                    if texts is None:
                        errors[name] = [NOT_A_VALID_VALUE]
                        continue
                    formdata = Values(texts)
                outcome = FAIL
            elif json:
                # formdata is made from texts below, only for a field the plan cannot pass.
                formdata = None
                value = data.get(name)
                if value is None:
                    outcome = field.absent_json if field.static else field.missing_json()
                    texts = []
                else:
                    try:
                        text = json_text(info, value)
                    except ValueError:  # str() of an int too long to print
                        return None
                    if text is None:
                        errors[name] = [NOT_A_VALID_VALUE]
                        continue
                    outcome = field.text(text, text)
                    texts = [text]
            else:
                assert getlist is not None
                raw = getlist(name)
                formdata = data
                texts = raw
                if not raw:
                    outcome = field.absent_form if field.static else field.missing_form()
                elif type(raw[0]) is str and (len(raw) == 1 or info.kind not in ("date", "datetime")):
                    outcome = field.text(raw[0], raw[0])
                else:
                    outcome = FAIL
            if outcome is not FAIL:
                continue
            try:
                if field.custom or texts is None:
                    messages = field_errors(self._clone(field.template, translations), formdata, None)
                else:
                    messages = self._messages(field.template, translations, formdata, texts)
            except Exception:  # what the real form would raise too: let it
                return None
            if messages:
                errors[name] = messages
        return errors or None
