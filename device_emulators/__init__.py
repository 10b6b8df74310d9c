"""Emulated field devices backed by the twin: SunSpec Modbus TCP servers and an IEC 104 RTU."""

from device_emulators.host import EmulatorHost, Endpoint

__all__ = ["EmulatorHost", "Endpoint"]
