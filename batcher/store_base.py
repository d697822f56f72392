"""What both store engines share: the epoch, ``async with`` and argument checks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["StoreBase", "check_limit"]


def check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


class StoreBase(ABC):
    """Lifecycle plumbing for a ``BatchStore`` engine; ``open()`` sets ``_epoch``."""

    _epoch: str | None = None

    @property
    def epoch(self) -> str:
        if self._epoch is None:
            raise RuntimeError("the store is not open")
        return self._epoch

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
