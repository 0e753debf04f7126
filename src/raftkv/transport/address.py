"""``HOST:PORT`` addresses, parsed once with a clear error."""

from __future__ import annotations

from dataclasses import dataclass


class AddressError(ValueError):
    """An address that is not ``HOST:PORT`` with a port in 1..65535."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str = "address") -> Address:
        host, sep, port_text = text.strip().rpartition(":")
        if not sep or not host:
            raise AddressError(f"{what} {text!r} is not HOST:PORT (e.g. 127.0.0.1:7001)")
        host = host.strip("[]")
        try:
            port = int(port_text)
        except ValueError:
            raise AddressError(f"{what} {text!r}: port {port_text!r} is not a number") from None
        if not 1 <= port <= 65535:
            raise AddressError(f"{what} {text!r}: port {port} is outside 1..65535")
        return cls(host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
