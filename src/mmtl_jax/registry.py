"""A name -> builder table: how corpora, models, systems and meta modes are chosen by config.

Imports none of its siblings, so every layer can keep a registry of its own::

  MODELS = Registry('model', 'config.model.name')
  MODELS.register('cnn_bilstm', MetaLearner)
  MODELS.get(config.model.name)        # ValueError listing the known names if unknown
"""

from __future__ import annotations

from typing import Dict, Generic, Iterator, Optional, Tuple, TypeVar

T = TypeVar('T')

class UnknownNameError(ValueError):
  """A name that no entry of a registry has; the message lists the known names."""


class Registry(Generic[T]):
  """Entries by name. An unknown name raises a ValueError that lists the known ones.

  Args:
    kind: what the entries are, for messages ('model', 'meta mode', ...).
    field: the config field that names an entry, for messages ('config.model.name').
  """

  def __init__(self, kind: str, field: str = ''):
    self.kind = kind
    self.field = field
    self._entries: Dict[str, T] = {}

  def register(self, name: str, entry: Optional[T] = None, *, replace: bool = False):
    """Adds `entry` under `name`; without `entry`, returns a decorator that adds its target.

    Raises:
      ValueError: `name` is taken and replace=False (two extensions claiming one name).
    """
    def add(value: T) -> T:
      if not replace and name in self._entries and self._entries[name] is not value:
        raise ValueError(f'{self.kind} {name!r} is already registered; pass replace=True '
                         'to override it')
      self._entries[name] = value
      return value

    return add if entry is None else add(entry)

  def unregister(self, name: str) -> None:
    """Removes `name` (e.g. a test's temporary entry); unknown names are ignored."""
    self._entries.pop(name, None)

  def get(self, name: str) -> T:
    if name not in self._entries:
      where = f' ({self.field})' if self.field else ''
      raise UnknownNameError(f'unknown {self.kind} {name!r}{where}; known: {self.names()}')
    return self._entries[name]

  def names(self) -> Tuple[str, ...]:
    return tuple(self._entries)

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)


__all__ = ['Registry', 'T', 'UnknownNameError']
