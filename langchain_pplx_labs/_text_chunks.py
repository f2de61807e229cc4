"""Text stream chunks stamped from a validated template: equal to validated ones, about a quarter of the cost."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from pydantic import BaseModel

Model = TypeVar("Model", bound=BaseModel)

_PROBES = ("", "probe", "ünïcødé ✓ 42\n")
_IMMUTABLE = (str, int, float, type(None))
_new = object.__new__
_set = object.__setattr__
# pydantic models keep these in slots; their descriptors skip BaseModel.__setattr__.
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


class Blueprint(Generic[Model]):
    """The state of one validated instance, copied into new instances without validating again."""

    __slots__ = ("_containers", "_extra", "_fields", "_fields_set", "_model", "_private", "_replaced")
    _containers: tuple[tuple[str, Callable[[], list[Any] | dict[str, Any]]], ...]

    def __init__(self, template: Model, replaced: Iterable[str] = ()) -> None:
        self._model = type(template)
        self._fields = dict(template.__dict__)
        # Each copy gets fresh containers: callers (and langchain-core) mutate them in place.
        self._containers = tuple(
            (name, value.copy) for name, value in self._fields.items() if isinstance(value, list | dict)
        )
        self._fields_set = frozenset(template.model_fields_set)
        self._extra = template.__pydantic_extra__
        self._private = template.__pydantic_private__
        self._replaced = frozenset(replaced)  # fields every stamp sets anew

    @property
    def copies_share_nothing(self) -> bool:
        """Whether every kept field is immutable, or a container (copied per stamp) of immutable values."""
        for name, value in self._fields.items():
            if name in self._replaced:
                continue
            items = _items(value) if isinstance(value, list | dict) else (value,)
            if not all(isinstance(item, _IMMUTABLE) for item in items):
                return False
        return not (self._extra or self._private)

    def stamp(self, changes: dict[str, Any]) -> Model:
        fields = self._fields.copy()
        for name, fresh in self._containers:
            fields[name] = fresh()
        fields.update(changes)
        instance = _new(self._model)
        # What pydantic's model_construct sets, without its per-call default-factory introspection.
        _set(instance, "__dict__", fields)
        _set_fields_set(instance, set(self._fields_set))
        _set_extra(instance, None if self._extra is None else {})
        _set_private(instance, None if self._private is None else {})
        return instance


def _items(container: list[Any] | dict[str, Any]) -> Iterable[Any]:
    return container.values() if isinstance(container, dict) else container


def validated_text_chunk(text: str, response_metadata: dict[str, Any]) -> ChatGenerationChunk:
    """The chunk langchain-core's own validation builds for a plain text delta."""
    return ChatGenerationChunk(
        message=AIMessageChunk(content=text, response_metadata=dict(response_metadata))
    )


def same_model(left: BaseModel, right: BaseModel) -> bool:
    """Equal values, extras and private state, and the same explicitly set fields (``==`` ignores those)."""
    return (
        type(left) is type(right)
        and left == right
        and left.model_fields_set == right.model_fields_set
        and left.__pydantic_extra__ == right.__pydantic_extra__
        and left.__pydantic_private__ == right.__pydantic_private__
    )


class TextChunks:
    """Makes plain text chunks: stamped when that equals validation for the installed langchain-core.

    Otherwise (a future langchain-core derives a field from the text, say) ``make`` validates each one.
    """

    def __init__(self, response_metadata: dict[str, Any]) -> None:
        self._response_metadata = dict(response_metadata)
        self._message = Blueprint(
            AIMessageChunk(content="", response_metadata=dict(response_metadata)), replaced=["content"]
        )
        self._generation = Blueprint(
            ChatGenerationChunk(message=AIMessageChunk(content="")), replaced=["message", "text"]
        )
        self.stamping = self._stamping_matches()
        self.make: Callable[[str], ChatGenerationChunk] = self._stamped if self.stamping else self._validated

    def _stamped(self, text: str) -> ChatGenerationChunk:
        return self._generation.stamp({"message": self._message.stamp({"content": text}), "text": text})

    def _validated(self, text: str) -> ChatGenerationChunk:
        return validated_text_chunk(text, self._response_metadata)

    def _stamping_matches(self) -> bool:
        if not (self._message.copies_share_nothing and self._generation.copies_share_nothing):
            return False
        for probe in _PROBES:
            stamped, validated = self._stamped(probe), self._validated(probe)
            if not (same_model(stamped, validated) and same_model(stamped.message, validated.message)):
                return False
        return True
