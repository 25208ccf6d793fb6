"""`InputField`: a slot an agent asks for, validated with pydantic."""

from __future__ import annotations

import datetime as dt
import enum
import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal, get_args, get_origin

from pydantic import TypeAdapter, ValidationError

from flowagents.errors import AgentDefinitionError

if TYPE_CHECKING:
    from flowagents.agent import StandardAgent


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""Marks a field with no default."""


class InvalidAnswer(ValueError):
    """The user's answer does not fit the field; `reason` is shown to the user before the question."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER = re.compile(r"(?<![\w.:/-])(\d+(?:\.\d+)?)(?![\w:/-])")
_WORD = re.compile(r"[a-z']+")
_TIME = re.compile(
    r"\b(\d{1,2})(?::(\d{2}))?\s*(am|pm)\b|\b([01]?\d|2[0-3]):([0-5]\d)\b|\b(noon|midnight)\b", re.I
)
_ISO_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
_DAY_AFTER_TOMORROW = re.compile(r"\bday\s+after\s+tomorrow\b")
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_MONTH_DAY = re.compile(
    rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{4}}\b)?"  # jan 2nd 2030
    rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{4}}\b)?",  # 2 january, 3rd of july
    re.I,
)
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_ORDINALS = {
    w: i for i, w in enumerate("first second third fourth fifth sixth seventh eighth ninth tenth".split())
}
_ORDINAL_NUMBER = re.compile(r"^(\d{1,2})(?:st|nd|rd|th)$")
_POSITION_ALONE = re.compile(r"^(?:(?:option|number|no\.?|#)\s*)?(\d{1,2})$")
_YES = {"yes", "y", "yeah", "yep", "sure", "ok", "okay", "true", "correct"}
_NO = {"no", "n", "nope", "false", "nah"}

_REASONS: dict[Any, str] = {
    int: "Please answer with a whole number.",
    float: "Please answer with a number.",
    bool: "Please answer yes or no.",
    dt.date: "Please give a date like 2026-12-24, 'today' or 'friday'.",
    dt.time: "Please give a time like 19:30 or 7pm.",
}


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Decimal):
        return value.is_finite()
    return True


def _numbers(text: str) -> list[str]:
    """The numbers a message states, without those of its times and dates ("at 7 pm" is no count)."""
    for when in (_TIME, _ISO_DATE, _MONTH_DAY):
        text = when.sub(" ", text)
    found = _NUMBER.findall(text)
    words = [str(_NUMBER_WORDS[w]) for w in _WORD.findall(text.lower()) if w in _NUMBER_WORDS]
    if found:  # "4, the one by the window": beside digits, only a number word other than "one" counts
        return found + [w for w in words if w != "1"]  # ("four adults and 2 kids" states two counts)
    return words


def _times(text: str) -> list[dt.time]:
    out = []
    for m in _TIME.finditer(text):
        if m.group(6):
            out.append(dt.time(12) if m.group(6).lower() == "noon" else dt.time(0))
        elif m.group(3):
            hour = int(m.group(1)) % 12 + (12 if m.group(3).lower() == "pm" else 0)
            minute = int(m.group(2) or 0)
            if hour < 24 and minute < 60:
                out.append(dt.time(hour, minute))
        else:
            out.append(dt.time(int(m.group(4)), int(m.group(5))))
    return out


def _dates(text: str, today: dt.date | None = None) -> list[dt.date]:
    today = today or dt.date.today()
    out: list[dt.date] = []
    for iso in _ISO_DATE.findall(text):
        try:
            out.append(dt.date.fromisoformat(iso))
        except ValueError:
            continue
    lowered = text.lower()
    for _ in _DAY_AFTER_TOMORROW.findall(lowered):  # not "tomorrow"
        out.append(today + dt.timedelta(days=2))
    for word in _WORD.findall(_DAY_AFTER_TOMORROW.sub(" ", lowered)):
        if word == "today":
            out.append(today)
        elif word == "tomorrow":
            out.append(today + dt.timedelta(days=1))
        elif word in _WEEKDAYS:
            ahead = (_WEEKDAYS.index(word) - today.weekday()) % 7 or 7
            out.append(today + dt.timedelta(days=ahead))
    return out


def _implied_choices(type_: Any) -> tuple[Any, ...] | None:
    """The values a `Literal[...]` or an `Enum` type allows, else None."""
    if get_origin(type_) is Literal:
        return get_args(type_)
    if isinstance(type_, type) and issubclass(type_, enum.Enum):
        return tuple(type_)
    return None


class Slot:
    """A value the agent needs; asked with `question` until a valid answer arrives.

    Declared with `InputField(...)` (this class, typed as `Any` so `guests: int = InputField(...)` checks).

    The type comes from the class annotation (`guests: int = InputField(...)`) or `type=`, default `str`.
    Answers are validated with pydantic ("4" becomes 4); `choices` limits the answers (a `Literal[...]` or
    `Enum` type gives its values as the choices); `validator` may transform the value or raise
    `ValueError("reason")`. After `max_attempts` invalid answers the agent gives up politely. A field with
    a `default`, or with `required=False`, is not asked.
    """

    def __init__(
        self,
        question: str,
        *,
        type: Any = None,
        choices: Sequence[Any] | None = None,
        default: Any = MISSING,
        required: bool = True,
        validator: Callable[[Any], Any] | None = None,
        max_attempts: int = 3,
        description: str | None = None,
    ) -> None:
        if not question or not isinstance(question, str):
            raise AgentDefinitionError("InputField needs a question, e.g. InputField('How many guests?').")
        if max_attempts < 1:
            raise AgentDefinitionError("InputField max_attempts must be at least 1.")
        self.question = question
        self.type: Any = type
        self.choices: tuple[Any, ...] | None = tuple(choices) if choices is not None else None
        self.default = default
        self.required = required
        self.validator = validator
        self.max_attempts = max_attempts
        self.description = description
        self.name = ""
        self.owner = ""
        self._adapter: TypeAdapter[Any] | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.owner = owner.__name__

    def bind(self, annotation: Any) -> None:
        """Fix the field's type and check its choices and default (called by `@flowagent`)."""
        if self.type is None:
            self.type = annotation if annotation is not None else str
        where = f"{self.owner}.{self.name}" if self.owner else self.name
        type_name = getattr(self.type, "__name__", None) or repr(self.type)
        try:
            adapter = self._adapter = TypeAdapter(self.type)
        except Exception:
            raise AgentDefinitionError(
                f"{where}: type {type_name} is not supported; use str, int, float, bool, datetime.date, "
                "datetime.time or another type pydantic can validate."
            ) from None
        if self.choices is None:  # Literal["s", "m"] and Enum types name their choices themselves
            self.choices = _implied_choices(self.type)
        if self.choices is not None:
            checked = []
            for choice in self.choices:
                try:
                    checked.append(adapter.validate_python(choice))
                except ValidationError:
                    raise AgentDefinitionError(
                        f"{where}: choice {choice!r} is not a valid {type_name}; annotate the field with "
                        f"the choices' type (e.g. {self.name}: int = InputField(..., choices=[1, 2]))."
                    ) from None
            self.choices = tuple(checked)
        if self.default is not MISSING and self.default is not None:
            try:
                self.default = adapter.validate_python(self.default)
            except ValidationError:
                raise AgentDefinitionError(
                    f"{where}: default {self.default!r} is not a valid {type_name}."
                ) from None
            if self.choices is not None and self.default not in self.choices:
                raise AgentDefinitionError(
                    f"{where}: default {self.default!r} is not one of the choices "
                    f"({', '.join(self.choice_labels or [])})."
                )

    @property
    def asks(self) -> bool:
        """True when the agent must ask for this field if it is missing."""
        return self.required and self.default is MISSING

    @property
    def choice_labels(self) -> list[str] | None:
        """The choices as text, for buttons and prompts."""
        if self.choices is None:
            return None
        return [str(c.value) if isinstance(c, enum.Enum) else str(c) for c in self.choices]

    def __get__(self, obj: StandardAgent | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        values = obj._values
        if self.name in values:
            return values[self.name]
        return None if self.default is MISSING else self.default

    def __set__(self, obj: StandardAgent, value: Any) -> None:
        obj._values[self.name] = self.validate_value(value)

    def validate_value(self, value: Any) -> Any:
        """Validate a value given in code or by an LLM, then apply the validator; raise InvalidAnswer."""
        return self._validated(self.check_stored(value))

    def _validated(self, value: Any) -> Any:
        """`value` through the field's validator, if any."""
        if self.validator is None:
            return value
        try:
            return self.validator(value)
        except (ValueError, TypeError, AssertionError) as exc:
            raise InvalidAnswer(str(exc) or "That answer is not valid.") from None

    def check_stored(self, value: Any) -> Any:
        """A value kept from an earlier turn, checked against the type and choices (not the validator,
        which ran when the value was given and may have transformed it); raise InvalidAnswer."""
        assert self._adapter is not None, "field not bound; is the class decorated with @flowagent?"
        try:
            result = self._adapter.validate_python(value)
        except ValidationError as exc:
            raise InvalidAnswer(_REASONS.get(self.type) or exc.errors()[0]["msg"] + ".") from None
        if not _finite(result):  # nan and infinities would not survive the store's JSON
            raise InvalidAnswer(_REASONS[float])
        if self.choices is not None and result not in self.choices:
            raise InvalidAnswer(f"Please choose one of: {', '.join(self.choice_labels or [])}.")
        return result

    def parse_answer(self, text: str) -> Any:
        """Turn a user's free-text answer into the field's value; raise InvalidAnswer with a reason."""
        text = text.strip()
        if not text:
            raise InvalidAnswer("I didn't catch an answer.")
        if self.type is str and self.choices is None:  # free text: the answer is the value
            return self._validated(text)
        if self.choices is not None:
            return self._choose(text, by_position=True)
        try:
            if text.isdigit() and self.type in (dt.date, dt.datetime):  # not a Unix timestamp
                raise InvalidAnswer(_REASONS[dt.date])
            return self.validate_value(text)
        except InvalidAnswer:
            candidate = self._candidate(text)
            if candidate is MISSING:
                raise
            return self.validate_value(candidate)

    def _choose(self, text: str, *, by_position: bool) -> Any:
        """The choice an answer names ("Medium please"), or with `by_position` the one it points at
        ("the second one", "2" when no choice is a number, "last"); raise InvalidAnswer."""
        choices = self.choices or ()
        labels = self.choice_labels or []
        lowered = text.lower()
        exact = [c for c, label in zip(choices, labels, strict=True) if label.lower() == lowered]
        inside = [
            c
            for c, label in zip(choices, labels, strict=True)
            if re.search(rf"(?<!\w){re.escape(label.lower())}(?!\w)", lowered)
        ]
        picked = exact or (inside if len(inside) == 1 else [])
        if not picked and by_position:
            position = self._position(lowered, labels)
            if position is not None:
                picked = [choices[position]]
        if not picked:
            raise InvalidAnswer(f"Please choose one of: {', '.join(labels)}.")
        return self.validate_value(picked[0])

    @staticmethod
    def _position(lowered: str, labels: list[str]) -> int | None:
        """The index an answer points at in a list of choices, if it points at exactly one."""
        alone = _POSITION_ALONE.match(lowered.strip(" .!?"))
        if alone is not None:  # "2", "option 2": a position only when no choice is itself a number
            if any(_NUMBER.search(label) for label in labels):
                return None
            index = int(alone.group(1)) - 1
        else:
            found = set()
            for word in re.findall(r"[a-z0-9]+", lowered):
                ordinal = _ORDINAL_NUMBER.match(word)
                if word in _ORDINALS:
                    found.add(_ORDINALS[word])
                elif ordinal is not None:
                    found.add(int(ordinal.group(1)) - 1)
                elif word == "last":
                    found.add(len(labels) - 1)
            if len(found) != 1:
                return None
            index = found.pop()
        return index if 0 <= index < len(labels) else None

    def _candidate(self, text: str) -> Any:
        """A single unambiguous value of this field's type found inside free text, else MISSING."""
        if self.type in (int, float):
            numbers = _numbers(text)
            return numbers[0] if len(numbers) == 1 else MISSING
        if self.type is dt.time:
            times = _times(text)
            return times[0] if len(times) == 1 else MISSING
        if self.type is dt.date:
            dates = _dates(text)
            return dates[0] if len(dates) == 1 else MISSING
        if self.type is bool:
            words = set(_WORD.findall(text.lower()))
            yes, no = bool(words & _YES), bool(words & _NO)
            return yes if yes != no else MISSING
        return MISSING

    def extract(self, text: str) -> Any:
        """The field's value when the message states it unambiguously, else MISSING.

        Free-text (`str`) fields are never guessed from a message; typed fields and choices are.
        """
        found = self.stated(text)
        return MISSING if isinstance(found, InvalidAnswer) else found

    def stated(self, text: str) -> Any:
        """As `extract`, but a value the message states that the field refuses (a validator's "We seat at
        most 10.") is returned as the `InvalidAnswer`, so its reason can be given when the field is asked."""
        if self.choices is not None:  # by name only: "for the first time" does not pick a choice
            try:
                return self._choose(text.strip(), by_position=False)
            except InvalidAnswer:
                return MISSING
        candidate = self._candidate(text)
        if candidate is MISSING or self.type is bool:
            return MISSING
        try:
            return self.validate_value(candidate)
        except InvalidAnswer as refused:
            return refused


if TYPE_CHECKING:

    def InputField(
        question: str,
        *,
        type: Any = None,
        choices: Sequence[Any] | None = None,
        default: Any = MISSING,
        required: bool = True,
        validator: Callable[[Any], Any] | None = None,
        max_attempts: int = 3,
        description: str | None = None,
    ) -> Any:
        """Declare a field of an agent (see `Slot`)."""

else:
    InputField = Slot
